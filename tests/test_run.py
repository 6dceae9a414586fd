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
    with pytest.raises(RunFolderError, match="already exists"):
        run(manifest, config, runs_dir=tmp_path, name="r1")
    no_cv = run(manifest, config.replace(folds=0), runs_dir=tmp_path, name="r1",
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
