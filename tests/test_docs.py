"""Every command that README.md and docs/*.md show works as shown.

The commands are read from the shell blocks of the documentation (tests/doc_pages.py) and checked
in this process, without training anything:

- ``src/train.py``, ``src/eval.py``, ``src/prepare.py`` (also behind ``./run.sh train|eval``,
  ``torchrun`` or ``srun``): the entry point itself runs with ``--cfg job --resolve`` appended, so
  Hydra composes and resolves the configuration and prints it instead of running the job: an
  unknown key, group option or value fails here. Hydra refuses ``--cfg`` beside ``-m``, so a
  multirun is expanded as Hydra's basic sweeper expands it (its swept overrides and the sweep that
  the config's ``hydra.sweeper.params`` adds, e.g. a study's arms and seeds) and each value of
  each swept key is composed that way once. A command that already asks for ``--cfg`` runs as is.
- ``src/figures.py``, ``src/benchmark.py``, ``src/benchmark_data.py``, ``src/device_check.py``,
  ``ablations/report.py``: the script's own argparse parser parses the arguments (the script runs
  up to its ``parse_args`` and stops there), and ``--help`` of each script and subcommand
  succeeds; the Hydra overrides that ``src/benchmark.py`` passes on are composed as
  ``src/train.py``'s. Where the arguments name a committed study (``ablations/results/NAME``, or
  ``logs/study/NAME`` that stands for it), the figure or report is made for real, from a copy.
- ``./run.sh CMD``: CMD is one of run.sh's commands.
- Other programs (``tar``, ``wandb``): named in FOREIGN, not run.

Placeholders are kept as the text spells them (``SWEEP_DIR``, ``CKPT``, ``/path/to/...``), but for
``<run>``, which a shell would read as a redirection and Hydra's grammar refuses: it becomes RUN.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import runpy
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from doc_pages import ROOT, code_blocks, doc_files, shown_commands
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from alexnet.resolvers import register_resolvers

register_resolvers()  # the study presets' sweeps are ${csv:...}
COMMANDS = shown_commands()
HYDRA_SCRIPTS = {"src/train.py", "src/eval.py", "src/prepare.py"}
ARGPARSE_SCRIPTS = {"src/figures.py", "src/benchmark.py", "src/benchmark_data.py",
                    "src/device_check.py", "ablations/report.py"}
RUN_SH_HYDRA = {"train": "src/train.py", "eval": "src/eval.py"}
LAUNCHERS = {"torchrun", "srun"}  # start src/*.py processes; their own options are not checked
FOREIGN = {"tar", "wandb"}  # other programs' commands, shown for the user to run
RESULTS = ROOT / "ablations" / "results"


class Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


def run_script(script: str, args: list[str]) -> tuple[int, str, str]:
    """Run ``python SCRIPT ARGS`` in this process from the repository root: its exit status,
    stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    argv, cwd = sys.argv, Path.cwd()
    sys.argv = [str(ROOT / script), *args]
    status = 0
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(cwd)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None  # hydra.main leaves its run's config behind: drop it
    return status, out.getvalue(), err.getvalue()


def parse_only(script: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """The script's own parser's reading of ``args``: the script runs up to ``parse_args``."""
    real = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise Parsed(real(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    try:
        status, _, err = run_script(script, args)
    except Parsed as parsed:
        return parsed.namespace
    finally:
        monkeypatch.undo()
    pytest.fail(f"{script} {shlex.join(args)}: exit status {status} before parsing\n{err}")


def split(command: str) -> tuple[str, list[str]]:
    """The script a command runs (as the repository spells it) and its arguments."""
    command = command.replace("<run>", "RUN")
    command = re.sub(r"\[(--[^\[\]]*)\]", r"\1", command)  # usage brackets: [--workers 2]
    words = shlex.split(command, comments=True)
    if words[0] in LAUNCHERS:
        words = words[1:]
        while words and words[0].startswith("-"):
            words = words[1:]
    if words[0] == "python":
        words = words[1:]
    if words[0] == "./run.sh":
        return "./run.sh", words[1:]
    return words[0], words[1:]


def composes(script: str, overrides: list[str]) -> None:
    """The entry point composes and resolves ``overrides`` (Hydra's ``--cfg job --resolve``)."""
    status, out, err = run_script(script, [*overrides, "--cfg", "job", "--resolve"])
    assert status == 0 and out.strip(), f"{script} {shlex.join(overrides)}:\n{err or out}"


def sweep_variants(script: str, overrides: list[str]) -> list[list[str]]:
    """A multirun's overrides, one list per value of each swept key (the others at their first
    value): the command line's sweeps and those of the config's ``hydra.sweeper.params``."""
    parser = OverridesParser.create()

    def swept(lines: list[str]) -> dict[str, list[str]]:
        keys: dict[str, list[str]] = {}
        for override in parser.parse_overrides(lines):
            key = override.get_key_element()
            if override.is_sweep_override():
                keys[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
            else:
                keys[key] = [override.input_line]
        return keys

    given = swept(overrides)
    first = [values[0] for values in given.values()]
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name=Path(script).stem, overrides=first, return_hydra_config=True)
    params = cfg.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=True) if params else {}
    keys = {**swept([f"{k}={v}" for k, v in params.items()]), **given}  # the command line wins
    variants = []
    for key, values in keys.items():
        for value in values:
            variant = [value if k == key else vs[0] for k, vs in keys.items()]
            if variant not in variants:
                variants.append(variant)
    return variants


def committed_study(arg: str) -> Path | None:
    """The committed study a path names: ``ablations/results/NAME`` or ``logs/study/NAME``."""
    name = Path(arg).name
    if arg.rstrip("/") in (f"ablations/results/{name}", f"logs/study/{name}"):
        return RESULTS / name if (RESULTS / name / "none").is_dir() else None
    return None


def check_hydra(script: str, args: list[str]) -> None:
    if "--cfg" in args:  # the command itself only prints the configuration: run it
        status, out, err = run_script(script, args)
        assert status == 0 and out.strip(), err
        return
    multirun = [a for a in args if a in ("-m", "--multirun")]
    overrides = [a for a in args if a not in multirun]
    for variant in (sweep_variants(script, overrides) if multirun else [overrides]):
        composes(script, variant)


def check_argparse(script: str, args: list[str], tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = parse_only(script, args, monkeypatch)
    if script == "src/benchmark.py":
        composes("src/train.py", list(namespace.overrides))
    study = committed_study(args[-1]) if args else None
    make = (script == "src/figures.py" and namespace.figure == "fig1"
            and all(committed_study(str(r)) for r in namespace.runs)) or (
        script == "ablations/report.py" and study is not None and not namespace.wandb)
    if not make:
        return
    copies = []  # the committed studies, copied: a report writes into its sweep directory
    for arg in args:
        if (found := committed_study(arg)) is not None:
            copies.append(str(shutil.copytree(found, tmp_path / found.name)))
        else:
            copies.append(arg)
    if script == "src/figures.py" and namespace.out is None:
        copies += ["--out", str(tmp_path / "figure")]
    status, out, err = run_script(script, copies)
    assert status == 0, f"{script} {shlex.join(copies)}: exit status {status}\n{err}"


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_command_works_as_shown(command, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script, args = split(command.text)
    if script == "./run.sh":
        commands = re.findall(r"^\s+(\w+)\)", (ROOT / "run.sh").read_text(), flags=re.M)
        assert args and args[0] in commands, f"{command.where}: run.sh has {commands}"
        if args[0] in RUN_SH_HYDRA:
            check_hydra(RUN_SH_HYDRA[args[0]], args[1:])
    elif script in HYDRA_SCRIPTS:
        check_hydra(script, args)
    elif script in ARGPARSE_SCRIPTS:
        check_argparse(script, args, tmp_path, monkeypatch)
    else:
        assert script in FOREIGN, f"{command.where}: no check for {command.text!r}"


HELP = sorted([*((s, []) for s in ARGPARSE_SCRIPTS),
               *(("src/figures.py", [fig]) for fig in ("fig1", "fig3", "fig4"))])


@pytest.mark.parametrize(("script", "sub"), HELP, ids=[" ".join([s, *a]) for s, a in HELP])
def test_help_of_every_script(script: str, sub: list[str]) -> None:
    status, out, err = run_script(script, [*sub, "--help"])
    assert status == 0 and out.startswith("usage:"), err


def test_the_docs_show_every_kind_of_command() -> None:
    scripts = {split(c.text)[0] for c in COMMANDS}
    assert HYDRA_SCRIPTS | ARGPARSE_SCRIPTS | {"./run.sh"} <= scripts, scripts
    readme = (ROOT / "README.md").read_text()
    assert "./run.sh test" in readme  # what .ci/run calls


def test_no_command_hides_outside_a_shell_block() -> None:
    """A command in an unlabelled block would escape the checks above."""
    hidden = [f"{path.relative_to(ROOT)}:{start + i}: {line}"
              for path in doc_files() for lang, start, body in code_blocks(path)
              if lang not in ("bash", "sh", "shell", "console")
              for i, line in enumerate(body)
              if re.match(r"\s*(python|\./run\.sh|torchrun|srun) ", line)]
    assert not hidden, hidden


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_between_the_pages_resolve() -> None:
    """Every relative link of README and docs/ names a file that exists, and its #anchor a
    heading of that file; README lists every page of docs/."""
    broken = []
    for path in doc_files():
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"\w+://|mailto:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, broken
    readme = (ROOT / "README.md").read_text()
    unlisted = [p.name for p in doc_files()[1:] if f"](docs/{p.name})" not in readme]
    assert not unlisted, f"README's Documentation does not list {unlisted}"


def test_the_config_table_lists_every_option_of_every_group() -> None:
    """docs/configuration.md's table of groups names each option under conf/GROUP/ (a base that
    the options build on, ``_base.yaml``, is not one) and no option that is not there."""
    table = {}
    for group, options in re.findall(r"^\| `(\w+)` \| (.+?) \|", (ROOT / "docs" /
                                     "configuration.md").read_text(), flags=re.M):
        table[group] = set(re.findall(r"`(\w+)`", options))
    conf = ROOT / "conf"
    groups = {p.name for p in conf.iterdir() if p.is_dir() and p.name not in ("hydra", "ablation",
                                                                              "paths")}
    assert groups <= table.keys(), groups - table.keys()
    wrong = {g: (on_disk ^ table[g]) for g in groups
             if (on_disk := {p.stem for p in (conf / g).glob("*.yaml")
                             if not p.stem.startswith("_")}) != table[g]}
    assert not wrong, f"options missing from or wrongly in docs/configuration.md: {wrong}"


def test_the_layout_names_every_module() -> None:
    """README's Layout is the map of src/: a module it does not name (as ``name.py``, or as a
    callback on the callbacks/ line, one file each) fails here until it is placed there."""
    block = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("```")[1]
    callbacks = next(line for line in block.splitlines() if "callbacks/" in line)
    callbacks += block.split(callbacks, 1)[1].splitlines()[1]  # its continuation line
    unnamed = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "src").rglob("*.py"))
               if p.name != "__init__.py" and "egg-info" not in str(p) and p.name not in block
               and not (p.parent.name == "callbacks" and re.search(rf"\b{p.stem}\b", callbacks))]
    assert unnamed == []
