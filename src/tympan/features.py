"""The log-mel front end: a stateless function plus an ``nn.Module`` holding buffers.

With the default :class:`~tympan.config.FeatureConfig` the output matches
``librosa.power_to_db(librosa.feature.melspectrogram(...), ref=1.0, amin=1e-10,
top_db=80)`` within 1e-3 dB. The same code, configured differently, is the
EfficientAT front end (pre-emphasis, Kaldi mel, ``ln``, normalisation).

Speed (CPU, outside autograd and ONNX export): frames are cut with a strided
view and transformed with a real FFT (pocketfft for float64), and the mel matrix
is applied block-sparsely (:func:`mel_blocks`); with gradients, on GPU, or while
exporting, the same numbers come from ``torch.stft`` and a dense matmul.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import librosa
import numpy as np
import torch
from torch import Tensor, nn

from tympan.config import SEED_FEATURES, FeatureConfig
from tympan.melspec import kaldi_mel_filterbank


def make_window(config: FeatureConfig) -> np.ndarray:
    """The analysis window, ``(win_length,)`` float64 (periodic or symmetric Hann)."""
    n = config.win_length
    if config.window == "hann":
        return np.asarray(librosa.filters.get_window("hann", n, fftbins=True), dtype=np.float64)
    if config.window == "hann_symmetric":
        return np.hanning(n).astype(np.float64)
    raise ValueError(f"unknown window {config.window!r}")


def mel_filterbank(config: FeatureConfig) -> np.ndarray:
    """The mel matrix ``(n_mels, n_fft // 2 + 1)`` float64 for ``config``."""
    if config.mel_scale == "kaldi":
        return kaldi_mel_filterbank(config)
    return np.asarray(
        librosa.filters.mel(
            sr=config.sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            fmin=config.f_min_hz,
            fmax=config.f_max,
            htk=config.mel_scale == "htk",
            norm="slaney" if config.mel_norm == "slaney" else None,
            dtype=np.float64,
        ),
        dtype=np.float64,
    )


def n_frames(n_samples: int, config: FeatureConfig = SEED_FEATURES) -> int:
    """Number of spectrogram frames the front end yields for ``n_samples`` samples."""
    if config.preemphasis:
        n_samples = max(n_samples - 1, 1)
    if config.center:
        return 1 + n_samples // config.hop_samples
    return max(0, 1 + (n_samples - config.n_fft) // config.hop_samples)


MelBlocks = list[tuple[int, int, int, int]]


def mel_blocks(mel_matrix: np.ndarray | Tensor, n_blocks: int = 16) -> MelBlocks:
    """Split the (sparse) mel matrix into dense blocks ``(band_lo, band_hi, bin_lo, bin_hi)``.

    A mel filterbank is ~98 % zeros (each FFT bin feeds at most two triangles), so
    ``n_blocks`` small dense matmuls over each block's bin span do ~8x fewer flops
    than one dense ``(n_mels, bins)`` matmul and give the same sums (zeros skipped).
    """
    weights = np.asarray(mel_matrix.detach().cpu() if isinstance(mel_matrix, Tensor)
                         else mel_matrix)
    n_mels, n_bins = weights.shape
    nonzero = weights != 0
    any_nz = nonzero.any(axis=1)
    first = np.where(any_nz, nonzero.argmax(axis=1), n_bins)
    last = np.where(any_nz, n_bins - nonzero[:, ::-1].argmax(axis=1), 0)
    edges = np.linspace(0, n_mels, min(n_blocks, n_mels) + 1).round().astype(int)
    blocks = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        bin_lo, bin_hi = int(first[lo:hi].min()), int(last[lo:hi].max())
        if bin_hi <= bin_lo:  # all-zero bands: an empty span still yields zeros
            bin_lo, bin_hi = 0, 0
        blocks.append((int(lo), int(hi), bin_lo, bin_hi))
    return blocks


def _apply_mel(power: Tensor, mel_matrix: Tensor, blocks: MelBlocks | None) -> Tensor:
    """``(rows, frames, bins)`` power → ``(rows, frames, n_mels)`` mel energies."""
    if blocks is None:
        return torch.matmul(power, mel_matrix.T)
    # 2-D matmuls: torch's batched path for small, strided operands is orders of
    # magnitude slower on CPU than one (rows * frames, span) @ (span, bands) GEMM
    flat = power.reshape(-1, power.shape[-1])
    pieces = []
    for band_lo, band_hi, bin_lo, bin_hi in blocks:
        if bin_hi <= bin_lo:
            pieces.append(flat.new_zeros(flat.shape[0], band_hi - band_lo))
        else:
            pieces.append(torch.mm(flat[:, bin_lo:bin_hi],
                                   mel_matrix[band_lo:band_hi, bin_lo:bin_hi].T))
    return torch.cat(pieces, dim=-1).reshape(*power.shape[:-1], -1)


def _fast_path_ok(x: Tensor) -> bool:
    """Framing + rfft (below) is only used on CPU outside autograd and export/tracing,
    where ``torch.stft`` keeps gradients and exports to ONNX's STFT op."""
    if x.device.type != "cpu" or x.requires_grad:
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    return not torch.onnx.is_in_onnx_export()


def _stft_power_frames(x: Tensor, window: Tensor, config: FeatureConfig) -> Tensor:
    """Power spectrum ``(rows, frames, n_fft // 2 + 1)`` float32 of ``x`` ``(rows, samples)``.

    CPU fast path: frame with a strided view, window, then a real FFT. A float64
    FFT runs through pocketfft (scipy, all torch threads): on CPUs where MKL's
    double-precision FFT is slow (AMD EPYC: ~4x slower than pocketfft) this is
    what keeps the exact-parity default cheap.
    """
    n_fft, hop = config.n_fft, config.hop_samples
    double = config.stft_dtype == "float64"
    if config.center:
        half = n_fft // 2
        if config.pad_mode == "reflect":
            x = torch.nn.functional.pad(x[:, None], (half, half), mode="reflect")[:, 0]
        else:
            x = torch.nn.functional.pad(x, (half, half))
    win = window.double() if double else window.float()
    if win.shape[-1] < n_fft:  # torch.stft centres a shorter window inside n_fft
        left = (n_fft - win.shape[-1]) // 2
        win = torch.nn.functional.pad(win, (left, n_fft - win.shape[-1] - left))
    frames = x.double() if double else x.float()
    frames = frames.unfold(-1, n_fft, hop) * win
    if double:
        import scipy.fft

        spec = torch.from_numpy(scipy.fft.rfft(frames.numpy(), axis=-1, overwrite_x=True,
                                               workers=torch.get_num_threads()))
    else:
        spec = torch.fft.rfft(frames, dim=-1)
    return (spec.real.square() + spec.imag.square()).float()


def log_mel(
    waveform: Tensor,
    window: Tensor,
    mel_matrix: Tensor,
    config: FeatureConfig = SEED_FEATURES,
    *,
    blocks: MelBlocks | None = None,
    power_spectrum: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Log-mel spectrogram of ``waveform`` ``(..., samples)`` → ``(..., n_mels, frames)``.

    ``window`` is ``(win_length,)`` and ``mel_matrix`` ``(n_mels, n_fft // 2 + 1)``,
    on the waveform's device. With ``log="db"`` and ``top_db`` set, each clip is
    clipped at its own maximum minus ``top_db`` (as ``librosa.power_to_db``).
    ``blocks`` (from :func:`mel_blocks`) applies the mel matrix block-sparsely.
    ``power_spectrum`` replaces the STFT: ``(rows, samples)`` (after pre-emphasis)
    → power ``(rows, frames, bins)``, bins in the order of ``mel_matrix``'s
    columns (the ONNX export's split DFT).
    """
    shape = waveform.shape
    x = waveform.reshape(-1, shape[-1])
    if config.preemphasis:
        x = x[:, 1:] - config.preemphasis * x[:, :-1]
    if config.center and config.pad_mode == "reflect" and x.shape[-1] <= config.n_fft // 2:
        raise ValueError(
            f"{x.shape[-1]} samples are too few for reflect padding (need > {config.n_fft // 2})"
        )
    if power_spectrum is not None:
        power = power_spectrum(x)
    elif _fast_path_ok(x) and (config.center or x.shape[-1] >= config.n_fft):
        power = _stft_power_frames(x, window, config)  # (rows, frames, bins)
    else:
        if config.stft_dtype == "float64":
            x, window = x.double(), window.double()
        spec = torch.stft(
            x,
            n_fft=config.n_fft,
            hop_length=config.hop_samples,
            win_length=config.win_length,
            window=window,
            center=config.center,
            pad_mode=config.pad_mode,
            return_complex=True,
        )
        power = (spec.real.square() + spec.imag.square()).transpose(-1, -2)
    power = power.to(mel_matrix.dtype)
    if config.power != 2.0:
        power = power.pow(config.power / 2.0)
    mel = _apply_mel(power, mel_matrix, blocks).transpose(-1, -2)  # (rows, n_mels, frames)
    if config.log == "db":
        out = 10.0 * torch.log10(torch.clamp(mel, min=config.amin))
        out = out - 10.0 * math.log10(max(config.amin, config.ref))
        if config.top_db is not None:
            peak = out.amax(dim=(-2, -1), keepdim=True)
            out = torch.maximum(out, peak - config.top_db)
    else:
        out = torch.log(mel + config.log_offset)
    if config.norm_shift or config.norm_scale != 1.0:
        out = (out + config.norm_shift) / config.norm_scale
    return out.reshape(*shape[:-1], *out.shape[-2:])


class LogMel(nn.Module):
    """Log-mel front end as a module: ``(..., samples)`` → ``(..., n_mels, frames)``.

    Holds the window and mel matrix as (non-persistent) buffers, so ``.to(device)``
    moves them and ONNX export keeps them; the config travels as ``self.config``.
    """

    window: Tensor
    mel_matrix: Tensor

    def __init__(self, config: FeatureConfig = SEED_FEATURES) -> None:
        super().__init__()
        self.config = config
        self.register_buffer(
            "window", torch.from_numpy(make_window(config)).float(), persistent=False
        )
        matrix = mel_filterbank(config)
        self.register_buffer("mel_matrix", torch.from_numpy(matrix).float(), persistent=False)
        self.blocks = mel_blocks(matrix)

    def forward(self, waveform: Tensor) -> Tensor:
        return log_mel(waveform, self.window, self.mel_matrix, self.config, blocks=self.blocks)

    def extra_repr(self) -> str:
        c = self.config
        return (f"name={c.name!r}, sample_rate={c.sample_rate}, n_fft={c.n_fft}, "
                f"hop_samples={c.hop_samples}, n_mels={c.n_mels}")


_FRONTENDS: dict[FeatureConfig, LogMel] = {}


def compute_log_mel(waveform: np.ndarray, config: FeatureConfig = SEED_FEATURES) -> np.ndarray:
    """NumPy convenience: ``(samples,)`` or ``(batch, samples)`` → float32 log-mel."""
    module = _FRONTENDS.get(config)
    if module is None:
        module = _FRONTENDS.setdefault(config, LogMel(config))
    with torch.inference_mode():
        return module(torch.as_tensor(np.asarray(waveform, dtype=np.float32))).numpy()
