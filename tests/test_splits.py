"""Splits: leak-free grouped folds, predefined folds, validation carve-outs, straddling groups."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tympan.data.manifest import Clip, Manifest
from tympan.data.sources import discover, read_esc50
from tympan.data.splits import (
    describe_straddling,
    fold_names,
    make_splits,
    straddling_groups,
    validation_split,
)
from tympan.errors import DatasetError

ESC50 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "esc50"


def _manifest(labels: list[str], groups: list[str] | None = None,
              folds: list[int] | None = None) -> Manifest:
    clips = [Clip(Path(f"/data/{i}.wav"), label, folds[i] if folds else None,
                  groups[i] if groups else None) for i, label in enumerate(labels)]
    return Manifest(clips, name="toy")


@st.composite
def grouped_manifests(draw: st.DrawFn) -> tuple[Manifest, int, float]:
    n_folds = draw(st.integers(2, 4))
    n_classes = draw(st.integers(2, 4))
    labels, groups = [], []
    for c in range(n_classes):
        n_groups = draw(st.integers(n_folds, n_folds + 4))
        for g in range(n_groups):
            for _ in range(draw(st.integers(1, 3))):
                labels.append(f"class{c}")
                groups.append(f"c{c}g{g}")
    val_fraction = draw(st.sampled_from([0.0, 0.1, 0.25, 0.5]))
    return _manifest(labels, groups), n_folds, val_fraction


@settings(max_examples=40, deadline=None)
@given(grouped_manifests(), st.integers(0, 2**16))
def test_grouped_splits_never_put_a_group_on_two_sides(
    case: tuple[Manifest, int, float], seed: int
) -> None:
    manifest, n_folds, val_fraction = case
    groups = np.array(manifest.groups)
    splits = make_splits(manifest, n_folds, seed)
    assert len(splits) == n_folds
    tested = np.concatenate([test for _, test in splits])
    assert sorted(tested) == list(range(len(manifest)))  # every clip tested exactly once
    for k, (train, test) in enumerate(splits):
        assert not set(train) & set(test)
        assert set(train) | set(test) == set(range(len(manifest)))
        fit_idx, val_idx = validation_split(manifest, train, val_fraction, seed + k)
        assert sorted(np.concatenate([fit_idx, val_idx])) == sorted(train)
        sides = [set(groups[idx]) for idx in (fit_idx, val_idx, test)]
        assert not sides[0] & sides[1] and not sides[0] & sides[2] and not sides[1] & sides[2]
        if val_fraction == 0:
            assert len(val_idx) == 0


def test_predefined_folds_are_honoured() -> None:
    folds = [1, 2, 3, 1, 2, 3, 1, 2, 3, 3]
    manifest = _manifest(["a", "a", "a", "b", "b", "b", "a", "b", "a", "b"], folds=folds)
    splits = make_splits(manifest)
    assert fold_names(manifest, splits) == ["1", "2", "3"]
    for (train, test), fold in zip(splits, (1, 2, 3), strict=True):
        assert [i for i, f in enumerate(folds) if f == fold] == list(test)
        assert all(folds[i] != fold for i in train)
    with pytest.raises(DatasetError, match="defines 3 folds.*--folds 3"):
        make_splits(manifest, n_folds=5)


def test_csv_fold_column_drives_the_splits(tmp_path: Path, sound_classes_dir: Path) -> None:
    rows = ["path,label,fold"]
    for i, path in enumerate(sorted(sound_classes_dir.rglob("*.wav"))[::3]):
        rows.append(f"{path},{path.parent.name},{i % 2 + 1}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    manifest = discover(tmp_path / "data.csv")
    splits = make_splits(manifest, None)
    assert len(splits) == 2
    assert all({manifest[int(i)].fold for i in test} == {k + 1}
               for k, (_, test) in enumerate(splits))


def test_a_class_with_too_few_clips_is_named() -> None:
    manifest = _manifest(["dog"] * 6 + ["cat"] * 2 + ["owl"] * 3)
    with pytest.raises(DatasetError, match=r"'cat' \(2\), 'owl' \(3\)"):
        make_splits(manifest, 4)
    grouped = _manifest(["dog"] * 6 + ["cat"] * 6, groups=["d"] * 6 + [f"c{i}" for i in range(6)])
    with pytest.raises(DatasetError, match=r"'dog' \(1\)"):
        make_splits(grouped, 3)


def test_straddling_groups_are_found_and_described() -> None:
    manifest = _manifest(["a", "a", "b", "b", "a", "b"],
                         groups=["g1", "g1", "g2", "g3", "g4", "g3"], folds=[1, 2, 1, 2, 1, 1])
    assert straddling_groups(manifest) == {"g1": [1, 2], "g3": [1, 2]}
    line = describe_straddling(manifest)
    assert line is not None and "2 group(s)" in line and "g1 (folds 1, 2)" in line
    no_folds = _manifest(["a", "a"], groups=["g", "g"])
    assert straddling_groups(no_folds) == {} and describe_straddling(no_folds) is None


@pytest.mark.skipif(not (ESC50 / "meta" / "esc50.csv").is_file(), reason="needs ../shared ESC-50")
def test_real_esc50_metadata_has_four_straddling_sources() -> None:
    with open(ESC50 / "meta" / "esc50.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    folds: dict[str, set[str]] = {}
    for row in rows:
        folds.setdefault(row["src_file"], set()).add(row["fold"])
    expected = {src for src, f in folds.items() if len(f) > 1}
    manifest = read_esc50(ESC50)
    found = straddling_groups(manifest)
    assert len(found) == 4 and set(found) == expected
    assert all(len(f) == 2 for f in found.values())
    esc10 = read_esc50(ESC50, subset="esc10")
    assert len(esc10) == 400 and len(esc10.classes) == 10
    esc10_folds: dict[str, set[str]] = {}
    for row in rows:
        if row["esc10"] == "True":
            esc10_folds.setdefault(row["src_file"], set()).add(row["fold"])
    assert set(straddling_groups(esc10)) == {s for s, f in esc10_folds.items() if len(f) > 1}
    # the splits keep the predefined folds even so: every clip tested once, in its own fold
    splits = make_splits(manifest)
    assert fold_names(manifest, splits) == ["1", "2", "3", "4", "5"]
    assert sorted(np.concatenate([t for _, t in splits]).tolist()) == list(range(2000))


@pytest.mark.parametrize("n_folds", [None, 1, 2, 5])
def test_a_single_predefined_fold_says_what_works_instead(n_folds: int | None) -> None:
    manifest = _manifest(["a", "a", "b", "b"], folds=[1, 1, 1, 1])
    with pytest.raises(DatasetError) as caught:
        make_splits(manifest, n_folds)
    message = str(caught.value)
    assert "every clip is in fold 1" in message
    assert "--folds 1" not in message  # advice that then fails again
    assert "drop the fold column" in message and "--no-cv" in message
