"""The loader's side of the prepared data: the dataset its workers read (each image's patch
cut out of the uint8 memory map and mirrored, no decoding) and the shared-memory batches they
send, reused once the main process has used them (:mod:`alexnet.data.datamodule` joins them to
the trainer)."""

from __future__ import annotations

import warnings
from collections import deque
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from alexnet.data import prepared
from alexnet.data.resumable_batches import KeyedBatch
from alexnet.data.resumable_batches import geometry as keyed_geometry

CROP_MODES = ("random", "center", "none")

# What the loader delivers: uint8 (B, H, W, 3) patches, their int64 labels and (B, 3) geometry
# (top, left, mirrored). The small arrays travel as numpy arrays, inside the message from the
# worker: a tensor would cost a shared-memory segment and a file-descriptor handover each.
Batch = tuple[Tensor, np.ndarray, np.ndarray]


class SharedBatches:
    """Batch tensors in shared memory, for a loader worker: sending one to the main process then
    copies nothing. A fresh one costs more than filling it (the pages of a new shared-memory
    segment are faulted in one by one), so a worker reuses each buffer once the main process has
    released it (see :func:`release`), which it marks in a byte after the data. A buffer that is not
    released (a batch kept, or copied into pinned memory instead) is simply not reused."""

    FLAG = 64  # bytes after the data; the first says whether the main process still uses it
    KEEP = 3  # buffers per worker: what its prefetched batches and the one in use hold

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self.buffers: list[torch.UntypedStorage] = []

    def new(self, shape: tuple[int, ...]) -> Tensor:
        """An uninitialised uint8 tensor of ``shape`` in shared memory."""
        nbytes = int(np.prod(shape))
        storage = next(
            (s for s in self.buffers if s.nbytes() == nbytes + self.FLAG and s[nbytes] == 0),
            None,
        )
        if storage is None:
            storage = torch.UntypedStorage._new_shared(nbytes + self.FLAG)
            if self.keep > 0:
                self.buffers = [*self.buffers[-(self.keep - 1):], storage]
        storage[nbytes] = 1  # in use until the main process releases it
        return torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape)


def release(images: Tensor, mapped: deque | None = None) -> None:
    """Tell the loader worker that made ``images`` that it may reuse their memory. ``mapped``
    keeps the memory mapped in this process: when the worker sends the buffer again, torch then
    finds it already mapped, and its pages need not be faulted in again."""
    storage, nbytes = images.untyped_storage(), images.numel()
    if (images.device.type == "cpu" and images.dtype == torch.uint8
            and images.storage_offset() == 0 and images.is_contiguous()
            and storage.nbytes() == nbytes + SharedBatches.FLAG and storage.is_shared()):
        storage[nbytes] = 0
        if mapped is not None and not any(s.data_ptr() == storage.data_ptr() for s in mapped):
            mapped.append(storage)


def keep_batch(batch: Batch) -> Batch:
    """The loader's collate function: ``__getitems__`` already built the batch."""
    return batch


class PreparedImages(Dataset):
    """One split of a prepared dataset, read a batch at a time (``__getitems__``).

    ``crop``: ``random`` (a random ``crop_size`` patch per image, Sec. 4.1), ``center`` or
    ``none`` (the whole image); ``flip`` mirrors each patch with probability 1/2. The random draws
    use torch's generator, which the DataLoader seeds per worker and per epoch. The memory map is
    opened lazily in each worker process rather than pickled into it. ``reuse_memory``: each
    worker keeps :attr:`SharedBatches.KEEP` batches of shared memory for reuse (for training,
    where it pays; ``/dev/shm`` must hold them).
    """

    def __init__(self, root: str | Path, split: str, *, crop_size: int, crop: str = "center",
                 flip: bool = False, reuse_memory: bool = False) -> None:
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
        self.root, self.split = Path(root), split
        images, labels = prepared.open_split(self.root, split)
        self.image_size = images.shape[1]
        if not 1 <= crop_size <= self.image_size:
            raise ValueError(f"crop_size must be between 1 and {self.image_size}")
        self.rows = np.flatnonzero(labels >= 0)  # rows of undecodable source files hold nothing
        self.labels = labels[self.rows]
        self.crop, self.flip = crop, flip
        self.crop_size = crop_size if crop != "none" else self.image_size
        self.reuse_memory = reuse_memory
        self._array: np.ndarray | None = None
        self._images: Tensor | None = None
        self._shared: SharedBatches | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        # Sent to worker processes without the memory map (pickling it would copy the split).
        return {**self.__dict__, "_array": None, "_images": None, "_shared": None}

    def _source(self) -> tuple[np.ndarray, Tensor]:
        """The split's memory map, as an array and as a tensor."""
        if self._images is None:
            self._array, _ = prepared.open_split(self.root, self.split)
            with warnings.catch_warnings():  # read-only map: the tensor is never written
                warnings.simplefilter("ignore", UserWarning)
                self._images = torch.from_numpy(self._array)
        return self._array, self._images

    def geometry(self, batch: int) -> Tensor:
        """(batch, 3): each patch's top, left and whether it is mirrored."""
        room = self.image_size - self.crop_size
        if self.crop == "random":
            corner = torch.randint(0, room + 1, (batch, 2))
        else:
            corner = torch.full((batch, 2), room // 2)
        mirrored = (torch.rand(batch) < 0.5 if self.flip else torch.zeros(batch)).long()
        return torch.cat([corner, mirrored[:, None]], dim=1)

    def __getitems__(self, indices: list[int]) -> Batch:
        # Sorted reads: neighbouring rows share pages, and a disk reads forwards.
        order = np.sort(np.asarray(indices, dtype=np.int64))
        rows = self.rows[order].tolist()
        size = self.crop_size
        if isinstance(indices, KeyedBatch):  # training: drawn from (seed, epoch, image) alone
            geometry = keyed_geometry(order, indices.seed, indices.epoch,
                                      self.image_size - self.crop_size,
                                      random_crop=self.crop == "random", flip=self.flip)
        else:
            geometry = self.geometry(len(rows))
        shape = (len(rows), size, size, 3)
        if get_worker_info() is None:
            images = torch.empty(shape, dtype=torch.uint8)
        else:  # each worker process has its own SharedBatches
            self._shared = self._shared or SharedBatches(
                SharedBatches.KEEP if self.reuse_memory else 0)
            images = self._shared.new(shape)
        array, tensor = self._source()
        out = images.numpy()
        for k, (row, (top, left, mirrored)) in enumerate(zip(rows, geometry.tolist(),
                                                           strict=True)):
            if mirrored:  # torch mirrors 3-byte pixels faster than numpy's negative strides
                images[k] = tensor[row, top : top + size, left : left + size].flip(1)
            else:  # and numpy copies plain patches faster than torch
                out[k] = array[row, top : top + size, left : left + size]
        return images, self.labels[order], geometry.numpy()

    def __getitem__(self, index: int) -> Batch:
        images, labels, geometry = self.__getitems__([index])
        return images[0], labels[0], geometry[0]
