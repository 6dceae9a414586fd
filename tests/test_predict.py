"""Prediction: clip probabilities from files or waveforms, bad files skipped with reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synth
import torch
from conftest import TINY_CLASSES, own_length_model, tiny_features, tiny_model

from tympan.audio import resample
from tympan.data.manifest import Clip, Manifest
from tympan.errors import AudioError, ModelOutputError
from tympan.features import compute_log_mel
from tympan.inference.predict import (
    Predictor,
    clip_probabilities,
    collect_audio_files,
    top_k,
)
from tympan.models.modelfile import LoadedModel, load_model
from tympan.windows import clip_patches
from tympan.workflows.evaluation import evaluate_model

RATE = 16000


def _waves() -> list[np.ndarray]:
    return [synth.tone(440, 1.0, RATE), synth.chirp(200, 4000, 1.3, RATE),
            synth.noise_burst(0.7, RATE, seed=3), synth.click_train(8, 0.2, RATE)]


# -- the clip rule ----------------------------------------------------------------------------


def test_clip_probabilities_are_the_mean_of_patch_softmaxes() -> None:
    model, config = tiny_model(), tiny_features()
    specs = [compute_log_mel(w, config) for w in _waves()]
    probs = clip_probabilities(model, specs, config, batch_size=5)
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        for spec, row in zip(specs, probs, strict=True):
            patches, _ = clip_patches([spec], config)
            expected = torch.softmax(model(patches), dim=1).mean(dim=0).numpy()
            np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)


def test_top_k_is_sorted_and_stable_on_ties() -> None:
    assert top_k(np.array([0.2, 0.5, 0.3]), ["a", "b", "c"], 2) == [("b", 0.5), ("c", 0.3)]
    assert [n for n, _ in top_k(np.array([0.25] * 4), ["a", "b", "c", "d"], 4)] == list("abcd")
    with pytest.raises(ValueError):
        top_k(np.array([1.0]), ["a"], 0)


# -- the Predictor ----------------------------------------------------------------------------


def test_save_load_predict_gives_identical_probabilities(tiny_model_file: Path) -> None:
    in_memory = Predictor.from_model(tiny_model(), TINY_CLASSES, tiny_features(), device="cpu")
    from_file = Predictor(load_model(tiny_model_file), device="cpu")
    waves = _waves()
    np.testing.assert_array_equal(in_memory.predict_proba(waves), from_file.predict_proba(waves))


def test_batch_size_does_not_change_the_answer(tiny_model_file: Path) -> None:
    loaded = load_model(tiny_model_file)
    small = Predictor(loaded, device="cpu", batch_size=1).predict_proba(_waves())
    large = Predictor(loaded, device="cpu", batch_size=256).predict_proba(_waves())
    np.testing.assert_allclose(small, large, rtol=1e-5, atol=1e-6)


def test_paths_and_arrays_give_the_same_answer(tiny_model_file: Path, tmp_path: Path) -> None:
    predictor = Predictor(load_model(tiny_model_file), device="cpu")
    wave = synth.chirp(300, 3000, 1.0, RATE)
    path = synth.write(tmp_path / "c.wav", wave, RATE, subtype="FLOAT")
    np.testing.assert_array_equal(predictor.predict_proba([path]), predictor.predict_proba([wave]))


def test_a_file_at_another_sample_rate_is_resampled(tiny_model_file: Path,
                                                    tmp_path: Path) -> None:
    predictor = Predictor(load_model(tiny_model_file), device="cpu")
    wave_44k = synth.chirp(300, 3000, 1.0, 44100)
    path = synth.write(tmp_path / "c44k.wav", wave_44k, 44100, subtype="FLOAT")
    from_file = predictor.predict_proba([path])
    expected = predictor.predict_proba([resample(wave_44k, 44100, RATE)])
    np.testing.assert_allclose(from_file, expected, rtol=1e-5, atol=1e-6)
    # and the answer is close to the same sound synthesised at the model's rate
    native = predictor.predict_proba([synth.chirp(300, 3000, 1.0, RATE)])
    np.testing.assert_allclose(from_file, native, atol=0.02)


def test_stereo_file_is_mixed_to_mono(tiny_model_file: Path, tmp_path: Path) -> None:
    predictor = Predictor(load_model(tiny_model_file), device="cpu")
    wave = synth.tone(1000, 0.8, RATE)
    stereo = synth.write(tmp_path / "s.wav", wave, RATE, channels=2, subtype="FLOAT")
    np.testing.assert_array_equal(predictor.predict_proba([stereo]),
                                  predictor.predict_proba([wave]))


def test_predict_returns_labels(tiny_model_file: Path) -> None:
    predictor = Predictor(load_model(tiny_model_file), device="cpu")
    probs = predictor.predict_proba(_waves())
    assert predictor.predict(_waves()) == [TINY_CLASSES[i] for i in probs.argmax(axis=1)]
    assert predictor.predict_proba([]).shape == (0, 3)
    top = predictor.postprocess(probs, 2)
    assert [len(t) for t in top] == [2] * 4
    assert top[0][0][0] == TINY_CLASSES[int(probs[0].argmax())]


def test_predict_proba_raises_on_a_bad_path(tiny_model_file: Path, tmp_path: Path) -> None:
    predictor = Predictor(load_model(tiny_model_file), device="cpu")
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio")
    with pytest.raises(AudioError, match="junk.wav"):
        predictor.predict_proba([junk])


@pytest.mark.parametrize(("wave", "message"), [
    (np.zeros((2, 16000), np.float32), "mono"),
    (np.zeros(0, np.float32), "empty"),
    (np.full(16000, np.nan, np.float32), "NaN"),
])
def test_unusable_arrays_are_value_errors(tiny_model_file: Path, wave: np.ndarray,
                                          message: str) -> None:
    predictor = Predictor(load_model(tiny_model_file), device="cpu")
    with pytest.raises(ValueError, match=message):
        predictor.predict_proba([wave])


def test_predict_files_skips_bad_files_with_reasons(tiny_model_file: Path,
                                                    bad_folder: synth.BadFolder) -> None:
    predictor = Predictor(load_model(tiny_model_file), device="cpu", batch_size=4)
    paths = [*bad_folder.good, *bad_folder.bad, bad_folder.root / "missing.wav"]
    results = predictor.predict_files(paths)
    assert [r.path for r in results] == paths  # order kept, nothing dropped silently
    for result in results[:len(bad_folder.good)]:
        assert result.ok and result.error is None
        assert result.probabilities is not None
        assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        assert result.label in TINY_CLASSES
    for result, fragment in zip(results[len(bad_folder.good):],
                                [*bad_folder.bad.values(), "no such file"], strict=True):
        assert not result.ok and result.label is None and result.top() == []
        assert fragment.lower() in (result.error or "").lower()
        assert result.to_dict() == {"path": str(result.path), "error": result.error}


def test_predict_files_reports_progress(tiny_model_file: Path, tmp_path: Path) -> None:
    predictor = Predictor(load_model(tiny_model_file), device="cpu", batch_size=2)
    paths = [synth.write(tmp_path / f"{i}.wav", synth.tone(300 + 100 * i, 0.3, RATE), RATE)
             for i in range(5)]
    done: list[int] = []
    predictor.predict_files(paths, progress=done.append)
    assert sum(done) == 5


# -- non-finite model output ----------------------------------------------------------------


def _nan_model(tiny_model_file: Path) -> LoadedModel:
    """The saved tiny model, loaded, with one output bias set to NaN in memory."""
    loaded = load_model(tiny_model_file)
    with torch.no_grad():
        loaded.model.classifier[-1].bias[0] = float("nan")
    return loaded


class _NaNWhenLoud(torch.nn.Module):
    """Wraps a model; its logits are NaN for patches whose loudest bin exceeds ``threshold``."""

    def __init__(self, inner: torch.nn.Module, threshold: float) -> None:
        super().__init__()
        self.inner, self.threshold = inner, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        loud = x.amax(dim=(1, 2)) > self.threshold
        return torch.where(loud[:, None], torch.full_like(logits, float("nan")), logits)


def test_nan_weights_skip_every_file_with_a_reason(tiny_model_file: Path,
                                                   tmp_path: Path) -> None:
    predictor = Predictor(_nan_model(tiny_model_file), device="cpu")
    paths = [synth.write(tmp_path / f"{i}.wav", synth.tone(300 + 200 * i, 0.5, RATE), RATE)
             for i in range(3)]
    results = predictor.predict_files(paths)
    assert [r.path for r in results] == paths
    for result in results:
        assert not result.ok and result.probabilities is None and result.label is None
        assert "non-finite model output" in (result.error or "")


def test_non_finite_output_skips_only_the_files_it_hits(tmp_path: Path) -> None:
    config = tiny_features()
    loud_wave, quiet_wave = synth.tone(500, 0.5, RATE, 0.5), synth.tone(500, 0.5, RATE, 0.005)
    threshold = (float(compute_log_mel(loud_wave, config).max())
                 + float(compute_log_mel(quiet_wave, config).max())) / 2
    predictor = Predictor.from_model(_NaNWhenLoud(tiny_model(), threshold), TINY_CLASSES, config,
                                     device="cpu")
    loud = synth.write(tmp_path / "loud.wav", loud_wave, RATE)
    quiet = synth.write(tmp_path / "quiet.wav", quiet_wave, RATE)
    loud_result, quiet_result = predictor.predict_files([loud, quiet])
    assert not loud_result.ok and "non-finite model output" in (loud_result.error or "")
    assert quiet_result.ok and quiet_result.probabilities is not None
    assert np.isfinite(quiet_result.probabilities).all()


def test_predict_proba_raises_on_non_finite_output(tiny_model_file: Path,
                                                   tmp_path: Path) -> None:
    predictor = Predictor(_nan_model(tiny_model_file), device="cpu")
    path = synth.write(tmp_path / "t.wav", synth.tone(440, 0.5, RATE), RATE)
    with pytest.raises(ModelOutputError, match="t.wav: non-finite model output"):
        predictor.predict_proba([path])
    with pytest.raises(ModelOutputError, match="non-finite model output"):
        predictor.predict(_waves())


def test_collect_audio_files_walks_folders(tmp_path: Path) -> None:
    wave = synth.tone(440, 0.2, RATE)
    a = synth.write(tmp_path / "d" / "a.wav", wave, RATE)
    b = synth.write(tmp_path / "d" / "sub" / "b.flac", wave, RATE)
    synth.write(tmp_path / "d" / ".hidden" / "c.wav", wave, RATE)
    (tmp_path / "d" / "readme.txt").write_text("hi")
    (tmp_path / "empty").mkdir()
    odd = tmp_path / "named.bin"
    odd.write_bytes(b"x")
    files, bad = collect_audio_files([tmp_path / "d", a, odd, tmp_path / "nope",
                                      tmp_path / "empty"])
    assert files == [a, b, odd]  # sorted, deduplicated, explicit files kept as named
    assert [(x.path.name, x.reason.split(" (")[0]) for x in bad] == [
        ("nope", "no such file or folder"), ("empty", "folder holds no audio files")]


# -- scoring a saved model --------------------------------------------------------------------


def test_evaluate_model_refuses_non_finite_output(tiny_model_file: Path, tmp_path: Path) -> None:
    predictor = Predictor(_nan_model(tiny_model_file), device="cpu")
    tone = synth.write(tmp_path / "tone" / "a.wav", synth.tone(500, 0.5, RATE), RATE)
    noise = synth.write(tmp_path / "noise" / "a.wav", synth.noise_burst(0.5, RATE), RATE)
    manifest = Manifest([Clip(tone, "tone"), Clip(noise, "noise")], name="mini")
    pattern = r"tiny.safetensors: non-finite model output.* 2 of 2 clip.*no accuracy"
    with pytest.raises(ModelOutputError, match=pattern):
        evaluate_model(predictor, manifest)


def test_a_device_name_torch_does_not_know_is_a_config_error() -> None:
    from tympan.errors import ConfigError
    from tympan.inference.predict import resolve_device

    with pytest.raises(ConfigError, match="'bogus': not a torch device"):
        resolve_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


def test_short_clips_are_scored_at_their_own_length() -> None:
    model, config = tiny_model(), tiny_features().replace(min_patch_frames=16)
    waves = [synth.tone(440, 0.3, RATE), *_waves()]  # 0.3 s: 19 frames, under a patch
    specs = [compute_log_mel(w, config) for w in waves]
    assert specs[0].shape[-1] < config.patch_frames
    probs = clip_probabilities(model, specs, config, batch_size=3)
    with torch.no_grad():
        own = torch.softmax(model(torch.from_numpy(specs[0])[None]), dim=1)[0].numpy()
    np.testing.assert_allclose(probs[0], own, rtol=1e-5, atol=1e-6)
    # the other clips, and a batch of mixed lengths, answer as they do one at a time
    for spec, row in zip(specs, probs, strict=True):
        np.testing.assert_allclose(clip_probabilities(model, [spec], config)[0], row,
                                   rtol=1e-5, atol=1e-6)
    predictor = Predictor.from_model(model, TINY_CLASSES, config)
    np.testing.assert_allclose(predictor.predict_proba(waves), probs, rtol=1e-5, atol=1e-6)


def test_a_cnn_scores_a_short_clip_at_its_own_length_as_it_does_alone() -> None:
    # the seed front end keeping short clips (>= 16 frames): 0.2 s (padded to 16 frames),
    # 0.5 s, 1.3 s and 2 s at their own lengths beside 5 s clips of whole patches
    from tympan.config import SEED_FEATURES

    model, config = own_length_model(), SEED_FEATURES.replace(min_patch_frames=16)
    rate = config.sample_rate
    waves = [synth.chirp(300, 4000, s, rate) * 0.3 + synth.noise_burst(s, rate, seed=i) * 0.05
             for i, s in enumerate((0.2, 5.0, 0.5, 1.3, 5.0, 2.0))]
    specs = [compute_log_mel(w, config) for w in waves]
    together = clip_probabilities(model, specs, config, batch_size=3)
    alone = np.concatenate([clip_probabilities(model, [s], config) for s in specs])
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)
    # clips of a whole patch or more are scored exactly as without a minimum
    padded = SEED_FEATURES
    for i in (1, 4):
        assert np.array_equal(together[i], clip_probabilities(model, [specs[i]], padded)[0])
    # a short one is not the padded answer any more
    assert not np.allclose(alone[2], clip_probabilities(model, [specs[2]], padded)[0])
