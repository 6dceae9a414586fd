"""Corpus manifests, read as a stream: a folder tree, a CSV with a ``path`` column, or a
text file of paths (one a line).

Paths in a CSV or text file are relative to that file's folder. Nothing is
checked here: a missing or unreadable path becomes an error row when it is
planned, so one bad line never stops a run. Order is deterministic (folders
are walked in sorted order), which is what makes shard numbers stable across
reruns.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from tympan.audio import AUDIO_EXTENSIONS
from tympan.errors import DatasetError

#: Text-file manifests: these suffixes (any other file that is not a CSV is read as text).
TEXT_SUFFIXES = frozenset({".txt", ".lst", ".list"})


def manifest_kind(source: Path) -> str:
    """``"folder"``, ``"csv"`` or ``"text"`` for a manifest path.

    Raises:
        DatasetError: the path does not exist.
    """
    if source.is_dir():
        return "folder"
    if not source.is_file():
        raise DatasetError(f"{source}: no such manifest (give a folder, a CSV with a 'path' "
                           "column, or a text file with one path a line)")
    return "csv" if source.suffix.lower() == ".csv" else "text"


def _walk(root: Path) -> Iterator[Path]:
    """Audio files under ``root`` in sorted order, skipping hidden files and folders."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                yield Path(folder) / name


def _csv_paths(source: Path) -> Iterator[Path]:
    base = source.parent
    with open(source, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "path" not in fields:
            raise DatasetError(f"{source}: no 'path' column (columns: {', '.join(fields)}); "
                               "add a header row with a 'path' column")
        column = (reader.fieldnames or [])[fields.index("path")]
        for row in reader:
            value = (row.get(column) or "").strip()
            if value:
                yield base / value


def _text_paths(source: Path) -> Iterator[Path]:
    base = source.parent
    with open(source, encoding="utf-8-sig") as handle:
        for line in handle:
            value = line.strip()
            if value and not value.startswith("#"):
                yield base / value


def iter_manifest(source: str | Path) -> Iterator[Path]:
    """Every path the manifest names, in order, one at a time.

    Raises:
        DatasetError: the manifest does not exist, or a CSV has no ``path`` column.
    """
    source = Path(source)
    kind = manifest_kind(source)
    if kind == "folder":
        return _walk(source)
    return _csv_paths(source) if kind == "csv" else _text_paths(source)


def iter_shards(paths: Iterator[Path], shard_files: int) -> Iterator[tuple[int, list[Path]]]:
    """``(shard index, its paths)``: shard ``k`` holds paths ``[k*n, (k+1)*n)`` in order; only
    one shard's paths are held at a time."""
    if shard_files <= 0:
        raise ValueError(f"shard_files must be positive, got {shard_files}")
    for index in range(1 << 62):
        chunk = list(islice(paths, shard_files))
        if not chunk:
            return
        yield index, chunk


__all__ = ["iter_manifest", "iter_shards", "manifest_kind"]
