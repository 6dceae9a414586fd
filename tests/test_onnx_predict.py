"""OnnxPredictor: an exported model on ONNX Runtime keeps Predictor's contract, without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import synth
from conftest import TINY_CLASSES
from typer.testing import CliRunner

from tympan.cli import app
from tympan.errors import AudioError, ModelFileError
from tympan.inference.detect import Detector
from tympan.inference.events import EventConfig, detect_events
from tympan.inference.onnx_predict import OnnxPredictor, is_onnx_model
from tympan.inference.predict import Predictor
from tympan.models.modelfile import load_model

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

RATE = 16000
runner = CliRunner()


def _waves() -> list[np.ndarray]:
    """Clips of three lengths (two share one, so they share a call)."""
    return [synth.tone(500, 1.0, RATE), synth.noise_burst(0.4, RATE, seed=1),
            synth.click_train(9, 1.0, RATE), synth.chirp(300, 4000, 2.5, RATE)]


def test_predict_proba_matches_the_torch_predictor(tiny_onnx: tuple[Path, Path]) -> None:
    model_file, onnx_file = tiny_onnx
    predictor = OnnxPredictor(onnx_file, threads=1, batch_size=2)
    assert predictor.classes == TINY_CLASSES and predictor.sample_rate == RATE
    reference = Predictor(load_model(model_file), device="cpu").predict_proba(_waves())
    got = predictor.predict_proba(_waves())
    np.testing.assert_allclose(got, reference, atol=1e-5, rtol=0)
    assert predictor.predict(_waves()) == [TINY_CLASSES[i] for i in reference.argmax(axis=1)]
    assert predictor.predict_proba([]).shape == (0, 3)


def test_predict_files_reports_bad_files_and_scores_the_rest(
        tiny_onnx: tuple[Path, Path], bad_folder: synth.BadFolder) -> None:
    model_file, onnx_file = tiny_onnx
    paths = [*bad_folder.good, *bad_folder.bad, bad_folder.root / "missing.wav"]
    ticks: list[int] = []
    results = OnnxPredictor(onnx_file, batch_size=4).predict_files(paths, progress=ticks.append)
    reference = Predictor(load_model(model_file), device="cpu").predict_files(bad_folder.good)
    assert sum(ticks) == len(paths)
    for got, want in zip(results, reference, strict=False):
        assert got.ok and got.label == want.label
        np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-5)
    for result, fragment in zip(results[len(bad_folder.good):],
                                [*bad_folder.bad.values(), "no such file"], strict=True):
        assert not result.ok and fragment in (result.error or "")


def test_waveform_checks_name_the_problem(tiny_onnx: tuple[Path, Path], tmp_path: Path) -> None:
    predictor = OnnxPredictor(tiny_onnx[1])
    with pytest.raises(ValueError, match="mono"):
        predictor.predict_proba([np.zeros((2, RATE), dtype=np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        predictor.predict_proba([np.full(RATE, np.nan, dtype=np.float32)])
    with pytest.raises(AudioError, match="missing.wav"):
        predictor.predict_proba([tmp_path / "missing.wav"])


def test_foreign_or_broken_onnx_files_are_model_file_errors(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "plain.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
                    str(foreign))
    with pytest.raises(ModelFileError, match="without tympan metadata"):
        OnnxPredictor(foreign)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        OnnxPredictor(garbage)
    with pytest.raises(ModelFileError, match="no such ONNX model file"):
        OnnxPredictor(tmp_path / "missing.onnx")
    assert is_onnx_model("a/b.ONNX") and not is_onnx_model("a/b.safetensors")


def _recording(path: Path) -> Path:
    """20 s at 16 kHz: a tone, a chirp, a noise burst and clicks with silence between."""
    wave = np.zeros(20 * RATE, dtype=np.float32)
    for start, sound in [(0.5, synth.tone(600, 3.0, RATE)), (5.0, synth.chirp(300, 5000, 4.0,
                                                                               RATE)),
                         (11.0, synth.noise_burst(3.0, RATE, seed=2)),
                         (16.0, synth.click_train(8, 3.5, RATE))]:
        at = round(start * RATE)
        wave[at:at + sound.shape[0]] += sound
    return synth.write(path, wave, RATE)


def test_detect_on_the_export_scores_and_finds_events_as_the_model_file(
        tiny_onnx: tuple[Path, Path], tmp_path: Path) -> None:
    model_file, onnx_file = tiny_onnx
    path = _recording(tmp_path / "scene.wav")
    want = Detector(load_model(model_file), batch_size=4).score_file(path, keep_spectrum=True)
    onnx_detector = Detector(OnnxPredictor(onnx_file, threads=1), batch_size=4)
    got = onnx_detector.score_file(path, keep_spectrum=True)
    assert got.n_windows == want.n_windows > 60 and (got.starts == want.starts).all()
    assert got.n_samples == want.n_samples and got.failure is None
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5, rtol=0)
    assert got.spectrum is not None and want.spectrum is not None
    np.testing.assert_allclose(got.spectrum, want.spectrum, atol=1e-3, rtol=0)
    # thresholds mid-way through each class's range, so every class has events to compare
    low, high = want.scores.min(axis=(0, 1)), want.scores.max(axis=(0, 1))
    config = EventConfig(thresholds={c: float((lo + hi) / 2)
                                     for c, lo, hi in zip(TINY_CLASSES, low, high, strict=True)},
                         hysteresis=0.0)

    def spans(scores: object) -> list[tuple[str, float, float]]:
        return [(e.label, e.start_seconds, e.end_seconds)
                for e in detect_events(scores, config)]  # type: ignore[arg-type]

    assert spans(got) == spans(want) and len(spans(want)) >= len(TINY_CLASSES)
    with pytest.raises(ValueError, match="runs on the CPU"):
        Detector(OnnxPredictor(onnx_file), device="cuda")


def test_worker_processes_give_the_single_process_scores_in_order(
        tiny_onnx: tuple[Path, Path], tmp_path: Path) -> None:
    model_file, onnx_file = tiny_onnx
    path = _recording(tmp_path / "scene.wav")
    alone = Detector(OnnxPredictor(onnx_file, threads=1), batch_size=3).score_file(path)
    seen: list[float] = []
    with Detector(OnnxPredictor(onnx_file), batch_size=3, workers=2) as pooled:
        first = pooled.score_file(path, progress=seen.append, keep_spectrum=True)
        again = pooled.score_file(path)  # the same workers serve the next file
    assert pooled._pool is None  # closed
    np.testing.assert_array_equal(first.starts, alone.starts)
    np.testing.assert_allclose(first.scores, alone.scores, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(again.scores, first.scores)
    assert first.spectrum is not None and first.spectrum.shape[:2] == first.scores.shape[:2]
    assert seen == sorted(seen) and len(seen) == -(-alone.n_windows // 3)
    with pytest.raises(ValueError, match="ONNX export"):
        Detector(load_model(model_file), workers=2)


def _clip_folder(root: Path) -> Path:
    synth.write(root / "tone.wav", synth.tone(700, 1.0, RATE), RATE)
    synth.write(root / "noise.flac", synth.noise_burst(1.0, 44100, seed=4), 44100)
    synth.write(root / "clicks.ogg", synth.click_train(12, 1.5, 22050), 22050)
    (root / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    return root


def test_cli_predict_runs_an_onnx_export_like_its_model_file(
        tiny_onnx: tuple[Path, Path], tmp_path: Path) -> None:
    folder = _clip_folder(tmp_path / "clips")
    outputs = []
    for model in tiny_onnx:
        result = runner.invoke(app, ["predict", str(model), str(folder), "--json"])
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.stdout))
    from_torch, from_onnx = outputs
    assert from_onnx["classes"] == TINY_CLASSES
    assert [p["label"] for p in from_onnx["predictions"]] == \
        [p["label"] for p in from_torch["predictions"]]
    assert len(from_onnx["predictions"]) == 3
    assert [Path(s["path"]).name for s in from_onnx["skipped"]] == ["broken.wav"]
    gpu = runner.invoke(app, ["predict", str(tiny_onnx[1]), str(folder), "--device", "cuda"])
    assert gpu.exit_code == 2 and "runs on the CPU" in gpu.output


TORCH_FREE = """
import json, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from tympan.inference.onnx_predict import OnnxPredictor
predictor = OnnxPredictor(sys.argv[1], threads=1)
results = predictor.predict_files(sys.argv[2:])
print(json.dumps([[r.path.name, r.label, r.error] for r in results]))
from tympan.cli import app
app(["predict", sys.argv[1], *sys.argv[2:], "--json"], standalone_mode=False)
app(["version"], standalone_mode=False)
app(["detect", sys.argv[1], *sys.argv[2:], "-o", sys.argv[2] + ".detect", "--plot",
     "--threshold", "0.3"], standalone_mode=False)
assert not any(m == "torch" or m.startswith(("torch.", "lightning")) for m in sys.modules
               if sys.modules[m] is not None)
"""


def test_runtime_path_imports_no_torch(tiny_onnx: tuple[Path, Path], tmp_path: Path) -> None:
    folder = _clip_folder(tmp_path / "clips")
    files = [str(p) for p in sorted(folder.iterdir())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", TORCH_FREE, str(tiny_onnx[1]), *files],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    first, cli = done.stdout.split("\n", 1)
    by_name = {name: (label, error) for name, label, error in json.loads(first)}
    assert by_name["broken.wav"][0] is None and by_name["broken.wav"][1]
    assert all(by_name[n][0] in TINY_CLASSES for n in ("tone.wav", "noise.flac", "clicks.ogg"))
    cli_json, version = cli.rsplit("}", 1)
    assert len(json.loads(cli_json + "}")["predictions"]) == 3
    assert "torch not installed" in version
    detected = json.loads((Path(files[0] + ".detect") / "events.json").read_text())
    assert [Path(s["path"]).name for s in detected["skipped"]] == ["broken.wav"]
    assert {Path(f["path"]).name for f in detected["files"]} == \
        {"tone.wav", "noise.flac", "clicks.ogg"}
    assert list((Path(files[0] + ".detect") / "files").glob("*.png"))
