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
