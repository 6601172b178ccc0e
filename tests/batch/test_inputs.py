"""What a task reads: INPUT listed (a folder or a list file) and split between tasks by a stable hash."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.batch import InputError, list_inputs, task_of


def test_the_split_is_the_same_in_every_process() -> None:
    """Python's hash() of a string changes from process to process; the split must not."""
    keys = [f"folder/{i}.jpg" for i in range(50)]
    here = [task_of(key, 7) for key in keys]
    script = f"from backend.batch import task_of; print([task_of(k, 7) for k in {keys!r}])"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == str(here)
    # fixed values: a change of hash would re-split every existing output folder
    assert [task_of(k, 4) for k in ("cat.jpg", "a/b.png", "x")] == [2, 0, 3]


def test_every_key_goes_to_exactly_one_task_and_the_tasks_share_evenly() -> None:
    keys = [f"images/{i:05d}.jpg" for i in range(8000)]
    counts = collections.Counter(task_of(key, 4) for key in keys)
    assert set(counts) == {0, 1, 2, 3}
    assert all(1800 <= n <= 2200 for n in counts.values()), counts
    assert all(task_of(key, 1) == 0 for key in keys[:100])


def test_a_folder_is_listed_recursively_in_a_stable_order_without_hidden_files_or_the_output(tmp_path: Path) -> None:
    source = tmp_path / "in"
    for name in ("b.jpg", "a.jpg", "sub/c.png", "sub/deeper/d.gif", ".hidden.jpg", ".cache/e.jpg", "out/f.jpg"):
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (source / "link.jpg").symlink_to(source / "a.jpg")
    (source / "loop").symlink_to(source, target_is_directory=True)  # not followed: no cycle
    items = list_inputs(source, skip=source / "out")
    assert [item.key for item in items] == ["a.jpg", "b.jpg", "link.jpg", "sub/c.png", "sub/deeper/d.gif"]
    assert all(item.path == source / item.key for item in items)
    assert "out/f.jpg" in [item.key for item in list_inputs(source)]


def test_a_list_file_names_paths_relative_to_itself_once_each(tmp_path: Path) -> None:
    listing = tmp_path / "lists" / "images.txt"
    listing.parent.mkdir()
    listing.write_text("# a comment\n\nphotos/a.jpg\n  /abs/b.jpg  \nphotos/a.jpg\n../c.jpg\n")
    items = list_inputs(listing)
    assert [item.key for item in items] == ["photos/a.jpg", "/abs/b.jpg", "../c.jpg"]
    assert items[0].path == listing.parent / "photos/a.jpg"
    assert items[1].path == Path("/abs/b.jpg")


def test_file_names_that_are_not_utf8_are_kept_readable(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1, as an old camera or archive may write it
    (tmp_path / name).write_bytes(b"x")
    (item,) = list_inputs(tmp_path)
    assert item.key == "caf\\xe9.jpg"
    assert item.key.encode("utf-8")  # what Parquet and JSON need
    assert item.path.read_bytes() == b"x"


def test_an_input_that_is_neither_folder_nor_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="neither a folder nor a file"):
        list_inputs(tmp_path / "missing")
