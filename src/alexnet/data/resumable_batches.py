"""Training batches that a resumed run reproduces exactly.

Two things make the batches of a step depend on (seed, epoch, position) alone:

- :class:`ResumableBatches` cuts the epoch's order (drawn from (seed, epoch)) into batches and, for
  the epoch a run resumes in, skips the batches that were trained on before the interruption;
- each batch it yields is a :class:`KeyedBatch`: the list of indices together with (seed, epoch),
  from which :func:`geometry` draws every image's crop and reflection by a counter-based hash of
  (seed, epoch, image). A loader worker's own random state, which depends on every batch that
  worker made before (and on how many workers there are), is not used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from alexnet.data.sampling import GlobalBatchSampler


class KeyedBatch(list):
    """A batch of indices that knows the (seed, epoch) it was drawn for; it pickles with them to
    the loader's workers."""

    def __init__(self, indices: Sequence[int], seed: int, epoch: int) -> None:
        super().__init__(indices)
        self.seed, self.epoch = int(seed), int(epoch)


class ResumableBatches(GlobalBatchSampler):
    """:class:`GlobalBatchSampler` whose batches carry their (seed, epoch), and which skips the
    first ``batches`` batches of epoch ``epoch`` once (:meth:`resume_at`)."""

    _skip: tuple[int, int] | None = None

    def resume_at(self, epoch: int, batches: int) -> None:
        self.sampler.set_epoch(epoch)
        self._skip = (epoch, batches) if batches > 0 else None

    def __iter__(self) -> Iterator[list[int]]:
        seed, epoch = self.sampler.seed, self.sampler.epoch
        skip = 0
        if self._skip is not None and self._skip[0] == epoch:
            skip, self._skip = self._skip[1], None
        for k, batch in enumerate(super().__iter__()):
            if k >= skip:
                yield KeyedBatch(batch, seed, epoch)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # SplitMix64's finaliser: consecutive inputs give unrelated 64-bit outputs.
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def geometry(indices: Sequence[int], seed: int, epoch: int, room: int, random_crop: bool,
             flip: bool) -> Tensor:
    """(len(indices), 3): each image's top, left and whether it is mirrored, drawn from
    (seed, epoch, index) alone. ``room``: image size minus crop size."""
    index = np.asarray(indices, dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(np.uint64(seed & (2**64 - 1)) * np.uint64(0x100000001B3)
                          ^ np.uint64(epoch) * np.uint64(0xD6E8FEB86659FD93) ^ index)
    draws = [_splitmix64(key ^ np.uint64(stream)) for stream in (1, 2, 3)]
    out = np.empty((len(index), 3), dtype=np.int64)
    if random_crop:
        out[:, 0] = (draws[0] % np.uint64(room + 1)).astype(np.int64)
        out[:, 1] = (draws[1] % np.uint64(room + 1)).astype(np.int64)
    else:
        out[:, :2] = room // 2
    out[:, 2] = (draws[2] >> np.uint64(63)).astype(np.int64) if flip else 0
    return torch.from_numpy(out)


def resume_position(trainer: object | None) -> tuple[int, int]:
    """(epoch, batches of it already trained) where a run (re)starts: read from the loop
    progress Lightning has restored from a checkpoint; (0, 0) for a fresh run."""
    fit_loop = getattr(trainer, "fit_loop", None)
    if fit_loop is None:
        return 0, 0
    epoch = int(fit_loop.epoch_progress.current.processed)
    done = int(fit_loop.epoch_loop.batch_progress.current.processed) if fit_loop.restarting else 0
    return epoch, done
