"""Result shards in OUTPUT: each written whole under a temporary name, then renamed, so a shard either exists
complete or not at all; and one completion marker per task.

A folder of results, for a task count N and a task i::

    results-t00001-of00004-00000.parquet   # shards of task 1 of 4, in the order written
    results-t00001-of00004-00001.parquet
    _done-t00001-of00004.json              # task 1 of 4 finished: its counts (written last)
    .results-t00001-of00004-00002.parquet.tmp   # a shard being written (or left by a killed task)

Names starting with ``_`` or ``.`` are what Parquet readers (pyarrow.dataset, pandas, Spark, DuckDB's
``*.parquet``) skip, so ``pyarrow.parquet.read_table(OUTPUT)`` reads the results alone.

Exactly once: a task skips every path already in a shard it can see, writes each image into one shard only,
and removes only its own temporary files. A task killed mid-way loses the shard it was filling (never
renamed); its retry classifies those images again into a new shard. On Cloud Storage FUSE a rename is a copy
then a delete: the copy appears whole or not at all, and a leftover temporary file is removed by the retry.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

Format = Literal["parquet", "jsonl"]
FORMATS: Final = ("parquet", "jsonl")

SCHEMA: Final = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("labels", pa.list_(pa.string())),  # most likely first; null for an image that failed
        pa.field("indices", pa.list_(pa.int32())),
        pa.field("probabilities", pa.list_(pa.float32())),
        pa.field("width", pa.int32()),  # of the original image, as seen (after EXIF rotation)
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),  # JPEG, PNG, ...
        pa.field("error", pa.string()),  # null, or the error code (invalid_image, image_too_large, ...)
        pa.field("error_message", pa.string()),  # what the code means for this image
        pa.field("model", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
    ]
)
_SHARD: Final = re.compile(r"^results-t(?P<index>\d{5})-of(?P<count>\d{5})-(?P<seq>\d{5})\.(?P<ext>parquet|jsonl)$")


class OutputError(Exception):
    """OUTPUT cannot take this task's results (a shard of another model, an unreadable shard)."""


def shard_name(index: int, count: int, seq: int, fmt: Format) -> str:
    return f"results-t{index:05d}-of{count:05d}-{seq:05d}.{fmt}"


def marker_name(index: int, count: int) -> str:
    return f"_done-t{index:05d}-of{count:05d}.json"


def write_atomically(target: Path, write: Callable[[Any], None]) -> None:
    """``write(file)`` into a temporary file beside ``target``, flushed to storage, then renamed to it."""
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        with temporary.open("wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    # The rename itself, on a local disk; Cloud Storage FUSE has no folder to sync (and may say so).
    with contextlib.suppress(OSError):
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


@dataclass
class Rows:
    """Results not yet in a shard, column by column."""

    columns: dict[str, list[Any]] = field(default_factory=lambda: {name: [] for name in SCHEMA.names})

    def __len__(self) -> int:
        return len(self.columns["path"])

    def add(self, row: dict[str, Any]) -> None:
        for name, values in self.columns.items():
            values.append(row.get(name))

    def table(self) -> pa.Table:
        return pa.Table.from_pydict(self.columns, schema=SCHEMA)

    def lines(self) -> bytes:
        names = list(self.columns)
        rows = zip(*self.columns.values(), strict=True)
        return b"".join(
            json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False).encode() + b"\n" for row in rows
        )


def _read_shard(path: Path) -> tuple[list[str], set[str]]:
    """(paths, model versions) of one committed shard."""
    try:
        if path.suffix == ".parquet":
            table = pq.read_table(path, columns=["path", "model_version"])
            return table.column("path").to_pylist(), set(table.column("model_version").to_pylist())
        paths, versions = [], set()
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                paths.append(record["path"])
                versions.add(record["model_version"])
        return paths, versions
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        raise OutputError(
            f"The result shard {path} cannot be read ({exc}). Shards are renamed into place only once complete, "
            "so something else changed it: move it away and run again (its images are then classified again)."
        ) from None


class ShardStore:
    """One task's view of OUTPUT: what is already done, and its shards and marker."""

    def __init__(self, folder: Path, *, index: int, count: int, fmt: Format, model: str, version: str) -> None:
        self.folder = folder
        self.index = index
        self.count = count
        self.format: Format = fmt
        self.model = model
        self.version = version
        self.marker = folder / marker_name(index, count)
        self.written: list[str] = []
        self._next_seq = 0

    def existing(self) -> tuple[set[str], int]:
        """Remove this task's leftover temporary files; return the paths that shards already hold (every
        shard that could hold this task's images) and how many of them this task's own shards hold.

        Raises ``OutputError`` if a shard holds results of another model version: one folder, one model."""
        done: set[str] = set()
        own = 0
        own_prefix = f".results-t{self.index:05d}-of{self.count:05d}-"
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
            if entry.name.startswith(own_prefix) and entry.name.endswith(".tmp"):
                Path(entry.path).unlink(missing_ok=True)  # a shard a killed attempt of this task never finished
                continue
            match = _SHARD.match(entry.name)
            if match is None:
                continue
            index, count, seq = int(match["index"]), int(match["count"]), int(match["seq"])
            mine = (index, count) == (self.index, self.count)
            if mine:
                self._next_seq = max(self._next_seq, seq + 1)
            elif count == self.count:
                continue  # another task of this split: by the hash, none of its paths are ours
            paths, versions = _read_shard(Path(entry.path))
            others = versions - {self.version}
            if others:
                raise OutputError(
                    f"{entry.path} holds results of model version {', '.join(sorted(others))}; this job runs "
                    f"{self.model} version {self.version}. Write to a new OUTPUT folder (one model per folder)."
                )
            done.update(paths)
            if mine:
                own += len(paths)
        return done, own

    def next_name(self) -> str:
        name = shard_name(self.index, self.count, self._next_seq, self.format)
        self._next_seq += 1
        return name

    def commit(self, name: str, rows: Rows) -> None:
        """Write ``rows`` as the shard ``name``, whole or not at all (blocking: call it from a thread)."""
        if self.format == "parquet":
            table = rows.table()
            write_atomically(self.folder / name, lambda file: pq.write_table(table, file, compression="zstd"))
        else:
            data = rows.lines()
            write_atomically(self.folder / name, lambda file: file.write(data))
        self.written.append(name)

    def finish(self, summary: dict[str, Any]) -> None:
        """The completion marker: this task's summary, written last."""
        record = {**summary, "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        data = (json.dumps(record, indent=1) + "\n").encode()
        write_atomically(self.marker, lambda file: file.write(data))

    def read_marker(self) -> dict[str, Any] | None:
        try:
            record: dict[str, Any] = json.loads(self.marker.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable: the task runs again (it skips what its shards hold)
        return record
