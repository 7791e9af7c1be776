"""Callbacks that measure the run: training throughput and the per-epoch metric history that
``summary.json`` is built from."""

from __future__ import annotations

import math
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


def _is_lower_better(name: str) -> bool:
    return name.endswith(("loss", "_err"))


class MetricHistory(L.Callback):
    """Keeps every epoch's logged metrics, and the best value of each (lowest error or loss)."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def _record(self, trainer: L.Trainer) -> None:
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items()
            if "/" in k and torch.as_tensor(v).numel() == 1
        }
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics}
        if self.history and self.history[-1]["epoch"] == row["epoch"]:
            self.history[-1].update(row)
        else:
            self.history.append(row)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    # Kept in checkpoints, so that a resumed run's summary.json has every epoch's row.
    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(row) for row in self.history]}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stage = stage

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Only a resumed fit takes the checkpoint's rows: testing the best checkpoint after
        # training restores callbacks too, and must not cut the epochs that came after it.
        if getattr(self, "_stage", "fit") == "fit":
            self.history = [dict(row) for row in state_dict.get("history", [])]

    def best(self) -> dict[str, float]:
        best: dict[str, float] = {}
        for row in self.history:
            for name, value in row.items():
                if not _is_lower_better(name) or math.isnan(value):
                    continue
                if name not in best or value < best[name]:
                    best[name] = value
        return best
