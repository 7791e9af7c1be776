"""The exit statuses of every entry point and the policy that maps what went wrong to them, in one
place (docs/long-runs.md, "Exit statuses"):

    0    completed
    1    failed: a crash, a disk that cannot be written, or a run directory removed mid-run
    2    a user error: a bad value, an unknown config option or key, a missing or damaged file
         (one ``error:`` line says which)
    3    diverged: a non-finite training loss
    128 + N  interrupted by signal N, resumable: 130 SIGINT (Ctrl-C), 138 SIGUSR1, 140 SIGUSR2,
             143 SIGTERM

``UserError`` is a mistake in what the user asked for, ``DataError`` a dataset file that is missing
or damaged (its message names the file); ``RunStopped`` and its kinds are runs that ended early on
purpose. :func:`reports_user_errors` wraps every entry point; :func:`building` turns the errors of
a build phase (configuration, data) into one ``UserError`` line; :func:`run_command` starts every
entry point, with what Hydra meets before the project's code runs said in one line too.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

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


class DirectoryRemoved(OSError):
    """An output directory removed while the run was writing into it (by hand, or by a cleanup
    script): one line and status 1, as a full disk, rather than a traceback."""

    def __init__(self, path: Path) -> None:
        super().__init__(errno.ENOENT, "its directory was removed while the run ran", str(path))


class UserError(Exception):
    """A mistake in what the user asked for: reported as one line, without a traceback."""


class DataError(ValueError):
    """A dataset on disk is missing, incomplete or not what the configuration expects (its
    message names the file)."""


class NotReadable(DataError):
    """A file that is there but that this user may not read: its permissions are what to fix, not
    its contents (no command that writes it again is offered)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(f"cannot read {path}: permission denied; fix its permissions (or run as "
                         "a user who may read it), then run the same command again")


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


def refuse_group_values(argv: list[str], conf_dir: Path) -> None:
    """``GROUP=null`` on the command line (``logger=null``) stops Hydra with a traceback of its
    own before any of the project's code runs: say in one line what removes a group instead, and
    exit with status 2. ``GROUP=_base`` names what a group's options build on (its values left at
    ``???``), not an option: one line listing the options."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        group = key.lstrip("+")
        if not sep or not (conf_dir / group).is_dir():
            continue
        if value.strip().lower() == "null":
            has_none = (conf_dir / group / "none.yaml").is_file()
            instead = f"{group}=none or ~{group}" if has_none else f"~{group}"
            print(f"error: {arg}: a config group cannot be null; {instead} removes it",
                  file=sys.stderr)
            sys.exit(USER_ERROR)
        if any(v.strip().startswith("_") for v in value.strip("[]").split(",")):
            print(f"error: {arg}: not an option of {group} but what its options build on; "
                  f"{options_line(group, [p.stem for p in (conf_dir / group).glob('*.yaml')])}",
                  file=sys.stderr)
            sys.exit(USER_ERROR)


def group_options(names: Iterable[str]) -> list[str]:
    """A config group's options: its files, less the ``_base`` they build on (a name from ``_``)."""
    return sorted(n for n in names if n[:1] != "_")


def options_line(group: str, names: list[str]) -> str:
    """The options of a config group, less the ``_base`` they build on."""
    return f"the options of {group}: {', '.join(group_options(names))}"


def hydra_error_line(err: ConfigCompositionException | OverrideParseException) -> str:
    """What Hydra says of a mistake it meets composing the config, as one line: an unknown option
    of a group (with the options, less the ``_base`` they build on), an unknown key, an override
    it cannot parse."""
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, name = err.missing_cfg_file.rpartition("/")
        if group:
            return f"{group}={name}: no such option; {options_line(group, list(err.options))}"
    lines = [line.strip() for line in str(err).splitlines()
             if line.strip() and not line[0].isspace()]
    cause = err.__cause__
    if cause is not None and str(cause).strip():  # OmegaConf's reason, without its key dump
        lines.insert(1, str(cause).strip().splitlines()[0].rstrip(".") + ".")
    if isinstance(err, OverrideParseException):  # the grammar's page, in brackets
        links = [word for line in lines[1:] for word in line.split() if "://" in word]
        return f"{err.override}: {lines[0]}" + (f" (see {links[0]})" if links else "")
    return " ".join(lines)


@contextmanager
def hydra_errors_in_one_line() -> Iterator[None]:
    """Hydra reports what it meets composing the config (an unknown option or key, an override
    it cannot parse) in several lines with exit status 1, before any of the project's code runs:
    say it in one ``error:`` line, exit status 2, as every other mistake. Hydra 1.3 has no hook
    for this; its reporter (``hydra._internal.utils.run_and_report``, private) is wrapped while
    the entry point runs, and ``HYDRA_FULL_ERROR=1`` still gives Hydra's own traceback. Errors of
    the task itself go on to Hydra's reporter unchanged."""
    from hydra._internal import utils as hydra_internal

    report = hydra_internal.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        def composed() -> Any:
            try:
                return func()
            except (ConfigCompositionException, OverrideParseException) as err:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"error: {hydra_error_line(err)}", file=sys.stderr)
                sys.exit(USER_ERROR)
            except OmegaConfBaseException as err:  # only --cfg ... --resolve resolves here
                if "--resolve" not in sys.argv or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"error: --resolve: {one_line(err)}{unresolvable_hint(sys.argv)}",
                      file=sys.stderr)
                sys.exit(USER_ERROR)
            except (UserError, RunStopped) as err:
                # A sweep's failed run, raised again by Hydra once every run has had its turn
                # (reports_user_errors printed its line when it failed): said in one more line.
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"error: the sweep ran every run, and at least one failed (its line is "
                      f"above: {one_line(err)})", file=sys.stderr)
                sys.exit(USER_ERROR if isinstance(err, UserError) else err.exit_code)

        return report(composed)

    hydra_internal.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_internal.run_and_report = report


def unresolvable_hint(argv: list[str]) -> str:
    """Hydra resolves ``--cfg hydra`` alone, without the run's settings that hydra.run.dir names
    (``paths.log_dir``): say what prints it resolved."""
    shown = [b for a, b in zip(argv, [*argv[1:], ""], strict=True) if a in ("--cfg", "-c")]
    shown += [a.split("=", 1)[1] for a in argv if a.startswith("--cfg=")]
    if "hydra" not in shown:
        return ""
    return ("; Hydra resolves --cfg hydra without the run's settings, which hydra.run.dir names: "
            "use --cfg all --resolve (its hydra: section comes first)")


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
            if err.errno not in WRITE_ERRNOS and not isinstance(err, DirectoryRemoved):
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


def check_values_resolve(cfg: DictConfig) -> None:
    """Every value of the configuration can be read: none is left at ``???`` and every
    ``${...}`` names something. Read lazily, either would stop the run later with OmegaConf's
    traceback (UserError naming the key instead)."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise UserError(f"invalid configuration: {err.full_key} has no value (???): give "
                        f"{err.full_key}=VALUE") from None
    except OmegaConfBaseException as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"invalid configuration: {err.full_key}: {reason}") from None


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
    first, each with its traceback (``GROUP=null``, ``GROUP=_base``, config files that are not
    YAML), and with Hydra's own composition errors in one line."""
    argv = sys.argv[1:]
    refuse_group_values(argv, conf_dir)
    check_config_files(argv, conf_dir)
    with hydra_errors_in_one_line():
        return main()
