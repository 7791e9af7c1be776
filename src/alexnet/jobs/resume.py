"""The checkpoint a run resumes from, found and checked before any data are read (and its parallel
layout, once the trainer exists)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from alexnet.exits import UserError, in_multirun
from alexnet.training import parallel
from alexnet.training.checkpoints import (
    config_differences,
    find_last_checkpoint,
    find_requeued_checkpoint,
    load_checkpoint,
)
from alexnet.training.module import CONFIG_KEY, LAYOUT_KEY


def resume_path(cfg: DictConfig, out: Path) -> tuple[str | None, dict[str, Any] | None]:
    """The checkpoint to resume from, checked before any work starts: ``ckpt_path`` (a path, or
    ``last``: the newest ``last.ckpt`` of this task), or under SLURM after a requeue the
    checkpoint of the job's earlier run. UserError for one that is missing, unreadable, needs
    unpickling, or was written with another model, data or optimizer configuration."""
    requested = cfg.get("ckpt_path")
    if requested == "last" and in_multirun():
        # A sweep's job resumes its own run only (a study's fixed directory), never another's;
        # one that never ran starts afresh.
        own = out / "checkpoints" / "last.ckpt"
        requested = str(own) if own.is_file() else None
    elif requested == "last":
        found = find_last_checkpoint(cfg.paths.log_dir, cfg.task_name, out)
        if found is None:
            raise UserError(f"ckpt_path=last: no {cfg.task_name} run under {cfg.paths.log_dir} "
                            "has a checkpoints/last.ckpt to resume from")
        requested = str(found)
    elif not requested:
        found = find_requeued_checkpoint(cfg.paths.log_dir, cfg.task_name)
        requested = str(found) if found else None
    if not requested:
        return None, None
    saved = load_checkpoint(requested, what="checkpoint to resume from")
    if "optimizer_states" not in saved or "loops" not in saved:
        raise UserError(f"{requested} holds weights only (no optimizer or loop state): it cannot "
                        f"be resumed; evaluate it with python src/eval.py ckpt_path={requested}")
    differing = config_differences(saved[CONFIG_KEY], OmegaConf.to_container(cfg, resolve=True),
                                   ("model", "data", "optimizer", "scheduler", "seed"),
                                   # a checkpoint holds the rate lr_scaling made of optimizer.lr
                                   ("optimizer.lr",) if cfg.get("lr_scaling", "none") != "none"
                                   else ())
    if differing:
        shown = ", ".join(differing[:5]) + (" ..." if len(differing) > 5 else "")
        raise UserError(f"{requested} was written with another configuration (differs in "
                        f"{shown}): resume with the overrides of the run that wrote it")
    # The parallel layout that wrote it (older checkpoints: one process), checked against this
    # run's once its trainer exists (check_resume_layout).
    layout = saved.get(LAYOUT_KEY) or {"layout": "single", "processes": 1}
    return str(Path(requested).resolve()), layout


def check_resume_layout(path: str, saved: dict[str, Any], layout: dict[str, Any]) -> None:
    """Refuse to resume a checkpoint written by another parallel layout (``saved``): its random
    states and the position in its epoch belong to that layout's processes."""
    keys = ("layout", "processes")
    if any(saved.get(k) != layout.get(k) for k in keys):
        raise UserError(
            f"{path} was written by a {saved.get('layout')} run on {saved.get('processes')} "
            f"process(es), this run is {layout['layout']} on {layout['processes']}: resume it with "
            f"{parallel.layout_overrides(saved)}, or evaluate it anywhere with src/eval.py "
            f"ckpt_path={path}"
        )
