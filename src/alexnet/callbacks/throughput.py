"""Training throughput, measured as a run trains."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from alexnet.data.sampling import replica_of


class ImageThroughput(L.Callback):
    """Logs ``train/img_per_s``: images per second of wall time over the training steps (data
    loading included, validation excluded), per step and as an epoch mean."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._epoch_images = 0
        self._epoch_seconds = 0.0
        self._last: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_images, self._epoch_seconds = 0, 0.0
        self._last = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        seconds = now - (self._last or now)
        self._last = now
        count = len(batch[1]) * replica_of(trainer)[0]  # the global batch's images
        self.images += count
        self.seconds += seconds
        self._epoch_images += count
        self._epoch_seconds += seconds
        if seconds > 0:
            pl_module.log("train/img_per_s", count / seconds, on_step=True, on_epoch=False,
                          prog_bar=True, batch_size=len(batch[1]))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_seconds > 0:
            pl_module.log("train/epoch_img_per_s", self._epoch_images / self._epoch_seconds,
                          sync_dist=True)  # every process measures the same global rate

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None
