"""Lightning data modules over the prepared format. They know nothing of the model: they deliver
(input, label) batches, the input already cropped, jittered and centred on its device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from alexnet.data import prepared, synthetic
from alexnet.data.presets import Preset


class PreparedImages(Dataset):
    """One split of a prepared dataset; each item is a uint8 (S, S, 3) tensor and its label.

    The memory map is opened lazily in each worker process rather than pickled into it.
    """

    def __init__(self, root: str | Path, split: str) -> None:
        self.root, self.split = Path(root), split
        _, self.labels = prepared.open_split(self.root, split)
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._images is None:
            self._images, _ = prepared.open_split(self.root, self.split)
        return torch.from_numpy(np.array(self._images[index])), int(self.labels[index])


class PreparedDataModule(L.LightningDataModule):
    """Train/val loaders over a prepared dataset directory, with the paper's augmentation.

    ``test`` uses the val split (ILSVRC-2012 has no public test labels, Sec. 2); with
    ``ten_crop`` the test batches carry the paper's 10 patches per image.
    """

    def __init__(
        self,
        prepared_dir: str,
        *,
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
        ten_crop: bool = False,
        pin_memory: bool = True,
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
        self.root = Path(prepared_dir)
        self.image_size, self.crop_size = image_size, crop_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.augment = dict(crop=crop, flip=flip, pca_jitter=pca_jitter, pca_std=pca_std)
        self.mean_mode = mean
        self.ten_crop = ten_crop
        self.stats: dict[str, Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Check that the prepared dataset exists (subclasses may create it here)."""
        prepared.load_stats(self.root, self.image_size)

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        self.stats = prepared.load_stats(self.root, self.image_size)
        mean_image = torch.from_numpy(np.load(self.root / prepared.MEAN_IMAGE_FILE))
        common = dict(crop_size=self.crop_size, mean_image=mean_image, mean=self.mean_mode)
        self.train_preset = Preset(
            **common, train=True, **self.augment,
            pca_eigval=self.stats["pca_eigval"], pca_eigvec=self.stats["pca_eigvec"],
        )
        self.eval_preset = Preset(**common, train=False)
        self.test_preset = Preset(**common, train=False, ten_crop=self.ten_crop)
        self.train_set = PreparedImages(self.root, "train")
        self.val_set = PreparedImages(self.root, "val")

    @property
    def num_classes(self) -> int:
        if self.stats is None:
            self.stats = prepared.load_stats(self.root, self.image_size)
        return int(self.stats["num_classes"])

    # -- loaders ---------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment on the batch's device: the GPU when there is one (Sec. 4.1 did it on CPU
        while the GPU trained; here the GPU is fast enough to do both)."""
        images, labels = batch
        trainer = self.trainer
        if trainer is not None and trainer.training:
            preset = self.train_preset
        elif trainer is not None and trainer.testing:
            preset = self.test_preset
        else:
            preset = self.eval_preset
        return preset(images), labels


class SyntheticDataModule(PreparedDataModule):
    """The built-in dataset: drawn once into ``prepared_dir`` (a cache keyed by its parameters)."""

    def __init__(
        self,
        prepared_dir: str,
        *,
        num_classes: int = 10,
        train_per_class: int = 100,
        val_per_class: int = 20,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(prepared_dir, **kwargs)
        synthetic.class_table(num_classes)  # validates num_classes before any work
        self.generation = dict(
            num_classes=num_classes, train_per_class=train_per_class,
            val_per_class=val_per_class, image_size=self.image_size, seed=seed,
        )

    def prepare_data(self) -> None:
        if not prepared.is_prepared(self.root):
            synthetic.generate(self.root, **self.generation)
        super().prepare_data()
