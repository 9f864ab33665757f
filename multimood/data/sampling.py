"""The order in which a DataLoader visits samples, and each visit's seed, on one process or many.

Randomness in the data (the paper's random modality selection, p = [p_a, p_v, p_av], section 3.3)
comes from the seed each index carries, derived from (seed, epoch, index): the draw depends neither
on worker assignment nor on the number of processes, and a resumed run draws what an
uninterrupted one did.

Under data parallelism (DDP, FSDP) the sampler shards the epoch's order itself, so Lightning keeps
it (it only wraps samplers that are not a ``DistributedSampler``):

* training pads the order with its first items until every rank has the same number of samples,
  as torch's ``DistributedSampler`` does, so every rank takes the same number of optimiser steps;
* evaluation (``pad=False``) gives every sample to exactly one rank and repeats none, so metrics
  gathered over the ranks equal the single-process values (1,062 MESC test samples on 4 ranks
  are 266 + 266 + 265 + 265, not 4 x 266 = 1,064 with two counted twice). Ranks may then run one
  batch more or fewer: evaluation steps must not call collectives (torchmetrics synchronises at
  ``compute``, after the loop).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import DistributedSampler


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one visit of sample ``index``: a function of (seed, epoch, index) only."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def split_key(key: int | tuple[int, int]) -> tuple[int, int]:
    """Datasets accept a plain index (epoch-0 seed of run seed 0) or a sampler key ``(index, item_seed)``."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), item_seed(0, 0, int(key))


class EpochSampler(DistributedSampler):
    """Yields ``(index, item_seed)``: the epoch's order (shuffled or not), this rank's share of it.

    Args:
        num_items: Samples in the dataset.
        shuffle: Draw a new order every epoch (training); otherwise dataset order.
        seed: Run seed; the order and every item's seed derive from it and the epoch.
        num_replicas: Processes sharing the data (the trainer's world size); 1 without parallelism.
        rank: This process's rank, ``0 <= rank < num_replicas``.
        pad: Repeat the first items of the order so that every rank gets the same number of
            samples (training). ``False`` gives each sample to exactly one rank (evaluation).

    Lightning calls :meth:`set_epoch` at every epoch start. :meth:`resume_at` makes the next pass
    over a given epoch start after the samples an interrupted run already trained on.
    """

    def __init__(
        self,
        num_items: int,
        shuffle: bool,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        pad: bool = True,
    ) -> None:
        if num_items < 0:
            raise ValueError(f"num_items must be >= 0, got {num_items}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}"
            )
        # DistributedSampler only reads len(dataset); explicit replicas/rank keep it off torch.distributed.
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.num_items = num_items
        self.pad = pad
        self._resume: tuple[int, int] | None = None  # (epoch, samples of this rank's share to skip)

    def resume_at(self, epoch: int, samples_done: int) -> None:
        """Skip the first ``samples_done`` samples of this rank's share the next time ``epoch`` is
        iterated (once); the order and every item's seed stay those of an uninterrupted run."""
        if samples_done < 0:
            raise ValueError(f"samples_done must be >= 0, got {samples_done}")
        self._resume = (int(epoch), int(samples_done))

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.num_items / self.num_replicas)
        return len(range(self.rank, self.num_items, self.num_replicas))

    def epoch_order(self) -> list[int]:
        """Every index of this epoch in visiting order, before sharding (the same on every rank)."""
        if self.shuffle:
            return np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items).tolist()
        return list(range(self.num_items))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.epoch_order()
        if self.pad and order:
            total = len(self) * self.num_replicas
            order = (order * math.ceil(total / len(order)))[:total]
        share = order[self.rank :: self.num_replicas]
        if self._resume is not None and self._resume[0] == self.epoch:
            share = share[self._resume[1] :]
            self._resume = None
        for index in share:
            yield index, item_seed(self.seed, self.epoch, index)
