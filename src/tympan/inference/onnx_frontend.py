"""The exported graph's STFT as two small matmuls (a Cooley–Tukey split of the DFT).

ONNX Runtime's ``STFT`` kernel is slow on a CPU (measured here: 16 ms for a
5 s clip at the mn04 front end, four times the network), and a direct DFT as
one matmul or conv1d does ``n_fft`` multiply-adds per bin. Splitting
``n_fft = a · b`` (32 · 32 for 1024) turns it into an ``a``-point DFT matmul,
a twiddle product and a ``b``-point DFT matmul: ~``2·(a + b)`` multiply-adds
per bin, all in GEMMs, so ~3 ms for the same clip. :class:`ExportLogMel` is
:class:`~tympan.features.LogMel` with this power spectrum; everything else is
the shared :func:`~tympan.features.log_mel`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from tympan.config import FeatureConfig
from tympan.features import LogMel, log_mel


def split_size(n: int) -> tuple[int, int]:
    """``(a, b)`` with ``a · b = n`` and ``a`` the largest divisor of ``n`` not above √n."""
    a = int(math.isqrt(n))
    while n % a:
        a -= 1
    return a, n // a


def frame_signal(x: Tensor, frame_length: int, hop: int, n_frames: int) -> Tensor:
    """``(rows, samples)`` → ``(rows, n_frames, frame_length)``; frame ``t`` starts at ``t · hop``.

    Built from hop-sized blocks, shifted and concatenated (slices and copies, which
    export to contiguous ONNX Slice/Concat), not an element-wise gather.
    """
    shifts = -(-frame_length // hop)  # blocks per frame, rounded up
    need = (n_frames + shifts - 1) * hop
    # pad then cut, never "if": a branch on the length would be frozen into the exported graph
    x = nn.functional.pad(x, (0, shifts * hop))[:, :need]
    blocks = x.reshape(x.shape[0], n_frames + shifts - 1, hop)
    joined = torch.cat([blocks[:, k:k + n_frames] for k in range(shifts)], dim=-1)
    return joined[..., :frame_length]


class MatmulStft(nn.Module):
    """Power spectrum ``(rows, samples)`` → ``(rows, frames, a · k2_count)`` by a split DFT.

    Framing, centring and padding are ``torch.stft``'s (``center``, ``pad_mode``,
    a window shorter than ``n_fft`` centred in it); the arithmetic runs in the
    config's ``stft_dtype``, the result is float32. Bins come in the split's
    order (column ``k1 · k2_count + k2`` is bin ``k2 · a + k1``; bins past
    ``n_fft / 2`` are extra): :meth:`reorder` permutes a mel matrix to match, so
    the graph never transposes the spectrum back.
    """

    window: Tensor
    stage1: Tensor
    stage2: Tensor

    def __init__(self, config: FeatureConfig, window: Tensor) -> None:
        super().__init__()
        self.n_fft, self.hop = config.n_fft, config.hop_samples
        self.center, self.pad_mode = config.center, config.pad_mode
        self.n_bins = config.n_fft // 2 + 1
        dtype = torch.float64 if config.stft_dtype == "float64" else torch.float32
        a, b = split_size(self.n_fft)
        self.a, self.b = a, b
        self.k2_count = (self.n_bins - 1) // a + 1
        full = np.zeros(self.n_fft)
        left = (self.n_fft - window.shape[-1]) // 2
        full[left:left + window.shape[-1]] = window.double().numpy()
        # Stage 1, for each n2: a-point DFT over n1 of x[b·n1 + n2]; rows [cos ; -sin]
        angle1 = 2 * np.pi * np.outer(np.arange(a), np.arange(a)) / a
        stage1 = np.concatenate([np.cos(angle1), -np.sin(angle1)], axis=0)  # (2a, a)
        # Stage 2, for each k1: twiddle e^{-2πi·n2·k1/n_fft} times the b-point DFT over n2,
        # as one real (2b, 2·k2_count) matrix mapping [re | im] to [re | im]
        n2, k1, k2 = np.arange(b)[None, :, None], np.arange(a)[:, None, None], \
            np.arange(self.k2_count)[None, None, :]
        theta = 2 * np.pi * (n2 * k1 / self.n_fft + n2 * k2 / b)  # (a, b, k2_count)
        cos, sin = np.cos(theta), np.sin(theta)
        stage2 = np.concatenate([np.concatenate([cos, -sin], axis=2),
                                 np.concatenate([sin, cos], axis=2)], axis=1)

        def buffer(name: str, value: np.ndarray) -> None:
            self.register_buffer(name, torch.from_numpy(value).to(dtype), persistent=False)

        buffer("window", full.reshape(a, b))
        buffer("stage1", stage1)
        buffer("stage2", stage2)

    def reorder(self, mel_matrix: Tensor) -> Tensor:
        """``(n_mels, n_fft // 2 + 1)`` → ``(n_mels, a · k2_count)`` in this module's bin order."""
        k1 = torch.arange(self.a)[:, None]
        k2 = torch.arange(self.k2_count)[None, :]
        bins = (k2 * self.a + k1).reshape(-1)
        padded = nn.functional.pad(mel_matrix, (0, int(bins.max()) + 1 - mel_matrix.shape[1]))
        return padded[:, bins]

    def forward(self, x: Tensor) -> Tensor:
        rows = x.shape[0]
        if self.center:
            half = self.n_fft // 2
            x = nn.functional.pad(x[:, None], (half, half), mode=self.pad_mode)[:, 0]
        n_frames = (x.shape[-1] - self.n_fft) // self.hop + 1
        frames = frame_signal(x.to(self.stage1.dtype), self.n_fft, self.hop, n_frames)
        frames = frames.reshape(rows * n_frames, self.a, self.b) * self.window  # [n1, n2]
        part = torch.matmul(self.stage1, frames)  # (rf, [re|im] k1, n2)
        # k1 outermost for stage 2's batched matmul; n2 stays innermost (block copies)
        part = part.reshape(-1, 2, self.a, self.b).permute(2, 0, 1, 3)  # (k1, rf, re|im, n2)
        out = torch.matmul(part.reshape(self.a, -1, 2 * self.b), self.stage2)
        power = out[..., :self.k2_count].square() + out[..., self.k2_count:].square()
        return power.transpose(0, 1).reshape(rows, n_frames, -1).float()  # (rf, k1, k2)


class ExportLogMel(LogMel):
    """:class:`~tympan.features.LogMel` whose STFT is :class:`MatmulStft` (for export)."""

    split_mel: Tensor

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__(config)
        self.stft = MatmulStft(config, self.window)
        self.register_buffer("split_mel", self.stft.reorder(self.mel_matrix), persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        return log_mel(waveform, self.window, self.split_mel, self.config,
                       power_spectrum=self.stft)


__all__ = ["ExportLogMel", "MatmulStft", "frame_signal", "split_size"]
