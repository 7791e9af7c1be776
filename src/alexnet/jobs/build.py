"""Building a run's parts from its configuration: data, trainer, the learning rate's scaling.
Configuration and data errors met while building become one :class:`UserError` line."""

from __future__ import annotations

import os
import sys
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict

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
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    callbacks = configured_callbacks(cfg, logged=bool(loggers))
    return instantiate(cfg.trainer, callbacks=callbacks + extra_callbacks, logger=loggers or False)


def configured_callbacks(cfg: DictConfig, logged: bool = True) -> list[L.Callback]:
    """The callbacks of ``cfg.callbacks``, less those the trainer's own switches turn off.

    Lightning stops on a progress bar in the callbacks when ``trainer.enable_progress_bar`` is
    false, on a ModelCheckpoint when ``trainer.enable_checkpointing`` is false, and on a
    LearningRateMonitor when there is no logger (``logger=none``); the callbacks configs always
    hold all three, so the switch, the natural command-line override, wins and the callback is
    dropped. ``callbacks.NAME=null`` drops one too."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    trainer = cfg.get("trainer") or {}
    if trainer.get("enable_progress_bar", True) is False:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not checkpointing(cfg):
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    if not logged:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks


def checkpointing(cfg: DictConfig) -> bool:
    """Whether the run keeps checkpoints (``trainer.enable_checkpointing``, true when absent)."""
    return OmegaConf.select(cfg, "trainer.enable_checkpointing", default=True) is not False


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
