"""The console entry point: a full disk, a folder in use or a bad option is one line, never a
traceback, and earlier results stay whole."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import synth
from conftest import TINY_CLASSES, SmallDisk

from tympan.cli import main


def _tympan(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            *args: str) -> tuple[int, str]:
    """Run ``tympan ARGS`` through :func:`main`; return (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["tympan", *args])
    with pytest.raises(SystemExit) as info:
        main()
    code = info.value.code
    return (0 if code is None else int(code)), capsys.readouterr().err


@pytest.fixture
def three_classes(tmp_path: Path) -> Path:
    """The tiny model's classes (click, noise, tone): two 0.6 s clips each at 16 kHz."""
    root = tmp_path / "three"
    makers = {"click": lambda s: synth.click_train(8 + s, 0.6, 16000),
              "noise": lambda s: synth.noise_burst(0.6, 16000, seed=s),
              "tone": lambda s: synth.tone(440 * (s + 1), 0.6, 16000)}
    assert sorted(makers) == TINY_CLASSES
    for label, make in makers.items():
        for i in range(2):
            synth.write(root / label / f"{label}{i}.wav", make(i), 16000)
    return root


def _one_line_no_space(err: str, where: Path) -> None:
    text = " ".join(err.split())
    assert "error: no space left on" in text and str(where) in text, err
    assert "Traceback" not in err


def test_predict_and_evaluate_on_a_full_disk_keep_earlier_results(
        tiny_model_file: Path, three_classes: Path, small_disk: SmallDisk,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out, folder = small_disk.root / "predictions.json", small_disk.root / "eval"
    code, err = _tympan(monkeypatch, capsys, "predict", str(tiny_model_file),
                        str(three_classes), "-o", str(out))
    assert code == 0, err
    code, err = _tympan(monkeypatch, capsys, "evaluate", str(tiny_model_file),
                        str(three_classes), "-o", str(folder))
    assert code == 0, err
    before = out.read_bytes()
    reports = {p.name: p.read_bytes() for p in folder.iterdir()}
    small_disk.fill()

    code, err = _tympan(monkeypatch, capsys, "predict", str(tiny_model_file),
                        str(three_classes), "-o", str(out), "--overwrite")
    assert code == 1
    _one_line_no_space(err, small_disk.root)
    assert out.read_bytes() == before and json.loads(before)["predictions"]
    code, err = _tympan(monkeypatch, capsys, "evaluate", str(tiny_model_file),
                        str(three_classes), "-o", str(folder), "--overwrite")
    assert code == 1
    _one_line_no_space(err, small_disk.root)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == reports
    assert sorted(p.name for p in small_disk.root.iterdir()) == ["ballast", "eval",
                                                                 "predictions.json"]


def test_augment_and_the_feature_cache_on_a_full_disk(
        three_classes: Path, small_disk: SmallDisk, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    small_disk.fill()
    code, err = _tympan(monkeypatch, capsys, "augment", str(three_classes), "-o",
                        str(small_disk.root / "copies"), "--pitch", "1", "--workers", "1")
    assert code == 1
    _one_line_no_space(err, small_disk.root)
    code, err = _tympan(monkeypatch, capsys, "features", str(three_classes), "--cache-dir",
                        str(small_disk.root / "cache"))
    assert code == 1
    _one_line_no_space(err, small_disk.root / "cache")


def test_training_checkpoints_on_a_full_disk(
        sound_classes_dir: Path, small_disk: SmallDisk, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tympan.config import TrainConfig
    from tympan.workflows.demo import DEMO_FEATURES

    recipe = tmp_path / "recipe.json"
    TrainConfig(model="cnn-s", features=DEMO_FEATURES, batch_size=8).save(recipe)
    # leave room for the lock file and the run folder, not for a checkpoint
    small_disk.fill()
    (small_disk.root / "ballast").unlink()
    with open(small_disk.root / "ballast", "wb") as handle:
        handle.truncate(0)
        handle.write(b"\0" * (2 * 1024 * 1024 - 64 * 1024))
    code, err = _tympan(monkeypatch, capsys, "train", str(sound_classes_dir), "--config",
                        str(recipe), "--no-cv", "--epochs", "1", "--name", "r", "--runs-dir",
                        str(small_disk.root / "runs"), "--no-progress")
    assert code == 1
    _one_line_no_space(err, small_disk.root / "runs")
    assert "last.ckpt" in err  # the checkpoint, not an earlier small file, found the disk full


def test_warnings_print_as_one_line(tone_dataset: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tone_dataset / "empty").mkdir()
    code, err = _tympan(monkeypatch, capsys, "datasets", "info", str(tone_dataset),
                        "--workers", "1")
    assert code == 0
    lines = [line for line in err.splitlines() if "empty" in line]
    assert lines == [f"warning: {tone_dataset / 'empty'}: class folder holds no audio files; "
                     "class 'empty' is left out"]
