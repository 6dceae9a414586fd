"""Clip windowing: log-mels cut into fixed-size patches, patch scores pooled per clip.

One definition that training, cross-validation, prediction and export share:
a clip's log-mel ``(n_mels, frames)`` is cut into ``patch_frames``-wide
patches every ``patch_hop_frames`` (the last one end-aligned, a short clip
padded with its own minimum: to a whole patch, or with ``min_patch_frames``
only up to that, keeping its own length), and a clip's probabilities are the
mean of its patches' softmaxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tympan.config import FeatureConfig


def patch_starts(frames: int, patch_frames: int, hop_frames: int) -> list[int]:
    """First frame of each patch; the last patch is end-aligned so no frame is dropped."""
    if frames <= patch_frames:
        return [0]
    starts = list(range(0, frames - patch_frames + 1, hop_frames))
    if starts[-1] + patch_frames < frames:
        starts.append(frames - patch_frames)
    return starts


def split_patches(
    spec: Tensor | np.ndarray, patch_frames: int = 128, hop_frames: int = 64,
    min_frames: int | None = None,
) -> Tensor | np.ndarray:
    """Cut ``(..., n_mels, frames)`` into ``(..., n_patches, n_mels, patch_frames)``.

    A spectrogram shorter than one patch is one patch, padded at the end with
    its own minimum (the quietest value it holds, i.e. silence on its scale):
    to ``patch_frames``, or with ``min_frames`` only up to ``min_frames``
    (``(..., 1, n_mels, max(frames, min_frames))``).
    """
    frames = spec.shape[-1]
    if frames < patch_frames and min_frames is not None:
        patch_frames = max(frames, min(min_frames, patch_frames))
    if frames < patch_frames:
        missing = patch_frames - frames
        if isinstance(spec, np.ndarray):
            floor = spec.min(axis=(-2, -1), keepdims=True)
            filler = np.broadcast_to(floor, (*spec.shape[:-1], missing))
            spec = np.concatenate([spec, filler], axis=-1)
        else:
            floor = spec.amin(dim=(-2, -1), keepdim=True)
            spec = torch.cat([spec, floor.expand(*spec.shape[:-1], missing)], dim=-1)
        frames = patch_frames
    starts = patch_starts(frames, patch_frames, hop_frames)
    pieces = [spec[..., s:s + patch_frames] for s in starts]
    if isinstance(spec, np.ndarray):
        return np.stack(pieces, axis=-3)
    return torch.stack(pieces, dim=-3)  # type: ignore[arg-type]


def patch_width(frames: int, config: FeatureConfig) -> int:
    """Width (frames) of the patches :func:`split_patches` cuts from a clip of ``frames``
    frames under ``config``: ``patch_frames``, or for a short clip with
    ``min_patch_frames`` its own length, at least that minimum."""
    if frames >= config.patch_frames or config.min_patch_frames is None:
        return config.patch_frames
    return max(frames, config.min_patch_frames)


def pad_to_patch(spec: np.ndarray, patch_frames: int) -> np.ndarray:
    """``spec`` ``(n_mels, frames)`` padded to at least ``patch_frames`` frames, as
    :func:`split_patches` pads a short clip (unchanged when long enough)."""
    if spec.shape[-1] >= patch_frames:
        return spec
    return np.asarray(split_patches(spec, patch_frames, patch_frames)[0])


def clip_patch_groups(
    specs: Sequence[Tensor | np.ndarray] | Tensor, config: FeatureConfig
) -> list[tuple[Tensor, np.ndarray]]:
    """Cut each clip's log-mel ``(n_mels, frames)`` into patches, grouped by patch width.

    Patching is :func:`split_patches` with the config's ``patch_frames``,
    ``patch_hop_frames`` and ``min_patch_frames``. Returns one
    ``(patches (n, n_mels, width) float32, clip index per patch (n,) int64)``
    pair per width, widest first; without ``min_patch_frames`` there is one.

    Raises:
        ValueError: no spectrograms, or one that is not 2-D.
    """
    by_width: dict[int, tuple[list[Tensor], list[np.ndarray]]] = {}
    for i, spec in enumerate(specs):
        # a copy: cached spectrograms are read-only arrays
        spec_t = torch.tensor(np.asarray(spec), dtype=torch.float32)
        if spec_t.ndim != 2:
            raise ValueError(f"expected a (n_mels, frames) spectrogram, got shape "
                             f"{tuple(spec_t.shape)}")
        patches = split_patches(spec_t, config.patch_frames, config.patch_hop_frames,
                                config.min_patch_frames)
        assert isinstance(patches, Tensor)
        pieces, owners = by_width.setdefault(patches.shape[-1], ([], []))
        pieces.append(patches)
        owners.append(np.full(patches.shape[0], i, dtype=np.int64))
    if not by_width:
        raise ValueError("no spectrograms given")
    return [(torch.cat(by_width[w][0]), np.concatenate(by_width[w][1]))
            for w in sorted(by_width, reverse=True)]


def clip_patches(
    specs: Sequence[Tensor | np.ndarray] | Tensor, config: FeatureConfig
) -> tuple[Tensor, np.ndarray]:
    """Cut each clip's log-mel ``(n_mels, frames)`` into patches, all clips stacked.

    Returns ``(n_patches_total, n_mels, patch_frames)`` float32 and, per patch,
    the index of its clip ``(n_patches_total,)`` int64 (clips may differ in
    length). Patching is :func:`split_patches` with the config's patch size
    and hop (a clip shorter than a patch is padded).

    Raises:
        ValueError: with ``min_patch_frames``, short clips gave patches of other
            widths (use :func:`clip_patch_groups`).
    """
    groups = clip_patch_groups(specs, config)
    if len(groups) > 1:
        raise ValueError(f"patches of {len(groups)} widths ({config.name} keeps short clips "
                         "at their own length): use clip_patch_groups")
    return groups[0]


def bucket_patches(groups: Sequence[tuple[Tensor, np.ndarray]], max_frames: int,
                   bucket_frames: int = 32) -> list[tuple[Tensor, Tensor, np.ndarray]]:
    """Patch groups of equal width (:func:`clip_patch_groups`) merged into buckets
    ``bucket_frames`` wide, none wider than ``max_frames`` (the patch width):
    ``(patches (n, n_mels, bucket width) zero-padded, real width per patch (n,) int64,
    clip index per patch (n,))``, widest first. Whole patches are never padded."""
    buckets: dict[int, list[tuple[Tensor, np.ndarray]]] = {}
    for patches, index in groups:
        width = patches.shape[-1]
        bucket = min(-(-width // bucket_frames) * bucket_frames, max(width, max_frames))
        buckets.setdefault(bucket, []).append((patches, index))
    out = []
    for width in sorted(buckets, reverse=True):
        members = buckets[width]
        padded = torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[-1]))
                            for p, _ in members])
        lengths = torch.cat([torch.full((p.shape[0],), p.shape[-1], dtype=torch.int64)
                             for p, _ in members])
        out.append((padded, lengths, np.concatenate([i for _, i in members])))
    return out


def clip_mean(patch_probs: np.ndarray, clip_index: np.ndarray, n_clips: int) -> np.ndarray:
    """Average ``(n_patches, n_classes)`` probabilities per clip → ``(n_clips, n_classes)``.

    ``clip_index[k]`` is the clip patch ``k`` belongs to; sums run in float64,
    the result is float32. A clip without patches gets a row of zeros.
    """
    patch_probs = np.asarray(patch_probs)
    clip_index = np.asarray(clip_index, dtype=np.int64)
    if clip_index.shape != (patch_probs.shape[0],):
        raise ValueError(f"clip_index has shape {clip_index.shape}, expected "
                         f"({patch_probs.shape[0]},): one clip per patch row")
    sums = np.zeros((n_clips, patch_probs.shape[1]), dtype=np.float64)
    np.add.at(sums, clip_index, patch_probs)
    counts = np.bincount(clip_index, minlength=n_clips)[:, None]
    return (sums / np.maximum(counts, 1)).astype(np.float32)
