"""The NumPy log-mel (torch-free timelines) computes what the torch front end computes."""

from __future__ import annotations

import numpy as np
import pytest

from tympan.config import EFFICIENTAT_FEATURES, SEED_FEATURES, FeatureConfig
from tympan.features import compute_log_mel, mel_filterbank
from tympan.melspec import log_mel_numpy, mel_matrix

CONFIGS = {
    "seed (slaney, dB, top_db)": SEED_FEATURES,
    "efficientat (kaldi, ln, pre-emphasis, norm)": EFFICIENTAT_FEATURES,
    "htk, no norm, ln, 16 kHz, reflect": FeatureConfig(
        sample_rate=16000, n_fft=512, hop_samples=160, mel_scale="htk", mel_norm="none",
        log="ln", pad_mode="reflect", n_mels=40, f_min_hz=50.0),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_numpy_log_mel_matches_the_torch_front_end(name: str) -> None:
    config = CONFIGS[name]
    wave = np.random.default_rng(0).standard_normal((2, config.sample_rate)).astype(np.float32)
    wave[1] *= 0.01  # a quiet row: top_db clips it by its own peak
    np.testing.assert_allclose(mel_matrix(config), mel_filterbank(config), rtol=0, atol=1e-12)
    got = log_mel_numpy(wave, config)
    want = compute_log_mel(wave, config)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


def test_too_short_for_reflect_padding_is_a_value_error() -> None:
    config = CONFIGS["htk, no norm, ln, 16 kHz, reflect"]
    with pytest.raises(ValueError, match="too few"):
        log_mel_numpy(np.zeros((1, 100), dtype=np.float32), config)
