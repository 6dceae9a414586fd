"""Shard files: atomic Parquet, checked against the run and the shard's paths on rerun."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tympan.corpus.shards import CorpusOutput, ShardRows, class_columns
from tympan.errors import ConfigError

LABELS = ["dog", "label", "rain"]


def _key(**changes: object) -> dict[str, object]:
    key: dict[str, object] = {"kind": "predict", "model_sha256": "abc", "labels": LABELS,
                              "sample_rate": 16000, "window_samples": 8000,
                              "hop_samples": 4000}
    key.update(changes)
    return key


def _rows() -> ShardRows:
    values = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], np.float32)
    return ShardRows(["a.wav", "a.wav"], np.array([0, 4000]), np.array([8000, 12000]), values,
                     [("bad.wav", None, "empty file (0 bytes)")], n_files=2)


def test_rows_columns_and_metadata(tmp_path: Path) -> None:
    output = CorpusOutput(tmp_path, _key(), LABELS, len(LABELS))
    info = output.write(3, ["a.wav", "bad.wav"], _rows())
    assert (info.n_files, info.n_windows, info.n_failed) == (2, 2, 1)
    table = pq.read_table(output.window_path(3)).to_pydict()
    assert table["start_seconds"] == [0.0, 0.25] and table["end_seconds"] == [0.5, 0.75]
    assert table["label"] == ["rain", "dog"]
    assert table["score"] == pytest.approx([0.7, 0.6])
    assert table["class:label"] == pytest.approx([0.2, 0.3])  # clashes with a fixed column
    assert class_columns(LABELS) == ["dog", "class:label", "rain"]
    errors = pq.read_table(output.error_path(3)).to_pylist()
    assert errors == [{"path": "bad.wav", "seconds": None, "reason": "empty file (0 bytes)"}]
    meta = json.loads(pq.read_schema(output.window_path(3)).metadata[b"tympan.corpus"])
    assert meta["labels"] == LABELS


def test_finished_only_for_the_same_paths_and_complete_files(tmp_path: Path) -> None:
    output = CorpusOutput(tmp_path, _key(), LABELS, len(LABELS))
    paths = ["a.wav", "bad.wav"]
    assert output.finished(0, paths) is None
    output.write(0, paths, _rows())
    assert output.finished(0, paths) is not None
    assert output.finished(0, ["a.wav", "other.wav"]) is None  # the manifest moved
    data = output.window_path(0).read_bytes()
    output.window_path(0).write_bytes(data[: len(data) // 2])  # half-written by another tool
    assert output.finished(0, paths) is None
    output.write(0, paths, _rows())
    output.error_path(0).unlink()
    assert output.finished(0, paths) is None


def test_another_model_or_setting_is_refused(tmp_path: Path) -> None:
    CorpusOutput(tmp_path, _key(), LABELS, len(LABELS))
    CorpusOutput(tmp_path, _key(), LABELS, len(LABELS))  # the same run: fine
    with pytest.raises(ConfigError, match="model_sha256"):
        CorpusOutput(tmp_path, _key(model_sha256="def"), LABELS, len(LABELS))
    with pytest.raises(ConfigError, match="hop_samples"):
        CorpusOutput(tmp_path, _key(hop_samples=2000), LABELS, len(LABELS))


def test_embedding_rows_are_fixed_size_lists(tmp_path: Path) -> None:
    output = CorpusOutput(tmp_path, _key(kind="embed"), LABELS, 4)
    rows = ShardRows(["a.wav"], np.array([0]), np.array([8000]),
                     np.arange(4, dtype=np.float32)[None], [], 1)
    output.write(0, ["a.wav"], rows)
    table = pq.read_table(output.window_path(0))
    assert table.schema.field("embedding").type.list_size == 4
    assert table.column("embedding").to_pylist() == [[0.0, 1.0, 2.0, 3.0]]


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / "windows").mkdir()
    stale = tmp_path / "windows" / ".shard-00001.parquet.x1y2.tmp"
    stale.write_bytes(b"PAR1 half")
    CorpusOutput(tmp_path, _key(), LABELS, len(LABELS))
    assert not stale.exists()
