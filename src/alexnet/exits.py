"""The exit statuses of every entry point and the policy that maps what went wrong to them, in one
place (docs/long-runs.md, "Exit statuses"):

    0    completed
    1    failed: a crash, or a disk that cannot be written
    2    a user error: a bad value, a missing or damaged file (one ``error:`` line says which)
    3    diverged: a non-finite training loss
    128 + N  interrupted by signal N, resumable: 130 SIGINT (Ctrl-C), 138 SIGUSR1, 140 SIGUSR2,
             143 SIGTERM

``UserError`` is a mistake in what the user asked for, ``DataError`` a dataset file that is missing
or damaged (its message names the file); ``RunStopped`` and its kinds are runs that ended early on
purpose. :func:`reports_user_errors` wraps every entry point; :func:`building` turns the errors of
a build phase (configuration, data) into one ``UserError`` line.
"""

from __future__ import annotations

import errno
import functools
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig

COMPLETED = 0
FAILED = 1
USER_ERROR = 2
DIVERGED = 3


def interrupted(signum: int) -> int:
    """The status of a run stopped by signal ``signum``: 128 + its number, as shells report."""
    return 128 + int(signum)


CTRL_C = interrupted(signal.SIGINT)  # 130
# Errors of writing (a full disk, a read-only or forbidden directory): one line, status 1.
WRITE_ERRNOS = (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EPERM)


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, without a traceback."""


class DataError(ValueError):
    """A dataset on disk is missing, incomplete or not what the configuration expects (its
    message names the file)."""


class RunStopped(Exception):
    """A run that ended early on purpose; ``status`` goes to summary.json, ``exit_code`` to the
    shell, ``fields`` are added to the summary."""

    status = "failed"
    exit_code = FAILED

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.fields = fields


class Interrupted(RunStopped):
    status = "interrupted"

    def __init__(self, message: str, signum: int, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.exit_code = interrupted(signum)


class Diverged(RunStopped):
    status = "diverged"
    exit_code = DIVERGED


def one_line(err: BaseException) -> str:
    if isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return " ".join(str(err).split()) or type(err).__name__


def refuse_null_groups(argv: list[str], conf_dir: Path) -> None:
    """``GROUP=null`` on the command line (``logger=null``) stops Hydra with a traceback of its
    own before any of the project's code runs: say in one line what removes a group instead, and
    exit with status 2."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        group = key.lstrip("+")
        if not sep or value.strip().lower() != "null" or not (conf_dir / group).is_dir():
            continue
        instead = f"{group}=none or ~{group}" if (conf_dir / group / "none.yaml").is_file() else (
            f"~{group}")
        print(f"error: {arg}: a config group cannot be null; {instead} removes it",
              file=sys.stderr)
        sys.exit(USER_ERROR)


def reports_user_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn a UserError raised by ``task`` into ``error: ...`` on stderr and exit status 2; an
    interrupted or diverged run into its exit status (its line printed by the run), a full disk
    or unwritable file into one line and exit status 1 (docs/long-runs.md, "Exit statuses")."""

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return task(cfg)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            if in_multirun():  # Hydra records this job as failed and goes on with the others
                raise
            sys.exit(USER_ERROR)
        except RunStopped as err:  # its final line is printed already (summary.json written)
            if isinstance(err, Interrupted) or not in_multirun():
                sys.exit(err.exit_code)  # an interrupted sweep stops whole: it is preempted
            raise
        except KeyboardInterrupt:  # Ctrl-C before training (or twice): nothing to resume
            print("interrupted: nothing was saved to resume from; run the command again",
                  file=sys.stderr)
            sys.exit(CTRL_C)
        except OSError as err:
            if err.errno not in WRITE_ERRNOS:
                raise
            if not getattr(err, "reported", False):  # else the run's final line said it
                print(f"error: cannot write {err.filename or ''}: {err.strerror}",
                      file=sys.stderr)
            sys.exit(FAILED)

    return wrapper


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def building(what: str) -> Iterator[None]:
    """The build phase: configuration and data errors become a UserError."""
    try:
        yield
    except DataError as err:  # names its path already
        raise UserError(one_line(err)) from err
    except (InstantiationException, ValueError, TypeError, FileNotFoundError) as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) else err
        if isinstance(cause, DataError):
            raise UserError(one_line(cause)) from err
        raise UserError(f"{what}: {one_line(err)}") from err


def check_config_files(argv: list[str], conf_dir: Path) -> None:
    """Every YAML file Hydra may read (``conf/`` and the ``hydra.searchpath`` directories given
    on the command line) must parse: Hydra reads them before any of the suite's code runs, and a
    file cut short, overwritten or of another kind would end in its parser's traceback. One line
    naming the file instead, exit status 2 (reading them all takes some 50 ms)."""
    import yaml

    dirs = [conf_dir]
    for arg in argv:
        if arg.startswith("hydra.searchpath="):
            dirs += [Path(d.strip().removeprefix("file://")) for d in
                     arg.partition("=")[2].strip("[]").split(",") if d.strip().startswith("file://")]
    for directory in dirs:
        for path in sorted(directory.rglob("*.yaml")) if directory.is_dir() else []:
            try:
                yaml.safe_load(path.read_text())
            except (yaml.YAMLError, UnicodeDecodeError) as err:
                mark = getattr(err, "problem_mark", None)
                line = f", line {mark.line + 1}" if mark is not None else ""
                problem = getattr(err, "problem", None) or getattr(err, "reason", None) or "bytes"
                print(f"error: {path}{line}: not a valid YAML config file ({problem}): fix it, or "
                      f"restore it (git checkout -- {path.name} where it is tracked)",
                      file=sys.stderr)
                sys.exit(USER_ERROR)


def run_command(main: Callable[[], Any], conf_dir: Path) -> Any:
    """Run an entry point's ``hydra.main`` function after the checks Hydra would otherwise meet
    first, each with its traceback: ``GROUP=null`` and config files that are not YAML."""
    argv = sys.argv[1:]
    refuse_null_groups(argv, conf_dir)
    check_config_files(argv, conf_dir)
    return main()
