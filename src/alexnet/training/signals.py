"""Stopping on signals at a batch boundary, and SLURM's requeue (the callback that acts on a
request: :class:`alexnet.callbacks.run_guard.RunGuard`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment

from alexnet.exits import UserError
from alexnet.training.checkpoints import slurm_job_id

# SIGUSR1: the warning signal an sbatch script asks SLURM for (--signal=USR1@90); SIGUSR2: the one
# submitit asks for under hydra/launcher=slurm (its signal_delay_s), handled alike.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


# Test hook, documented in docs/long-runs.md: ALEXNET_SELF_SIGNAL=TERM@5 makes the run send
# itself SIGTERM after its 5th optimizer step, so that tests interrupt a real process at an exact
# position. Unset in normal use.
SELF_SIGNAL_ENV = "ALEXNET_SELF_SIGNAL"


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


def parse_self_signal(value: str | None) -> tuple[int, int] | None:
    """``SIGNAL@STEP`` (``TERM@5``): the signal and the optimizer step after which the run sends
    it to itself; None when unset. UserError for anything else."""
    if not value:
        return None
    name, at, step = value.partition("@")
    signum = getattr(signal, "SIG" + name.upper().removeprefix("SIG"), None)
    if not isinstance(signum, signal.Signals) or not at or not step.isdigit() or int(step) < 1:
        raise UserError(f"{SELF_SIGNAL_ENV}={value}: expected SIGNAL@STEP, a signal's name and "
                        "an optimizer step >= 1 (TERM@5); it is a test hook: unset it")
    return int(signum), int(step)
