"""Checks of a run that need more than its configuration's values: the parallel layout (once the
trainer that runs it exists), the record's path, a completed run's summary. The values' own
checks are in :mod:`alexnet.jobs.config_checks`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from alexnet.exits import UserError, in_multirun
from alexnet.run_record import RecordError, comparable, flatten_config, read_summary
from alexnet.training import parallel


def check_parallel(cfg: DictConfig, trainer: L.Trainer, net: torch.nn.Module) -> None:
    """The parallel layout's mistakes, before any work starts (UserError naming the fix)."""
    problems = parallel.check_layout(cfg, trainer, net)
    environment = getattr(trainer.strategy, "cluster_environment", None)
    external = environment is not None and environment.creates_processes_externally
    if trainer.world_size > 1 and not external and in_multirun():
        # Lightning would start the other processes by re-running this command line, which
        # would start the whole sweep again in each of them.
        problems.append(
            "a local Hydra multirun cannot start several processes per run: sweep with "
            "hydra/launcher=slurm, or run each job alone (or under torchrun)"
        )
    run_dir_given = not HydraConfig.initialized() or any(
        o.startswith("hydra.run.dir=") for o in HydraConfig.get().overrides.hydra
    )
    if trainer.world_size > 1 and external and not in_multirun() and not run_dir_given:
        # torchrun and srun start every process alike: each would time-stamp its own directory.
        problems.append(
            "processes started by torchrun or srun must share one run directory: add "
            "hydra.run.dir=logs/train/runs/NAME to the command line"
        )
    if problems:
        raise UserError(problems[0])


def check_record_path(path: Path) -> None:
    """The run's record (summary.json) is written at the end, after the work: anything but a
    file in its place would fail only then."""
    if path.exists() and not path.is_file():
        raise UserError(f"{path} is not a file, and the run writes its record there: remove it, "
                        "or choose another run directory (hydra.run.dir)")


def refuse_replacing_a_completed_run(path: Path, cfg: DictConfig) -> None:
    """A completed run's record and checkpoints are never replaced by another run's (a run
    directory given again, ``hydra.run.dir=...``): UserError, unless this run resumes one
    (``ckpt_path``; a finished run resumed is tested again) or keeps it (``skip_completed``,
    checked before). A damaged or unfinished record is replaced, as a sweep started again does."""
    if cfg.get("ckpt_path") or not path.is_file():
        return
    try:
        status = read_summary(path).get("status")
    except RecordError:
        return
    if status == "completed":
        raise UserError(f"{path.parent} holds a completed run (its summary.json), which this run "
                        "would replace: choose another run directory, give skip_completed=true "
                        "to keep it, or remove it")


def completed_summary(path: Path, cfg: DictConfig) -> dict[str, Any] | None:
    """The summary of a run of this configuration that completed in this directory before, else
    None (never finished, failed or interrupted: run again). UserError if the directory holds a
    completed run of another configuration: a study's directory never mixes two."""
    if not path.is_file():
        return None
    try:
        summary = read_summary(path)
    except RecordError as err:  # damaged, or not this suite's: the new run's record replaces it
        print(f"note: {err}; running this run again", file=sys.stderr)
        return None
    if summary.get("status") != "completed":
        return None
    current = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True), default=str))
    # The study's own spec (its list of arms and seeds) may grow between two runs of the sweep;
    # skip_completed only says whether to skip it.
    before = comparable(flatten_config(summary.get("config") or {}))
    now = comparable(flatten_config(current))
    differing = sorted(
        key for key in before.keys() | now.keys()
        if before.get(key) != now.get(key)
        and not key.startswith(("study.", "tags", "skip_completed"))
    )
    if differing:
        shown = ", ".join(differing[:5]) + (" ..." if len(differing) > 5 else "")
        raise UserError(
            f"{path.parent} holds a completed run of another configuration (differs in "
            f"{shown}): choose another study.name (or paths.log_dir), or remove that directory"
        )
    return summary
