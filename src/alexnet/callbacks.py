"""Callbacks that measure the run: training throughput and the per-epoch metric history that
``summary.json`` is built from."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch

from alexnet.data.sampling import replica_of
from alexnet.names import TRAIN_TOP1


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


class StopAtTarget(L.Callback):
    """Ends a run once it has measured what Fig. 1 needs (Sec. 3.1: epochs to 25% training error),
    so that a study of many runs costs what its figure needs and no more.

    - ``patience``: the run stops after ``metric`` (the epoch's mean training error, as it trains)
      has been at or below ``target`` for this many consecutive epochs: the figure shows that the
      curve stayed there, not just that it touched it.
    - ``race_factor`` (optional): the other learning rates of the same arm and seed are the run
      directories beside this one in a Fig. 1 study's layout, ``<arm>/lr<lr>/seed<seed>``, i.e.
      ``../../*/seed<seed>/summary.json`` from this run's directory. Once one of them has completed
      having reached the target after E epochs, this run stops when it has trained
      ``race_factor`` x E epochs without reaching it: it can no longer be the fastest rate of its
      seed.

    Why the run ended goes to ``summary.json`` as ``ended_early`` ({"reason", "epoch", ...}); the
    study report shows it beside each curve, so a curve cut here is never mistaken for one that
    would have stayed flat.
    """

    def __init__(self, metric: str = TRAIN_TOP1, target: float = 0.25, patience: int = 2,
                 race_factor: float | None = None) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if race_factor is not None and race_factor < 1:
            raise ValueError(f"race_factor must be >= 1, got {race_factor}")
        self.metric, self.target, self.patience = metric, float(target), int(patience)
        self.race_factor = race_factor
        self.below = 0
        self.reached_at: int | None = None
        self.ended_early: dict[str, Any] | None = None

    def _leader(self, trainer: L.Trainer) -> tuple[float, str] | None:
        """(epochs, run directory) of the fastest completed sibling run that reached the target."""
        if self.race_factor is None or not trainer.default_root_dir:
            return None
        from pathlib import Path

        from alexnet.study import StudyError, epochs_to_error, read_runs

        own = Path(trainer.default_root_dir).resolve()
        best: tuple[float, str] | None = None
        for path in sorted(own.parent.parent.glob(f"*/{own.name}/summary.json")):
            if path.parent.resolve() == own:
                continue
            try:
                runs = read_runs(path)
            except StudyError:  # being replaced, or damaged: not a leader
                continue
            for run in runs:
                if run.status != "completed":
                    continue
                epochs = epochs_to_error(run.history(self.metric), self.target, run.chance_error)
                if epochs is not None and (best is None or epochs < best[0]):
                    best = (epochs, str(path.parent))
        return best

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            return
        done = trainer.current_epoch + 1  # epochs trained, this one included
        if float(value) <= self.target:
            self.below += 1
            self.reached_at = self.reached_at or done
        else:
            self.below = 0
        if self.below >= self.patience:
            self.ended_early = {"reason": "target", "epoch": done, "metric": self.metric,
                                "target": self.target, "patience": self.patience}
        elif self.reached_at is None and (leader := self._leader(trainer)) is not None:
            epochs, run_dir = leader
            if done >= self.race_factor * epochs:
                self.ended_early = {"reason": "outpaced", "epoch": done, "metric": self.metric,
                                    "target": self.target, "race_factor": self.race_factor,
                                    "leader_epochs": round(epochs, 3), "leader": run_dir}
        if self.ended_early is not None:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"below": self.below, "reached_at": self.reached_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.below = int(state_dict.get("below", 0))
        self.reached_at = state_dict.get("reached_at")
