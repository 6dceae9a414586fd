"""EfficientAT mn04: network layout, checkpoint loading, front end and AudioSet parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import synth
import torch

from tympan.config import EFFICIENTAT_FEATURES
from tympan.features import LogMel
from tympan.models.efficientat import (
    EfficientATNet,
    SqueezeExcitation,
    build_mn,
    convert_upstream_state_dict,
    make_divisible,
)
from tympan.models.pretrained import audioset_labels

# -- network layout ---------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(16 * 0.4, 8), (72 * 0.4, 32), (40 * 0.4, 16),
                                                 (960 * 0.4, 384), (1280 * 0.4, 512),
                                                 (184 * 0.4, 72), (10, 16), (3, 8)])
def test_make_divisible_rounds_to_eight_and_never_drops_ten_percent(value: float,
                                                                    expected: int) -> None:
    assert make_divisible(value) == expected


def test_mn04_has_the_published_size_and_shapes() -> None:
    net = build_mn(width=0.4).eval()
    assert sum(p.numel() for p in net.parameters()) == 983_599  # weights README
    x = torch.randn(2, 1, 128, 100)
    with torch.no_grad():
        fmap = net.feature_map(x)
        logits = net(x)
    assert fmap.shape == (2, 384, 4, 4)
    assert logits.shape == (2, 527)
    assert net.pooled(fmap).shape == (2, 384)
    assert net.hidden(net.pooled(fmap)).shape == (2, 512)


def test_any_number_of_frames_works() -> None:
    net = build_mn().eval()
    with torch.no_grad():
        for frames in (17, 250, 1001):
            assert net(torch.randn(1, 1, 128, frames)).shape == (1, 527)


def test_batchnorm_uses_eps_1e3() -> None:
    eps = {m.eps for m in build_mn().modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert eps == {1e-3}


def test_squeeze_excitation_is_linear_relu_linear_plain_sigmoid() -> None:
    torch.manual_seed(0)
    se = SqueezeExcitation(32)
    assert (se.fc1.in_features, se.fc1.out_features) == (32, 8)
    x = torch.randn(2, 32, 5, 7)
    squeezed = x.mean(dim=(2, 3))
    scale = torch.sigmoid(se.fc2(torch.relu(se.fc1(squeezed))))
    torch.testing.assert_close(se(x), x * scale[:, :, None, None])
    # a hard sigmoid would saturate at exactly 1 for logits >= 3; the plain one does not
    with torch.no_grad():
        se.fc2.bias.fill_(4.0)
        gain = se(torch.ones(1, 32, 2, 2))
    assert float(gain.max()) < 1.0


# -- the released checkpoint ------------------------------------------------------------------


def test_shared_checkpoint_loads_with_strict_keys(mn04_weights: Path) -> None:
    state = torch.load(mn04_weights, map_location="cpu", weights_only=True)
    assert any(".conc_se_layers.0." in key for key in state)
    net = EfficientATNet(width=0.4)
    with pytest.raises(RuntimeError, match="conc_se_layers"):
        net.load_state_dict(state, strict=True)
    result = net.load_state_dict(convert_upstream_state_dict(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


# -- front end --------------------------------------------------------------------------------


def _kaldi_banks_reference(n_mels: int, n_fft: int, sample_rate: int, f_low: float,
                           f_high: float) -> np.ndarray:
    """torchaudio.compliance.kaldi.get_mel_banks (no VTLN) re-derived in float64,
    padded with a zero column for the Nyquist bin as EfficientAT's AugmentMelSTFT does."""
    def mel(f: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    n_bins = n_fft // 2
    bin_mel = mel(np.arange(n_bins) * sample_rate / n_fft)
    mel_low, mel_high = float(mel(f_low)), float(mel(f_high))
    delta = (mel_high - mel_low) / (n_mels + 1)
    banks = np.zeros((n_mels, n_bins + 1))
    for m in range(n_mels):
        left, center, right = (mel_low + (m + k) * delta for k in range(3))
        up = (bin_mel - left) / (center - left)
        down = (right - bin_mel) / (right - center)
        banks[m, :n_bins] = np.maximum(0.0, np.minimum(up, down))
    return banks


def _efficientat_reference(wave: np.ndarray) -> np.ndarray:
    """AugmentMelSTFT.forward in eval mode, as float64 NumPy: (n_mels, frames)."""
    c = EFFICIENTAT_FEATURES
    x = np.asarray(wave, dtype=np.float64)
    x = x[1:] - 0.97 * x[:-1]  # conv1d with kernel [-0.97, 1]
    x = np.pad(x, (c.n_fft // 2, c.n_fft // 2), mode="reflect")
    window = np.zeros(c.n_fft)
    offset = (c.n_fft - 800) // 2
    window[offset:offset + 800] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 799)
    n = 1 + (len(x) - c.n_fft) // c.hop_samples
    frames = np.stack([x[i * c.hop_samples:i * c.hop_samples + c.n_fft] for i in range(n)])
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    banks = _kaldi_banks_reference(128, c.n_fft, c.sample_rate, 0.0, 15000.0)
    mel = banks @ power.T
    return (np.log(mel + 1e-5) + 4.5) / 5.0


def test_efficientat_front_end_matches_a_float64_reference() -> None:
    sr = EFFICIENTAT_FEATURES.sample_rate
    wave = (synth.tone(440, 1.0, sr, 0.3) + synth.chirp(100, 14000, 1.0, sr, 0.2)
            + synth.noise_burst(1.0, sr, 0.05, seed=1)).astype(np.float32)
    ours = LogMel(EFFICIENTAT_FEATURES)(torch.from_numpy(wave)).double().numpy()
    reference = _efficientat_reference(wave)
    assert ours.shape == reference.shape == (128, 100)
    # float32 STFT against float64: log-mel units are ln(power) / 5
    np.testing.assert_allclose(ours, reference, atol=2e-4, rtol=0)


def test_front_end_maps_digital_silence_to_the_log_floor() -> None:
    spec = LogMel(EFFICIENTAT_FEATURES)(torch.zeros(16000))
    torch.testing.assert_close(spec, torch.full_like(spec, (np.log(1e-5) + 4.5) / 5))


# -- AudioSet parity --------------------------------------------------------------------------


def _audioset_top(net: torch.nn.Module, wave: np.ndarray, k: int = 3) -> list[str]:
    labels = audioset_labels("mn04_as")
    spec = LogMel(EFFICIENTAT_FEATURES)(torch.from_numpy(wave.astype(np.float32)))
    with torch.no_grad():
        probs = torch.sigmoid(net(spec[None, None]))[0]
    return [labels[int(i)] for i in probs.argsort(descending=True)[:k]]


@pytest.fixture
def mn04_net(mn04_weights: Path) -> torch.nn.Module:
    from tympan.models.pretrained import load_pretrained

    return load_pretrained("mn04_as", mn04_weights)


def test_pretrained_net_calls_a_pure_tone_a_sine_wave(mn04_net: torch.nn.Module) -> None:
    sr = EFFICIENTAT_FEATURES.sample_rate
    assert _audioset_top(mn04_net, synth.tone(440, 5.0, sr, 0.5), 1) == ["Sine wave"]


def test_pretrained_net_calls_white_noise_noise(mn04_net: torch.nn.Module) -> None:
    sr = EFFICIENTAT_FEATURES.sample_rate
    top = _audioset_top(mn04_net, synth.noise_burst(5.0, sr, 0.5, seed=3), 3)
    assert "White noise" in top
    assert set(top) <= {"White noise", "Static", "Noise", "Pink noise"}
