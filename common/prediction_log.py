"""The prediction log's record: one row per classified image, the backend writes them, the Monitoring page reads.

The backend (``backend.predictions``) appends records off the request path, in batches, as Parquet files under
``PREDICTION_LOG_DIR``; the frontend's Monitoring page and ``python -m frontend.drift`` read them. Both images
carry this module (``common/``), so the two sides cannot disagree about a column.

Layout: ``PREDICTION_LOG_DIR/date=YYYY-MM-DD/<file>.parquet`` (Hive partitioning by the records' UTC day, as
BigQuery external tables and ``pyarrow.dataset`` read it). File names are made by the writer (time, instance,
sequence), never from anything a client sent; each file is written under a temporary name and then renamed, so a
reader never sees half a file.

The image statistics are computed from the pixels the model sees (its input crop, ``uint8`` RGB), so they are
comparable between images of any size, and cost no decode of their own:

- ``brightness``: mean luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B), 0-255;
- ``contrast``: standard deviation of that luma;
- ``colourfulness``: Hasler and Süsstrunk's (2003) metric, ``std(rg, yb) + 0.3 * mean(rg, yb)`` with
  ``rg = R - G`` and ``yb = (R + G) / 2 - B``;
- ``sharpness``: variance of the luma's 4-neighbour Laplacian.
"""

from __future__ import annotations

import pyarrow as pa  # type: ignore[import-untyped]

__all__ = ["COLUMNS", "IMAGE_STATISTICS", "PARTITION", "SCHEMA"]

# column name -> what it holds (README and docs/monitoring.md list the same)
COLUMNS: dict[str, str] = {
    "time": "when the answer was ready (UTC, microseconds)",
    "model": "the model's name",
    "model_version": "the model bundle's version (16 hex digits), as in /model",
    "route": "the API that classified it: predict, v2 or torchserve",
    "label": "the top class's label",
    "class_index": "the top class's index",
    "probability": "the top class's probability",
    "margin": "top-1 probability minus top-2 probability",
    "entropy": "Shannon entropy of the whole probability row, in nats",
    "width": "the image's width in pixels, as decoded",
    "height": "the image's height in pixels, as decoded",
    "format": "the decoded format (JPEG, PNG, WEBP, ...)",
    "brightness": "mean luma of the model's input crop, 0-255",
    "contrast": "standard deviation of that luma",
    "colourfulness": "Hasler-Süsstrunk colourfulness of the crop",
    "sharpness": "variance of the luma's Laplacian",
    "latency_ms": "from the request's arrival to its answer, in milliseconds",
}

IMAGE_STATISTICS = ("brightness", "contrast", "colourfulness", "sharpness")

SCHEMA = pa.schema(
    [
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("route", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("class_index", pa.int32(), nullable=False),
        pa.field("probability", pa.float32(), nullable=False),
        pa.field("margin", pa.float32(), nullable=False),
        pa.field("entropy", pa.float32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("brightness", pa.float32(), nullable=False),
        pa.field("contrast", pa.float32(), nullable=False),
        pa.field("colourfulness", pa.float32(), nullable=False),
        pa.field("sharpness", pa.float32(), nullable=False),
        pa.field("latency_ms", pa.float32(), nullable=False),
    ],
    metadata={name: text for name, text in COLUMNS.items()},
)

# the Hive partition column the folders add (``date=YYYY-MM-DD``), not stored in the files
PARTITION = "date"

assert list(COLUMNS) == SCHEMA.names
