"""What ``src/train.py`` and ``src/eval.py`` do with a composed configuration.

Building (data, network, optimizer, trainer) is separated from running, so that every mistake in
the configuration is reported before any work starts, as one line and a non-zero exit.
"""

from __future__ import annotations

import errno
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

from alexnet import exits, parallel
from alexnet.ablation import applied_ablations
from alexnet.callbacks import ImageThroughput, MetricHistory
from alexnet.checkpoints import (
    AtomicCheckpointIO,
    CheckpointRefused,
    config_differences,
    find_last_checkpoint,
    find_requeued_checkpoint,
    read_checkpoint,
    resume_command,
    slurm_job_id,
)
from alexnet.claims import paper_comparison
from alexnet.data import registry
from alexnet.data.prepared import DataError
from alexnet.module import CONFIG_KEY, LAYOUT_KEY, ImageClassifier
from alexnet.names import BASELINE_ARM
from alexnet.resilience import (
    Interrupted,
    RunGuard,
    RunStopped,
    StopRequest,
    config_problems,
    final_line,
    requeue_slurm_job,
    under_slurm,
)
from alexnet.speed import precision_record, speed_options
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
    """Turn a UserError raised by ``task`` into ``error: ...`` on stderr and exit status 2; an
    interrupted or diverged run into its exit status (its line printed by the run), a full disk
    or unwritable file into one line and exit status 1 (README, "Exit statuses")."""

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            if _in_multirun():  # Hydra records this job as failed and goes on with the others
                raise
            sys.exit(exits.USER_ERROR)
        except RunStopped as err:  # its final line is printed already (summary.json written)
            if isinstance(err, Interrupted) or not _in_multirun():
                sys.exit(err.exit_code)  # an interrupted sweep stops whole: it is preempted
            raise
        except KeyboardInterrupt:  # Ctrl-C before training (or twice): nothing to resume
            print("interrupted: nothing was saved to resume from; run the command again",
                  file=sys.stderr)
            sys.exit(exits.CTRL_C)
        except OSError as err:
            if err.errno not in WRITE_ERRNOS:
                raise
            if not getattr(err, "reported", False):  # else the run's final line said it
                print(f"error: cannot write {err.filename or ''}: {err.strerror}",
                      file=sys.stderr)
            sys.exit(exits.FAILED)

    return wrapper


WRITE_ERRNOS = (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EPERM)


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _is_rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _build_data(data_cfg: DictConfig, **kwargs: Any) -> L.LightningDataModule:
    datamodule = instantiate(data_cfg, **kwargs)
    # Prepared once, by the first process: DDP's other processes start after it has finished.
    if _is_rank_zero():
        datamodule.prepare_data()
    return datamodule


def _build_trainer(cfg: DictConfig, extra_callbacks: list[L.Callback]) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    parallel.check_devices(cfg.trainer)  # before Lightning's less helpful messages
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
    if problems := config_problems(cfg):  # before any data are read or the net is built
        raise UserError(f"invalid configuration: {problems[0]}")
    out.mkdir(parents=True, exist_ok=True)
    resume, resume_layout = _resume_path(cfg, out)  # checked before any data are read
    with building("invalid configuration"):
        # Runs that keep weights only (callbacks=study: many short runs) keep no periodic
        # last.ckpt either; a signal still writes one to resume from.
        weights_only = OmegaConf.select(cfg, "callbacks.model_checkpoint.save_weights_only")
        guard = RunGuard(StopRequest(), out / "checkpoints", cfg.get("seed"),
                         cfg.get("nonfinite") or "stop",
                         save_last=bool(cfg.get("save_last", True)) and not weights_only,
                         nonfinite_every=int(cfg.get("nonfinite_every") or 1))
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True, verbose=False)
        # The training order's seed: the run's, so that every process draws the same order.
        shuffle_seed = cfg.seed if cfg.get("seed") is not None else torch.seed() % 2**31
        datamodule = _build_data(cfg.data, shuffle_seed=shuffle_seed)
        net = instantiate(cfg.model, num_classes=datamodule.num_classes)
        _scale_lr(cfg)
        scheduler_cfg = cfg.get("scheduler") or None
        module = ImageClassifier(
            net,
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(scheduler_cfg) if scheduler_cfg else None,
            num_classes=datamodule.num_classes,
            **speed_options(cfg),  # channels_last, compile (alexnet/speed.py)
        )
        module.run_config = OmegaConf.to_container(cfg, resolve=True)
        throughput, history = ImageThroughput(), MetricHistory()
        trainer = _build_trainer(cfg, [throughput, history, guard])
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()  # whole files or none
        _check_parallel(cfg, trainer, net)
        module.parallel_layout = parallel.describe(trainer)
    if resume:
        _check_resume_layout(resume, resume_layout, module.parallel_layout)

    checkpoint = trainer.checkpoint_callback
    best_path, error = None, None
    guard.request.install()  # SIGTERM, SIGINT, SIGUSR1: stop at a batch boundary, resumable
    try:
        # weights_only: a checkpoint holds tensors and plain containers only (resilience.py)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        best_path = getattr(checkpoint, "best_model_path", "") or None
        if cfg.get("test") and not trainer.interrupted and guard.request.signum is None:
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
    extra = _resilience_record(cfg, resume, guard, checkpoint, error)
    extra["parallel"] = module.parallel_layout  # processes, replicas, columns
    extra["precision"] = precision_record(cfg)  # bf16 or float32, and why
    if cfg.get("test") and error is None:  # what test/* was measured on
        extra["evaluation"] = evaluation_record(datamodule, trainer)
    for callback in trainer.callbacks:  # a run ended once it measured what it is for
        if getattr(callback, "ended_early", None):
            extra["ended_early"] = callback.ended_early

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
        checkpoints={"best": best_path,
                     "last": guard.last_checkpoint or getattr(checkpoint, "last_model_path", None)
                     or None},
        output_dir=out,
        error=error,
        extra=extra,
    )
    if trainer.is_global_zero:
        write_summary(out / "summary.json", summary)
        if (comparison := paper_comparison(summary)) is not None:
            print(comparison)  # the paper's recipe on ILSVRC: its figures beside the paper's
        print(final_line(summary), file=sys.stdout if error is None else sys.stderr, flush=True)
        if error is not None:
            error.reported = True  # the line above named it
        if isinstance(error, Interrupted) and under_slurm():
            print(requeue_slurm_job(), file=sys.stderr)
    if error is not None:
        raise error
    return summary


def evaluation_record(datamodule: Any, trainer: L.Trainer) -> dict[str, Any]:
    """summary.json's ``evaluation``: the split ``test/*`` was measured on, where it came from,
    what the val split chose, and whether the test split is independent of those choices (it is
    not when it is the val split itself: a dataset without a test split)."""
    test_split = datamodule.test_split
    origins = datamodule.split_origins()
    monitor = getattr(trainer.checkpoint_callback, "monitor", None)
    selects = []
    if monitor and str(monitor).startswith("val/"):
        selects.append(f"the checkpoint tested (lowest {monitor})")
    for config in trainer.lr_scheduler_configs:
        if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and str(
                config.monitor).startswith("val/"):
            selects.append(f"the learning-rate schedule ({config.monitor})")
    stoppers = [c for c in trainer.callbacks if isinstance(c, L.pytorch.callbacks.EarlyStopping)
                and str(c.monitor).startswith("val/")]
    selects += [f"early stopping ({c.monitor})" for c in stoppers]
    return {
        "test_split": test_split,
        "test_split_from": origins.get(test_split, test_split),
        "val_split_from": origins.get("val", "val"),
        "val_selects": selects,
        "test_independent": test_split != "val" or not selects,
    }


def _resume_path(cfg: DictConfig, out: Path) -> tuple[str | None, dict[str, Any] | None]:
    """The checkpoint to resume from, checked before any work starts: ``ckpt_path`` (a path, or
    ``last``: the newest ``last.ckpt`` of this task), or under SLURM after a requeue the
    checkpoint of the job's earlier run. UserError for one that is missing, unreadable, needs
    unpickling, or was written with another model, data or optimizer configuration."""
    requested = cfg.get("ckpt_path")
    if requested == "last" and _in_multirun():
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
    # run's once its trainer exists (_check_resume_layout).
    layout = saved.get(LAYOUT_KEY) or {"layout": "single", "processes": 1}
    return str(Path(requested).resolve()), layout


def _resilience_record(cfg: DictConfig, resume: str | None, guard: RunGuard, checkpoint: Any,
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


def _scale_lr(cfg: DictConfig) -> None:
    """``lr_scaling=linear``: optimizer.lr x data.batch_size / lr_reference_batch, written into
    the configuration (so summary.json and the checkpoints record the rate that trained)."""
    scaling = cfg.get("lr_scaling") or "none"
    reference = int(cfg.get("lr_reference_batch") or 128)
    lr = parallel.scaled_lr(float(cfg.optimizer.lr), int(cfg.data.batch_size), scaling, reference)
    if lr != cfg.optimizer.lr:
        if _is_rank_zero():
            print(f"lr_scaling=linear: optimizer.lr {cfg.optimizer.lr} x {cfg.data.batch_size} / "
                  f"{reference} = {lr:g}", file=sys.stderr)
        with open_dict(cfg):
            cfg.optimizer.lr = lr


def _check_parallel(cfg: DictConfig, trainer: L.Trainer, net: torch.nn.Module) -> None:
    """The parallel layout's mistakes, before any work starts (UserError naming the fix)."""
    problems = parallel.check_layout(cfg, trainer, net)
    environment = getattr(trainer.strategy, "cluster_environment", None)
    external = environment is not None and environment.creates_processes_externally
    if trainer.world_size > 1 and not external and _in_multirun():
        # Lightning would start the other processes by re-running this command line, which
        # would start the whole sweep again in each of them.
        problems.append(
            "a local Hydra multirun cannot start several processes per run: sweep with "
            "hydra/launcher=slurm, or run each job alone (or under torchrun)"
        )
    run_dir_given = not HydraConfig.initialized() or any(
        o.startswith("hydra.run.dir=") for o in HydraConfig.get().overrides.hydra
    )
    if trainer.world_size > 1 and external and not _in_multirun() and not run_dir_given:
        # torchrun and srun start every process alike: each would time-stamp its own directory.
        problems.append(
            "processes started by torchrun or srun must share one run directory: add "
            "hydra.run.dir=logs/train/runs/NAME to the command line"
        )
    if problems:
        raise UserError(problems[0])


def _check_resume_layout(path: str, saved: dict[str, Any], layout: dict[str, Any]) -> None:
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
    names = [a["name"] for a in ablations] or [BASELINE_ARM]
    tags = list(cfg.get("tags") or [])
    with open_dict(cfg):
        cfg.tags = tags + [t for t in [*names, f"seed={cfg.get('seed')}"] if t not in tags]


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """Load a checkpoint written by ``src/train.py``, with ``weights_only=True`` (a file from
    elsewhere cannot run code); UserError for anything else, one line saying why."""
    path = Path(path)
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointRefused as err:
        message = str(err)
        if message.startswith("checkpoint not found"):
            message = message.replace("checkpoint", what, 1)
        raise UserError(message) from None
    if not isinstance(checkpoint, dict) or not checkpoint.get(CONFIG_KEY):
        raise UserError(f"{path} is not a checkpoint written by src/train.py (no {CONFIG_KEY})")
    return checkpoint


def dataset_config(train_cfg: DictConfig, prepared_dir: str | None = None) -> DictConfig:
    """The data config of a checkpoint's training configuration, reading ``prepared_dir``
    instead of its own dataset when given (the built-in data's generator settings dropped)."""
    data_cfg = train_cfg.data
    if prepared_dir:
        data_cfg.prepared_dir = prepared_dir
        if registry.is_built_in(data_cfg):
            data_cfg._target_ = "alexnet.data.datamodule.PreparedDataModule"
            for key in ("num_classes", "train_per_class", "val_per_class", "test_per_class",
                        "seed"):
                data_cfg.pop(key, None)
    return data_cfg


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on the test split of its dataset (or ``prepared_dir``): ``test``,
    or ``val`` where the dataset has none."""
    started = time.time()
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise UserError("no checkpoint given: python src/eval.py ckpt_path=PATH/TO/FILE.ckpt")
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    train_cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    with building("cannot evaluate"):
        data_cfg = dataset_config(train_cfg, cfg.get("prepared_dir"))
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
        extra={"evaluation": {"test_split": datamodule.test_split,
                              "test_split_from": datamodule.split_origins().get(
                                  datamodule.test_split, datamodule.test_split)}},
    )
    if trainer.is_global_zero:
        write_summary(out / "summary.json", summary)
        print(final_line(summary), flush=True)
    return summary
