"""Lightning data modules over the prepared format. They know nothing of the model: they deliver
(input, label) batches, the input already cropped, mirrored, centred and jittered on its device.

The work is split where it is cheapest. The loader's workers cut each image's patch out of the
uint8 memory map and mirror it (a copy of 155 KB per 227 x 227 patch, no decoding); the batch
travels as uint8, a quarter of the float bytes, in shared memory that the worker reuses once the
batch is used; the float conversion, the mean image and the PCA colour shift happen after the
transfer (``on_after_batch_transfer``), on the GPU when there is one.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from alexnet.data import prepared, registry, sources, synthetic
from alexnet.data.loader import (
    Batch,
    PreparedImages,
    SharedBatches,
    keep_batch,
    release,
)
from alexnet.data.presets import Preset
from alexnet.data.resumable_batches import ResumableBatches, resume_position
from alexnet.data.sampling import EpochOrder, GlobalBatchSampler, replica_of
from alexnet.exits import DataError, NotReadable


class PreparedDataModule(L.LightningDataModule):
    """Train/val/test loaders over a prepared dataset directory, with the paper's augmentation.

    ``val`` selects (best checkpoint, plateau schedule); ``test`` is the dataset's test split,
    measured once at the end, or the val split where the dataset has none (ILSVRC-2012 has no
    public test labels, Sec. 2): :attr:`test_split` says which. With ``ten_crop`` the test batches
    carry the paper's 10 patches per image.

    ``source``, ``root``, ``val_fraction`` and ``test_fraction`` say how ``prepared_dir`` is made
    from the user's files (``src/prepare.py``); training only reads ``prepared_dir``, and uses
    them to check it and to say how to make it when it is missing. ``expected_classes`` and
    ``test_folder_required`` (data=cifar10_folder) are checked by src/prepare.py against the
    tree, and here against the prepared dataset.
    """

    def __init__(
        self,
        prepared_dir: str,
        *,
        source: str | None = None,
        root: str | None = None,
        val_fraction: float | None = None,
        test_fraction: float | None = None,
        expected_classes: int | None = None,
        test_folder_required: bool = False,
        image_size: int = 256,
        crop_size: int = 227,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        mean: str = "image",
        crop: bool = True,
        flip: bool = True,
        pca_jitter: bool = True,
        pca_std: float = 0.1,
        pca_convention: str = "authors",
        ten_crop: bool = False,
        scale: float = 1.0,
        pin_memory: bool = True,
        shuffle_seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if not 1 <= crop_size <= image_size:
            raise ValueError(
                f"data.crop_size must be between 1 and data.image_size={image_size}, "
                f"got {crop_size}"
            )
        if source is not None:
            registry.source(source)  # a known source, or one line naming them
        self.root = Path(prepared_dir)
        self.source, self.source_root, self.val_fraction = source, root, val_fraction
        self.test_fraction = test_fraction
        self.expected_classes, self.test_folder_required = expected_classes, test_folder_required
        self.image_size, self.crop_size = image_size, crop_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.shuffle_seed = shuffle_seed  # the training order's seed (the run's seed)
        self.crop, self.flip = crop, flip
        self.pca = dict(pca_jitter=pca_jitter, pca_std=pca_std, pca_convention=pca_convention)
        self.mean_mode = mean
        self.ten_crop = ten_crop
        self.scale = scale
        self.stats: dict[str, Any] | None = None
        self._in_transfer: Tensor | None = None
        self._mapped: deque = deque(maxlen=max(1, num_workers) * SharedBatches.KEEP)
        # Checks the preset's settings now, before any data are read.
        Preset(crop_size=crop_size, mean_image=torch.zeros(image_size, image_size, 3), mean=mean,
               scale=scale, **self.pca)

    # -- lifecycle -------------------------------------------------------------------------
    def prepare_command(self, force: bool = False) -> str:
        """The command that writes ``prepared_dir`` from the user's files."""
        source = registry.source(self.source or "imagenet")
        parts = ["python src/prepare.py", f"data={source.name}",
                 f"data.root={self.source_root or source.root_example}"]
        if self.image_size != source.image_size:
            parts.append(f"data.image_size={self.image_size}")
        for name in source.fractions:
            if (value := getattr(self, name)) is not None:
                parts.append(f"data.{name}={value}")
        parts.append(f"data.prepared_dir={self.root}")
        return " ".join(parts + (["force=true"] if force else []))

    def load_stats(self) -> dict[str, Any]:
        """Check ``prepared_dir`` against the configuration; DataError says what to run."""
        try:
            stats = prepared.load_stats(self.root, self.image_size)
            prepared.check_arrays(self.root, stats)
        except DataError as err:
            if self.source is None or isinstance(err, NotReadable):  # nothing to prepare again
                raise
            force = prepared.is_prepared(self.root)
            raise DataError(f"{err}; to prepare it: {self.prepare_command(force)}") from None
        made_from = stats.get("source", {})
        if self.source is not None and made_from.get("kind") != self.source:
            raise DataError(
                f"{self.root} holds {made_from.get('kind')!r} data, not data.source="
                f"{self.source}: set data.prepared_dir to the {self.source} dataset"
            )
        if self.source_root is not None and made_from.get("root") not in (None, str(
                Path(self.source_root).expanduser().resolve())):
            raise DataError(
                f"{self.root} was prepared from {made_from['root']}, not data.root="
                f"{self.source_root}: prepare that into another data.prepared_dir"
            )
        sources.check_expected_layout(self.root, stats["num_classes"],
                                      stats.get("splits", {}).get("test"), self.expected_classes,
                                      self.test_folder_required)
        return stats

    def prepare_data(self) -> None:
        """Check that the prepared dataset exists (subclasses may create it here), and keep its
        stats: the checks (the arrays' sizes included) run once a process."""
        self.stats = self.load_stats()

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        if self.stats is None:  # the processes that did not prepare (DDP's others)
            self.stats = self.load_stats()
        mean_image = torch.from_numpy(np.load(self.root / prepared.MEAN_IMAGE_FILE))
        common = dict(crop_size=self.crop_size, mean_image=mean_image, mean=self.mean_mode,
                      scale=self.scale)
        self.train_preset = Preset(
            **common, **self.pca,
            pca_eigval=self.stats["pca_eigval"], pca_eigvec=self.stats["pca_eigvec"],
        )
        self.eval_preset = Preset(**common)
        self.test_preset = Preset(**common, ten_crop=self.ten_crop)
        # Without crops the network sees the central patch: the paper's "no translations"
        # control (Sec. 4.1); reflections are switched separately.
        self.train_set = PreparedImages(self.root, "train", crop_size=self.crop_size,
                                        crop="random" if self.crop else "center", flip=self.flip,
                                        reuse_memory=True)
        self.val_set = PreparedImages(self.root, "val", crop_size=self.crop_size)
        self.test_set = PreparedImages(self.root, self.test_split, crop_size=self.crop_size,
                                       crop="none" if self.ten_crop else "center")

    @property
    def test_split(self) -> str:
        """The split ``test/*`` is measured on: ``test``, or ``val`` where the data have none."""
        if self.stats is None:
            self.stats = self.load_stats()
        return prepared.test_split(self.stats)

    def split_origins(self) -> dict[str, str]:
        """Where each split came from (stats.json's ``splits``)."""
        if self.stats is None:
            self.stats = self.load_stats()
        return dict(self.stats.get("splits") or {})

    def copies_in(self, split: str) -> int | None:
        """How many images of ``split`` decode to exactly an image of an earlier split (train,
        or val for test): stats.json's ``duplicates``; None for data prepared before the check."""
        if self.stats is None:
            self.stats = self.load_stats()
        if "duplicates" not in self.stats:
            return None
        return sum(d["split"] == split for d in self.stats["duplicates"])

    @property
    def num_classes(self) -> int:
        if self.stats is None:
            self.stats = self.load_stats()
        return int(self.stats["num_classes"])

    @property
    def class_names(self) -> list[str]:
        """The classes in label order, as the prepared dataset names them."""
        if self.stats is None:
            self.stats = self.load_stats()
        return [str(name) for name in self.stats["classes"]]

    # -- loaders ---------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        # batch_size is the global batch: each data-parallel replica reads its slice of every
        # global batch, in an order that depends on (shuffle_seed, epoch) only (sampling.py).
        replicas, rank = replica_of(getattr(self, "trainer", None))
        order = EpochOrder(len(dataset), shuffle=shuffle, seed=self.shuffle_seed)
        # Training batches carry their (seed, epoch) and can skip what a resumed run has seen.
        sampler_class = ResumableBatches if shuffle else GlobalBatchSampler
        batches = sampler_class(order, batch_size, replicas=replicas, rank=rank,
                                     drop_last=shuffle and len(dataset) > batch_size)
        worker_init = None
        if int(os.environ.get("PL_SEED_WORKERS", 0)):
            # Lightning seeds workers by global rank; the replica's rank instead, so that the two
            # column processes of one replica (trainer=model_parallel) crop alike.
            worker_init = functools.partial(pl_worker_init_function, rank=rank)
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=keep_batch,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            worker_init_fn=worker_init,
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.train_set, self.batch_size, shuffle=True)
        # A resumed run starts in the epoch it was interrupted in, after the batches it trained.
        loader.batch_sampler.resume_at(*resume_position(getattr(self, "trainer", None)))
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels, geometry = batch
        self._in_transfer = images
        return images, torch.as_tensor(labels), torch.as_tensor(geometry)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Centre and jitter on the batch's device: the GPU when there is one (Sec. 4.1 did it on
        the CPU while the GPU trained; here the GPU is fast enough to do both)."""
        trainer = self.trainer
        if trainer is not None and trainer.training:
            preset = self.train_preset
        elif trainer is not None and trainer.testing:
            preset = self.test_preset
        else:
            preset = self.eval_preset
        sent, self._in_transfer = self._in_transfer, None
        return self.network_input(batch, preset, sent)

    def network_input(self, batch: Batch, preset: Preset, sent: Tensor | None = None) -> tuple:
        """(input, labels) of a loader batch, after which the loader's memory of the batch
        (``sent``, the uint8 images as they left the loader) is released for reuse."""
        images, labels, geometry = batch
        x = preset(images, torch.as_tensor(geometry))
        release(images if sent is None else sent, self._mapped)
        return x, torch.as_tensor(labels)


class SyntheticDataModule(PreparedDataModule):
    """The built-in dataset: drawn once into ``prepared_dir`` (a cache keyed by its parameters)."""

    def __init__(
        self,
        prepared_dir: str,
        *,
        num_classes: int = 10,
        train_per_class: int = 100,
        val_per_class: int = 20,
        test_per_class: int | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(prepared_dir, **kwargs)
        synthetic.class_table(num_classes)  # validates num_classes before any work
        self.generation = dict(
            num_classes=num_classes, train_per_class=train_per_class,
            val_per_class=val_per_class, test_per_class=test_per_class,
            image_size=self.image_size, seed=seed,
        )

    def prepare_data(self) -> None:
        synthetic.prepare(self.root, **self.generation)
        super().prepare_data()
