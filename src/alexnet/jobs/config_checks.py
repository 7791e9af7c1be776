"""A configuration's values checked before any work starts, each problem one line: those of
src/train.py, src/eval.py and src/prepare.py. Lightning is not imported here (torch only where a
value is resolved through ``${auto_precision:...}``): the entry points run these checks before
they import the jobs, so that a mistake is answered in a moment, not after Lightning's import."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from alexnet.exits import UserError, building, check_values_resolve
from alexnet.names import NONFINITE_MODES
from alexnet.provenance import REPO_ROOT
from alexnet.training.ablation import applied_ablations, check_ablation_values

# Keys that hold numbers in every configuration that has them (the network's and the data's
# sizes and rates); the optimizer's and the trainer's are checked below with their ranges.
NUMBERS = ("model.dropout", "model.fc_width", "model.lrn_size", "model.lrn_alpha",
           "model.lrn_beta", "model.lrn_k", "data.image_size", "data.crop_size",
           "data.batch_size", "data.eval_batch_size", "data.num_workers", "data.val_fraction",
           "data.test_fraction", "data.scale")
# Of those and the trainer's, the counts: 1.5 epochs or a batch of 4.5 would fail deep inside
# Lightning, the sampler or numpy, with a traceback.
WHOLE_NUMBERS = ("model.lrn_size", "model.fc_width", "data.image_size", "data.crop_size",
                 "data.batch_size", "data.eval_batch_size", "data.num_workers",
                 "trainer.max_epochs", "trainer.max_steps")
# Switches read as true or false: a word ("no") would be read as true.
SWITCHES = ("test", "save_last", "skip_completed")
SEED_RANGE = (0, 2**32 - 1)  # numpy's, which Lightning seeds


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
        if not math.isfinite(value):  # nan passes every range check, and the run "diverges"
            problems.append(f"{key} must be a finite number, got {value}")
            return None
        return value

    for key in NUMBERS:  # a word where a number goes fails late, and without the key's name
        number(key)
    for key in WHOLE_NUMBERS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, float) and math.isfinite(value):
            problems.append(f"{key} must be a whole number, got {value}")
    if (size := number("data.eval_batch_size")) is not None and size < 1:
        problems.append(f"data.eval_batch_size must be at least 1 (or null: data.batch_size), "
                        f"got {size}")
    for key in SWITCHES:
        if key in cfg and not isinstance(cfg.get(key), bool):
            problems.append(f"{key} must be true or false, got {cfg.get(key)!r}")
    seed = cfg.get("seed")
    if seed is not None and not (_whole_number(seed, at_least=SEED_RANGE[0])
                                 and seed <= SEED_RANGE[1]):
        problems.append(f"seed must be a whole number from {SEED_RANGE[0]} to {SEED_RANGE[1]} "
                        f"(or null: a random one), got {seed!r}")
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


def check_train_config(cfg: DictConfig) -> list[dict[str, Any]]:
    """src/train.py's checks that need no data, no network and no Lightning: every value
    resolves, the ablations do not contradict each other, :func:`config_problems`. UserError for
    the first problem; returns the applied ablations."""
    check_values_resolve(cfg)
    with building("invalid configuration"):
        ablations = applied_ablations(cfg)
        check_ablation_values(cfg, ablations, REPO_ROOT / "conf")
    if problems := config_problems(cfg):
        raise UserError(f"invalid configuration: {problems[0]}")
    return ablations


def check_eval_config(cfg: DictConfig) -> None:
    """src/eval.py's checks before the checkpoint is read: a checkpoint is given, every value
    resolves, :func:`eval_problems`. UserError for the first problem."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise UserError("no checkpoint given: python src/eval.py ckpt_path=PATH/TO/FILE.ckpt")
    check_values_resolve(cfg)
    if problems := eval_problems(cfg):
        raise UserError(f"invalid configuration: {problems[0]}")


def eval_problems(cfg: DictConfig) -> list[str]:
    """src/eval.py's own options (conf/eval.yaml), each problem as one line: read before the
    checkpoint is, so that a wrong value is not recorded beside a measurement."""
    problems = []
    ckpt = cfg.get("ckpt_path")
    if not isinstance(ckpt, str):
        problems.append(f"ckpt_path must be a checkpoint's path, got {ckpt!r}")
    elif ckpt == "last":
        problems.append("ckpt_path=last resumes training (src/train.py); src/eval.py needs the "
                        "checkpoint's path: logs/train/runs/<run>/checkpoints/last.ckpt")
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


def prepare_problems(cfg: DictConfig) -> list[str]:
    """src/prepare.py's options (conf/prepare.yaml) and the data settings it reads, each problem
    as one line, before any file is read or written."""
    problems = config_problems(cfg)  # the data's numbers; the keys of training are absent here
    for key in ("data.val_fraction", "data.test_fraction"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, int | float) and not isinstance(value, bool) and not 0 <= value < 1:
            problems.append(f"{key} must be in [0, 1), got {value}")
    workers = cfg.get("workers")
    if workers is not None and not _whole_number(workers, at_least=1):
        problems.append(f"workers must be a whole number >= 1 (or null: one per CPU core), got "
                        f"{workers!r}")
    for key in ("force", "progress"):
        if not isinstance(cfg.get(key), bool):
            problems.append(f"{key} must be true or false, got {cfg.get(key)!r}")
    expected = OmegaConf.select(cfg, "data.expected_classes")
    if expected is not None and not _whole_number(expected, at_least=2):
        problems.append(f"data.expected_classes must be a whole number >= 2 (or null: any), got "
                        f"{expected!r}")
    required = OmegaConf.select(cfg, "data.test_folder_required")
    if required is not None and not isinstance(required, bool):
        problems.append(f"data.test_folder_required must be true or false, got {required!r}")
    return problems


