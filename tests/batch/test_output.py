"""Result shards: written whole or not at all, read back as what is done, one model per folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from backend.batch import SCHEMA, OutputError, marker_name, shard_name
from backend.batch._output import Rows, ShardStore, write_atomically


def _row(path: str, version: str = "v1", error: str | None = None) -> dict[str, Any]:
    if error:
        return {"path": path, "error": error, "error_message": "bad", "model": "m", "model_version": version}
    return {
        "path": path,
        "labels": ["tabby", "tiger cat"],
        "indices": [281, 282],
        "probabilities": [0.75, 0.25],
        "width": 640,
        "height": 480,
        "format": "JPEG",
        "model": "m",
        "model_version": version,
    }


def _store(folder: Path, index: int = 1, count: int = 4, fmt: Any = "parquet", version: str = "v1") -> ShardStore:
    return ShardStore(folder, index=index, count=count, fmt=fmt, model="m", version=version)


def _rows(*rows: dict[str, Any]) -> Rows:
    out = Rows()
    for row in rows:
        out.add(row)
    return out


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_a_shard_holds_every_column_and_reads_back_as_done(tmp_path: Path, fmt: str) -> None:
    store = _store(tmp_path, fmt=fmt)
    assert store.existing() == (set(), 0)
    name = store.next_name()
    assert name == shard_name(1, 4, 0, fmt) == f"results-t00001-of00004-00000.{fmt}"  # type: ignore[arg-type]
    store.commit(name, _rows(_row("a.jpg"), _row("b.txt", error="unsupported_image")))
    assert sorted(os.listdir(tmp_path)) == [name]  # no temporary file left
    if fmt == "parquet":
        table = pq.read_table(tmp_path / name)
        assert table.schema.equals(SCHEMA)
        records = table.to_pylist()
    else:
        records = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
    assert records[0]["labels"] == ["tabby", "tiger cat"]
    assert records[0]["probabilities"] == [0.75, 0.25]
    assert records[0]["error"] is None
    assert records[1]["labels"] is None
    assert records[1]["error"] == "unsupported_image"
    assert set(records[0]) == set(SCHEMA.names)
    again = _store(tmp_path, fmt=fmt)
    assert again.existing() == ({"a.jpg", "b.txt"}, 2)
    assert again.next_name().endswith("-00001." + fmt)  # a re-run continues the numbering


def test_the_output_folder_reads_as_one_table(tmp_path: Path) -> None:
    """Markers and temporary files start with _ and ., which Parquet readers skip."""
    store = _store(tmp_path)
    store.existing()
    store.commit(store.next_name(), _rows(_row("a.jpg")))
    store.commit(store.next_name(), _rows(_row("b.jpg"), _row("c.jpg")))
    store.finish({"assigned": 3, "model_version": "v1"})
    (tmp_path / ".results-t00002-of00004-00000.parquet.tmp").write_bytes(b"half a shard")
    assert sorted(pq.read_table(tmp_path).column("path").to_pylist()) == ["a.jpg", "b.jpg", "c.jpg"]
    marker = store.read_marker()
    assert marker is not None
    assert (marker["assigned"], marker["model_version"]) == (3, "v1")
    assert marker["finished"].endswith("+00:00")
    assert (tmp_path / marker_name(1, 4)).is_file()


def test_a_failed_write_leaves_neither_shard_nor_temporary_file(tmp_path: Path) -> None:
    def broken(file: Any) -> None:
        file.write(b"the first half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(tmp_path / "results-t00000-of00001-00000.parquet", broken)
    assert os.listdir(tmp_path) == []


def test_a_task_removes_only_its_own_leftovers_and_reads_only_shards_that_can_hold_its_images(tmp_path: Path) -> None:
    mine, sibling = _store(tmp_path, index=1), _store(tmp_path, index=2)
    mine.existing()
    sibling.existing()
    mine.commit(mine.next_name(), _rows(_row("mine.jpg")))
    sibling.commit(sibling.next_name(), _rows(_row("sibling.jpg")))
    earlier = _store(tmp_path, index=0, count=2)  # an earlier run split two ways: any of its shards may hold ours
    earlier.existing()
    earlier.commit(earlier.next_name(), _rows(_row("earlier.jpg")))
    own_leftover = tmp_path / ".results-t00001-of00004-00007.parquet.tmp"
    other_leftover = tmp_path / ".results-t00002-of00004-00001.parquet.tmp"  # task 2 may be writing it now
    for leftover in (own_leftover, other_leftover):
        leftover.write_bytes(b"killed mid-write")
    done, own = _store(tmp_path, index=1).existing()
    assert done == {"mine.jpg", "earlier.jpg"}
    assert own == 1
    assert not own_leftover.exists()
    assert other_leftover.exists()


def test_one_folder_holds_one_model_version(tmp_path: Path) -> None:
    old = _store(tmp_path, version="v1")
    old.existing()
    old.commit(old.next_name(), _rows(_row("a.jpg", version="v1")))
    with pytest.raises(OutputError, match=r"model version v1; this job runs m version v2\. Write to a new OUTPUT"):
        _store(tmp_path, version="v2").existing()


def test_a_shard_that_cannot_be_read_stops_the_task_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "results-t00001-of00004-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(OutputError, match="move it away and run again"):
        _store(tmp_path).existing()
