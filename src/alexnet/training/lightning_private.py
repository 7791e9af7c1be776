"""Every use of Lightning's private attributes, in one file: what exact resume needs that Lightning
does not offer publicly. Checked against Lightning 2.5 and 2.6 (2.6.6 installed); a Lightning
upgrade reads this file first (tests/test_resilience.py covers each function end to end)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torchmetrics import Metric


def epoch_sums(trainer: L.Trainer) -> dict[str, Any]:
    """The running sums of the epoch's logged training metrics: Lightning's accumulators of
    ``self.log(..., on_epoch=True)`` values, and the states of torchmetrics metrics logged
    (module attributes). Lightning does not checkpoint them, so a resumed epoch would otherwise
    average only the batches after the resume."""
    logged, metrics = {}, {}
    results = trainer.fit_loop.epoch_loop._results
    for key, result in results.items():
        if result.is_tensor and result.meta.on_epoch:
            logged[key] = {"value": result.value.detach().cpu().clone()}
            if result.meta.is_mean_reduction:
                logged[key]["count"] = result.cumulated_batch_size.detach().cpu().clone()
    module = trainer.lightning_module
    for name, metric in module.named_modules():
        if isinstance(metric, Metric) and metric.update_count > 0 and not name.startswith(
                ("metrics.val", "metrics.test", "losses")):
            metrics[name] = {k: v.detach().cpu().clone() for k, v in metric.metric_state.items()
                             if isinstance(v, torch.Tensor)}
            metrics[name]["_update_count"] = int(metric.update_count)
    return {"logged": logged, "metrics": metrics}


def add_epoch_sums(trainer: L.Trainer, sums: dict[str, Any]) -> None:
    """Add the sums saved by :func:`epoch_sums` to those of the first batch after resuming:
    (0 + a) + b is exactly a + b, so the epoch's metrics come out bit-identical."""
    results = trainer.fit_loop.epoch_loop._results
    for key, saved in sums.get("logged", {}).items():
        if key in results:
            result = results[key]
            result.value = saved["value"].to(result.value) + result.value
            if "count" in saved:
                result.cumulated_batch_size = (saved["count"].to(result.cumulated_batch_size)
                                               + result.cumulated_batch_size)
    modules = dict(trainer.lightning_module.named_modules())
    for name, state in sums.get("metrics", {}).items():
        metric = modules.get(name)
        if not isinstance(metric, Metric):
            continue
        for key, value in state.items():
            if key != "_update_count":
                current = getattr(metric, key)
                setattr(metric, key, value.to(current) + current)
        metric._update_count += int(state["_update_count"])
        metric._computed = None


def epoch_last_batch_reached(trainer: L.Trainer) -> bool:
    """Whether the epoch's last training batch has been fetched (its validation and epoch end are
    still to run)."""
    return bool(trainer.fit_loop.epoch_loop._num_ready_batches_reached())


def end_restart(trainer: L.Trainer) -> None:
    """Lightning treats a whole epoch resumed in its middle as "restarting" and leaves its
    learning-rate schedulers unstepped at its end; once that epoch has been trained and validated,
    end the restart so that they step."""
    fit_loop = trainer.fit_loop
    if fit_loop.restarting and fit_loop.epoch_loop._num_ready_batches_reached():
        fit_loop._restarting = False
