"""Training patches and the epoch order (EpochShuffle), sharded by rank under DDP."""

from __future__ import annotations

import pytest

from tympan.workflows.recipes.patches import EpochShuffle


def _keys(sampler: EpochShuffle, epoch: int = 0) -> list[tuple[int, int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_the_order_depends_on_seed_and_epoch_alone() -> None:
    one = _keys(EpochShuffle(10, seed=3), epoch=2)
    assert one == _keys(EpochShuffle(10, seed=3), epoch=2)
    assert sorted(i for i, _ in one) == list(range(10))
    assert one != _keys(EpochShuffle(10, seed=3), epoch=1)


@pytest.mark.parametrize("n, world", [(12, 2), (11, 2), (10, 3), (2, 4)])
def test_ranks_take_disjoint_shards_of_the_same_order(n: int, world: int) -> None:
    whole = _keys(EpochShuffle(n, seed=5), epoch=4)
    shards = [_keys(EpochShuffle(n, seed=5, rank=r, world_size=world), epoch=4)
              for r in range(world)]
    per_rank = -(-n // world)
    assert [len(s) for s in shards] == [per_rank] * world  # equal counts: no rank waits
    assert all(len(EpochShuffle(n, 5, rank=r, world_size=world)) == per_rank
               for r in range(world))
    # interleaved back together they are the single-process order, wrapped to fill
    merged = [shards[k % world][k // world] for k in range(per_rank * world)]
    assert merged[:n] == whole
    assert merged[n:] == (whole * world)[n:per_rank * world]
    # every key is in exactly one shard unless it pads a short last round
    assert len({k for s in shards for k in s}) == n


def test_a_rank_outside_the_world_is_refused() -> None:
    with pytest.raises(ValueError, match="rank must be in"):
        EpochShuffle(4, 0, rank=2, world_size=2)


def _clips(n: int = 5):
    import numpy as np

    from tympan.workflows.recipes.patches import ClipSet

    rng = np.random.default_rng(0)
    specs = [rng.standard_normal((4, frames)).astype(np.float32) for frames in (3, 8, 13, 8, 20)]
    copies = [[rng.standard_normal((4, 10)).astype(np.float32)] if i % 2 else []
              for i in range(n)]
    return ClipSet(specs, np.arange(n) % 2, copies)


class _Counted(list):  # type: ignore[type-arg]
    """Specs that count reads and know their shapes (as cached features do)."""

    reads = 0

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [s.shape for s in self]

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        type(self).reads += 1
        return super().__getitem__(i)


@pytest.mark.parametrize("mode", ["sample", "all"])
def test_patches_are_cut_when_read_from_clips_read_on_demand(mode: str) -> None:
    import numpy as np

    from tympan.config import FeatureConfig
    from tympan.workflows.recipes.patches import ClipPatchDataset, ClipSet, PatchDataset

    config = FeatureConfig(patch_frames=8, patch_hop_frames=4)
    clips = _clips()
    _Counted.reads = 0
    counted = _Counted(clips.specs)
    dataset = PatchDataset(ClipSet(counted, clips.labels, clips.variants), config, mode)
    scoring = ClipPatchDataset(ClipSet(counted, clips.labels), config)
    assert _Counted.reads == 0  # building the datasets reads no spectrogram
    # patches: 1 (padded) + 1 + 3 + 1 + 4 per original; "all" adds one per copy (10 frames: 2)
    assert len(dataset) == (10 if mode == "sample" else 14) and len(scoring) == 10
    patch, label = dataset[(0, 0)]
    assert patch.shape == (4, 8) and int(label) == 0
    short, _, owner = scoring[0]
    assert int(owner) == 0
    np.testing.assert_array_equal(short[:, :3].numpy(), clips.specs[0])
    assert float(short[:, 3:].max()) == float(clips.specs[0].min())  # padded with its minimum
    last, _, owner = scoring[len(scoring) - 1]
    assert int(owner) == 4
    np.testing.assert_array_equal(last.numpy(), clips.specs[4][:, 12:20])  # end-aligned
    assert _Counted.reads > 0


def test_short_clips_train_and_validate_at_their_own_length() -> None:
    import numpy as np
    import torch
    from conftest import tiny_features

    from tympan.workflows.recipes.patches import (
        ClipPatchDataset,
        ClipSet,
        PatchDataset,
        pad_batch,
    )

    rng = np.random.default_rng(0)
    specs = [rng.normal(size=(32, n)).astype(np.float32) for n in (5, 20, 48)]
    clips = ClipSet(specs, np.array([0, 1, 2]))
    own = tiny_features().replace(min_patch_frames=8)
    train = PatchDataset(clips, own)
    widths = [train[i][0].shape[-1] for i in range(len(train))]
    assert widths == [8, 20, 32, 32]  # 5 frames padded to the minimum; 48 is two patches
    np.testing.assert_array_equal(train[1][0].numpy(), specs[1])
    x, y, lengths = pad_batch([train[i] for i in range(len(train))])
    assert x.shape == (4, 32, 32) and lengths.tolist() == widths
    assert y.tolist() == [0, 1, 2, 2] and (x[1, :, 20:] == 0).all()
    scored = ClipPatchDataset(clips, own)
    x, y, clip, lengths = pad_batch([scored[i] for i in range(len(scored))])
    assert clip.tolist() == [0, 1, 2, 2] and lengths.tolist() == widths
    # without a minimum every patch is whole, as before
    assert {PatchDataset(clips, tiny_features())[i][0].shape[-1] for i in range(4)} == {32}
    assert torch.equal(PatchDataset(clips, tiny_features())[3][0], train[3][0])
