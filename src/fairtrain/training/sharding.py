"""Which rows each worker reads: a per-epoch shuffled, disjoint shard of the index space.

Every worker holds a read-only view of the arrays (one copy per node in Ray's object store,
shared zero-copy by the workers of that node) and reads only its own rows. This is the
``DistributedSampler`` scheme (same seed everywhere, reshuffled each epoch, padded so every
worker has the same number of batches and DDP's collective calls line up), but it hands
out whole batches of indices, so a batch is one gather from the tensors instead of
``batch_size`` ``__getitem__`` calls and a ``collate`` (the per-sample path costs more than
the model's forward pass at this size).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


def shard_indices(n: int, world_size: int, rank: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """The rows rank ``rank`` of ``world_size`` reads in ``epoch``.

    Shuffled shards are padded (by repeating the permutation's first rows) to the same
    length on every rank; unshuffled ones (validation) are neither padded nor overlapping,
    so every row is evaluated exactly once.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    if not shuffle:
        return torch.arange(rank, n, world_size)
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=generator)
    total = math.ceil(n / world_size) * world_size
    if total > n:
        order = torch.cat([order, order[: total - n]])
    return order[rank::world_size]


class ShardBatches:
    """A sampler yielding this worker's batches as index tensors (use with ``batch_size=None``)."""

    def __init__(
        self, n: int, batch_size: int, world_size: int, rank: int, seed: int, shuffle: bool = True
    ) -> None:
        self.n, self.batch_size, self.world_size, self.rank = n, batch_size, world_size, rank
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before every epoch
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        return shard_indices(self.n, self.world_size, self.rank, self.seed, self.epoch, self.shuffle)

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator, so the order is drawn at the first batch: when resuming from a
        # checkpoint Lightning creates the loader's iterator before it calls set_epoch for
        # the resumed epoch, and an eager order would replay epoch 0's shuffle.
        yield from self.indices().split(self.batch_size)

    def __len__(self) -> int:
        rows = (
            len(range(self.rank, self.n, self.world_size))
            if not self.shuffle
            else math.ceil(self.n / self.world_size)
        )
        return math.ceil(rows / self.batch_size)
