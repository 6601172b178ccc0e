"""What a task classifies: the images under INPUT (a folder, or a file listing paths), and its share of them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class InputError(Exception):
    """INPUT cannot be listed: it names nothing, or a list names nothing readable."""


@dataclass(frozen=True)
class Item:
    """One image to classify. ``key`` is what the results record as its path (and what decides its task):
    relative to the INPUT folder, or the line of the list file as written. ``path`` is where to read it."""

    key: str
    path: Path


def _text(name: str) -> str:
    """A file name as text that any Parquet or JSON reader takes: bytes that are not UTF-8 (which ``os`` keeps
    as surrogates) become backslash escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _walk(root: Path, skip: Path | None) -> Iterator[Item]:
    """Every regular file under ``root`` in a stable order, skipping hidden names (``.*``) and ``skip``.

    Symbolic links to files are followed; links to folders are not (no cycles)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            ordered = sorted(entries, key=lambda entry: entry.name)
        subfolders = []
        for entry in ordered:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if skip is None or path.resolve() != skip:
                    subfolders.append(path)
            elif entry.is_file():
                yield Item(_text(path.relative_to(root).as_posix()), path)
        stack.extend(reversed(subfolders))


def _read_list(listing: Path) -> Iterator[Item]:
    """A file with one path per line (blank lines and ``#`` comments skipped); relative paths are relative to
    the list file's folder."""
    base = listing.parent
    with listing.open(encoding="utf-8", errors="surrogateescape") as lines:
        for line in lines:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            yield Item(_text(entry), base / entry)


def list_inputs(source: Path, *, skip: Path | None = None) -> list[Item]:
    """Every image of ``source`` (a folder or a list file), each key once, in a stable order."""
    if source.is_dir():
        items: Iterator[Item] = _walk(source, skip.resolve() if skip is not None else None)
    elif source.is_file():
        items = _read_list(source)
    else:
        raise InputError(f"INPUT {source} is neither a folder nor a file listing images (one path per line).")
    unique: dict[str, Item] = {}
    for item in items:
        unique.setdefault(item.key, item)
    return list(unique.values())


def task_of(key: str, count: int) -> int:
    """The task (0 .. count - 1) that classifies ``key``: a hash of the key alone, the same in every process,
    on every machine and in every run (Python's own ``hash`` of a string is salted per process)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count
