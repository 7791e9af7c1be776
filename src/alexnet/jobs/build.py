"""Building a run's parts from its configuration: data, trainer, the learning rate's scaling.
Configuration and data errors met while building become one :class:`UserError` line."""

from __future__ import annotations

import os
import sys
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from alexnet.training import parallel


def is_rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def build_data(data_cfg: DictConfig, **kwargs: Any) -> L.LightningDataModule:
    datamodule = instantiate(data_cfg, **kwargs)
    # Prepared once, by the first process: DDP's other processes start after it has finished.
    if is_rank_zero():
        datamodule.prepare_data()
    return datamodule


def build_trainer(cfg: DictConfig, extra_callbacks: list[L.Callback]) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    return instantiate(cfg.trainer, callbacks=callbacks + extra_callbacks, logger=loggers or False)


def scale_lr(cfg: DictConfig) -> None:
    """``lr_scaling=linear``: optimizer.lr x data.batch_size / lr_reference_batch, written into
    the configuration (so summary.json and the checkpoints record the rate that trained)."""
    scaling = cfg.get("lr_scaling") or "none"
    reference = int(cfg.get("lr_reference_batch") or 128)
    lr = parallel.scaled_lr(float(cfg.optimizer.lr), int(cfg.data.batch_size), scaling, reference)
    if lr != cfg.optimizer.lr:
        if is_rank_zero():
            print(f"lr_scaling=linear: optimizer.lr {cfg.optimizer.lr} x {cfg.data.batch_size} / "
                  f"{reference} = {lr:g}", file=sys.stderr)
        with open_dict(cfg):
            cfg.optimizer.lr = lr
