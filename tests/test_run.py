"""The run-folder workflow: run folder, final model, resume at any point, checks before work."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest

from tympan.config import TrainConfig
from tympan.data.sources import discover
from tympan.models.modelfile import load_model
from tympan.workflows.demo import DEMO_FEATURES
from tympan.workflows.run import run
from tympan.workflows.runfolder import RunFolderError

FAST = TrainConfig(model="cnn-s", features=DEMO_FEATURES, epochs=12, batch_size=8, lr=1e-3,
                   folds=3, val_fraction=0.2, early_stopping_patience=0)


@pytest.mark.slow
def test_run_writes_a_complete_run_folder(sound_classes_dir: Path, tmp_path: Path) -> None:
    manifest = discover(sound_classes_dir)
    config = FAST.replace(epochs=3)
    outcome = run(manifest, config, runs_dir=tmp_path, name="r1", final=True)
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
    assert TrainConfig.from_dict(meta.train_config) == config.replace(mode="finetune")
    thresholds = meta.extra["thresholds"]  # for `tympan detect`, from the held-out clips
    assert sorted(thresholds) == meta.labels and all(0 < t <= 1 for t in thresholds.values())
    with pytest.raises(RunFolderError, match="already exists"):
        run(manifest, config, runs_dir=tmp_path, name="r1")
    no_cv = run(manifest, config.replace(folds=0), runs_dir=tmp_path, name="r1",
                         overwrite=True)
    assert no_cv.cv is None and no_cv.model_path is not None and no_cv.model_path.is_file()
    assert "thresholds" not in load_model(no_cv.model_path).metadata.extra


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
        run(manifest, config, runs_dir=tmp_path, name="r", callbacks=[
            _CrashInFold("2", 1)])
    work = tmp_path / ".r.partial"
    assert not (tmp_path / "r").exists()  # nothing half-written under the real name
    fold1 = work / "cv" / "fold-1" / "result.json"
    stamp = fold1.stat().st_mtime_ns
    assert (work / "cv" / "fold-2" / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(RunFolderError, match="--resume"):
        run(manifest, config, runs_dir=tmp_path, name="r")
    outcome = run(manifest, config, runs_dir=tmp_path, name="r", resume=True)
    assert outcome.cv is not None and [f.fold for f in outcome.cv.folds] == ["1", "2", "3"]
    assert fold1.exists() is False and (tmp_path / "r" / "cv" / "fold-1" / "result.json"
                                        ).stat().st_mtime_ns == stamp
    assert [h.epoch for h in outcome.cv.folds[1].history] == [0, 1, 2]


# -- resume after SIGKILL, for every recipe ---------------------------------------------------

_KILLER = '''
import json, os, signal, sys
import lightning as L
from tympan.config import TrainConfig
from tympan.data.sources import discover
from tympan.workflows.recipes.frozen import FrozenRecipe
from tympan.workflows.run import run

import torch
torch.set_num_threads(1)
data, runs, config_json, where = sys.argv[1:5]
config = TrainConfig.from_json(config_json)


class KillIn(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if where in str(trainer.default_root_dir) and trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)


calls = []
real_fit = FrozenRecipe.fit


def fit_then_die(self, *args, **kwargs):
    calls.append(1)
    if where == f"frozen-fit-{len(calls)}":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_fit(self, *args, **kwargs)


FrozenRecipe.fit = fit_then_die
run(discover(data), config, runs_dir=runs, name="r", final=True, callbacks=[KillIn()])
'''


def _weights_of(path: Path) -> dict[str, object]:
    from safetensors.numpy import load_file

    return load_file(str(path))


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "where"), [("finetune", "fold-2"), ("finetune", "final"),
                                             ("frozen", "frozen-fit-3")])
def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_result(
    mode: str, where: str, sound_classes_dir: Path, tmp_path: Path, mn04_weights: Path
) -> None:
    import subprocess
    import sys

    import numpy as np

    if mode == "finetune":
        config = FAST.replace(epochs=3)
    else:
        config = TrainConfig(mode="frozen", folds=3, model_kwargs={"weights": str(mn04_weights)})
    killed = subprocess.run([sys.executable, "-c", _KILLER, str(sound_classes_dir),
                             str(tmp_path / "killed"), config.to_json(), where],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL, mid-run
    assert (tmp_path / "killed" / ".r.partial").is_dir()
    assert not (tmp_path / "killed" / "r").exists()
    manifest = discover(sound_classes_dir)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the killed process: the same float summation order
    try:
        resumed = run(manifest, config, runs_dir=tmp_path / "killed", name="r", final=True,
                      resume=True)
        straight = run(manifest, config, runs_dir=tmp_path / "straight", name="r", final=True)
    finally:
        torch.set_num_threads(threads)
    assert resumed.cv is not None and straight.cv is not None
    for a, b in zip(resumed.cv.folds, straight.cv.folds, strict=True):
        assert a.fold == b.fold
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
    assert resumed.model_path is not None and straight.model_path is not None
    got, want = _weights_of(resumed.model_path), _weights_of(straight.model_path)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-6, err_msg=key)


def test_resume_refuses_another_recipe_or_other_data(sound_classes_dir: Path,
                                                      tmp_path: Path) -> None:
    from tympan.errors import TympanError

    manifest = discover(sound_classes_dir)
    config = FAST.replace(epochs=1, folds=0)

    class Stop(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            raise KeyError("stop")

    with pytest.raises(KeyError):
        run(manifest, config, runs_dir=tmp_path, name="n", callbacks=[Stop()])
    with pytest.raises(TympanError, match=r"different train_config \(lr\)"):
        run(manifest, config.replace(lr=0.1), runs_dir=tmp_path, name="n", resume=True)
    with pytest.raises(TympanError, match="different manifest"):
        run(manifest.subset(list(range(40))), config, runs_dir=tmp_path, name="n",
            resume=True)
    outcome = run(manifest, config, runs_dir=tmp_path, name="n", resume=True)
    assert outcome.model_path is not None and outcome.model_path.is_file()


def test_checks_fail_before_work_and_leave_no_unfinished_run(sound_classes_dir: Path,
                                                             tmp_path: Path) -> None:
    from tympan.errors import ConfigError, DatasetError

    manifest = discover(sound_classes_dir)
    with pytest.raises(ConfigError, match="--augment-policy.*--augmented"):
        run(manifest, FAST.replace(augment_policy={"tone": ["TS"]}), runs_dir=tmp_path,
            name="p")
    with pytest.raises(ConfigError, match="frozen recipe does not use epochs"):
        run(manifest, TrainConfig(mode="frozen", epochs=3), runs_dir=tmp_path, name="p")
    with pytest.raises(DatasetError, match="at least 20 clips"):
        run(manifest, FAST.replace(folds=20), runs_dir=tmp_path, name="p")
    assert not list(tmp_path.iterdir())  # no .p.partial blocks the name afterwards


def test_policy_naming_an_unknown_class_is_refused(sound_classes_dir: Path,
                                                   tmp_path: Path) -> None:
    from tympan.augment.offline import load_augmented_manifest, make_copies
    from tympan.augment.plan import build_variants
    from tympan.errors import ConfigError

    manifest = discover(sound_classes_dir)
    make_copies(manifest, tmp_path / "aug", build_variants([1.1]), workers=1, limit=2)
    copies = load_augmented_manifest(tmp_path / "aug")
    with pytest.raises(ConfigError, match="names class.*dragon"):
        run(manifest, FAST.replace(augment_policy={"dragon": ["TS"]}), runs_dir=tmp_path,
            name="p", augmented=copies)


def test_strict_refuses_groups_that_straddle_folds(tmp_path: Path,
                                                   sound_classes_dir: Path) -> None:
    from tympan.errors import DatasetError

    wavs = sorted(sound_classes_dir.rglob("*.wav"))
    rows = ["path,label,fold,group"]
    for i, path in enumerate(wavs):
        group = "shared" if i in (0, 1) else f"g{i}"  # clips 0 and 1: one source, two folds
        rows.append(f"{path},{path.parent.name},{i % 3 + 1},{group}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    manifest = discover(tmp_path / "data.csv")
    with pytest.raises(DatasetError, match="shared \\(folds 1, 2\\).*--strict"):
        run(manifest, FAST.replace(epochs=1), runs_dir=tmp_path / "runs", name="s",
            strict=True)
    outcome = run(manifest, FAST.replace(epochs=1), runs_dir=tmp_path / "runs", name="s")
    report = (outcome.run_dir / "report.md").read_text()
    assert "Leakage warning" in report and "shared (folds 1, 2)" in report
    metrics = json.loads((outcome.run_dir / "metrics.json").read_text())
    assert metrics["leakage"] == {"shared": [1, 2]}


def test_policy_asking_for_sets_the_copies_lack_is_refused(sound_classes_dir: Path,
                                                           tmp_path: Path) -> None:
    from tympan.augment.offline import load_augmented_manifest, make_copies
    from tympan.augment.presets import set_variants, tag_set
    from tympan.errors import ConfigError

    manifest = discover(sound_classes_dir)
    make_copies(manifest, tmp_path / "aug", set_variants("PS1")[:1], workers=1, limit=2)
    copies = load_augmented_manifest(tmp_path / "aug")
    assert {tag_set(c.transform) for c in copies} == {"PS1"}
    policy = {"tone": ["PS1"], "noise": ["TS", "PS1"], "click": ["none"]}
    with pytest.raises(ConfigError, match=r"TS \(for noise\).*holds copies of PS1 only"):
        run(manifest, FAST.replace(augment_policy=policy), runs_dir=tmp_path, name="p",
            augmented=copies)
    assert not (tmp_path / "p").exists() and not (tmp_path / ".p.partial").exists()


def test_files_that_fail_the_full_decode_are_named_in_a_warning(sound_classes_dir: Path,
                                                                tmp_path: Path) -> None:
    import shutil

    import synth

    from tympan.errors import SkippedFilesWarning

    data = tmp_path / "data"
    shutil.copytree(sound_classes_dir, data)
    nan_file = synth.write_nan_wav(data / "tone" / "nan.wav", 16000, 0.75)
    with pytest.warns(SkippedFilesWarning, match=r"1 file\(s\) that failed to decode.*nan\.wav"):
        outcome = run(discover(data), FAST.replace(folds=0, epochs=1), runs_dir=tmp_path,
                      name="n")
    assert str(nan_file) in (outcome.run_dir / "skipped.csv").read_text()
