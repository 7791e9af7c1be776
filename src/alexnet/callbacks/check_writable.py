"""The run directory, checked writable before Hydra makes it."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from alexnet import exits


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
        # A probe of this process's own: the processes of one parallel run (torchrun nodes, SLURM
        # tasks) share the run directory and check it at once; with one name for all, one would
        # remove another's probe before that one did, and that run would stop here.
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        where = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
        print(f"error: cannot write the run directory {path}: {err.strerror}{where}",
              file=sys.stderr)
        sys.exit(exits.FAILED)
