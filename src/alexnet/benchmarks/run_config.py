"""The benchmarked run's configuration: ``src/benchmark.py``'s overrides composed as
``src/train.py`` would compose them, and checked with its checks. Lightning is not imported here,
so that a mistaken value is answered before the seconds of its import."""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from alexnet.jobs.config_checks import check_train_config
from alexnet.provenance import REPO_ROOT

# --tiny: the smallest crop on small built-in images, fc6 and fc7 of 256 neurons (not 4096).
TINY = ["data.image_size=80", "data.crop_size=67", "model.fc_width=256",
        "data.train_per_class=2", "data.val_per_class=1", "data.batch_size=4",
        "data.num_workers=0"]
QUIET = ["~callbacks.progress_bar", "trainer.enable_progress_bar=false"]


def run_overrides(args: argparse.Namespace, work: Path) -> list[str]:
    """src/train.py's overrides for the benchmarked run, its files under ``work``."""
    base = [f"paths.log_dir={work / 'logs'}"]
    if args.tiny:
        base += [f"paths.data_dir={work / 'data'}", *TINY]
    return base + QUIET + args.overrides


def compose_cfg(overrides: list[str], work: Path, tag: str) -> DictConfig:
    """src/train.py's configuration with ``overrides``, its run's files under ``work``."""
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(work / "runs" / tag)
    return cfg


def checked_run_config(args: argparse.Namespace, work: Path) -> DictConfig:
    """The benchmarked run's configuration after src/train.py's checks of its values
    (UserError for the first problem); nothing is written."""
    cfg = compose_cfg(run_overrides(args, work), work, "probe")
    check_train_config(cfg)
    return cfg
