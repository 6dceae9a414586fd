"""ONNX export: one graph from waveform to clip probabilities, equal to the torch Predictor."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import synth
from conftest import SHARED_WEIGHTS, TINY_CLASSES
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tympan.cli import app
from tympan.errors import ModelFileError
from tympan.fileio import sha256_file
from tympan.inference.onnx_export import (
    METADATA_KEYS,
    ExportOptions,
    export_onnx,
    patch_count,
    waveform_classifier,
)
from tympan.inference.predict import Predictor
from tympan.models.modelfile import load_model
from tympan.windows import patch_starts

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

runner = CliRunner()
ESC50 = Path(os.environ.get("TYMPAN_DATA", SHARED_WEIGHTS.parent / "datasets")) / "esc50"
MN04_CLASSES = ["bird", "dog", "rain", "siren", "engine"]


def _session(path: Path) -> object:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _clips(seconds: float, rate: int, n: int = 8) -> np.ndarray:
    """``n`` different synthetic clips (tones, chirps, noise, clicks) of one length."""
    makers = [lambda: synth.tone(440, seconds, rate),
              lambda: synth.chirp(200, 3000, seconds, rate),
              lambda: synth.noise_burst(seconds, rate, seed=3),
              lambda: synth.click_train(8, seconds, rate)]
    out = [makers[i % 4]() * (0.2 + 0.1 * i) for i in range(n)]
    return np.stack([np.asarray(c, dtype=np.float32)[: int(seconds * rate)] for c in out])


def _check_parity(model_file: Path, onnx_file: Path, seconds: float, n_clips: int = 8) -> None:
    loaded = load_model(model_file)
    rate = loaded.feature_config.sample_rate
    clips = _clips(seconds, rate, n_clips)
    reference = Predictor(loaded, device="cpu").predict_proba(list(clips))
    session = _session(onnx_file)
    batch8 = session.run(None, {"waveform": clips})[0]
    batch1 = session.run(None, {"waveform": clips[:1]})[0]
    assert batch8.shape == (n_clips, len(loaded.classes))
    assert batch1.shape == (1, len(loaded.classes))
    np.testing.assert_allclose(batch8, reference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(batch1, reference[:1], atol=1e-5, rtol=0)
    assert (batch8.argmax(axis=1) == reference.argmax(axis=1)).all()


@pytest.mark.parametrize("seconds", [0.3, 1.0, 5.0, 60.0])
def test_cnn_export_matches_torch_predictor(tiny_onnx: tuple[Path, Path], seconds: float) -> None:
    # 0.3 s is 19 frames: shorter than one 32-frame patch, so padded as split_patches pads
    _check_parity(*tiny_onnx, seconds)


@pytest.fixture(scope="module")
def mn04_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An mn04_as (AudioSet backbone, random 5-class head, 2 time shifts) and its export."""
    import torch

    from tympan import models
    from tympan.config import EFFICIENTAT_FEATURES
    from tympan.models.modelfile import make_metadata, save_model

    weights = Path(os.environ.get("TYMPAN_WEIGHTS", SHARED_WEIGHTS))
    checkpoint = weights / "efficientat" / "mn04_as_mAP_432.pt"
    if not checkpoint.is_file():
        checkpoint = weights / "mn04_as_mAP_432.pt"
    if not checkpoint.is_file():
        pytest.skip("mn04_as weights not found: set TYMPAN_WEIGHTS")
    torch.manual_seed(0)
    model = models.create("mn04_as", len(MN04_CLASSES), embedding="freq", time_shifts=2,
                          pretrained=True, weights=checkpoint).eval()
    torch.nn.init.normal_(model.head[1].weight, std=0.05)  # a head with opinions
    folder = tmp_path_factory.mktemp("mn04-onnx")
    model_file = save_model(folder / "mn04.safetensors", model,
                            make_metadata(model, MN04_CLASSES, EFFICIENTAT_FEATURES))
    return model_file, export_onnx(load_model(model_file), folder / "mn04.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("seconds", [1.0, 5.0, 60.0])
def test_mn04_export_matches_torch_predictor(mn04_onnx: tuple[Path, Path],
                                             seconds: float) -> None:
    # 1 s is 101 frames, a fifth of a 500-frame patch; 60 s is 23 patches (2 clips: the
    # torch reference of 8 would take a minute on a shared CPU)
    _check_parity(*mn04_onnx, seconds, n_clips=2 if seconds > 10 else 8)


@pytest.mark.slow
def test_mn04_export_matches_on_esc50_clips(mn04_onnx: tuple[Path, Path]) -> None:
    if not (ESC50 / "meta" / "esc50.csv").is_file():
        pytest.skip(f"ESC-50 not found at {ESC50} (set TYMPAN_DATA)")
    files = sorted((ESC50 / "audio").glob("*.ogg"))[::100][:20]
    predictor = Predictor(load_model(mn04_onnx[0]), device="cpu")
    session = _session(mn04_onnx[1])
    waves = [predictor.load(f) for f in files]
    reference = predictor.forward([predictor.preprocess(w) for w in waves])
    exported = np.concatenate([session.run(None, {"waveform": w[None]})[0] for w in waves])
    assert len(files) == 20
    np.testing.assert_allclose(exported, reference, atol=1e-5, rtol=0)
    assert (exported.argmax(axis=1) == reference.argmax(axis=1)).all()


def test_export_metadata_names_classes_rate_patches_and_source(
        tiny_onnx: tuple[Path, Path]) -> None:
    model_file, onnx_file = tiny_onnx
    proto = onnx.load(str(onnx_file))
    props = {p.key: p.value for p in proto.metadata_props}
    assert set(METADATA_KEYS) <= set(props)
    assert json.loads(props["tympan.classes"]) == TINY_CLASSES
    assert props["tympan.sample_rate"] == "16000"
    assert (props["tympan.patch_frames"], props["tympan.patch_hop_frames"]) == ("32", "16")
    assert props["tympan.source_sha256"] == sha256_file(model_file)
    assert props["tympan.source_model"] == "cnn-s"
    assert props["tympan.version"]
    assert min(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18
    graph_in, graph_out = proto.graph.input[0], proto.graph.output[0]
    assert [d.dim_param for d in graph_in.type.tensor_type.shape.dim] == ["batch", "samples"]
    assert graph_out.type.tensor_type.shape.dim[1].dim_value == len(TINY_CLASSES)


@settings(max_examples=200, deadline=None)
@given(frames=st.integers(1, 3000), patch=st.integers(1, 600), hop=st.integers(1, 600))
def test_patch_count_equals_the_patches_windows_cuts(frames: int, patch: int, hop: int) -> None:
    assert patch_count(frames, patch, hop) == len(patch_starts(frames, patch, hop))


def test_speed_options_change_the_module_not_the_model(tiny_onnx: tuple[Path, Path]) -> None:
    loaded = load_model(tiny_onnx[0])
    with pytest.raises(ModelFileError, match="no time shifts"):
        waveform_classifier(loaded, ExportOptions(time_shifts=1))
    with pytest.raises(ValueError, match="time_shifts"):
        ExportOptions(time_shifts=0)
    with pytest.raises(ValueError, match="stft"):
        ExportOptions(stft="fft")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def mn04_own_length_onnx(mn04_onnx: tuple[Path, Path],
                         tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The mn04 of :func:`mn04_onnx` keeping short clips at their own length (0.5 s minimum)."""
    from tympan.models.modelfile import save_model

    loaded = load_model(mn04_onnx[0])
    front = loaded.feature_config.replace(min_patch_frames=50)
    folder = tmp_path_factory.mktemp("mn04-own-length")
    model_file = save_model(folder / "mn04.safetensors", loaded.model,
                            loaded.metadata.replace(feature_config=front.to_dict()))
    return model_file, export_onnx(load_model(model_file), folder / "mn04.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("seconds", [0.3, 0.7, 2.0, 7.0])
def test_own_length_export_matches_torch_predictor(mn04_own_length_onnx: tuple[Path, Path],
                                                   seconds: float) -> None:
    # 0.3 s is 31 frames, padded to the 50-frame minimum; 0.7 s (71) and 2 s (201) are one
    # patch of their own length; 7 s is two 500-frame patches, the second end-aligned
    loaded = load_model(mn04_own_length_onnx[0])
    assert loaded.feature_config.min_patch_frames == 50
    _check_parity(*mn04_own_length_onnx, seconds, n_clips=4)


@pytest.fixture(scope="module")
def cnn_own_length_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A ``cnn-s`` keeping short clips at their own length (seed front end, >= 16 frames)
    and its export."""
    from conftest import own_length_model

    from tympan.config import SEED_FEATURES
    from tympan.models.modelfile import make_metadata, save_model

    model = own_length_model(len(TINY_CLASSES))
    front = SEED_FEATURES.replace(min_patch_frames=16)
    folder = tmp_path_factory.mktemp("cnn-own-length")
    model_file = save_model(folder / "cnn.safetensors", model,
                            make_metadata(model, TINY_CLASSES, front))
    return model_file, export_onnx(load_model(model_file), folder / "cnn.onnx")


@pytest.mark.parametrize("seconds", [0.2, 0.5, 2.0, 4.0])
def test_cnn_own_length_export_matches_torch_predictor(
        cnn_own_length_onnx: tuple[Path, Path], seconds: float) -> None:
    # 0.2 s is 9 frames, padded to the 16-frame minimum; 0.5 s (22 frames) and 2 s (87) are
    # one patch of their own length; 4 s is two 128-frame patches, the second end-aligned
    _check_parity(*cnn_own_length_onnx, seconds, n_clips=4)


def test_export_refuses_to_overwrite(tiny_onnx: tuple[Path, Path]) -> None:
    with pytest.raises(ModelFileError, match="already exists"):
        export_onnx(load_model(tiny_onnx[0]), tiny_onnx[1])


def test_cli_export_refuses_an_onnx_input(tiny_onnx: tuple[Path, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(tiny_onnx[1]), "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "already an ONNX file" in " ".join(result.output.split())


@pytest.mark.parametrize("features", ["efficientat", "seed", "tiny"])
def test_matmul_stft_matches_the_front_end_at_any_length(features: str) -> None:
    import torch
    from conftest import tiny_features

    from tympan.config import EFFICIENTAT_FEATURES, SEED_FEATURES
    from tympan.features import LogMel
    from tympan.inference.onnx_frontend import ExportLogMel

    config = {"efficientat": EFFICIENTAT_FEATURES, "seed": SEED_FEATURES,
              "tiny": tiny_features()}[features]
    generator = torch.Generator().manual_seed(1)
    for samples in (3000, 3001, 16000 + 255, 44100):  # every remainder modulo the hop
        wave = torch.randn(2, samples, generator=generator) * 0.1
        reference, split = LogMel(config)(wave), ExportLogMel(config)(wave)
        assert split.shape == reference.shape
        torch.testing.assert_close(split, reference, atol=1e-4, rtol=0)


def test_split_size_factors_n_fft_near_its_square_root() -> None:
    from tympan.inference.onnx_frontend import split_size

    assert split_size(1024) == (32, 32)
    assert split_size(512) == (16, 32)
    assert split_size(400) == (20, 20)
    assert split_size(1021) == (1, 1021)  # a prime: one direct DFT
