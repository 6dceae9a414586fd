"""A corpus run's output folder: Parquet shards written atomically, checked on rerun.

Layout of ``OUT``::

    corpus.json                  what the run is: kind, model sha256, labels, windows, shards
    windows/shard-00012.parquet  one row per window (predict: probabilities; embed: embedding)
    errors/shard-00012.parquet   one row per skipped file or failure: path, seconds, reason

Each shard file is written under a temporary name and renamed, errors first,
so a window shard under its final name is always complete, and it is what
marks the shard done. Its Parquet metadata (``tympan.corpus``) records the
run key's digest and a digest of the shard's path list: a rerun skips a shard
only when both match (an edited manifest recomputes just the shards it moved).
``pandas.read_parquet(OUT / "windows")`` reads every shard as one table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tympan.errors import ConfigError
from tympan.fileio import atomic_path, atomic_write_text

RUN_FILE = "corpus.json"
WINDOWS_DIR = "windows"
ERRORS_DIR = "errors"
#: Parquet key-value metadata key of each shard file.
SHARD_KEY = b"tympan.corpus"
#: Fixed columns of a predict row; a class named like one gets a ``class:`` prefix.
PREDICT_COLUMNS = ("path", "start_seconds", "end_seconds", "label", "score")


def digest(value: Any) -> str:
    """Hex sha256 of ``value`` as canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()


def paths_digest(paths: Sequence[Path | str]) -> str:
    """Hex sha256 of a shard's path list (names as given, in order)."""
    return digest([str(p) for p in paths])


def class_columns(labels: Sequence[str]) -> list[str]:
    """The per-class column names of a predict shard: the labels, prefixed ``class:`` where
    one would clash with a fixed column."""
    return [f"class:{name}" if name in PREDICT_COLUMNS else name for name in labels]


def window_schema(kind: str, labels: Sequence[str], width: int) -> pa.Schema:
    """The schema of a window shard: predict → path, start/end seconds, top label and score,
    one float32 column per class; embed → path, start/end seconds, ``embedding``
    (fixed-size list of ``width`` float32)."""
    fields = [pa.field("path", pa.string()), pa.field("start_seconds", pa.float64()),
              pa.field("end_seconds", pa.float64())]
    if kind == "embed":
        fields.append(pa.field("embedding", pa.list_(pa.float32(), width)))
    else:
        fields += [pa.field("label", pa.string()), pa.field("score", pa.float32())]
        fields += [pa.field(name, pa.float32()) for name in class_columns(labels)]
    return pa.schema(fields)


ERROR_SCHEMA = pa.schema([pa.field("path", pa.string()), pa.field("seconds", pa.float64()),
                          pa.field("reason", pa.string())])


@dataclass
class ShardRows:
    """One shard's rows, in manifest order then time: per window ``paths``, ``starts`` and
    ``ends`` (samples at ``sample_rate``), ``values`` ``(n, width)``; and error rows."""

    paths: list[str]
    starts: np.ndarray
    ends: np.ndarray
    values: np.ndarray
    errors: list[tuple[str, float | None, str]]
    n_files: int

    @property
    def failed_files(self) -> int:
        return len({path for path, _, _ in self.errors})


@dataclass(frozen=True)
class ShardInfo:
    """What a finished shard's metadata says: files, windows and files with an error row."""

    n_files: int
    n_windows: int
    n_failed: int


class CorpusOutput:
    """The output folder of one run, identified by ``key`` (kind, model, settings).

    Raises:
        ConfigError: ``out_dir`` holds a run made with another model or settings.
    """

    def __init__(self, out_dir: Path, key: dict[str, Any], labels: Sequence[str],
                 width: int) -> None:
        self.out_dir = Path(out_dir)
        self.key = key
        self.key_digest = digest(key)
        self.labels = list(labels)
        self.schema = window_schema(str(key["kind"]), labels, width)
        self._claim()

    def _claim(self) -> None:
        record = self.out_dir / RUN_FILE
        if record.is_file():
            try:
                stored = json.loads(record.read_text(encoding="utf-8")).get("key")
            except (OSError, ValueError, AttributeError):
                stored = None
            if stored != json.loads(json.dumps(self.key)):
                changed = sorted(k for k in self.key if not isinstance(stored, dict)
                                 or stored.get(k) != json.loads(json.dumps(self.key[k])))
                raise ConfigError(
                    f"{self.out_dir}: holds a corpus run made with another model or settings "
                    f"({', '.join(changed) or RUN_FILE}); choose another --output folder or "
                    "delete this one")
        else:
            atomic_write_text(record, json.dumps({"key": self.key}, indent=2) + "\n")
        for folder in (WINDOWS_DIR, ERRORS_DIR):  # temporaries a killed run left behind
            for stale in (self.out_dir / folder).glob(".shard-*.tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()

    def window_path(self, shard: int) -> Path:
        return self.out_dir / WINDOWS_DIR / f"shard-{shard:05d}.parquet"

    def error_path(self, shard: int) -> Path:
        return self.out_dir / ERRORS_DIR / f"shard-{shard:05d}.parquet"

    def finished(self, shard: int, paths: Sequence[Path | str]) -> ShardInfo | None:
        """The shard's counts when its files exist, are complete Parquet and were made by
        this run for exactly ``paths`` (else None: it must be written)."""
        meta = None
        for target in (self.error_path(shard), self.window_path(shard)):
            try:
                meta = pq.read_metadata(target)
                info = json.loads((meta.metadata or {})[SHARD_KEY])
            except (OSError, ValueError, KeyError, pa.ArrowException):
                return None
            if (info.get("key") != self.key_digest or info.get("paths") != paths_digest(paths)
                    or info.get("rows") != meta.num_rows):
                return None
        return ShardInfo(int(info["files"]), int(info["windows"]), int(info["failed"]))

    def _table(self, rows: ShardRows) -> pa.Table:
        rate = float(self.key["sample_rate"])
        columns: list[Any] = [pa.array(rows.paths, pa.string()),
                              pa.array(rows.starts / rate, pa.float64()),
                              pa.array(rows.ends / rate, pa.float64())]
        values = np.ascontiguousarray(rows.values, dtype=np.float32)
        if self.key["kind"] == "embed":
            width = self.schema.field("embedding").type.list_size
            flat = pa.array(values.reshape(-1), pa.float32())
            columns.append(pa.FixedSizeListArray.from_arrays(flat, width))
        else:
            top = values.argmax(axis=1) if len(values) else np.zeros(0, np.int64)
            columns.append(pa.array([self.labels[i] for i in top], pa.string()))
            columns.append(pa.array(values[np.arange(len(values)), top], pa.float32()))
            columns += [pa.array(values[:, i], pa.float32()) for i in range(values.shape[1])]
        return pa.Table.from_arrays(columns, schema=self.schema)

    def write(self, shard: int, paths: Sequence[Path | str], rows: ShardRows) -> ShardInfo:
        """Write the shard's error rows, then its window rows, each atomically."""
        info = ShardInfo(rows.n_files, len(rows.paths), rows.failed_files)
        common = {"key": self.key_digest, "paths": paths_digest(paths), "shard": shard,
                  "files": info.n_files, "windows": info.n_windows, "failed": info.n_failed}
        errors = pa.Table.from_arrays(
            [pa.array([e[0] for e in rows.errors], pa.string()),
             pa.array([e[1] for e in rows.errors], pa.float64()),
             pa.array([e[2] for e in rows.errors], pa.string())], schema=ERROR_SCHEMA)
        windows = self._table(rows)
        for table, target in ((errors, self.error_path(shard)),
                              (windows, self.window_path(shard))):
            meta = dict(common, rows=table.num_rows)
            if table is windows:
                meta["labels"] = self.labels
            table = table.replace_schema_metadata({SHARD_KEY: json.dumps(meta).encode()})
            with atomic_path(target) as tmp:
                pq.write_table(table, tmp)
        return info


__all__ = ["CorpusOutput", "ERROR_SCHEMA", "ShardInfo", "ShardRows", "class_columns",
           "digest", "paths_digest", "window_schema"]
