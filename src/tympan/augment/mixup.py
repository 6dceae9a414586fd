"""Mixup (Zhang et al. 2018) on a batch of spectrograms and their one-hot labels."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _numpy_rng(generator: torch.Generator | np.random.Generator | int | None
               ) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        return np.random.default_rng(seed)
    return np.random.default_rng(generator)


def mixup_parameters(
    batch: int, alpha: float,
    generator: torch.Generator | np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example mixing weights λ ~ Beta(alpha, alpha), ``(batch,)`` in [0, 1], and
    the partner permutation ``(batch,)``.

    Raises:
        ValueError: ``alpha`` <= 0.
    """
    if not alpha > 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    rng = _numpy_rng(generator)
    lam = rng.beta(alpha, alpha, size=batch)
    return lam, rng.permutation(batch)


def mix(x: Tensor, y_onehot: Tensor, lam: np.ndarray, perm: np.ndarray) -> tuple[Tensor, Tensor]:
    """``λ·x + (1 − λ)·x[perm]`` and ``λ·y + (1 − λ)·y[perm]`` for drawn
    :func:`mixup_parameters` (``lam``, ``perm``: ``(batch,)``); ``x`` ``(batch, ...)``,
    ``y_onehot`` ``(batch, n_classes)``. Runs on ``x``'s device.

    Raises:
        ValueError: batch sizes that differ, or 1-D labels.
    """
    if y_onehot.dim() != 2:
        raise ValueError(f"y_onehot must be (batch, n_classes), got shape {tuple(y_onehot.shape)}")
    if x.shape[0] != y_onehot.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y_onehot has {y_onehot.shape[0]}")
    lam_t = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    perm_t = torch.as_tensor(perm, dtype=torch.long, device=x.device)
    lam_x = lam_t.reshape((-1,) + (1,) * (x.dim() - 1))
    mixed_x = lam_x * x + (1 - lam_x) * x[perm_t]
    y = y_onehot.to(dtype=x.dtype if x.is_floating_point() else torch.float32)
    lam_y = lam_t.to(y.dtype)[:, None]
    mixed_y = lam_y * y + (1 - lam_y) * y[perm_t.to(y.device)]
    return mixed_x, mixed_y


def mixup(
    x: Tensor,
    y_onehot: Tensor,
    alpha: float = 0.3,
    generator: torch.Generator | np.random.Generator | int | None = None,
) -> tuple[Tensor, Tensor]:
    """Mix each example with a random partner of the same batch.

    ``x`` is ``(batch, ...)`` (e.g. ``(batch, n_mels, frames)``), ``y_onehot``
    is ``(batch, n_classes)`` (one-hot or already soft, rows summing to 1).
    Returns ``λ·x + (1 − λ)·x[perm]`` and ``λ·y + (1 − λ)·y[perm]``, with one
    λ ~ Beta(alpha, alpha) per example; labels still sum to 1. Runs on ``x``'s
    device; the random draws come from ``generator`` (CPU, reproducible).

    Raises:
        ValueError: ``alpha`` <= 0, or batch sizes that differ, or 1-D labels.
    """
    lam, perm = mixup_parameters(x.shape[0], alpha, generator)
    return mix(x, y_onehot, lam, perm)
