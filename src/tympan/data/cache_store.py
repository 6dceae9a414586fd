"""The feature cache's on-disk store: content hashes, float32 shards and their index.

One :class:`FeatureStore` per extractor id (``<root>/<hash of the id>/``):
``index.json`` maps a file's content sha256 to (shard, offset, shape), shards
are flat float32 ``.npy`` files written under a temporary name and renamed,
and the index is replaced atomically. :class:`HashCache` keeps each file's
sha256 keyed by (size, mtime) so unchanged files are not rehashed.
:class:`tympan.data.cache.FeatureCache` decides what to compute; this module
only stores it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tympan.fileio import atomic_path, atomic_write_text, sha256_file

INDEX_VERSION = 1


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX), so two runs never interleave index updates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; atomic renames still keep files whole
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class HashCache:
    """sha256 of file contents, remembered by (resolved path, size, mtime_ns)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.table: dict[str, list[Any]] = {}
        self.dirty = False
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict):
                self.table = loaded

    def sha256(self, file: Path) -> str:
        """Content hash of ``file``; raises OSError if it cannot be read."""
        stat = file.stat()
        key = str(file.resolve())
        known = self.table.get(key)
        if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return str(known[2])
        digest = sha256_file(file)
        self.table[key] = [stat.st_size, stat.st_mtime_ns, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        with locked(self.path.with_suffix(".lock")):
            merged: dict[str, list[Any]] = {}
            with contextlib.suppress(OSError, ValueError):
                merged = json.loads(self.path.read_text())
            merged.update(self.table)
            atomic_write_text(self.path, json.dumps(merged))
        self.dirty = False


@dataclass(frozen=True, slots=True)
class StoreEntry:
    shard: str
    offset: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class FeatureStore:
    """One extractor's entries: shards of float32 plus a JSON index (see module doc)."""

    def __init__(self, root: Path, extractor_id: str) -> None:
        key = hashlib.sha256(extractor_id.encode()).hexdigest()[:20]
        self.dir = root / key
        self.shards = self.dir / "shards"
        self.index_path = self.dir / "index.json"
        self.lock_path = self.dir / "lock"
        self.extractor_id = extractor_id
        self.shards.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            atomic_write_text(meta, json.dumps({"extractor_id": extractor_id}, indent=2) + "\n")

    def read_index(self) -> tuple[dict[str, StoreEntry], dict[str, str]]:
        """(entries, bad) as on disk; a missing or unreadable index is an empty cache."""
        try:
            data = json.loads(self.index_path.read_text())
        except (OSError, ValueError):
            return {}, {}
        if data.get("version") != INDEX_VERSION:
            return {}, {}
        names: dict[str, str] = {}  # one string per shard name, not one per entry
        entries = {h: StoreEntry(names.setdefault(e[0], e[0]), int(e[1]),
                                 tuple(int(s) for s in e[2]))
                   for h, e in data.get("entries", {}).items()}
        present = {name for name in names if (self.shards / name).is_file()}
        live = {h: e for h, e in entries.items() if e.shard in present}
        return live, dict(data.get("bad", {}))

    def _write_index(self, entries: dict[str, StoreEntry], bad: dict[str, str]) -> None:
        data = {
            "version": INDEX_VERSION,
            "extractor_id": self.extractor_id,
            "entries": {h: [e.shard, e.offset, list(e.shape)] for h, e in entries.items()},
            "bad": bad,
        }
        atomic_write_text(self.index_path, json.dumps(data))

    def _write_shard(self, arrays: Sequence[np.ndarray]) -> tuple[str, list[int]]:
        name = f"{uuid.uuid4().hex}.npy"
        offsets = np.cumsum([0] + [a.size for a in arrays[:-1]]).tolist()
        flat = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays])
        with atomic_path(self.shards / name) as tmp, open(tmp, "wb") as handle:
            np.save(handle, flat)
        return name, [int(o) for o in offsets]

    def add(self, items: dict[str, np.ndarray], bad: dict[str, str]) -> None:
        """Persist computed arrays (content hash → array) and bad-file reasons, atomically."""
        written: dict[str, StoreEntry] = {}
        if items:
            hashes = list(items)
            name, offsets = self._write_shard([items[h] for h in hashes])
            written = {h: StoreEntry(name, off, tuple(items[h].shape))
                       for h, off in zip(hashes, offsets, strict=True)}
        with locked(self.lock_path):
            entries, known_bad = self.read_index()
            entries.update(written)
            known_bad.update(bad)
            self._write_index(entries, known_bad)

    def _copy_to_shard(self, entries: Sequence[StoreEntry]) -> tuple[str, list[int]]:
        """One new shard holding ``entries`` back to back, copied one at a time (memory
        stays that of one entry however many there are)."""
        name = f"{uuid.uuid4().hex}.npy"
        sizes = [e.size for e in entries]
        offsets = np.cumsum([0] + sizes[:-1]).tolist()
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                  "fortran_order": False, "shape": (int(sum(sizes)),)}
        with ShardReader(self.shards) as reader, atomic_path(self.shards / name) as tmp, \
                open(tmp, "wb") as handle:
            np.lib.format.write_array_header_2_0(handle, header)
            for entry in entries:
                handle.write(reader.read(entry).tobytes())
        return name, [int(o) for o in offsets]

    def compact(self, hashes: Sequence[str]) -> None:
        """Rewrite ``hashes``' entries into one contiguous shard if they span several."""
        with locked(self.lock_path):
            entries, bad = self.read_index()
            needed = [h for h in dict.fromkeys(hashes) if h in entries]
            if len({entries[h].shard for h in needed}) > 1:
                name, offsets = self._copy_to_shard([entries[h] for h in needed])
                for h, off in zip(needed, offsets, strict=True):
                    entries[h] = StoreEntry(name, off, entries[h].shape)
                self._write_index(entries, bad)
            referenced = {e.shard for e in entries.values()}
            for shard in self.shards.iterdir():
                # unreferenced shards and temp files are leftovers of compaction or of
                # killed runs; a young one may be a concurrent run's, about to be indexed
                if shard.name not in referenced and not is_young(shard):
                    shard.unlink(missing_ok=True)


def is_young(path: Path, seconds: float = 600.0) -> bool:
    """Written in the last ``seconds``: may belong to a concurrent run, so keep it."""
    with contextlib.suppress(OSError):
        return time.time() - path.stat().st_mtime < seconds
    return False


def load_entry(shards: Path, entry: StoreEntry) -> np.ndarray:
    """One entry's array (read-only float32 of ``entry.shape``), read from its shard."""
    with ShardReader(shards, [entry.shard]) as reader:
        return reader.read(entry)


class ShardReader:
    """Reads entries from shards by position (``pread``), not through memory maps.

    A mapped shard's pages count as the process's resident memory once touched,
    so reading every clip of an epoch through maps grows RSS to the size of the
    cache; positioned reads go through the page cache and keep RSS to the
    arrays in use. Shards are opened when named in ``names`` (so a shard
    deleted later stays readable) or on first read. Safe to share with forked
    DataLoader workers (no shared file offset); picklable (reopens by name).
    """

    def __init__(self, shards: Path, names: Iterable[str] = ()) -> None:
        self.shards = Path(shards)
        self._open: dict[str, tuple[Any, int, np.dtype[Any]]] = {}
        self._lock = threading.Lock()  # for the seek+read fallback without os.pread
        for name in names:
            self._handle(name)

    def _handle(self, name: str) -> tuple[Any, int, np.dtype[Any]]:
        known = self._open.get(name)
        if known is None:
            handle = open(self.shards / name, "rb")  # noqa: SIM115 (kept open: closed in close())
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            _, _, dtype = read_header(handle)
            known = self._open[name] = (handle, handle.tell(), np.dtype(dtype))
        return known

    def read(self, entry: StoreEntry) -> np.ndarray:
        """``entry``'s array, read-only, of ``entry.shape``.

        Raises:
            OSError: the shard is missing or shorter than the index says.
        """
        handle, start, dtype = self._handle(entry.shard)
        n_bytes = entry.size * dtype.itemsize
        position = start + entry.offset * dtype.itemsize
        if hasattr(os, "pread"):
            data = os.pread(handle.fileno(), n_bytes, position)
        else:  # pragma: no cover (Windows)
            with self._lock:
                handle.seek(position)
                data = handle.read(n_bytes)
        if len(data) != n_bytes:
            raise OSError(f"{self.shards / entry.shard}: truncated shard (wanted {n_bytes} "
                          f"bytes at {position}, got {len(data)})")
        return np.frombuffer(data, dtype=dtype).astype(np.float32, copy=False).reshape(
            entry.shape)

    def close(self) -> None:
        for handle, _, _ in self._open.values():
            handle.close()
        self._open.clear()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"shards": self.shards, "names": list(self._open)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["shards"], state["names"])  # type: ignore[misc]


__all__ = ["FeatureStore", "HashCache", "INDEX_VERSION", "ShardReader", "StoreEntry", "is_young",
           "load_entry", "locked"]
