"""What ``src/train.py`` and ``src/eval.py`` do with a composed configuration.

Building (data, network, optimizer, trainer) is separated from running, so that every mistake in
the configuration is reported before any work starts, as one line and a non-zero exit.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from alexnet.ablation import applied_ablations
from alexnet.callbacks import ImageThroughput, MetricHistory
from alexnet.claims import paper_comparison
from alexnet.data.prepared import DataError
from alexnet.module import CONFIG_KEY, ImageClassifier
from alexnet.study import flatten_config
from alexnet.summary import build_summary, read_summary, write_summary


def register_resolvers() -> None:
    """``${div:a,b}`` in the configs (e.g. the plateau schedule's floor, lr / 10^3) and
    ``${csv:list}`` (a study's arms and seeds as the comma-separated sweep of a multirun)."""
    if not OmegaConf.has_resolver("div"):
        OmegaConf.register_new_resolver("div", lambda a, b: float(a) / float(b))
    if not OmegaConf.has_resolver("csv"):
        OmegaConf.register_new_resolver("csv", lambda items: ",".join(str(i) for i in items))


register_resolvers()


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, without a traceback."""


def _one_line(err: BaseException) -> str:
    if isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return " ".join(str(err).split()) or type(err).__name__


def reports_user_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn a UserError raised by ``task`` into ``error: ...`` on stderr and exit status 2."""

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            if _in_multirun():  # Hydra records this job as failed and goes on with the others
                raise
            sys.exit(2)

    return wrapper


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _is_rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _build_data(data_cfg: DictConfig) -> L.LightningDataModule:
    datamodule = instantiate(data_cfg)
    # Prepared once, by the first process: DDP's other processes start after it has finished.
    if _is_rank_zero():
        datamodule.prepare_data()
    return datamodule


def _build_trainer(cfg: DictConfig, extra_callbacks: list[L.Callback]) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    return instantiate(cfg.trainer, callbacks=callbacks + extra_callbacks, logger=loggers or False)


@contextmanager
def building(what: str) -> Iterator[None]:
    """The build phase: configuration and data errors become a UserError."""
    try:
        yield
    except DataError as err:  # names its path already
        raise UserError(_one_line(err)) from err
    except (InstantiationException, ValueError, TypeError, FileNotFoundError) as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) else err
        if isinstance(cause, DataError):
            raise UserError(_one_line(cause)) from err
        raise UserError(f"{what}: {_one_line(err)}") from err


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (and by default test) the configured model; write and return ``summary.json``."""
    started = time.time()
    out = Path(cfg.paths.output_dir)
    with building("invalid configuration"):
        ablations = applied_ablations(cfg)
        _tag_run(cfg, ablations)
    if cfg.get("skip_completed"):
        done = _completed_summary(out / "summary.json", cfg)
        if done is not None:
            print(f"skipped: {out} has completed already (skip_completed=true)", file=sys.stderr)
            return done
    out.mkdir(parents=True, exist_ok=True)
    with building("invalid configuration"):
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = _build_data(cfg.data)
        net = instantiate(cfg.model, num_classes=datamodule.num_classes)
        scheduler_cfg = cfg.get("scheduler") or None
        module = ImageClassifier(
            net,
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(scheduler_cfg) if scheduler_cfg else None,
            num_classes=datamodule.num_classes,
        )
        module.run_config = OmegaConf.to_container(cfg, resolve=True)
        throughput, history = ImageThroughput(), MetricHistory()
        trainer = _build_trainer(cfg, [throughput, history])
    resume = cfg.get("ckpt_path")
    if resume and not Path(resume).is_file():
        raise UserError(f"checkpoint to resume from not found: {resume}")

    checkpoint = trainer.checkpoint_callback
    best_path, error = None, None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        best_path = getattr(checkpoint, "best_model_path", "") or None
        if cfg.get("test") and not trainer.interrupted:
            trainer.test(module, datamodule=datamodule, ckpt_path=best_path, weights_only=False)
    except Exception as err:  # recorded as a failed run (a study lists it), then raised
        error = err

    summary = build_summary(
        task="train",
        cfg=cfg,
        trainer=trainer,
        history=history,
        num_params=sum(p.numel() for p in net.parameters()),
        num_classes=datamodule.num_classes,
        ablations=ablations,
        wall_time_s=time.time() - started,
        img_per_s=throughput.images_per_second,
        checkpoints={"best": best_path, "last": getattr(checkpoint, "last_model_path", None)},
        output_dir=out,
        error=error,
    )
    if trainer.is_global_zero:
        write_summary(out / "summary.json", summary)
        if (comparison := paper_comparison(summary)) is not None:
            print(comparison)  # the paper's recipe on ILSVRC: its figures beside the paper's
    if error is not None:
        raise error
    return summary


def _completed_summary(path: Path, cfg: DictConfig) -> dict[str, Any] | None:
    """The summary of a run of this configuration that completed in this directory before, else
    None (never finished, failed or interrupted: run again). UserError if the directory holds a
    completed run of another configuration: a study's directory never mixes two."""
    try:
        summary = read_summary(path)
    except (OSError, ValueError):
        return None
    if summary.get("status") != "completed":
        return None
    current = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True), default=str))
    # The study's own spec (its list of arms and seeds) may grow between two runs of the sweep.
    before, now = flatten_config(summary.get("config") or {}), flatten_config(current)
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


def _tag_run(cfg: DictConfig, ablations: list[dict[str, Any]]) -> None:
    """Add the ablations' names (``none`` for the baseline) and the seed to ``tags``, which
    wandb shows: a study's runs are told apart by them (and grouped by the study's name)."""
    names = [a["name"] for a in ablations] or ["none"]
    tags = list(cfg.get("tags") or [])
    with open_dict(cfg):
        cfg.tags = tags + [t for t in [*names, f"seed={cfg.get('seed')}"] if t not in tags]


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by ``src/train.py``; UserError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file: torch raises many kinds
        raise UserError(f"{path} is not a readable checkpoint ({_one_line(err)})") from None
    if not isinstance(checkpoint, dict) or not checkpoint.get(CONFIG_KEY):
        raise UserError(f"{path} is not a checkpoint written by src/train.py (no {CONFIG_KEY})")
    return checkpoint


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on the val split of its dataset (or ``prepared_dir``)."""
    started = time.time()
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise UserError("no checkpoint given: python src/eval.py ckpt_path=PATH/TO/FILE.ckpt")
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    train_cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    with building("cannot evaluate"):
        data_cfg = train_cfg.data
        if cfg.get("prepared_dir"):
            data_cfg.prepared_dir = cfg.prepared_dir
            if "_target_" in data_cfg and data_cfg._target_.endswith("SyntheticDataModule"):
                data_cfg._target_ = "alexnet.data.datamodule.PreparedDataModule"
                for key in ("num_classes", "train_per_class", "val_per_class", "seed"):
                    data_cfg.pop(key, None)
        data_cfg.ten_crop = bool(cfg.get("ten_crop"))
        if cfg.get("batch_size"):
            data_cfg.eval_batch_size = cfg.batch_size
        datamodule = _build_data(data_cfg)
        net = instantiate(train_cfg.model, num_classes=datamodule.num_classes)
        module = ImageClassifier(net, optimizer=torch.optim.SGD, num_classes=datamodule.num_classes)
        try:
            module.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as err:
            raise ValueError(
                f"{cfg.ckpt_path} does not fit the dataset or model it names: {_one_line(err)}"
            ) from None
        module.run_config = OmegaConf.to_container(train_cfg, resolve=True)
        history = MetricHistory()
        trainer = _build_trainer(cfg, [history])
    trainer.test(module, datamodule=datamodule)
    history.history.append({"epoch": 0, **{
        k: float(v) for k, v in trainer.callback_metrics.items() if "/" in k
    }})
    summary = build_summary(
        task="eval",
        cfg=cfg,
        trainer=trainer,
        history=history,
        num_params=sum(p.numel() for p in net.parameters()),
        num_classes=datamodule.num_classes,
        ablations=applied_ablations(train_cfg),
        wall_time_s=time.time() - started,
        img_per_s=None,
        checkpoints={"evaluated": str(Path(cfg.ckpt_path).resolve())},
        output_dir=out,
        train_config=module.run_config,
    )
    if trainer.is_global_zero:
        write_summary(out / "summary.json", summary)
    return summary
