"""Cross-validation: leak-free splits, augmented copies in training only, resume, run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tympan import evaluate
from tympan.config import TrainConfig
from tympan.data.manifest import Clip, Manifest
from tympan.data.sources import discover
from tympan.demo import DEMO_FEATURES
from tympan.errors import DatasetError, TympanError
from tympan.evaluate import (
    PreparedData,
    augmented_variants,
    cross_validate,
    make_splits,
    prepare,
    validation_split,
)
from tympan.modelfile import load_model
from tympan.report import RunFolderError
from tympan.train import ClipSet, FitResult

# measured on the 48-clip set: 100 %, 100 %, 96 % CV accuracy for seeds 0, 1, 2 (~8 s)
FAST = TrainConfig(model="cnn-s", features=DEMO_FEATURES, epochs=12, batch_size=8, lr=1e-3,
                   folds=3, val_fraction=0.2, early_stopping_patience=0)


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
    assert evaluate.fold_names(manifest, splits) == ["1", "2", "3"]
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


def test_augmented_copies_follow_their_source_and_the_policy() -> None:
    manifest = _manifest(["dog", "dog", "cat"])
    copies = [Clip(Path(f"/aug/{i}.wav"), label, source=src, transform=tag)
              for i, (label, src, tag) in enumerate([
                  ("dog", Path("/data/0.wav"), "TS:1.07"), ("dog", Path("/data/0.wav"), "PS1:2"),
                  ("cat", Path("/data/2.wav"), "TS:0.81"),
                  ("cat", Path("/elsewhere.wav"), "TS:1.0"),
              ])]
    augmented = Manifest(copies, name="aug")
    specs = [np.full((2, 2), float(i)) for i in range(4)]
    every = augmented_variants(manifest, augmented, specs)
    assert [[float(s[0, 0]) for s in v] for v in every] == [[0.0, 1.0], [], [2.0]]
    policy = {"dog": ["PS1"]}
    chosen = augmented_variants(manifest, augmented, specs, policy)
    assert [[float(s[0, 0]) for s in v] for v in chosen] == [[1.0], [], []]


def test_augmented_copies_reach_training_clips_only(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = ["a"] * 6 + ["b"] * 6
    manifest = _manifest(labels)
    specs = [np.full((64, 40), float(i), np.float32) for i in range(12)]
    variants = [[np.full((64, 40), 100.0 + i, np.float32)] for i in range(12)]
    data = PreparedData(manifest, specs, DEMO_FEATURES, variants)
    seen: list[tuple[ClipSet, ClipSet | None]] = []

    def fake_fit(train: ClipSet, val: ClipSet | None, **kwargs: Any) -> FitResult:
        seen.append((train, val))
        from tympan import models

        return FitResult(models.create("cnn-s", 2, channels=[4], hidden=4).eval())

    monkeypatch.setattr(evaluate, "fit", fake_fit)
    result = cross_validate(data, FAST.replace(folds=3, val_fraction=0.25))
    assert len(result.folds) == 3
    for (train, val), fold in zip(seen, result.folds, strict=True):
        own = {float(s[0, 0]) for s in train.specs}
        assert train.variants is not None
        assert {float(v[0][0, 0]) - 100 for v in train.variants} == own  # copies of own clips
        assert val is not None and val.variants is None
        held_out = {float(s[0, 0]) for s in val.specs} | set(map(float, fold.clip_indices))
        assert not own & held_out


@pytest.fixture(scope="module")
def sounds(sound_classes_dir: Path) -> PreparedData:
    return prepare(discover(sound_classes_dir), DEMO_FEATURES, workers=1)


@pytest.mark.slow
def test_small_cnn_learns_the_synthetic_classes(sounds: PreparedData, tmp_path: Path) -> None:
    result = cross_validate(sounds, FAST, tmp_path)
    summary = result.summary()
    assert summary["accuracy_mean"] >= 0.9, summary
    assert [f.fold for f in result.folds] == ["1", "2", "3"]
    assert sorted(np.concatenate([f.clip_indices for f in result.folds])) == list(range(48))
    for fold in result.folds:
        assert np.allclose(fold.probabilities.sum(axis=1), 1, atol=1e-5)
        folder = tmp_path / "cv" / f"fold-{fold.fold}"
        assert (folder / "result.json").is_file() and (folder / "result.npz").is_file()
        assert not (folder / "checkpoints").exists()
    # a finished run is loaded, not retrained; a missing fold is redone alone
    (tmp_path / "cv" / "fold-2" / "result.json").unlink()
    calls: list[str] = []
    original = evaluate.fit

    def counting_fit(*args: Any, **kwargs: Any) -> FitResult:
        calls.append(str(kwargs["work_dir"]))
        return original(*args, **kwargs)

    evaluate.fit = counting_fit  # type: ignore[assignment]
    try:
        again = cross_validate(sounds, FAST, tmp_path)
    finally:
        evaluate.fit = original  # type: ignore[assignment]
    assert calls == [str(tmp_path / "cv" / "fold-2")]
    assert again.folds[0].probabilities.tolist() == result.folds[0].probabilities.tolist()
    with pytest.raises(TympanError, match="different train_config"):
        cross_validate(sounds, FAST.replace(lr=1e-2), tmp_path)


def test_only_folds_runs_the_named_folds(sounds: PreparedData) -> None:
    config = FAST.replace(epochs=1)
    result = cross_validate(sounds, config, only_folds=["2"])
    assert [f.fold for f in result.folds] == ["2"]
    with pytest.raises(DatasetError, match="unknown fold"):
        cross_validate(sounds, config, only_folds=["9"])


@pytest.mark.slow
def test_run_writes_a_complete_run_folder(sound_classes_dir: Path, tmp_path: Path) -> None:
    manifest = discover(sound_classes_dir)
    config = FAST.replace(epochs=3)
    outcome = evaluate.run(manifest, config, runs_dir=tmp_path, name="r1", final=True)
    folder = tmp_path / "r1"
    assert outcome.run_dir == folder
    for name in ("config.json", "metrics.json", "per_class.csv", "confusion.png", "curves.png",
                 "report.md", "skipped.csv", "model.safetensors"):
        assert (folder / name).is_file(), name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert len(metrics["folds"]) == 3
    loaded = load_model(folder / "model.safetensors")
    meta = loaded.metadata
    assert meta.labels == ["chirp", "click", "noise", "tone"]
    assert meta.model_name == "cnn-s" and meta.model_config["channels"] == [16, 32, 64, 128]
    assert meta.features == DEMO_FEATURES
    assert meta.metrics is not None and meta.metrics["accuracy_mean"] == metrics["accuracy_mean"]
    assert meta.dataset is not None and meta.dataset.n_files == 48
    assert TrainConfig.from_dict(meta.train_config) == config
    with pytest.raises(RunFolderError, match="already exists"):
        evaluate.run(manifest, config, runs_dir=tmp_path, name="r1")
    no_cv = evaluate.run(manifest, config.replace(folds=0), runs_dir=tmp_path, name="r1",
                         overwrite=True)
    assert no_cv.cv is None and no_cv.model_path is not None and no_cv.model_path.is_file()


class _CrashInFold(L.Callback):
    """Raise in ``fold`` at the end of ``epoch`` (after that epoch's checkpoint)."""

    def __init__(self, fold: str, epoch: int) -> None:
        self.fold, self.epoch = fold, epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if f"fold-{self.fold}" in str(trainer.default_root_dir) and \
                trainer.current_epoch == self.epoch:
            raise KeyError("simulated crash")


@pytest.mark.slow
def test_an_interrupted_run_resumes_without_redoing_finished_folds(
    sound_classes_dir: Path, tmp_path: Path
) -> None:
    manifest = discover(sound_classes_dir)
    config = FAST.replace(epochs=3)
    with pytest.raises(KeyError, match="simulated crash"):
        evaluate.run(manifest, config, runs_dir=tmp_path, name="r", callbacks=[
            _CrashInFold("2", 1)])
    work = tmp_path / ".r.partial"
    assert not (tmp_path / "r").exists()  # nothing half-written under the real name
    fold1 = work / "cv" / "fold-1" / "result.json"
    stamp = fold1.stat().st_mtime_ns
    assert (work / "cv" / "fold-2" / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(RunFolderError, match="--resume"):
        evaluate.run(manifest, config, runs_dir=tmp_path, name="r")
    outcome = evaluate.run(manifest, config, runs_dir=tmp_path, name="r", resume=True)
    assert outcome.cv is not None and [f.fold for f in outcome.cv.folds] == ["1", "2", "3"]
    assert fold1.exists() is False and (tmp_path / "r" / "cv" / "fold-1" / "result.json"
                                        ).stat().st_mtime_ns == stamp
    assert [h.epoch for h in outcome.cv.folds[1].history] == [0, 1, 2]
