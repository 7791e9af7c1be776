"""Long runs that survive: exact resume, preemption by signals, non-finite losses, and the one
line every run ends with (checkpoint files themselves: :mod:`alexnet.checkpoints`).

What makes a resumed run equal to an uninterrupted one:

- the data of a step are a function of (seed, epoch, position) alone: the training order is drawn
  from (seed, epoch) (:mod:`alexnet.data.sampling`), each image's crop and reflection from
  (seed, epoch, image) (:mod:`alexnet.data.resume`), whatever the workers did before; on resume
  the batches of the interrupted epoch that were already trained on are skipped;
- the main process's random numbers (dropout, the PCA colour noise) are reseeded from
  (seed, step) before every step and every epoch, so that whatever else consumed random numbers
  in between (a loader created anew by the resumed process, a validation) changes nothing;
- the checkpoint holds the model, optimizer, scheduler, loop progress, metric history and the
  random states, as plain tensors and containers: it loads with ``weights_only=True``.

Exit statuses: the one table in :mod:`alexnet.exits`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.experimental.callback import Callback
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf
from torchmetrics import Metric

from alexnet import exits
from alexnet.checkpoints import LAST, slurm_job_id
from alexnet.data.sampling import replica_of
from alexnet.names import TEST10_TOP1, TEST_TOP1, VAL_TOP1

# SIGUSR1: the warning signal an sbatch script asks SLURM for (--signal=USR1@90); SIGUSR2: the one
# submitit asks for under hydra/launcher=slurm (its signal_delay_s), handled alike.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
NONFINITE_MODES = ("stop",)
# Test hook, documented in README ("Long runs"): ALEXNET_SELF_SIGNAL=TERM@5 makes the run send
# itself SIGTERM after its 5th optimizer step, so that tests interrupt a real process at an exact
# position. Unset in normal use.
SELF_SIGNAL_ENV = "ALEXNET_SELF_SIGNAL"


class RunStopped(Exception):
    """A run that ended early on purpose; ``status`` goes to summary.json, ``exit_code`` to the
    shell, ``fields`` are added to the summary."""

    status = "failed"
    exit_code = exits.FAILED

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.fields = fields


class Interrupted(RunStopped):
    status = "interrupted"

    def __init__(self, message: str, signum: int, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.exit_code = exits.interrupted(signum)


class Diverged(RunStopped):
    status = "diverged"
    exit_code = exits.DIVERGED


# -- signals ----------------------------------------------------------------------------------
class StopRequest:
    """SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 ask the run to stop at the next batch boundary, where a
    checkpoint is consistent. A second SIGINT (Ctrl-C twice) stops at once, without one."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            print(f"received {signal.Signals(signum).name}: saving a checkpoint at the next batch "
                  "and stopping (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def install(self) -> None:
        """(Re)install the handlers; only the main thread may. Called again after Lightning has
        installed its own SIGTERM handler, which would end the run without a checkpoint."""
        if not _in_main_thread():
            return
        for signum in SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def restore(self) -> None:
        if not _in_main_thread():
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def under_slurm() -> bool:
    """A batch job of SLURM (not an interactive allocation), as Lightning detects it."""
    return SLURMEnvironment.detect() and SLURMEnvironment.job_name() not in (None, "bash",
                                                                             "interactive")


def requeue_slurm_job() -> str:
    """``scontrol requeue`` this job (an array task: its own id); the message to print."""
    job = slurm_job_id() or ""
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return f"could not requeue SLURM job {job}: {err}"
    if done.returncode != 0:
        return f"could not requeue SLURM job {job}: {done.stderr.strip()}"
    return f"requeued SLURM job {job}: it resumes from this checkpoint"


# -- random states ----------------------------------------------------------------------------
def mix_seed(seed: int, step: int) -> int:
    """One 63-bit seed per (seed, step): the random numbers of step ``step``."""
    return (int(seed) * 6_364_136_223_846_793_005 + int(step) * 1_442_695_040_888_963_407
            + 0x9E3779B97F4A7C15) % (2**63 - 1)


def rng_states() -> dict[str, Any]:
    """Python's, numpy's and torch's (CPU and every CUDA device) random states, as tensors and
    plain containers (a checkpoint must load with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        cuda = states["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


# -- the callback -----------------------------------------------------------------------------
class RunGuard(L.Callback):
    """Keeps a run resumable and honest: random states and reseeding, stopping on signals at a
    batch boundary with a checkpoint, and stopping on a non-finite loss before it reaches the
    weights.

    ``checkpoint_dir``: where ``last.ckpt`` goes, which ``ckpt_path=last`` finds: the checkpoint of
    an interrupted run, and with ``save_last`` the whole state after each epoch's first batch
    (after the epoch's end had run: a checkpoint written inside an epoch's end resumes with that
    epoch's scheduler step missing) and at the end of training. ``nonfinite``: ``stop``.

    ``nonfinite_every``: how often the loss's finiteness (and, with several processes, the stop
    flags) reach the host. 1: every step, before the backward, so that a non-finite loss never
    reaches the weights. N > 1: the flag is kept on the device and read every N steps (and
    before ``last.ckpt`` is written, which thus never holds a non-finite step's weights): one
    device-to-host sync every N steps instead of every step, and a divergence is found up to
    N - 1 steps late, its weights not kept."""

    def __init__(self, request: StopRequest, checkpoint_dir: str | os.PathLike,
                 seed: int | None, nonfinite: str = "stop", save_last: bool = True,
                 nonfinite_every: int = 1) -> None:
        if nonfinite not in NONFINITE_MODES:
            raise ValueError(f"nonfinite must be one of {list(NONFINITE_MODES)}, got {nonfinite!r}")
        if int(nonfinite_every) < 1:
            raise ValueError(f"nonfinite_every must be at least 1, got {nonfinite_every}")
        self.nonfinite_every = int(nonfinite_every)
        self._bad: torch.Tensor | None = None  # non-finite losses not yet read, on the device
        self._signal_agreed = False
        self.request = request
        self.checkpoint_dir = Path(checkpoint_dir)
        self.base_seed = int(seed) if seed is not None else int.from_bytes(os.urandom(7), "big")
        self.nonfinite = nonfinite
        self.save_last = save_last
        self.last_checkpoint: str | None = None
        self.stopped_checkpoint: str | None = None
        self._self_signal = _parse_self_signal(os.environ.get(SELF_SIGNAL_ENV))

    # What a checkpoint keeps of it: the base seed (which may have been drawn), the random states
    # and, saved in an epoch's middle, the sums behind that epoch's training metrics so far.
    _trainer: L.Trainer | None = None
    _epoch_sums: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        state = {"base_seed": self.base_seed, "rng": rng_states()}
        if self._trainer is not None and self._trainer.training:
            state["epoch_sums"] = _epoch_sums(self._trainer)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_seed = int(state_dict["base_seed"])
        set_rng_states(state_dict["rng"])
        self._epoch_sums = state_dict.get("epoch_sums")

    def _reseed(self, trainer: L.Trainer) -> None:
        # Each data-parallel replica its own stream; the two column processes of one replica
        # (trainer=model_parallel) the same, since they must crop and flip alike.
        replica = replica_of(trainer)[1]
        torch.manual_seed(mix_seed(self.base_seed + 1_000_003 * replica, trainer.global_step))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Over Lightning's handlers, installed since: its SIGTERM handler ends the run without a
        # checkpoint, and under SLURM its SIGUSR1 handler saves one in the middle of a step. Here
        # every signal stops at a batch boundary; under SLURM the job then requeues itself
        # (requeue_slurm_job) and resumes from that checkpoint (find_requeued_checkpoint).
        self.request.install()
        self._reseed(trainer)
        if trainer.fit_loop.restarting:  # resumed in an epoch's middle: log what its start logged
            for callback in trainer.callbacks:
                if isinstance(callback, LearningRateMonitor):
                    callback.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reseed(trainer)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           loss: torch.Tensor) -> None:
        # Before backward and the optimizer step: the weights are still the last good ones.
        flag = (~torch.isfinite(loss.detach())).any()
        self._bad = flag if self._bad is None else self._bad | flag
        if (trainer.global_step + 1) % self.nonfinite_every == 0:
            self._check(trainer, loss)

    def _check(self, trainer: L.Trainer, loss: torch.Tensor | None = None) -> None:
        """Read the non-finite flag (one sync) and the other processes' stop flags."""
        if self._bad is None:
            return
        bad, self._bad = self._bad.float(), None
        if trainer.world_size > 1:
            # One collective a step for both flags: a non-finite loss and a signal seen by any
            # process stop every process together (the others would hang in the next one).
            seen = torch.tensor(float(self.request.signum or 0), device=bad.device)
            bad, seen = trainer.strategy.reduce(torch.stack([bad, seen]), reduce_op="max")
            if int(seen) and self.request.signum is None:
                self.request.signum = int(seen)
            self._signal_agreed = bool(int(seen))  # every process stops after the same step
        if bool(bad):
            value = float(loss.detach()) if loss is not None else float("nan")
            late = "" if self.nonfinite_every == 1 else (
                f" (the loss is read every {self.nonfinite_every} steps: it became non-finite "
                f"within the last {self.nonfinite_every})")
            raise Diverged(
                f"diverged: the training loss is {value:g} at epoch "
                f"{trainer.current_epoch} step {trainer.global_step}{late}",
                diverged={"epoch": trainer.current_epoch, "step": trainer.global_step,
                          "loss": str(value), "checked_every": self.nonfinite_every},
            )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self._epoch_sums is not None:  # the first step after resuming: add the epoch's start
            _add_epoch_sums(trainer, self._epoch_sums)
            self._epoch_sums = None
        self._reseed(trainer)
        if self._self_signal and trainer.global_step == self._self_signal[1]:
            os.kill(os.getpid(), self._self_signal[0])
        last_batch = trainer.fit_loop.epoch_loop._num_ready_batches_reached()
        if self.request.signum is None or (trainer.world_size > 1 and not self._signal_agreed):
            # (with several processes a signal is acted on once every process knows of it)
            if self.save_last and batch_idx == 0 and trainer.current_epoch > 0 and not last_batch:
                self._save_last(trainer)
            return
        # The epoch's last batch: its validation and epoch end run first (a checkpoint saved
        # here would resume into a half-finished epoch end); the run stops after the next batch.
        if last_batch:
            return
        self.stop(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.save_last:
            self._save_last(trainer)

    def _save_last(self, trainer: L.Trainer) -> str:
        self._check(trainer)  # never a checkpoint of weights a non-finite step has reached
        path = self.checkpoint_dir / LAST
        trainer.save_checkpoint(path, weights_only=False)  # full state (weights_only=True: none)
        self.last_checkpoint = str(path.resolve())
        return self.last_checkpoint

    def stop(self, trainer: L.Trainer) -> None:
        self.stopped_checkpoint = self._save_last(trainer)
        raise Interrupted(
            f"interrupted by {self.request.name} at epoch {trainer.current_epoch} step "
            f"{trainer.global_step}", self.request.signum,
            stopped={"signal": self.request.name, "epoch": trainer.current_epoch,
                     "step": trainer.global_step},
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning leaves the epoch's learning-rate schedulers unstepped at the end of an epoch
        # that was resumed in its middle (it treats the whole epoch as "restarting"), which would
        # shift the schedule by one epoch. The epoch was trained and validated here: step them.
        fit_loop = trainer.fit_loop
        if fit_loop.restarting and fit_loop.epoch_loop._num_ready_batches_reached():
            fit_loop._restarting = False


def _epoch_sums(trainer: L.Trainer) -> dict[str, Any]:
    """The running sums of the epoch's logged training metrics: Lightning's accumulators of
    ``self.log(..., on_epoch=True)`` values, and the states of torchmetrics metrics logged
    (module attributes). Lightning does not checkpoint them, so a resumed epoch would otherwise
    average only the batches after the resume."""
    logged, metrics = {}, {}
    results = trainer.fit_loop.epoch_loop._results
    for key, result in results.items():
        if result.is_tensor and result.meta.on_epoch:
            logged[key] = {"value": result.value.detach().cpu().clone()}
            if result.meta.is_mean_reduction:
                logged[key]["count"] = result.cumulated_batch_size.detach().cpu().clone()
    module = trainer.lightning_module
    for name, metric in module.named_modules():
        if isinstance(metric, Metric) and metric.update_count > 0 and not name.startswith(
                ("metrics.val", "metrics.test", "losses")):
            metrics[name] = {k: v.detach().cpu().clone() for k, v in metric.metric_state.items()
                             if isinstance(v, torch.Tensor)}
            metrics[name]["_update_count"] = int(metric.update_count)
    return {"logged": logged, "metrics": metrics}


def _add_epoch_sums(trainer: L.Trainer, sums: dict[str, Any]) -> None:
    """Add the sums saved by :func:`_epoch_sums` to those of the first batch after resuming:
    (0 + a) + b is exactly a + b, so the epoch's metrics come out bit-identical."""
    results = trainer.fit_loop.epoch_loop._results
    for key, saved in sums.get("logged", {}).items():
        if key in results:
            result = results[key]
            result.value = saved["value"].to(result.value) + result.value
            if "count" in saved:
                result.cumulated_batch_size = (saved["count"].to(result.cumulated_batch_size)
                                               + result.cumulated_batch_size)
    modules = dict(trainer.lightning_module.named_modules())
    for name, state in sums.get("metrics", {}).items():
        metric = modules.get(name)
        if not isinstance(metric, Metric):
            continue
        for key, value in state.items():
            if key != "_update_count":
                current = getattr(metric, key)
                setattr(metric, key, value.to(current) + current)
        metric._update_count += int(state["_update_count"])
        metric._computed = None


def _parse_self_signal(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    name, _, step = value.partition("@")
    return int(getattr(signal, "SIG" + name.upper().removeprefix("SIG"))), int(step)


def final_line(summary: dict[str, Any]) -> str:
    """The one line every run ends with: status, headline metrics, run directory (and for an
    interrupted run, the command that resumes it)."""
    final = summary.get("final") or {}
    shown = [k for k in (VAL_TOP1, TEST_TOP1, TEST10_TOP1) if k in final]
    metrics = " ".join(f"{k} {final[k]:.4f}" for k in shown if final[k] is not None)
    head = summary["status"]
    if summary.get("stopped"):
        s = summary["stopped"]
        head += f" at epoch {s['epoch']} step {s['step']}"
    if summary.get("diverged"):
        d = summary["diverged"]
        head += f" at epoch {d['epoch']} step {d['step']} (training loss {d['loss']})"
    evaluation = summary.get("evaluation")
    if metrics and evaluation and any(k.startswith("test") for k in shown):
        metrics += (" (test/* on the val split, which also chose "
                    f"{' and '.join(evaluation['val_selects'])}: no independent test split)"
                    if evaluation.get("test_independent") is False
                    else f" (test split: {evaluation['test_split']})")
    line = f"{head}: {metrics} -> {summary['output_dir']}" if metrics else (
        f"{head} -> {summary['output_dir']}")
    if summary.get("resume"):
        line += f"; resume with: {summary['resume']['command']}"
    elif summary["status"] == "failed" and summary.get("error"):
        line += f" ({summary['error']})"
    return line


class CheckWritable(Callback):
    """A Hydra callback (conf/hydra/default.yaml): the run directory must be creatable and
    writable before Hydra makes it, or the run stops with one line (exit status 1) instead of
    Hydra's traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(config.hydra.sweep.dir)


def _check_writable(directory: str) -> None:
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        where = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
        print(f"error: cannot write the run directory {path}: {err.strerror}{where}",
              file=sys.stderr)
        sys.exit(exits.FAILED)


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
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        problems.append(f"nonfinite_every must be a whole number of steps >= 1, got {every!r}")
    if cfg.get("nonfinite", "stop") not in NONFINITE_MODES:
        problems.append(f"nonfinite must be one of {list(NONFINITE_MODES)}, got "
                        f"{cfg.get('nonfinite')!r}")
    ckpt = cfg.get("ckpt_path")
    if ckpt is not None and not isinstance(ckpt, str):
        problems.append(f"ckpt_path must be a path or last, got {ckpt!r}")
    return problems
