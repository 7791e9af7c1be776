"""Long runs that survive: exact resume, preemption by signals, non-finite losses (checkpoint
files themselves: :mod:`alexnet.training.checkpoints`).

What makes a resumed run equal to an uninterrupted one:

- the data of a step are a function of (seed, epoch, position) alone: the training order is drawn
  from (seed, epoch) (:mod:`alexnet.data.sampling`), each image's crop and reflection from
  (seed, epoch, image) (:mod:`alexnet.data.resumable_batches`), whatever the workers did
  before; on resume the batches of the interrupted epoch that were already trained on are
  skipped;
- the main process's random numbers (dropout, the PCA colour noise) are reseeded from
  (seed, step) before every step and every epoch, so that whatever else consumed random numbers
  in between (a loader created anew by the resumed process, a validation) changes nothing;
- the checkpoint holds the model, optimizer, scheduler, loop progress, metric history and the
  random states, as plain tensors and containers: it loads with ``weights_only=True``.

Exit statuses: the one table in :mod:`alexnet.exits`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor

from alexnet.data.sampling import replica_of
from alexnet.exits import Diverged, Interrupted
from alexnet.names import NONFINITE_MODES
from alexnet.training.checkpoints import LAST
from alexnet.training.lightning_private import (
    add_epoch_sums,
    end_restart,
    epoch_last_batch_reached,
    epoch_sums,
)
from alexnet.training.rng import mix_seed, rng_states, set_rng_states
from alexnet.training.signals import SELF_SIGNAL_ENV, StopRequest, parse_self_signal


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
        self._self_signal = parse_self_signal(os.environ.get(SELF_SIGNAL_ENV))

    # What a checkpoint keeps of it: the base seed (which may have been drawn), the random states
    # and, saved in an epoch's middle, the sums behind that epoch's training metrics so far.
    _trainer: L.Trainer | None = None
    _epoch_sums: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        state = {"base_seed": self.base_seed, "rng": rng_states()}
        if self._trainer is not None and self._trainer.training:
            state["epoch_sums"] = epoch_sums(self._trainer)
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
            add_epoch_sums(trainer, self._epoch_sums)
            self._epoch_sums = None
        self._reseed(trainer)
        if self._self_signal and trainer.global_step == self._self_signal[1]:
            os.kill(os.getpid(), self._self_signal[0])
        last_batch = epoch_last_batch_reached(trainer)
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
        end_restart(trainer)
