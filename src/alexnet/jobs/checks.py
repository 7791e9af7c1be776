"""Checks of a configuration that need no data and no training: each problem one line, before
any work starts (and the checks of the parallel layout, once the trainer that runs it exists)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from alexnet.callbacks.run_guard import NONFINITE_MODES
from alexnet.exits import UserError, in_multirun
from alexnet.run_record import RecordError, comparable, flatten_config, read_summary
from alexnet.training import parallel

# Keys that hold numbers in every configuration that has them (the network's and the data's
# sizes and rates); the optimizer's and the trainer's are checked below with their ranges.
NUMBERS = ("model.dropout", "model.lrn_size", "model.lrn_alpha", "model.lrn_beta", "model.lrn_k",
           "data.image_size", "data.crop_size", "data.batch_size", "data.num_workers",
           "data.val_fraction", "data.test_fraction")


def _whole_number(value: Any, at_least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= at_least


def config_problems(cfg: DictConfig) -> list[str]:
    """Cheap checks of values that would otherwise fail only once training has started (after
    the data are read and the network built): each problem as one line."""
    problems = []

    def number(key: str) -> float | None:
        value = OmegaConf.select(cfg, key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{key} must be a number, got {value!r}")
            return None
        return value

    for key in NUMBERS:  # a word where a number goes fails late, and without the key's name
        number(key)
    if (lr := number("optimizer.lr")) is not None and lr < 0:
        problems.append(f"optimizer.lr must be >= 0, got {lr}")
    if (momentum := number("optimizer.momentum")) is not None and not 0 <= momentum < 1:
        problems.append(f"optimizer.momentum must be in [0, 1), got {momentum}")
    if (decay := number("optimizer.weight_decay")) is not None and decay < 0:
        problems.append(f"optimizer.weight_decay must be >= 0, got {decay}")
    epochs, steps = number("trainer.max_epochs"), number("trainer.max_steps")
    if epochs is not None and epochs < 1 and not (epochs == -1 and steps and steps > 0):
        problems.append(f"trainer.max_epochs must be at least 1 (or -1 with trainer.max_steps), "
                        f"got {epochs}")
    every = cfg.get("nonfinite_every", 1)
    if not _whole_number(every, at_least=1):
        problems.append(f"nonfinite_every must be a whole number of steps >= 1, got {every!r}")
    if cfg.get("nonfinite", "stop") not in NONFINITE_MODES:
        problems.append(f"nonfinite must be one of {list(NONFINITE_MODES)}, got "
                        f"{cfg.get('nonfinite')!r}")
    ckpt = cfg.get("ckpt_path")
    if ckpt is not None and not isinstance(ckpt, str):
        problems.append(f"ckpt_path must be a path or last, got {ckpt!r}")
    return problems


def eval_problems(cfg: DictConfig) -> list[str]:
    """src/eval.py's own options (conf/eval.yaml), each problem as one line: read before the
    checkpoint is, so that a wrong value is not recorded beside a measurement."""
    problems = []
    if not isinstance(cfg.get("ten_crop"), bool):
        problems.append(f"ten_crop must be true or false, got {cfg.get('ten_crop')!r}")
    size = cfg.get("batch_size")
    if size is not None and not _whole_number(size, at_least=1):
        problems.append(f"batch_size must be a whole number >= 1 (or null: the training "
                        f"run's), got {size!r}")
    prepared = cfg.get("prepared_dir")
    if prepared is not None and not isinstance(prepared, str):
        problems.append(f"prepared_dir must be a path (or null), got {prepared!r}")
    return problems


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
    # The study's own spec (its list of arms and seeds) may grow between two runs of the sweep.
    before = comparable(flatten_config(summary.get("config") or {}))
    now = comparable(flatten_config(current))
    differing = sorted(
        key for key in before.keys() | now.keys()
        if before.get(key) != now.get(key) and not key.startswith(("study.", "tags"))
    )
    if differing:
        shown = ", ".join(differing[:5]) + (" ..." if len(differing) > 5 else "")
        raise UserError(
            f"{path.parent} holds a completed run of another configuration (differs in "
            f"{shown}): choose another study.name (or paths.log_dir), or remove that directory"
        )
    return summary
