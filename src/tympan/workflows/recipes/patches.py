"""Training and scoring patches of log-mel clips, as PyTorch datasets.

Clips are cut into patches (:mod:`tympan.windows`); every patch trains with
its clip's label. With ``min_patch_frames`` a short clip is one patch at its own
length: :func:`pad_batch` zero-pads a batch to its widest patch and adds each
patch's real width, for a network that :func:`~tympan.inference.predict.takes_lengths`.
The training order of an epoch depends only on the seed and
the epoch number (:class:`EpochShuffle`), so a fit resumed from a checkpoint
sees exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from tympan.config import FeatureConfig, TrainConfig
from tympan.windows import pad_to_patch, patch_starts, patch_width


@dataclass
class ClipSet:
    """Log-mel clips with integer labels, ready to train on or score.

    ``specs[i]`` is float32 ``(n_mels, frames)``; ``labels`` is ``(n_clips,)``
    int64. ``variants[i]`` lists extra training copies of clip ``i`` (offline
    augmentation), same label; they are used only when the set is trained on.
    """

    specs: Sequence[np.ndarray]
    labels: np.ndarray
    variants: Sequence[Sequence[np.ndarray]] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.specs) != len(self.labels):
            raise ValueError(f"{len(self.specs)} spectrograms but {len(self.labels)} labels")
        if self.variants is not None and len(self.variants) != len(self.specs):
            raise ValueError("variants must hold one list per clip")

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def n_variants(self) -> int:
        return sum(len(v) for v in self.variants) if self.variants is not None else 0


class EpochShuffle(Sampler[Any]):
    """A random order of ``n`` items drawn from ``(seed, epoch)`` alone.

    Yields ``(index, item_seed)`` keys: :class:`PatchDataset` draws an item's
    random choices from its ``item_seed``, not from global state.

    Lightning calls :meth:`set_epoch` before each epoch (as for a
    ``DistributedSampler``), so the order does not depend on how much random
    state earlier epochs used: a resumed fit repeats an uninterrupted one.

    Under DDP (``torch.distributed`` initialised, or ``rank``/``world_size``
    given) every rank draws the same order and keeps ``order[rank::world_size]``,
    the order wrapped around first so that every rank gets ``ceil(n / world_size)``
    keys: the ranks' shards are disjoint but for that padding, and together
    cover the epoch.
    """

    def __init__(self, n: int, seed: int, *, rank: int | None = None,
                 world_size: int | None = None) -> None:
        if world_size is not None and not 0 <= (rank or 0) < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.n = n
        self.seed = seed
        self.epoch = 0
        self.rank = rank
        self.world_size = world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard(self) -> tuple[int, int]:
        """``(rank, world_size)``: the ones given, else torch.distributed's, else ``(0, 1)``."""
        if self.world_size is not None:
            return self.rank or 0, self.world_size
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return math.ceil(self.n / self._shard()[1])

    def __iter__(self) -> Iterator[Any]:
        generator = torch.Generator()
        seed = epoch_seed(self.seed, self.epoch)
        generator.manual_seed(seed)
        order = torch.randperm(self.n, generator=generator).tolist()
        # each item also gets its own seed for the dataset's draws (which copy of a clip)
        keys = [(index, seed + position) for position, index in enumerate(order)]
        rank, world = self._shard()
        if world > 1 and keys:
            total = math.ceil(self.n / world) * world
            keys = (keys * math.ceil(total / self.n))[:total][rank::world]
        return iter(keys)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for ``epoch`` of a fit seeded with ``seed`` (distinct per pair, < 2**63)."""
    return (seed * 1_000_003 + epoch * 7_919 + 1) % (2**63)


def clip_frames(specs: Sequence[np.ndarray]) -> list[int]:
    """Frames of each clip ``(n_mels, frames)``, from the sequence's ``shapes`` when it has
    them (cached features: nothing is read), else from the arrays."""
    shapes = getattr(specs, "shapes", None)
    if shapes is not None:
        return [int(shape[-1]) for shape in shapes]
    return [int(np.shape(spec)[-1]) for spec in specs]


#: The members of a group without copies: the original clip alone (shared, not one per clip).
_ORIGINAL_ONLY = (-1,)


def cut_patch(spec: np.ndarray, k: int, feature_config: FeatureConfig) -> np.ndarray:
    """Patch ``k`` (the last one when ``k`` is past it) of ``spec`` ``(n_mels, frames)``:
    ``(n_mels, patch_frames)``, or with ``min_patch_frames`` a short clip's own width (at
    least that minimum), a short clip padded as :func:`~tympan.windows.pad_to_patch` pads it."""
    spec = pad_to_patch(spec, patch_width(spec.shape[-1], feature_config))
    width = min(spec.shape[-1], feature_config.patch_frames)
    starts = patch_starts(spec.shape[-1], width, feature_config.patch_hop_frames)
    start = starts[min(k, len(starts) - 1)]
    return spec[:, start:start + width]


class PatchDataset(Dataset[tuple[Tensor, Tensor]]):  # keys: int or (int, item_seed)
    """Training patches: item ``k`` is ``(patch (n_mels, patch_frames), label)``.

    ``variant_mode="sample"`` keeps one item per patch of each original clip and
    draws, each time an item is read, the original or one of its copies;
    ``"all"`` makes every copy a clip of its own (a longer epoch).

    Clips are read (and a short one padded) when an item is asked for: memory
    holds a few numbers per clip and patch, not the spectrograms, so cached
    features stay on disk until a batch needs them.
    """

    def __init__(self, clips: ClipSet, feature_config: FeatureConfig,
                 variant_mode: str = "sample") -> None:
        self.feature_config = feature_config
        self.patch_frames = feature_config.patch_frames
        self.hop_frames = feature_config.patch_hop_frames
        self.specs = clips.specs
        self.variants = clips.variants
        frames = clip_frames(clips.specs)
        # a group is what one item reads: clip ``owner`` as member -1, its copies as 0, 1, …
        self.owners: list[int] = []
        self.members: list[tuple[int, ...]] = []
        counts: list[int] = []
        for i, n_frames in enumerate(frames):
            copies = clips.variants[i] if clips.variants is not None else ()
            if variant_mode == "all":
                choices: list[tuple[int, ...]] = [(j,) for j in range(-1, len(copies))]
            else:
                choices = [tuple(range(-1, len(copies))) if copies else _ORIGINAL_ONLY]
            for members in choices:
                first = n_frames if members[0] == -1 else int(np.shape(copies[members[0]])[-1])
                self.owners.append(i)
                self.members.append(members)
                counts.append(self._n_patches(first))
        labels = np.asarray(clips.labels, dtype=np.int64)[np.asarray(self.owners, dtype=np.int64)]
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        count = np.asarray(counts, dtype=np.int64)
        self.item_group = np.repeat(np.arange(len(counts), dtype=np.int64), count)
        self.item_patch = (np.arange(int(count.sum()), dtype=np.int64)
                           - np.repeat(np.cumsum(count) - count, count))

    def _n_patches(self, frames: int) -> int:
        return len(patch_starts(max(frames, self.patch_frames), self.patch_frames,
                                self.hop_frames))

    def _spec(self, owner: int, member: int) -> np.ndarray:
        """Clip ``owner`` (member -1) or its copy ``member``."""
        return np.asarray(self.specs[owner] if member == -1
                          else self.variants[owner][member],  # type: ignore[index]
                          dtype=np.float32)

    def __len__(self) -> int:
        return len(self.item_group)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Item ``key``, or ``(index, item_seed)`` (from :class:`EpochShuffle`): the seed
        picks which copy of the clip is read."""
        index, item_seed = key if isinstance(key, tuple) else (key, None)
        group, k = int(self.item_group[index]), int(self.item_patch[index])
        members = self.members[group]
        variant = 0
        if len(members) > 1:
            generator = None
            if item_seed is not None:
                generator = torch.Generator()
                generator.manual_seed(item_seed)
            variant = int(torch.randint(len(members), (), generator=generator).item())
        # a stretched copy has more or fewer patches than its original: k may be past its last
        patch = cut_patch(self._spec(self.owners[group], members[variant]), k,
                          self.feature_config)
        return torch.tensor(patch), self.labels[group]  # a copy: cached specs are read-only


class ClipPatchDataset(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Every patch of every clip, for scoring: ``(patch, label, clip index)``.

    Like :class:`PatchDataset`, a clip is read when one of its patches is asked for.
    """

    def __init__(self, clips: ClipSet, feature_config: FeatureConfig) -> None:
        self.feature_config = feature_config
        self.patch_frames = feature_config.patch_frames
        self.hop_frames = feature_config.patch_hop_frames
        self.specs = clips.specs
        self.labels = torch.as_tensor(clips.labels, dtype=torch.long)
        count = np.asarray([len(patch_starts(max(f, self.patch_frames), self.patch_frames,
                                             self.hop_frames))
                            for f in clip_frames(clips.specs)], dtype=np.int64)
        self.item_clip = np.repeat(np.arange(len(count), dtype=np.int64), count)
        self.item_patch = (np.arange(int(count.sum()), dtype=np.int64)
                           - np.repeat(np.cumsum(count) - count, count))

    def __len__(self) -> int:
        return len(self.item_clip)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        clip, k = int(self.item_clip[index]), int(self.item_patch[index])
        patch = cut_patch(np.asarray(self.specs[clip], dtype=np.float32), k,
                          self.feature_config)
        return (torch.tensor(patch), self.labels[clip],
                torch.tensor(clip))


def pad_batch(items: Sequence[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """Collate dataset items ``(patch (n_mels, width), *rest)`` of unequal widths: patches
    zero-padded at the end to the widest ``(batch, n_mels, width)``, the rest stacked, and
    each patch's real width ``(batch,)`` int64 appended last."""
    widths = [int(item[0].shape[-1]) for item in items]
    widest = max(widths)
    patches = torch.stack([torch.nn.functional.pad(item[0], (0, widest - w))
                           for item, w in zip(items, widths, strict=True)])
    rest = [torch.stack([torch.as_tensor(item[i]) for item in items])
            for i in range(1, len(items[0]))]
    return (patches, *rest, torch.as_tensor(widths, dtype=torch.int64))


class PatchDataModule(L.LightningDataModule):
    """Training patches (shuffled) and validation patches (in order, with clip index).

    Under DDP the training sampler shards each epoch by rank (:class:`EpochShuffle`)
    and validation has no sampler: every rank scores every clip once, so the
    validation metrics are the same on every rank.
    """

    def __init__(self, train: ClipSet, val: ClipSet | None, feature_config: FeatureConfig,
                 config: TrainConfig) -> None:
        super().__init__()
        self.train_set = PatchDataset(train, feature_config, config.augment_variants)
        self.val_set = ClipPatchDataset(val, feature_config) if val is not None else None
        self.n_val_clips = len(val) if val is not None else 0
        self.config = config
        self.own_length = feature_config.min_patch_frames is not None

    def _loader(self, dataset: Dataset[Any], sampler: Sampler[int] | None = None
                ) -> DataLoader[Any]:
        workers = self.config.num_workers
        # short clips at their own length: batches padded, with each patch's real width
        collate = pad_batch if self.own_length else None
        return DataLoader(dataset, batch_size=self.config.batch_size, sampler=sampler,
                          num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=torch.cuda.is_available(), collate_fn=collate)

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.train_set, EpochShuffle(len(self.train_set), self.config.seed))

    def val_dataloader(self) -> DataLoader[Any]:
        if self.val_set is None:
            return []  # type: ignore[return-value]
        return self._loader(self.val_set)


__all__ = ["ClipPatchDataset", "ClipSet", "EpochShuffle", "PatchDataModule", "PatchDataset",
           "clip_frames", "cut_patch", "epoch_seed", "pad_batch"]
