"""Which images each process reads: global batches, the same on one device or many.

``data.batch_size`` is the global batch (the paper's 128, Sec. 5) whatever the number of devices.
Each epoch has one order of the training split, drawn from (seed, epoch) alone, so every process
draws the same one without talking to the others; it is cut into global batches, and each of the
R data-parallel replicas takes its own contiguous slice (batch_size / R images) of every global
batch. A run on R devices therefore steps through exactly the batches that a run on one device
steps through, which is what makes data-parallel training equal to single-process training (and
what tests/test_parallel.py checks). Processes that hold different parts of one network (the
paper's two columns, ``trainer=model_parallel``) are one replica: they read the same slice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler


class EpochOrder(Sampler[int]):
    """The order of a split in one epoch: a permutation drawn from ``(seed, epoch)`` when
    ``shuffle``, else 0..length-1. ``set_epoch`` (called by Lightning at each epoch) moves it on."""

    def __init__(self, length: int, *, shuffle: bool, seed: int = 0) -> None:
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


class GlobalBatchSampler(Sampler[list[int]]):
    """Global batches of ``batch_size`` cut from ``sampler``'s order; replica ``rank`` of
    ``replicas`` yields its slice of each. ``drop_last`` drops a last, incomplete global batch.

    Every replica takes ``batch_size / replicas`` images of a full global batch, so the replicas'
    gradients average to the global batch's. The slices of an incomplete last batch (evaluation)
    differ by at most one image and may be empty, in which case that replica yields nothing for
    it: evaluation needs no step-by-step agreement (the metrics are summed at the epoch's end).
    """

    def __init__(self, sampler: EpochOrder, batch_size: int, *, drop_last: bool,
                 replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < replicas:
            raise ValueError(f"rank must be in [0, {replicas}), got {rank}")
        self.sampler = sampler  # Lightning finds set_epoch here (batch_sampler.sampler)
        self.batch_size, self.drop_last = batch_size, drop_last
        self.replicas, self.rank = replicas, rank

    def _slice(self, size: int) -> tuple[int, int]:
        """This replica's [start, stop) in a global batch of ``size``: near-equal pieces."""
        base, extra = divmod(size, self.replicas)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.sampler)
        for first in range(0, len(order), self.batch_size):
            batch = order[first : first + self.batch_size]
            if len(batch) < self.batch_size and self.drop_last:
                return
            start, stop = self._slice(len(batch))
            if stop > start:
                yield batch[start:stop]

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)
        if rest and not self.drop_last:
            start, stop = self._slice(rest)
            return full + (stop > start)
        return full


def _mix(seed: int, epoch: int) -> int:
    # One 63-bit seed per (seed, epoch): nearby seeds and epochs give unrelated orders.
    return (seed * 1_000_003 + epoch * 7_919 + 0x5DEECE66D) % (2**63 - 1)


def replica_of(trainer: Any) -> tuple[int, int]:
    """(replicas, rank) of the data parallelism of ``trainer``'s strategy (its
    ``distributed_sampler_kwargs``); (1, 0) for one process or no trainer. The two column
    processes of one network (``trainer=model_parallel``) count as one replica."""
    kwargs = getattr(getattr(trainer, "strategy", None), "distributed_sampler_kwargs", None) or {}
    return int(kwargs.get("num_replicas", 1) or 1), int(kwargs.get("rank", 0))
