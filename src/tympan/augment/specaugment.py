"""SpecAugment (Park et al. 2019): time and frequency masks on batches of spectrograms."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tympan.augment.base import check_probability


def _bands(
    n_examples: int, n_masks: int, max_width: int, size: int, generator: torch.Generator
) -> Tensor:
    """``(n_examples, size)`` bool: the union of ``n_masks`` random bands per example,
    each of width uniform in ``[0, max_width]`` and placed uniformly inside ``size``."""
    if n_masks == 0 or max_width == 0 or size == 0:
        return torch.zeros(n_examples, size, dtype=torch.bool)
    max_width = min(max_width, size)
    widths = torch.randint(0, max_width + 1, (n_examples, n_masks), generator=generator)
    starts = (torch.rand(n_examples, n_masks, generator=generator)
              * (size - widths + 1)).long()
    positions = torch.arange(size)[None, None, :]
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])
    return inside.any(dim=1)


class SpecAugment(nn.Module):
    """Mask random time frames and mel bins of each example of a batch.

    Input ``(batch, n_mels, frames)`` or ``(batch, channels, n_mels, frames)``;
    output of the same shape, on the input's device. Each example (with
    probability ``p``) gets ``n_time_masks`` bands of consecutive frames, each
    at most ``time_mask_frames`` wide, and ``n_freq_masks`` bands of
    consecutive mel bins, each at most ``freq_mask_bins`` wide (widths uniform
    from 0, bands may overlap). Masked cells take ``fill_value``, or the
    example's own mean when it is None. Random numbers come from a CPU
    generator seeded with ``seed``, so masks are the same on every device.
    Active only in training mode (``module.train()``); identity in ``eval()``.

    Raises:
        ValueError: negative widths or counts, ``p`` outside [0, 1]; a tensor
            with fewer than 3 dimensions on the call.
    """

    def __init__(
        self,
        time_mask_frames: int = 20,
        freq_mask_bins: int = 16,
        n_time_masks: int = 2,
        n_freq_masks: int = 2,
        p: float = 1.0,
        fill_value: float | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("time_mask_frames", time_mask_frames),
                            ("freq_mask_bins", freq_mask_bins),
                            ("n_time_masks", n_time_masks), ("n_freq_masks", n_freq_masks)):
            if int(value) != value or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value}")
        self.time_mask_frames = int(time_mask_frames)
        self.freq_mask_bins = int(freq_mask_bins)
        self.n_time_masks = int(n_time_masks)
        self.n_freq_masks = int(n_freq_masks)
        self.p = check_probability(p)
        self.fill_value = fill_value
        self.generator = torch.Generator()
        self.generator.manual_seed(seed if seed is not None else torch.seed())

    def masks(self, batch: int, n_mels: int, frames: int,
              generator: torch.Generator | None = None) -> Tensor:
        """Draw the masks of one call: ``(batch, n_mels, frames)`` bool (CPU), True = masked."""
        g = generator or self.generator
        apply = torch.rand(batch, generator=g) < self.p
        time = _bands(batch, self.n_time_masks, self.time_mask_frames, frames, g)
        freq = _bands(batch, self.n_freq_masks, self.freq_mask_bins, n_mels, g)
        mask = time[:, None, :] | freq[:, :, None]
        return mask & apply[:, None, None]

    def forward(self, spec: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.training:
            return spec
        if spec.dim() not in (3, 4):
            raise ValueError(
                "SpecAugment expects (batch, n_mels, frames) or (batch, channels, n_mels, "
                f"frames), got shape {tuple(spec.shape)}"
            )
        batch, n_mels, frames = spec.shape[0], spec.shape[-2], spec.shape[-1]
        mask = self.masks(batch, n_mels, frames, generator).to(spec.device)
        if spec.dim() == 4:
            mask = mask[:, None]
        if self.fill_value is None:
            fill = spec.mean(dim=tuple(range(1, spec.dim())), keepdim=True)
        else:
            fill = torch.full((), float(self.fill_value), dtype=spec.dtype, device=spec.device)
        return torch.where(mask, fill.to(spec.dtype), spec)

    def extra_repr(self) -> str:
        return (f"time_mask_frames={self.time_mask_frames}, freq_mask_bins="
                f"{self.freq_mask_bins}, n_time_masks={self.n_time_masks}, "
                f"n_freq_masks={self.n_freq_masks}, p={self.p}, fill_value={self.fill_value}")
