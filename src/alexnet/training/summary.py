"""The run record, ``summary.json``: the stable, machine-readable result of every run.

The ablation report, the notebooks and any other tool read this file, never training internals.
Its keys: ``task``, ``status``, ``final`` and ``best`` (metrics under their logged names),
``history`` (one row per epoch), ``num_params``, ``num_classes``, ``ablations`` (names, claims and
changed keys), ``seed``, ``git`` (commit and dirty flag, when available), ``wall_time_s``,
``img_per_s``, ``checkpoints``, ``environment`` and ``config`` (the resolved configuration).
A training run adds ``slurm_job_id``, ``resumed_from`` (when it resumed a checkpoint),
``evaluation`` (what was tested and what val chose; in a one-process run, which test images the
top-1 guess got right, packed: alexnet.run_record.unpack_per_image), and when it
stopped early ``stopped`` and ``resume`` (interrupted) or ``diverged`` (see
alexnet.callbacks.run_guard).
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from alexnet.exits import DirectoryRemoved
from alexnet.names import TEST10_TOP1, TEST_TOP1, VAL_TOP1, arm_name
from alexnet.provenance import git_state
from alexnet.run_record import SUMMARY_VERSION  # the format's one number, its reader's


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def environment() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
    }


class EpochHistory(Protocol):
    """What a summary reads of the run's metric history (the ``MetricHistory`` callback)."""

    history: list[dict[str, Any]]

    def best(self) -> dict[str, Any]: ...


def build_summary(
    *,
    task: str,
    cfg: DictConfig,
    trainer: L.Trainer,
    history: EpochHistory,
    num_params: int,
    num_classes: int,
    ablations: list[dict[str, Any]],
    wall_time_s: float,
    img_per_s: float | None,
    checkpoints: dict[str, str | None],
    output_dir: Path,
    train_config: dict[str, Any] | None = None,
    error: BaseException | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # The last epoch's metrics, then whatever ran after it (the test) on top.
    final = {k: v for k, v in (history.history[-1] if history.history else {}).items() if "/" in k}
    final.update(
        (k, float(v)) for k, v in trainer.callback_metrics.items()
        if "/" in k and torch.as_tensor(v).numel() == 1
    )
    final = {k: _finite(v) for k, v in final.items()}
    summary = {
        "summary_version": SUMMARY_VERSION,
        "task": task,
        "status": _status(trainer, error),
        "final": final,
        "best": history.best(),
        "history": history.history,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "num_params": num_params,
        "num_classes": num_classes,
        "ablations": ablations,
        "arm": arm_name([a["name"] for a in ablations]),
        "seed": cfg.get("seed"),
        "study": _study(cfg),
        "tags": list(cfg.get("tags") or []),
        "git": git_state(),
        "wall_time_s": wall_time_s,
        "img_per_s": img_per_s,
        "checkpoints": checkpoints,
        "output_dir": str(output_dir),
        "environment": environment(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if error is not None and summary["status"] in ("failed", "diverged"):
        summary["error"] = f"{type(error).__name__}: {' '.join(str(error).split())}"
    # An early stop's own record (alexnet.callbacks.run_guard): where it stopped, how it diverged.
    summary.update(getattr(error, "fields", None) or {})
    summary.update(extra or {})
    if train_config is not None:
        summary["train_config"] = train_config
    return summary


def _status(trainer: L.Trainer, error: BaseException | None) -> str:
    if error is not None:  # interrupted, diverged (alexnet.callbacks.run_guard) or failed
        return getattr(error, "status", "failed")
    return "interrupted" if trainer.interrupted else "completed"


def _study(cfg: DictConfig) -> dict[str, Any] | None:
    """The study a run belongs to (its name, and the sweep directory it was run in)."""
    study = cfg.get("study")
    if not study:
        return None
    sweep_dir = None
    if HydraConfig.initialized() and HydraConfig.get().sweep.dir:
        sweep_dir = str(Path(HydraConfig.get().sweep.dir).resolve())
    return {"name": study.get("name"), "sweep_dir": sweep_dir}


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write atomically: a reader never sees a half-written record. A run directory removed
    while the run ran is said as such (DirectoryRemoved), not as a missing file."""
    tmp = path.with_suffix(".json.tmp")
    if not path.parent.is_dir():
        raise DirectoryRemoved(path)
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(summary, indent=2, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written record behind
        raise



def final_line(summary: dict[str, Any]) -> str:
    """The one line every run ends with: status, headline metrics, run directory (and for an
    interrupted run, the command that resumes it)."""
    final = summary.get("final") or {}
    shown = [k for k in (VAL_TOP1, TEST_TOP1, TEST10_TOP1) if k in final]
    metrics = " ".join(f"{k} {final[k]:.4f}" for k in shown if final[k] is not None)
    head = summary["status"]
    if summary.get("stopped"):
        s = summary["stopped"]
        head += f" at epoch {s['epoch']} step {s['step']}"
    if summary.get("diverged"):
        d = summary["diverged"]
        head += f" at epoch {d['epoch']} step {d['step']} (training loss {d['loss']})"
    evaluation = summary.get("evaluation")
    if metrics and evaluation and any(k.startswith("test") for k in shown):
        # No checkpoint kept (trainer.enable_checkpointing=false): the test saw the last weights.
        last = ", last weights" if evaluation.get("checkpoint_tested", "") is None else ""
        metrics += (" (test/* on the val split, which also chose "
                    f"{' and '.join(evaluation['val_selects'])}: no independent test split)"
                    if evaluation.get("test_independent") is False
                    else f" (test split: {evaluation['test_split']}{last})")
        if evaluation.get("test_copies_of_earlier_splits"):
            metrics += (f"; {evaluation['test_copies_of_earlier_splits']} test images are copies"
                        f" of training or val images (stats.json 'duplicates')")
    line = f"{head}: {metrics} -> {summary['output_dir']}" if metrics else (
        f"{head} -> {summary['output_dir']}")
    if summary.get("resume"):
        line += f"; resume with: {summary['resume']['command']}"
    elif summary["status"] == "failed" and summary.get("error"):
        line += f" ({summary['error']})"
    return line
