"""A NumPy log-mel for places that must not import torch or librosa (ONNX timelines).

:func:`log_mel_numpy` follows :func:`tympan.features.log_mel` for any
:class:`~tympan.config.FeatureConfig` (window, centring, pre-emphasis, mel
scale and norm, dB or ln, normalisation) with ``numpy.fft``; the mel matrices
are librosa's (slaney/htk) and Kaldi's formulas written out, so a runtime-only
install (``tympan[runtime]``) can draw the spectrogram of a timeline. The
training front end stays :mod:`tympan.features` (torch).
"""

from __future__ import annotations

import numpy as np

from tympan.config import FeatureConfig


def hann_window(config: FeatureConfig) -> np.ndarray:
    """The analysis window ``(win_length,)`` float64: periodic or symmetric Hann."""
    n = config.win_length
    if config.window == "hann":
        return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    if config.window == "hann_symmetric":
        return np.hanning(n).astype(np.float64)
    raise ValueError(f"unknown window {config.window!r}")


def _hz_to_mel(freq_hz: np.ndarray, htk: bool) -> np.ndarray:
    freq_hz = np.asarray(freq_hz, dtype=np.float64)
    if htk:
        return np.asarray(2595.0 * np.log10(1.0 + freq_hz / 700.0))
    linear = freq_hz / (200.0 / 3)
    logstep = np.log(6.4) / 27.0
    with np.errstate(divide="ignore"):
        log_part = 15.0 + np.log(np.maximum(freq_hz, 1e-300) / 1000.0) / logstep
    return np.where(freq_hz >= 1000.0, log_part, linear)


def _mel_to_hz(mels: np.ndarray, htk: bool) -> np.ndarray:
    if htk:
        return np.asarray(700.0 * (10.0 ** (mels / 2595.0) - 1.0))
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(logstep * (mels - 15.0)), mels * 200.0 / 3)


def _kaldi_mel(freq_hz: np.ndarray) -> np.ndarray:
    return np.asarray(1127.0 * np.log1p(freq_hz / 700.0))


def kaldi_mel_filterbank(config: FeatureConfig) -> np.ndarray:
    """Kaldi-style filters, triangular in the mel domain: ``(n_mels, n_fft // 2 + 1)``.

    Follows ``torchaudio.compliance.kaldi.get_mel_banks`` (no VTLN); the
    Nyquist bin gets zero weight, as EfficientAT pads it.
    """
    n_bins = config.n_fft // 2 + 1
    low, high = _kaldi_mel(np.array([config.f_min_hz, config.f_max]))
    delta = (high - low) / (config.n_mels + 1)
    left = low + np.arange(config.n_mels)[:, None] * delta
    centre, right = left + delta, left + 2 * delta
    fft_mels = _kaldi_mel(np.arange(config.n_fft // 2) * config.sample_rate / config.n_fft)
    up = (fft_mels[None] - left) / (centre - left)
    down = (right - fft_mels[None]) / (right - centre)
    weights = np.maximum(0.0, np.minimum(up, down))
    return np.concatenate([weights, np.zeros((config.n_mels, n_bins - weights.shape[1]))], 1)


def mel_matrix(config: FeatureConfig) -> np.ndarray:
    """The mel filterbank ``(n_mels, n_fft // 2 + 1)`` float64 of ``config`` (the same
    matrix :func:`tympan.features.mel_filterbank` builds with librosa or Kaldi's rule)."""
    if config.mel_scale == "kaldi":
        return kaldi_mel_filterbank(config)
    htk = config.mel_scale == "htk"
    fft_freqs = np.fft.rfftfreq(config.n_fft, 1.0 / config.sample_rate)
    edges = _hz_to_mel(np.array([config.f_min_hz, config.f_max]), htk)
    mel_f = _mel_to_hz(np.linspace(edges[0], edges[1], config.n_mels + 2), htk)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if config.mel_norm == "slaney":
        weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return np.asarray(weights, dtype=np.float64)


def log_mel_numpy(waveform: np.ndarray, config: FeatureConfig,
                  matrix: np.ndarray | None = None) -> np.ndarray:
    """Log-mel of ``waveform`` ``(rows, samples)`` → ``(rows, n_mels, frames)`` float32,
    as :func:`tympan.features.log_mel` computes it (float64 FFT). ``matrix`` is
    :func:`mel_matrix`'s result, passed to skip rebuilding it.

    Raises:
        ValueError: too few samples for reflect padding.
    """
    x = np.asarray(waveform, dtype=np.float64)
    if config.preemphasis:
        x = x[:, 1:] - config.preemphasis * x[:, :-1]
    n_fft, hop = config.n_fft, config.hop_samples
    if config.center:
        if config.pad_mode == "reflect" and x.shape[-1] <= n_fft // 2:
            raise ValueError(f"{x.shape[-1]} samples are too few for reflect padding "
                             f"(need > {n_fft // 2})")
        half = ((0, 0), (n_fft // 2, n_fft // 2))
        x = (np.pad(x, half, mode="reflect") if config.pad_mode == "reflect"
             else np.pad(x, half))
    window = np.zeros(n_fft)
    win = hann_window(config)
    left = (n_fft - win.shape[0]) // 2
    window[left:left + win.shape[0]] = win
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[:, ::hop]
    spec = np.fft.rfft(frames * window, axis=-1)
    power = spec.real ** 2 + spec.imag ** 2
    if config.power != 2.0:
        power = power ** (config.power / 2.0)
    weights = mel_matrix(config) if matrix is None else matrix
    mel = np.einsum("rfb,mb->rmf", power, weights)
    if config.log == "db":
        out = 10.0 * np.log10(np.maximum(mel, config.amin))
        out -= 10.0 * np.log10(max(config.amin, config.ref))
        if config.top_db is not None:
            out = np.maximum(out, out.max(axis=(-2, -1), keepdims=True) - config.top_db)
    else:
        out = np.log(mel + config.log_offset)
    if config.norm_shift or config.norm_scale != 1.0:
        out = (out + config.norm_shift) / config.norm_scale
    return out.astype(np.float32)


__all__ = ["hann_window", "kaldi_mel_filterbank", "log_mel_numpy", "mel_matrix"]
