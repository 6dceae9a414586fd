"""`tympan train` and `tympan demo` end to end (typer's runner, CPU, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tympan.cli import app
from tympan.config import TrainConfig
from tympan.errors import DatasetError
from tympan.models import UnknownModelError
from tympan.workflows.demo import DEMO_FEATURES
from tympan.workflows.runfolder import RunFolderError

runner = CliRunner()


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.json"
    TrainConfig(model="cnn-s", features=DEMO_FEATURES, batch_size=8, lr=1e-3).save(path)
    return path


@pytest.mark.slow
def test_train_cross_validates_saves_and_predicts(
    sound_classes_dir: Path, tmp_path: Path, recipe: Path
) -> None:
    runs = tmp_path / "runs"
    args = ["train", str(sound_classes_dir), "--config", str(recipe), "--folds", "3",
            "--epochs", "2", "--name", "cli", "--runs-dir", str(runs), "--final",
            "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mean ± std" in result.output and "report.md" in result.output
    folder = runs / "cli"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [f["fold"] for f in metrics["folds"]] == ["1", "2", "3"]
    config = json.loads((folder / "config.json").read_text())
    assert config["train"]["epochs"] == 2 and config["train"]["folds"] == 3
    model = folder / "model.safetensors"
    predicted = runner.invoke(app, ["predict", str(model), str(sound_classes_dir / "tone"),
                                    "--json"])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.output)
    again = runner.invoke(app, args)
    assert isinstance(again.exception, RunFolderError)
    assert "already exists" in str(again.exception)


def test_train_without_cv_just_trains(sound_classes_dir: Path, tmp_path: Path,
                                      recipe: Path) -> None:
    result = runner.invoke(app, ["train", str(sound_classes_dir), "--config", str(recipe),
                                 "--no-cv", "--epochs", "1", "--name", "quick", "--runs-dir",
                                 str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "quick" / "model.safetensors").is_file()
    assert not (tmp_path / "quick" / "cv").exists()


def test_train_reports_bad_arguments(sound_classes_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(sound_classes_dir), "--model", "nope",
                                 "--runs-dir", str(tmp_path)])
    assert isinstance(result.exception, UnknownModelError)
    result = runner.invoke(app, ["train", str(sound_classes_dir), "--folds", "20",
                                 "--runs-dir", str(tmp_path), "--no-progress"])
    assert isinstance(result.exception, DatasetError)
    assert "per class" in str(result.exception)
    result = runner.invoke(app, ["train", str(sound_classes_dir), "--epochs", "0"])
    assert result.exit_code == 2 and "epochs must be at least 1" in result.output
    result = runner.invoke(app, ["train", str(sound_classes_dir), "--resume"])
    assert result.exit_code == 2 and "--name" in result.output


@pytest.mark.slow
def test_demo_runs_the_main_job(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--runs-dir", str(tmp_path), "--name", "d",
                                 "--clips-per-class", "8", "--epochs", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output
    for name in ("report.md", "metrics.json", "confusion.png", "model.safetensors"):
        assert (tmp_path / "d" / name).is_file()
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert metrics["n_clips"] == 32 and len(metrics["folds"]) == 4


def test_train_with_augmented_copies_and_a_policy(
    sound_classes_dir: Path, tmp_path: Path, recipe: Path
) -> None:
    import shutil

    # offline copies as `tympan augment` records them: path, label, fold, group, source, transform
    aug = tmp_path / "aug"
    rows = ["path,label,fold,group,source,transform"]
    for source in sorted(sound_classes_dir.rglob("*-00[0-2].wav")):
        for tag in ("TS:1.07", "PS1:2"):
            name = f"{source.parent.name}/{source.stem}.{tag.replace(':', '_')}.wav"
            (aug / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, aug / name)
            rows.append(f"{name},{source.parent.name},,,{source.resolve()},{tag}")
    (aug / "manifest.csv").write_text("\n".join(rows) + "\n")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"policy": {"tone": ["TS"], "click": ["TS", "PS1"]}}))
    result = runner.invoke(app, ["train", str(sound_classes_dir), "--config", str(recipe),
                                 "--folds", "3", "--epochs", "1", "--name", "aug",
                                 "--runs-dir", str(tmp_path / "runs"), "--augmented", str(aug),
                                 "--augment-policy", str(policy), "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "runs" / "aug" / "metrics.json").read_text())
    assert metrics["extra"]["augmented_copies"] == 3 + 3 * 2  # tone: TS only; click: both
    config = json.loads((tmp_path / "runs" / "aug" / "config.json").read_text())
    assert config["train"]["augment_policy"] == {"tone": ["TS"], "click": ["TS", "PS1"]}


def test_train_reports_a_broken_csv_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import synth

    from tympan.cli import main

    for name in ("x", "y"):
        synth.write(tmp_path / "audio" / f"{name}.wav", synth.tone(300, 0.2, 8000), 8000)
    table = tmp_path / "labels.csv"
    table.write_text("path,label,fold\naudio/x.wav,a,1\naudio/y.wav,b,\n")
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(table), "--runs-dir", str(runs), "--no-progress"])
    assert isinstance(result.exception, DatasetError)
    assert "fold is blank on line(s) 3" in str(result.exception)
    table.write_text("path,label\naudio/x.wav,dog, big\naudio/y.wav,cat\n")
    monkeypatch.setattr("sys.argv", ["tympan", "train", str(table), "--runs-dir", str(runs)])
    monkeypatch.setenv("COLUMNS", "400")  # rich would wrap the long temp path mid-name
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "labels.csv:2: 3 cells but the header has 2" in err and "Traceback" not in err
    assert not runs.exists()


def test_options_a_recipe_cannot_use_are_usage_errors(sound_classes_dir: Path,
                                                      tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(sound_classes_dir), "--mode", "frozen",
                                 "--epochs", "5", "--mixup", "0.2", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "--epochs, --mixup do nothing with --mode frozen" in " ".join(result.output.split())
    result = runner.invoke(app, ["train", str(sound_classes_dir), "--mode", "frozen",
                                 "--devices", "2", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "--devices does nothing with --mode frozen" in " ".join(result.output.split())
    result = runner.invoke(app, ["train", str(sound_classes_dir), "--model", "cnn-s",
                                 "--mode", "frozen", "--runs-dir", str(tmp_path)])
    assert result.exit_code != 0 and "needs a pretrained model" in str(result.exception)
    config = tmp_path / "frozen.json"
    config.write_text('{"mode": "frozen", "lr": 0.5}')
    result = runner.invoke(app, ["train", str(sound_classes_dir), "--config", str(config),
                                 "--runs-dir", str(tmp_path)])
    assert "lr" in str(result.exception) and "not used by --mode frozen" in str(result.exception)
    assert not list(tmp_path.glob(".*.partial"))


def test_an_unknown_pretrained_name_is_one_line(tmp_path: Path) -> None:
    from tympan.models.pretrained import UnknownPretrainedError, get_pretrained

    with pytest.raises(UnknownPretrainedError, match="unknown pretrained backbone 'mn99'.*mn04"):
        get_pretrained("mn99")


def _steps_per_epoch(metrics_csv: Path) -> float:
    import csv

    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    return (max(int(r["step"]) for r in rows) + 1) / (max(int(r["epoch"]) for r in rows) + 1)


@pytest.mark.slow
def test_train_on_two_ddp_processes_matches_one_process(sound_classes_dir: Path,
                                                        tmp_path: Path) -> None:
    """`tympan train --devices 2` (Lightning launches the second process; gloo on the CPU):
    one run folder, every clip scored once, the steps and accuracy of one process whose
    batch holds both processes' patches."""
    import os
    import subprocess
    import sys

    import numpy as np

    recipe = tmp_path / "recipe.json"
    TrainConfig(model="cnn-s", mode="finetune", features=DEMO_FEATURES, epochs=8, lr=3e-3,
                folds=2, early_stopping_patience=0).save(recipe)
    # a script file: Lightning re-runs this process's command line for the second rank
    script = tmp_path / "tympan_cli.py"
    script.write_text("from tympan.cli import main\nmain()\n")
    runs = tmp_path / "runs"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TYMPAN_CACHE": str(tmp_path / "cache")}

    def train(name: str, devices: int, batch_size: int, *extra: str) -> Path:
        args = [sys.executable, str(script), "train", str(sound_classes_dir), "--config",
                str(recipe), "--devices", str(devices), "--batch-size", str(batch_size),
                "--runs-dir", str(runs), "--name", name, "--final", "--no-progress", *extra]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return runs / name

    ddp = train("ddp", devices=2, batch_size=4)  # 2 × 4 patches a step
    single = train("single", devices=1, batch_size=8)
    # no second (or partial) run folder, no lock left behind by rank 1
    assert sorted(p.name for p in runs.iterdir()) == ["ddp", "single"]
    assert (ddp / "model.safetensors").is_file() and (ddp / "report.md").is_file()
    scored = np.concatenate([np.load(ddp / "cv" / f"fold-{k}" / "result.npz")["clip_indices"]
                             for k in (1, 2)])
    assert sorted(scored) == list(range(48))  # every clip scored exactly once
    for fold in ("cv/fold-1", "cv/fold-2", "final"):
        # a step per 8 patches in both: one process at batch 4 would take twice as many
        assert _steps_per_epoch(next((ddp / fold).glob("logs/csv/version_*/metrics.csv"))) == \
            _steps_per_epoch(next((single / fold).glob("logs/csv/version_*/metrics.csv")))
    accuracy = [json.loads((r / "metrics.json").read_text())["accuracy_mean"]
                for r in (ddp, single)]
    # gradients averaged over two half batches, BatchNorm statistics per half: not the same
    # floats as one process, but the same classifier on these easy sounds
    assert accuracy[0] >= 0.9 and abs(accuracy[0] - accuracy[1]) <= 0.05, accuracy

    # mixed precision under DDP (bf16 autocast on the CPU, as on a GPU without fp16): the
    # same classifier, other floats than 32-bit (so autocast did run), float32 weights saved
    mixed = train("ddp-bf16", 2, 4, "--precision", "bf16-mixed")
    assert json.loads((mixed / "config.json").read_text())["train"]["precision"] == "bf16-mixed"
    assert json.loads((mixed / "metrics.json").read_text())["accuracy_mean"] >= 0.9
    probs = [np.load(r / "cv" / "fold-1" / "result.npz")["probabilities"] for r in (ddp, mixed)]
    assert probs[0].shape == probs[1].shape and not np.allclose(probs[0], probs[1], atol=1e-4)
    from safetensors.numpy import load_file

    weights = load_file(str(mixed / "model.safetensors")).values()
    assert {w.dtype for w in weights if w.dtype.kind == "f"} == {np.dtype(np.float32)}
