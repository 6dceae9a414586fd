"""Manifest: classes, label ids, folds, groups, subsets, fingerprint, CSV round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tympan.data.manifest import BadFile, Clip, Manifest
from tympan.data.sources import read_csv


def _manifest() -> Manifest:
    clips = [Clip(Path(f"/d/{label}/{i}.wav"), label, fold=1 + i % 2, group=f"src{i // 2}")
             for i, label in enumerate(["dog", "rain", "cat", "dog"])]
    return Manifest(clips, name="toy", root=Path("/d"),
                    bad_files=[BadFile(Path("/d/x.wav"), "empty file (0 bytes)")])


def test_classes_sorted_and_label_ids_index_them():
    m = _manifest()
    assert m.classes == ["cat", "dog", "rain"]
    np.testing.assert_array_equal(m.label_ids(), [1, 2, 0, 1])
    np.testing.assert_array_equal(m.label_ids(["rain", "dog", "cat"]), [1, 0, 2, 1])
    assert m.class_counts() == {"dog": 2, "rain": 1, "cat": 1}


def test_folds_groups_and_subset():
    m = _manifest()
    assert m.has_folds and len(m) == 4
    assert m.groups == ["src0", "src0", "src1", "src1"]
    sub = m.subset(np.array([3, 0]))
    assert [c.label for c in sub] == ["dog", "dog"] and sub.bad_files == [] and sub.name == "toy"
    no_group = Manifest([Clip(Path("/a.wav"), "x")])
    assert no_group.groups == ["/a.wav"] and not no_group.has_folds


def test_fingerprint_names_the_data_not_the_order():
    m = _manifest()
    reordered = Manifest(list(reversed(m.clips)))
    assert m.fingerprint() == reordered.fingerprint()
    relabelled = Manifest([Clip(c.path, "other" if i == 0 else c.label, c.fold, c.group)
                           for i, c in enumerate(m.clips)])
    assert relabelled.fingerprint() != m.fingerprint()


def test_csv_round_trip(tmp_path):
    m = _manifest()
    path = tmp_path / "m.csv"
    m.save_csv(path)
    back = read_csv(path)
    assert [(c.path, c.label, c.fold, c.group) for c in back] == \
        [(c.path, c.label, c.fold, c.group) for c in m]
    assert str(BadFile(Path("/x.wav"), "corrupt")) == "/x.wav: corrupt"
