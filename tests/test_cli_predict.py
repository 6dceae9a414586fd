"""``tympan predict`` and ``tympan evaluate`` end to end, with models made in the tests."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import synth
import torch
from conftest import TINY_CLASSES, tiny_features, tiny_model
from typer.testing import CliRunner

from tympan.cli import app, main
from tympan.errors import DatasetError, ModelFileError
from tympan.features import compute_log_mel
from tympan.inference.predict import clip_patches
from tympan.models.modelfile import make_metadata, save_model

RATE = 16000
runner = CliRunner()


def _sound(label: str, seed: int, rate: int = RATE) -> np.ndarray:
    """One clip of a class, varied by seed: gain, frequency and length change."""
    rng = np.random.default_rng(seed)
    seconds = float(rng.uniform(0.6, 0.9))
    gain = float(rng.uniform(0.2, 0.9))
    if label == "tone":
        wave = synth.tone(float(rng.uniform(300, 3000)), seconds, rate)
    elif label == "click":
        wave = synth.click_train(float(rng.uniform(6, 20)), seconds, rate)
    else:
        wave = synth.noise_burst(seconds, rate, seed=seed)
    return (gain * wave / np.abs(wave).max()).astype(np.float32)


@pytest.fixture(scope="module")
def trained_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cnn-s trained for a few seconds to tell clicks, noise and tones apart."""
    config = tiny_features()
    torch.manual_seed(0)
    specs, labels = [], []
    for label_id, label in enumerate(TINY_CLASSES):
        for seed in range(4):
            specs.append(compute_log_mel(_sound(label, 100 + seed), config))
            labels.append(label_id)
    patches, owner = clip_patches(specs, config)
    targets = torch.as_tensor(np.array(labels)[owner])
    model = tiny_model(len(TINY_CLASSES)).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(40):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(patches), targets)
        loss.backward()
        optimiser.step()
    metadata = make_metadata(model.eval(), TINY_CLASSES, config, train_config={"steps": 40})
    folder = tmp_path_factory.mktemp("trained")
    return save_model(folder / "trained.safetensors", model, metadata)


@pytest.fixture
def clips(tmp_path: Path) -> dict[Path, str]:
    """Held-out files (a subfolder, other rates, stereo) and the class each one is."""
    files = {
        synth.write(tmp_path / "in" / "tone1.wav", _sound("tone", 1), RATE): "tone",
        synth.write(tmp_path / "in" / "sub" / "noise1.flac", _sound("noise", 2), RATE): "noise",
        synth.write(tmp_path / "in" / "click1.wav", _sound("click", 3, 44100), 44100): "click",
        synth.write(tmp_path / "in" / "sub" / "tone2.wav", _sound("tone", 4, 22050), 22050,
                    channels=2): "tone",
    }
    return files


@pytest.fixture
def junk(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "junk.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not audio at all")
    return path


def _json(stdout: str) -> dict:  # type: ignore[type-arg]
    """Parse strict JSON: a bare NaN or Infinity (which Python's json accepts) fails the test."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"not valid JSON: bare {constant}")

    return json.loads(stdout, parse_constant=refuse)  # type: ignore[no-any-return]


@pytest.fixture
def nan_model_file(tiny_model_file: Path, tmp_path: Path) -> Path:
    """The tiny model saved, loaded, given a NaN output bias in memory, and saved again."""
    from tympan.models.modelfile import load_model

    loaded = load_model(tiny_model_file)
    with torch.no_grad():
        loaded.model.classifier[-1].bias[0] = float("nan")
    return save_model(tmp_path / "nan.safetensors", loaded.model, loaded.metadata)


# -- predict ----------------------------------------------------------------------------------


def test_predict_json_labels_a_folder_correctly(trained_model_file: Path, clips: dict[Path, str],
                                                junk: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(trained_model_file), str(tmp_path / "in"),
                                 "--json", "--top-k", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    document = _json(result.stdout)
    assert document["classes"] == TINY_CLASSES
    predicted = {Path(p["path"]): p for p in document["predictions"]}
    assert set(predicted) == set(clips)  # recursive; the junk file is not a prediction
    for path, truth in clips.items():
        entry = predicted[path]
        assert entry["label"] == truth, (path, entry)
        probabilities = [t["probability"] for t in entry["top"]]
        assert len(probabilities) == 2 and probabilities == sorted(probabilities, reverse=True)
    assert [s["path"] for s in document["skipped"]] == [str(junk)]
    assert "not an audio file" in document["skipped"][0]["reason"]
    assert "junk.wav" in result.stderr  # and the user is told


def test_predict_table_lists_files_and_labels(trained_model_file: Path,
                                              clips: dict[Path, str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "160")
    result = runner.invoke(app, ["predict", str(trained_model_file), "in", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for path in clips:
        assert path.name in result.stdout
    assert "#3" in result.stdout and "#4" not in result.stdout
    line = next(ln for ln in result.stdout.splitlines() if "tone1.wav" in ln)
    assert line.split("│")[2].split()[0] == "tone"


def test_predict_csv_has_one_row_per_file_and_rank(tiny_model_file: Path,
                                                   clips: dict[Path, str]) -> None:
    paths = [str(p) for p in clips]
    result = runner.invoke(app, ["predict", str(tiny_model_file), *paths, "--csv", "-k", "3"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 3 * len(paths)
    assert {r["rank"] for r in rows} == {"1", "2", "3"}
    assert {r["label"] for r in rows} == set(TINY_CLASSES)


def test_predict_writes_an_output_file_and_refuses_to_overwrite(
        tiny_model_file: Path, clips: dict[Path, str], tmp_path: Path) -> None:
    out = tmp_path / "predictions.json"
    args = ["predict", str(tiny_model_file), str(tmp_path / "in"), "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(_json(out.read_text())["predictions"]) == len(clips)
    before = out.read_text()
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "already exists" in refused.stderr
    assert out.read_text() == before
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_predict_output_needs_a_known_format(tiny_model_file: Path, clips: dict[Path, str],
                                             tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(tiny_model_file), str(tmp_path / "in"),
                                 "-o", str(tmp_path / "out.txt")])
    assert result.exit_code == 2 and "--json or --csv" in result.stderr


def test_strict_fails_when_a_file_was_skipped(tiny_model_file: Path, clips: dict[Path, str],
                                              junk: Path, tmp_path: Path) -> None:
    args = ["predict", str(tiny_model_file), str(tmp_path / "in"), "--json"]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, [*args, "--strict"]).exit_code == 1


def test_predict_with_no_usable_file_fails(tiny_model_file: Path, junk: Path,
                                           tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(tiny_model_file), str(junk),
                                 str(tmp_path / "missing.wav")])
    assert result.exit_code == 1
    assert "no such file" in result.stderr and "no file could be predicted" in result.stderr


def test_predict_with_a_foreign_model_is_a_clear_error(clips: dict[Path, str],
                                                       tmp_path: Path) -> None:
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"\x00" * 64)
    result = runner.invoke(app, ["predict", str(fake), str(tmp_path / "in")])
    assert isinstance(result.exception, ModelFileError)
    assert str(fake) in str(result.exception)


def test_console_script_prints_parseable_json(tiny_model_file: Path, clips: dict[Path, str],
                                             tmp_path: Path) -> None:
    tympan = Path(sys.executable).parent / "tympan"
    env = {**os.environ, "COLUMNS": "60"}  # a narrow terminal must not wrap the JSON
    done = subprocess.run([str(tympan), "predict", str(tiny_model_file), str(tmp_path / "in"),
                           "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["predictions"]) == len(clips)


def test_entry_point_turns_errors_into_a_message_and_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.safetensors"
    monkeypatch.setattr(sys, "argv", ["tympan", "predict", str(missing), str(tmp_path)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "no such model file" in err and "Traceback" not in err


def test_predict_never_prints_nan(nan_model_file: Path, clips: dict[Path, str],
                                  tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = runner.invoke(app, ["predict", str(nan_model_file), str(tmp_path / "in"), "--json",
                                 "-o", str(out)])
    assert result.exit_code == 1 and "no file could be predicted" in result.stderr
    document = _json(out.read_text())
    assert document["predictions"] == []
    assert {Path(s["path"]) for s in document["skipped"]} == set(clips)
    assert all("non-finite model output" in s["reason"] for s in document["skipped"])
    assert "tone1.wav: non-finite model output" in " ".join(result.stderr.split())
    assert "nan" not in result.stdout.lower()  # the table holds no rows
    printed = runner.invoke(app, ["predict", str(nan_model_file), str(tmp_path / "in"), "--json"])
    assert printed.exit_code == 1
    assert _json(printed.stdout)["predictions"] == []
    as_csv = runner.invoke(app, ["predict", str(nan_model_file), str(tmp_path / "in"), "--csv"])
    assert as_csv.stdout.strip() == "path,rank,label,probability"


def _change_a_weight_byte(path: Path) -> None:
    """Flip the low bit of the file's last byte: the end of some tensor's data."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_predict_refuses_a_changed_model_file_unless_no_verify(
        tiny_model_file: Path, clips: dict[Path, str], tmp_path: Path) -> None:
    _change_a_weight_byte(tiny_model_file)
    args = ["predict", str(tiny_model_file), str(tmp_path / "in"), "--json"]
    refused = runner.invoke(app, args)
    assert isinstance(refused.exception, ModelFileError)
    assert f"{tiny_model_file}: checksum mismatch" in str(refused.exception)
    result = runner.invoke(app, [*args, "--no-verify"])
    assert result.exit_code == 0, result.output
    assert len(_json(result.stdout)["predictions"]) == len(clips)
    assert "warning:" in result.stderr and "without verifying" in result.stderr


# -- evaluate ---------------------------------------------------------------------------------


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """A folder-per-class dataset of held-out clips, plus one corrupt file."""
    root = tmp_path / "labelled"
    for label in TINY_CLASSES:
        for seed in range(2):
            synth.write(root / label / f"{seed}.wav", _sound(label, 200 + seed), RATE)
    (root / "tone" / "broken.wav").write_bytes(b"RIFF" + bytes(40))
    return root


def test_evaluate_prints_metrics_and_writes_a_report(trained_model_file: Path, labelled: Path,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", str(trained_model_file), str(labelled), "-o",
                                 str(out), "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = _json(result.stdout)
    assert summary["n_clips"] == 6 and summary["n_skipped"] == 1
    assert summary["accuracy"] == 1.0
    assert [r["class"] for r in summary["per_class"]] == TINY_CLASSES
    assert {p.name for p in out.iterdir()} == {
        "metrics.json", "per_class.csv", "confusion.png", "predictions.csv", "skipped.txt",
        "skipped.csv", "report.md"}
    assert _json((out / "metrics.json").read_text())["accuracy"] == summary["accuracy"]
    assert "broken.wav" in (out / "skipped.txt").read_text()
    assert not list(tmp_path.glob(".eval*"))  # no work folder left behind

    refused = runner.invoke(app, ["evaluate", str(trained_model_file), str(labelled), "-o",
                                  str(out)])
    assert "already exists" in str(refused.exception)


def test_evaluate_table_output(trained_model_file: Path, labelled: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(trained_model_file), str(labelled)])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "macro-F1" in result.stdout
    for label in TINY_CLASSES:
        assert label in result.stdout
    assert "broken.wav" in result.stderr


def test_evaluate_refuses_labels_the_model_does_not_know(tiny_model_file: Path,
                                                         tmp_path: Path) -> None:
    root = tmp_path / "other"
    synth.write(root / "tone" / "a.wav", _sound("tone", 1), RATE)
    synth.write(root / "dog" / "a.wav", _sound("noise", 1), RATE)
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", str(tiny_model_file), str(root), "-o", str(out)])
    assert isinstance(result.exception, DatasetError)
    assert "not in the model: dog" in str(result.exception)
    assert not out.exists() and not list(tmp_path.glob(".eval*"))  # nothing half-written


def test_evaluate_refuses_a_changed_model_file_unless_no_verify(tiny_model_file: Path,
                                                               labelled: Path) -> None:
    _change_a_weight_byte(tiny_model_file)
    refused = runner.invoke(app, ["evaluate", str(tiny_model_file), str(labelled)])
    assert isinstance(refused.exception, ModelFileError)
    assert "checksum mismatch" in str(refused.exception)
    result = runner.invoke(app, ["evaluate", str(tiny_model_file), str(labelled), "--json",
                                 "--no-verify"])
    assert result.exit_code == 0, result.output
    assert _json(result.stdout)["n_clips"] == 6
    assert "without verifying" in result.stderr


def test_evaluate_refuses_a_model_with_non_finite_output(nan_model_file: Path, labelled: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", str(nan_model_file), str(labelled), "--json",
                                 "-o", str(out)])
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "non-finite model output" in message and "no accuracy computed" in message
    assert "accuracy" not in result.stdout
    assert not out.exists() and not list(tmp_path.glob(".eval*"))  # nothing half-written


def test_audioset_tags_need_no_model_and_name_a_sine(tmp_path: Path, mn04_weights: Path) -> None:
    wav = tmp_path / "tone.wav"
    synth.write(wav, synth.tone(440.0, 2.0, 22050), 22050)
    (tmp_path / "bad.wav").write_text("not audio")
    result = runner.invoke(app, ["predict", "--audioset", str(wav), str(tmp_path / "bad.wav"),
                                 "--json", "-k", "3", "--weights", str(mn04_weights)])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert body["predictions"][0]["tags"][0]["label"] == "Sine wave"
    assert len(body["predictions"][0]["tags"]) == 3
    assert [Path(s["path"]).name for s in body["skipped"]] == ["bad.wav"]


def test_predict_without_files_is_a_clear_error(tiny_model_file: Path) -> None:
    result = runner.invoke(app, ["predict", str(tiny_model_file)])
    assert result.exit_code == 2
    assert "give the audio files" in result.output


def test_symlink_loops_are_reported_not_crashed_on_or_omitted(
        tiny_model_file: Path, clips: dict[Path, str], tmp_path: Path) -> None:
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop.name)
    inner = tmp_path / "in" / "inner-loop.wav"
    inner.symlink_to(inner.name)
    result = runner.invoke(app, ["predict", str(tiny_model_file), str(loop), str(tmp_path / "in"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    document = _json(result.stdout)
    skipped = {Path(s["path"]): s["reason"] for s in document["skipped"]}
    assert skipped.keys() == {loop, inner}
    assert all(reason.startswith("symlink loop") for reason in skipped.values())
    assert len(document["predictions"]) == len(clips)
    assert "inner-loop.wav: symlink loop" in " ".join(result.stderr.split())


def test_evaluate_after_a_kill_suggests_only_what_evaluate_has(
        trained_model_file: Path, labelled: Path, tmp_path: Path) -> None:
    from tympan.workflows.runfolder import RunFolderError, work_dir_for

    work_dir_for(tmp_path, "report").mkdir()  # what a killed `evaluate -o report` leaves
    result = runner.invoke(app, ["evaluate", str(trained_model_file), str(labelled),
                                 "-o", str(tmp_path / "report")])
    assert isinstance(result.exception, RunFolderError)
    assert "--overwrite" in str(result.exception) and "--resume" not in str(result.exception)


def test_predict_scores_windows_and_points_long_files_to_detect(tiny_model_file: Path,
                                                                tmp_path: Path) -> None:
    from tympan.inference.detect import Detector
    from tympan.inference.predict import Predictor
    from tympan.models.modelfile import load_model

    short = synth.write(tmp_path / "short.wav", _sound("tone", 5, RATE)[:6000], RATE,
                        subtype="FLOAT")
    long = synth.write(tmp_path / "long.wav", synth.chirp(300, 3000, 4.0, RATE), RATE,
                       subtype="FLOAT")
    result = runner.invoke(app, ["predict", str(tiny_model_file), str(short), "--json"])
    assert result.exit_code == 0 and "tympan detect" not in result.output
    loaded = load_model(tiny_model_file)
    top = json.loads(result.stdout)["predictions"][0]["top"][0]
    expected = Predictor(loaded, device="cpu").predict_proba([short])[0]
    assert top["probability"] == pytest.approx(float(expected.max()), abs=1e-6)

    result = runner.invoke(app, ["predict", str(tiny_model_file), str(long), "--json"])
    assert result.exit_code == 0 and "tympan detect" in result.stderr
    top = json.loads(result.stdout)["predictions"][0]["top"][0]
    windows = Detector(loaded).score_file(long).scores[:, 0]  # a clip = mean of its windows
    assert top["probability"] == pytest.approx(float(windows.mean(axis=0).max()), abs=1e-6)


def test_predict_export_and_detect_keep_short_clips_at_their_own_length(
        own_length_model_file: Path, tmp_path: Path) -> None:
    # a cnn-s keeping clips shorter than its ~3 s patch at their own length (>= 16 frames):
    # predict on the model file and on its ONNX export agree, detect runs on both
    pytest.importorskip("onnxscript")
    from tympan.inference.predict import Predictor
    from tympan.models.modelfile import load_model

    rate = 44100
    paths = [synth.write(tmp_path / "in" / f"{name}.wav", wave, rate) for name, wave in (
        ("short", synth.tone(660, 0.5, rate) * 0.3),
        ("two", synth.chirp(300, 5000, 2.0, rate) * 0.3),
        ("long", synth.noise_burst(7.0, rate, seed=2) * 0.1))]
    expected = Predictor(load_model(own_length_model_file)).predict_proba(paths)
    onnx_file = tmp_path / "own.onnx"
    assert runner.invoke(app, ["export", str(own_length_model_file), "-o",
                               str(onnx_file)]).exit_code == 0
    for model in (own_length_model_file, onnx_file):
        out = tmp_path / f"{model.suffix[1:]}.json"
        result = runner.invoke(app, ["predict", str(model), *map(str, paths), "-o", str(out),
                                     "-k", "3"])
        assert result.exit_code == 0, result.output
        rows = _json(out.read_text())["predictions"]
        got = np.array([[{t["label"]: t["probability"] for t in r["top"]}[c]
                         for c in TINY_CLASSES] for r in rows])
        # clips within one window: predict on a model file streams windows of the training
        # length, so a longer file is the mean over its windows, not over its patches
        np.testing.assert_allclose(got[:2], expected[:2], atol=1e-5)
        assert np.isfinite(got).all()
        detect = runner.invoke(app, ["detect", str(model), str(paths[2]), str(paths[0]),
                                     "-o", str(tmp_path / f"detect-{model.suffix[1:]}")])
        assert detect.exit_code == 0, detect.output
        assert (tmp_path / f"detect-{model.suffix[1:]}" / "events.csv").is_file()
