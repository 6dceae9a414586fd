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
