"""Synthetic prediction logs, seeded, written exactly per ``common.prediction_log.SCHEMA`` in its Hive layout
(``date=YYYY-MM-DD/part-....parquet``), with drift injected from a given moment on.

Each column is drawn from a plausible shape: classes from a Zipf-like mix of ``LABELS``, the top-1 probability from
a Beta distribution (margin and entropy follow from it), brightness and contrast normal, colourfulness gamma,
sharpness log-normal. ``Drift`` shifts some of them: darker images, another class mix, lower confidence.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from common.prediction_log import SCHEMA

LABELS = [f"class {i:02d}" for i in range(30)]
END = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Drift:
    brightness: float = 0.0  # added to brightness (negative: darker)
    class_mix: bool = False  # the classes' weights reversed: rare classes become common
    confidence: bool = False  # top-1 probabilities drawn from Beta(3, 3) instead of Beta(6, 2)
    labels: tuple[str, ...] = ()  # extra labels, each as likely as the commonest class


def records(rng: np.random.Generator, times: list[dt.datetime], drift: Drift | None = None) -> pa.Table:
    n = len(times)
    drift = drift or Drift()
    labels = LABELS + list(drift.labels)
    weights = 1.0 / np.arange(1, len(LABELS) + 1)
    if drift.class_mix:
        weights = weights[::-1]
    weights = np.concatenate([weights, np.full(len(drift.labels), weights.max())])
    index = rng.choice(len(labels), size=n, p=weights / weights.sum())
    probability = rng.beta(3, 3, n) if drift.confidence else rng.beta(6, 2, n)
    probability = np.clip(probability, 0.02, 0.999)
    margin = probability * rng.uniform(0.2, 1.0, n)
    rest = 1 - probability
    entropy = -(probability * np.log(probability)) - rest * np.log(np.maximum(rest, 1e-9) / 4)
    columns = {
        "time": pa.array(times, SCHEMA.field("time").type),
        "model": ["efficientnet_lite0"] * n,
        "model_version": ["0123456789abcdef"] * n,
        "route": rng.choice(["predict", "v2", "torchserve"], size=n, p=[0.8, 0.15, 0.05]).tolist(),
        "label": [labels[i] for i in index],
        "class_index": index.astype(np.int32),
        "probability": probability.astype(np.float32),
        "margin": margin.astype(np.float32),
        "entropy": entropy.astype(np.float32),
        "width": rng.integers(200, 4000, n).astype(np.int32),
        "height": rng.integers(200, 3000, n).astype(np.int32),
        "format": rng.choice(["JPEG", "PNG", "WEBP"], size=n, p=[0.8, 0.15, 0.05]).tolist(),
        "brightness": np.clip(rng.normal(118 + drift.brightness, 28, n), 0, 255).astype(np.float32),
        "contrast": np.clip(rng.normal(55, 12, n), 0, None).astype(np.float32),
        "colourfulness": rng.gamma(4.0, 10.0, n).astype(np.float32),
        "sharpness": rng.lognormal(5.5, 0.8, n).astype(np.float32),
        "latency_ms": rng.gamma(3.0, 12.0, n).astype(np.float32),
    }
    return pa.table(columns, schema=SCHEMA)


def write_log(
    root: Path,
    *,
    seed: int,
    days: int = 8,
    per_day: int = 300,
    end: dt.datetime = END,
    drift: Drift | None = None,
    drift_hours: float = 24.0,
) -> Path:
    """``days`` days of ``per_day`` records a day up to ``end``, one file per day and partition; the records of the
    last ``drift_hours`` are drawn with ``drift``. Returns ``root``."""
    rng = np.random.default_rng(seed)
    start = end - dt.timedelta(days=days)
    total = days * per_day
    seconds = np.sort(rng.uniform(0, days * 86400, total))
    times = [start + dt.timedelta(seconds=float(s)) for s in seconds]
    # the newest record at ``end`` exactly, so the windows are where the test expects them
    times[-1] = end
    changed = end - dt.timedelta(hours=drift_hours)
    before = [t for t in times if t <= changed]
    after = [t for t in times if t > changed]
    table = pa.concat_tables([records(rng, before), records(rng, after, drift)])
    days_of = np.array([t.strftime("%Y-%m-%d") for t in times])
    for day in sorted(set(days_of)):
        folder = root / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        part = table.filter(pa.array(days_of == day))
        pq.write_table(part, folder / f"{day}T000000-test-{seed:04d}.parquet")
    return root
