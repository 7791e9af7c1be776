"""``src/train.py``'s job: train (and by default test) the configured model, write summary.json."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from alexnet.callbacks.history import MetricHistory
from alexnet.callbacks.run_guard import RunGuard
from alexnet.callbacks.throughput import ImageThroughput
from alexnet.claims import paper_comparison
from alexnet.exits import Interrupted, UserError, building
from alexnet.jobs.build import build_data, build_trainer, checkpointing, scale_lr
from alexnet.jobs.checks import (
    check_parallel,
    check_record_path,
    completed_summary,
    refuse_replacing_a_completed_run,
)
from alexnet.jobs.config_checks import check_train_config
from alexnet.jobs.resume import check_resume_layout, resume_path
from alexnet.names import BASELINE_ARM
from alexnet.run_record import pack_per_image
from alexnet.training import parallel
from alexnet.training.checkpoints import (
    AtomicCheckpointIO,
    resume_command,
    slurm_job_id,
)
from alexnet.training.module import ImageClassifier
from alexnet.training.signals import StopRequest, requeue_slurm_job, under_slurm
from alexnet.training.speed import precision_record, speed_options
from alexnet.training.summary import build_summary, final_line, write_summary


@dataclass
class TrainingRun:
    """A training run's parts, built from a checked configuration and ready to run."""

    cfg: DictConfig
    out: Path
    ablations: list[dict[str, Any]]
    resume: str | None
    guard: RunGuard
    datamodule: L.LightningDataModule
    net: torch.nn.Module
    module: ImageClassifier
    trainer: L.Trainer
    throughput: ImageThroughput
    history: MetricHistory


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (and by default test) the configured model; write and return ``summary.json``.

    Four phases, in this order: check everything that needs no data (the configuration, the
    devices, the checkpoint to resume from), build (data, network, trainer; then the checks that
    need the trainer: the parallel layout), run (fit, then test on the test split), record
    (summary.json and the final line)."""
    started = time.time()
    out = Path(cfg.paths.output_dir)
    ablations, done = check(cfg, out)
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    resume, resume_layout = resume_path(cfg, out)  # checked before any data are read
    run = build(cfg, out, ablations, resume, resume_layout)
    best_path, error = fit_and_test(run)
    summary = record(run, best_path, error, time.time() - started)
    if error is not None:
        raise error
    return summary


def check(cfg: DictConfig, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The checks that need no data and no network, and the configuration's own changes (tags,
    the scaled learning rate), so that what is built and recorded is final. Returns the applied
    ablations and, with ``skip_completed``, the summary of this run completed before."""
    ablations = check_train_config(cfg)
    with building("invalid configuration"):
        tag_run(cfg, ablations)
    check_record_path(out / "summary.json")
    if cfg.get("skip_completed"):
        done = completed_summary(out / "summary.json", cfg)
        if done is not None:
            print(f"skipped: {out} has completed already (skip_completed=true)", file=sys.stderr)
            return ablations, done
    refuse_replacing_a_completed_run(out / "summary.json", cfg)
    with building("invalid configuration"):
        parallel.check_devices(cfg.trainer)  # before Lightning's less helpful messages
        scale_lr(cfg)
    return ablations, None


def build(cfg: DictConfig, out: Path, ablations: list[dict[str, Any]], resume: str | None,
          resume_layout: dict[str, Any] | None) -> TrainingRun:
    """Data, network, module and trainer; then the checks that need the trainer (the parallel
    layout, and the resumed checkpoint's layout against it)."""
    with building("invalid configuration"):
        # Runs that keep weights only (callbacks=study: many short runs), or no checkpoint at all
        # (trainer.enable_checkpointing=false), keep no periodic last.ckpt either; a signal
        # still writes one to resume from.
        weights_only = OmegaConf.select(cfg, "callbacks.model_checkpoint.save_weights_only")
        guard = RunGuard(StopRequest(), out / "checkpoints", cfg.get("seed"),
                         cfg.get("nonfinite") or "stop",
                         save_last=bool(cfg.get("save_last", True)) and not weights_only
                         and checkpointing(cfg),
                         nonfinite_every=int(cfg.get("nonfinite_every") or 1))
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True, verbose=False)
        # The training order's seed: the run's, so that every process draws the same order.
        shuffle_seed = cfg.seed if cfg.get("seed") is not None else torch.seed() % 2**31
        datamodule = build_data(cfg.data, shuffle_seed=shuffle_seed)
        net = instantiate(cfg.model, num_classes=datamodule.num_classes)
        scheduler_cfg = cfg.get("scheduler") or None
        module = ImageClassifier(
            net,
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(scheduler_cfg) if scheduler_cfg else None,
            num_classes=datamodule.num_classes,
            **speed_options(cfg),  # channels_last, compile (alexnet/training/speed.py)
        )
        module.run_config = OmegaConf.to_container(cfg, resolve=True)
        module.class_names = datamodule.class_names
        throughput, history = ImageThroughput(), MetricHistory()
        trainer = build_trainer(cfg, [throughput, history, guard])
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()  # whole files or none
        check_parallel(cfg, trainer, net)
        module.parallel_layout = parallel.describe(trainer)
    if resume:
        check_resume_layout(resume, resume_layout, module.parallel_layout)
    return TrainingRun(cfg, out, ablations, resume, guard, datamodule, net, module, trainer,
                       throughput, history)


def fit_and_test(run: TrainingRun) -> tuple[str | None, BaseException | None]:
    """Fit, then test the checkpoint val chose on the test split; the best checkpoint's path and
    the error that ended the run (recorded, then raised by :func:`train`). Without a checkpoint
    (trainer.enable_checkpointing=false, fast_dev_run) the path is None and the test measures the
    weights as training left them (ckpt_path=None with the module given)."""
    trainer, guard, module, datamodule = run.trainer, run.guard, run.module, run.datamodule
    best_path, error = None, None
    guard.request.install()  # SIGTERM, SIGINT, SIGUSR1/2: stop at a batch boundary, resumable
    try:
        # weights_only: a checkpoint holds tensors and plain containers only (run_guard.py)
        trainer.fit(module, datamodule=datamodule, ckpt_path=run.resume, weights_only=True)
        best_path = where_now(getattr(trainer.checkpoint_callback, "best_model_path", "")
                              or None, run.resume)
        if run.cfg.get("test") and not trainer.interrupted and guard.request.signum is None:
            trainer.test(module, datamodule=datamodule, ckpt_path=best_path, weights_only=True)
        if guard.request.signum is not None:  # it came after the last batch: resume from last
            raise Interrupted(f"interrupted by {guard.request.name} after training",
                              guard.request.signum,
                              stopped={"signal": guard.request.name,
                                       "epoch": trainer.current_epoch,
                                       "step": trainer.global_step})
    except Exception as err:  # recorded as a failed run (a study lists it), then raised
        error = err
    finally:
        guard.request.restore()
    return best_path, error


def where_now(best: str | None, resumed: str | None) -> str | None:
    """The checkpoint val chose, where it is now. A resumed run's may be one of the run it
    resumed (Lightning restores its path): if that run's folder has moved since, it lies beside
    the checkpoint resumed from. UserError if it is nowhere."""
    if best is None or resumed is None or Path(best).is_file():
        return best
    beside = Path(resumed).parent / Path(best).name
    if beside.is_file():
        return str(beside)
    raise UserError(f"the checkpoint validation chose, {best}, is gone (it is not beside "
                    f"{resumed} either): test it with src/eval.py where it is now")


def record(run: TrainingRun, best_path: str | None, error: BaseException | None,
           wall_time_s: float) -> dict[str, Any]:
    """summary.json and the final line (rank zero); the summary."""
    cfg, trainer, guard = run.cfg, run.trainer, run.guard
    checkpoint = trainer.checkpoint_callback
    extra = resilience_record(cfg, run.resume, guard, checkpoint, error)
    extra["parallel"] = run.module.parallel_layout  # processes, replicas, columns
    extra["precision"] = precision_record(cfg)  # bf16 or float32, and why
    if cfg.get("test") and error is None:  # what test/* was measured on
        extra["evaluation"] = evaluation_record(run.datamodule, trainer, best_path)
    for callback in trainer.callbacks:  # a run ended once it measured what it is for
        if getattr(callback, "ended_early", None):
            extra["ended_early"] = callback.ended_early

    summary = build_summary(
        task="train",
        cfg=cfg,
        trainer=trainer,
        history=run.history,
        num_params=sum(p.numel() for p in run.net.parameters()),
        num_classes=run.datamodule.num_classes,
        ablations=run.ablations,
        wall_time_s=wall_time_s,
        img_per_s=run.throughput.images_per_second,
        checkpoints={"best": best_path,
                     "last": guard.last_checkpoint or getattr(checkpoint, "last_model_path", None)
                     or None},
        output_dir=run.out,
        error=error,
        extra=extra,
    )
    if trainer.is_global_zero:
        write_summary(run.out / "summary.json", summary)
        if (comparison := paper_comparison(summary)) is not None:
            print(comparison)  # the paper's recipe on ILSVRC: its figures beside the paper's
        print(final_line(summary), file=sys.stdout if error is None else sys.stderr, flush=True)
        if error is not None:
            error.reported = True  # the line above named it
        if isinstance(error, Interrupted) and under_slurm():
            print(requeue_slurm_job(), file=sys.stderr)
    return summary


def evaluation_record(datamodule: Any, trainer: L.Trainer,
                      tested: str | None = None) -> dict[str, Any]:
    """summary.json's ``evaluation``: the split ``test/*`` was measured on, where it came from,
    the checkpoint tested (``tested``; None: the last weights, no checkpoint was kept), what the
    val split chose, and whether the test split is independent of those choices (it is not when
    it is the val split itself: a dataset without a test split)."""
    test_split = datamodule.test_split
    origins = datamodule.split_origins()
    monitor = getattr(trainer.checkpoint_callback, "monitor", None)
    selects = []
    if tested and monitor and str(monitor).startswith("val/"):
        selects.append(f"the checkpoint tested (lowest {monitor})")
    for config in trainer.lr_scheduler_configs:
        if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and str(
                config.monitor).startswith("val/"):
            selects.append(f"the learning-rate schedule ({config.monitor})")
    stoppers = [c for c in trainer.callbacks if isinstance(c, L.pytorch.callbacks.EarlyStopping)
                and str(c.monitor).startswith("val/")]
    selects += [f"early stopping ({c.monitor})" for c in stoppers]
    record = {
        "test_split": test_split,
        "test_split_from": origins.get(test_split, test_split),
        "checkpoint_tested": tested,
        "val_split_from": origins.get("val", "val"),
        "val_selects": selects,
        "test_independent": test_split != "val" or not selects,
        # test images that are copies of training (or val) images: stats.json's duplicates
        "test_copies_of_earlier_splits": datamodule.copies_in(test_split),
    }
    # Per test image, right or not (one process only: several would each hold a share of them,
    # padded by the distributed sampler), so that a study's report can pair runs image by image;
    # kept on the device during the test and moved once here (no host sync per batch).
    correct = getattr(trainer.lightning_module, "test_correct", None)
    if correct and trainer.world_size == 1:
        record["top1_correct"] = {stage: pack_per_image(torch.cat(parts).cpu().numpy())
                                  for stage, parts in correct.items()}
    return record


def resilience_record(cfg: DictConfig, resume: str | None, guard: RunGuard, checkpoint: Any,
                       error: BaseException | None) -> dict[str, Any]:
    """summary.json's record of where a run came from and how to continue it."""
    record: dict[str, Any] = {"slurm_job_id": slurm_job_id()}
    if resume:
        record["resumed_from"] = {"checkpoint": resume,
                                  "run_dir": str(Path(resume).parent.parent)}
    if isinstance(error, Interrupted):
        ckpt = guard.stopped_checkpoint or guard.last_checkpoint or resume
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        record["resume"] = {"checkpoint": ckpt,
                            "command": resume_command(ckpt, overrides) if ckpt else None}
    return record


def tag_run(cfg: DictConfig, ablations: list[dict[str, Any]]) -> None:
    """Add the ablations' names (``none`` for the baseline) and the seed to ``tags``, which
    wandb shows: a study's runs are told apart by them (and grouped by the study's name)."""
    names = [a["name"] for a in ablations] or [BASELINE_ARM]
    tags = list(cfg.get("tags") or [])
    with open_dict(cfg):
        cfg.tags = tags + [t for t in [*names, f"seed={cfg.get('seed')}"] if t not in tags]
