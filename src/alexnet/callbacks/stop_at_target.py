"""Fig. 1's runs end once they have measured what they are for."""

from __future__ import annotations

from typing import Any

import lightning as L

from alexnet.names import TRAIN_TOP1


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

        from alexnet.run_record import RecordError, epochs_to_error, read_runs

        own = Path(trainer.default_root_dir).resolve()
        best: tuple[float, str] | None = None
        for path in sorted(own.parent.parent.glob(f"*/{own.name}/summary.json")):
            if path.parent.resolve() == own:
                continue
            try:
                runs = read_runs(path)
            except RecordError:  # being replaced, or damaged: not a leader
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
