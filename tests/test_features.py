"""The log-mel front end: librosa parity, batching, band placement, patches, fast path."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import synth
import torch

from tympan.config import EFFICIENTAT_FEATURES, SEED_FEATURES
from tympan.features import (
    LogMel,
    compute_log_mel,
    log_mel,
    mel_blocks,
    mel_filterbank,
    n_frames,
)

SR = SEED_FEATURES.sample_rate


def librosa_log_mel(x: np.ndarray) -> np.ndarray:
    """The seed's front end, exactly as it called librosa."""
    mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=1024, hop_length=1024, n_mels=128,
                                         fmin=0.0, fmax=SR / 2)
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)


SIGNALS = {
    **{f"tone {f} Hz": synth.tone(f, 1.0, SR) for f in (30, 440, 1000, 5000, 15000, 21500)},
    "quiet tone": synth.tone(2000, 1.0, SR, amplitude=1e-4),
    "noise": synth.noise_burst(1.0, SR),
    "noise burst": synth.noise_burst(1.0, SR, burst_seconds=(0.3, 0.6), seed=4),
    "chirp": synth.chirp(50, 20000, 1.0, SR),
    "clicks": synth.click_train(25, 1.0, SR),
    "short 0.05 s": synth.tone(1000, 0.05, SR),
    "tiny 100 samples": synth.noise_burst(100 / SR, SR),
    "odd length": synth.chirp(100, 8000, 0.7777, SR),
}


@pytest.mark.parametrize("name", list(SIGNALS))
def test_librosa_parity_within_1e3_db(name):
    x = SIGNALS[name]
    ours = compute_log_mel(x)
    reference = librosa_log_mel(x)
    assert ours.shape == reference.shape == (128, n_frames(len(x)))
    assert ours.dtype == np.float32
    assert np.abs(ours - reference).max() <= 1e-3


def test_batch_of_n_equals_n_singles():
    names = ["tone 440 Hz", "noise", "chirp", "clicks", "quiet tone"]
    batch = np.stack([SIGNALS[n] for n in names])
    together = compute_log_mel(batch)
    assert together.shape == (5, 128, n_frames(SR))
    for i, n in enumerate(names):
        np.testing.assert_allclose(together[i], compute_log_mel(SIGNALS[n]), atol=1e-5)


def test_module_takes_any_leading_dims():
    x = torch.from_numpy(np.stack([SIGNALS["noise"], SIGNALS["chirp"]] * 3).reshape(3, 2, SR))
    out = LogMel()(x)
    assert out.shape == (3, 2, 128, n_frames(SR))
    torch.testing.assert_close(out[1, 1], LogMel()(x[1, 1]))


@pytest.mark.parametrize("freq", [200.0, 1000.0, 3000.0, 8000.0, 16000.0])
def test_a_tone_peaks_in_the_mel_band_containing_its_frequency(freq):
    spec = compute_log_mel(synth.tone(freq, 0.5, SR))
    weights = mel_filterbank(SEED_FEATURES)
    bin_index = round(freq * SEED_FEATURES.n_fft / SR)
    bands_containing_f = set(np.flatnonzero(weights[:, bin_index] > 0))
    assert int(np.argmax(spec.mean(axis=1))) in bands_containing_f


@pytest.mark.parametrize("config", [SEED_FEATURES, EFFICIENTAT_FEATURES,
                                    SEED_FEATURES.replace(stft_dtype="float32"),
                                    SEED_FEATURES.replace(win_samples=800, center=False)])
def test_fast_cpu_path_matches_torch_stft_path(config):
    """Outside autograd, CPU frames + rfft are used; with grad, torch.stft. Same numbers."""
    module = LogMel(config)
    x = torch.from_numpy(np.stack([SIGNALS["chirp"], SIGNALS["noise burst"]]))
    with torch.inference_mode():
        fast = module(x)
    reference = module(x.clone().requires_grad_(True))
    assert reference.requires_grad  # gradients flow through the front end
    torch.testing.assert_close(fast, reference.detach(), atol=2e-4, rtol=0)


def test_block_sparse_mel_equals_dense_matmul():
    for config in (SEED_FEATURES, EFFICIENTAT_FEATURES, SEED_FEATURES.replace(n_mels=40)):
        weights = mel_filterbank(config).astype(np.float32)
        power = torch.rand(3, 7, weights.shape[1])
        matrix = torch.from_numpy(weights)
        dense = power @ matrix.T
        window = torch.from_numpy(np.hanning(config.win_length))
        assert window.shape[0] == config.win_length
        x = torch.randn(2, config.sample_rate // 4)
        blocks = mel_blocks(weights)
        assert sum(hi - lo for lo, hi, _, _ in blocks) == config.n_mels
        from tympan.features import _apply_mel

        torch.testing.assert_close(_apply_mel(power, matrix, blocks), dense)
        with torch.inference_mode():
            torch.testing.assert_close(log_mel(x, window, matrix, config, blocks=blocks),
                                       log_mel(x, window, matrix, config))


def test_efficientat_front_end_shape_and_scale():
    x = synth.noise_burst(1.0, 32000)
    out = compute_log_mel(x, EFFICIENTAT_FEATURES)
    assert out.shape == (128, n_frames(len(x), EFFICIENTAT_FEATURES))
    assert np.isfinite(out).all() and -5 < out.mean() < 5  # (ln + 4.5) / 5 normalised


def test_reflect_padding_needs_enough_samples():
    with pytest.raises(ValueError, match="reflect"):
        compute_log_mel(np.zeros(100, np.float32), EFFICIENTAT_FEATURES)


# ---- patching --------------------------------------------------------------------------
