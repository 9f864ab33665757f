"""EpochSampler: seeds follow (seed, epoch, index); shards cover the data once (eval) or evenly (train)."""

from __future__ import annotations

from collections import Counter

import pytest
from torch.utils.data import DistributedSampler

from multimood.data.sampling import EpochSampler, item_seed, split_key


def test_epoch_sampler_is_a_function_of_seed_epoch_and_index() -> None:
    sampler = EpochSampler(20, shuffle=True, seed=3)
    first = list(sampler)
    assert first == list(sampler)
    assert sorted(i for i, _ in first) == list(range(20))
    assert all(s == item_seed(3, 0, i) for i, s in first)  # the seed follows the index, not the position
    sampler.set_epoch(1)
    second = list(sampler)
    assert [i for i, _ in second] != [i for i, _ in first]
    assert dict(second) != dict(first)
    plain = EpochSampler(5, shuffle=False, seed=3)
    assert [i for i, _ in plain] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("num_items", "world"), [(1062, 4), (10, 3), (7, 2), (2, 4)])
def test_evaluation_shards_see_every_sample_exactly_once(num_items: int, world: int) -> None:
    shards = [
        list(EpochSampler(num_items, shuffle=False, num_replicas=world, rank=r, pad=False))
        for r in range(world)
    ]
    seen = Counter(index for shard in shards for index, _ in shard)
    assert sorted(seen) == list(range(num_items))
    assert set(seen.values()) == {1}
    assert [
        len(EpochSampler(num_items, False, num_replicas=world, rank=r, pad=False)) for r in range(world)
    ] == [len(s) for s in shards]
    if (num_items, world) == (1062, 4):
        assert [len(s) for s in shards] == [266, 266, 265, 265]


@pytest.mark.parametrize(("num_items", "world"), [(1062, 4), (10, 3), (5, 2)])
def test_training_shards_are_even_and_cover_everything(num_items: int, world: int) -> None:
    samplers = [
        EpochSampler(num_items, shuffle=True, seed=7, num_replicas=world, rank=r) for r in range(world)
    ]
    for sampler in samplers:
        sampler.set_epoch(2)
    shards = [list(s) for s in samplers]
    lengths = {len(s) for s in shards}
    assert lengths == {-(-num_items // world)} == {len(samplers[0])}
    covered = Counter(index for shard in shards for index, _ in shard)
    assert sorted(covered) == list(range(num_items))
    assert sum(covered.values()) - num_items == world * len(shards[0]) - num_items  # only the padding repeats
    # The union of the shards is the single-process order of the epoch, padded: ranks agree on it.
    single = EpochSampler(num_items, shuffle=True, seed=7)
    single.set_epoch(2)
    assert [i for i, _ in single] == samplers[0].epoch_order()
    # A sample keeps its seed whichever rank draws it.
    assert all(seed == item_seed(7, 2, index) for shard in shards for index, seed in shard)


def test_lightning_keeps_it_and_bad_arguments_are_refused() -> None:
    # Lightning wraps only samplers that are not DistributedSamplers; ours shards itself.
    assert isinstance(EpochSampler(3, False), DistributedSampler)
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(3, False, num_replicas=2, rank=2)
    assert split_key((4, 99)) == (4, 99)
    assert split_key(4) == (4, item_seed(0, 0, 4))
