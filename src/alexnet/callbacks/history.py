"""Every epoch's metrics, kept for summary.json."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch


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
