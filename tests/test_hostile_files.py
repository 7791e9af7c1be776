"""Hostile files, as a table: every kind of file the suite reads, fed to the command that reads it
empty, cut short (after 1 byte, at half, without its last 16 bytes), overwritten with random bytes
of the same length, or replaced by another file of the suite. Each must give one ``error:`` line
naming the file, exit status 2 (docs/long-runs.md), and write nothing that looks like a
result: no summary.json, checkpoint, prepared dataset, report or figure.

The kinds: checkpoints (``src/eval.py``, ``src/train.py ckpt_path=``, ``src/figures.py fig3``), the
files of a prepared dataset (``src/train.py``), a study's summary.json files
(``ablations/report.py``, ``src/figures.py fig1``, and ``load_study``, which the notebooks call),
CIFAR-10's python batches and its archive (``src/prepare.py data=cifar10``), the files that label
ILSVRC-2012's validation images and name its classes (Kaggle's csv and synset mapping, the devkit's
meta.mat and ground truth: ``src/prepare.py data=imagenet``), the paper's claims
(``ablations/claims.yaml``, read by the report) and a config file of the user's (Hydra's own
answer). Image files follow their own policy, tested at the end: a file that cannot be decoded is
skipped and named, and a split of which none can be decoded is an error; so does a study's earlier
summary.json that a sweep started again reads (skip_completed): damaged, its run runs again with a
note.

The commands run in-process through their own wrappers, as in ``tests/test_bad_inputs.py``,
except the config file's, which Hydra reads before any of the suite's code runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    CONF,
    PREP,
    ROOT,
    TINY,
    WNIDS,
    compose_config,
    fake_fig1_run,
    load_script,
    make_imagenet,
    prepare_main,
    prepared_copy,
    write_cifar10,
    write_devkit,
    write_image_classes,
    write_loc_solution,
)
from omegaconf import OmegaConf

from alexnet.exits import reports_user_errors
from alexnet.jobs.evaluate import evaluate
from alexnet.jobs.train import train

CUT_END = 16  # bytes cut off the end: more than a trailing newline, less than any file here


# -- the damages ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Damage:
    id: str
    apply: Callable[[Path, Path], None]  # (the file, the world: where foreign files are found)


def _cut(keep: Callable[[int], int]) -> Callable[[Path, Path], None]:
    def apply(path: Path, world: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: keep(len(data))])
    return apply


def _random(path: Path, world: Path) -> None:
    size = path.stat().st_size
    path.write_bytes(np.random.default_rng(size).integers(0, 256, size, np.uint8).tobytes())


def _foreign(name: str) -> Callable[[Path, Path], None]:
    """Another file of the suite (from the world's ``foreign/``) in this one's place."""
    def apply(path: Path, world: Path) -> None:
        path.write_bytes((world / "foreign" / name).read_bytes())
    return apply


DAMAGES = {
    "empty": Damage("empty", lambda path, world: path.write_bytes(b"")),
    "cut_1": Damage("cut_1", _cut(lambda n: 1)),
    "cut_half": Damage("cut_half", _cut(lambda n: n // 2)),
    "cut_end": Damage("cut_end", _cut(lambda n: n - CUT_END)),
    "random": Damage("random", _random),
}
def _summary_edit(edit: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    """A summary.json still JSON, with one field as this suite never writes it."""
    def apply(path: Path, world: Path) -> None:
        summary = json.loads(path.read_text())
        edit(summary)
        path.write_text(json.dumps(summary))
    return apply


SUMMARY_EDITS = {  # damage: what the one line says of it
    "history_a_mapping": ("its history is not a list of epoch rows",
                          lambda s: s.update(history={"epoch": 0})),
    "error_in_percent": ("final: test/top1_err is 42.0, not an error rate in [0, 1]",
                         lambda s: s["final"].update({"test/top1_err": 42.0})),
    "error_nan": ("history epoch 2: train/top1_err is nan, not an error rate in [0, 1]",
                  lambda s: s["history"][1].update({"train/top1_err": float("nan")})),
    "error_a_string": ("final: test/top1_err is '0.3', not an error rate in [0, 1]",
                       lambda s: s["final"].update({"test/top1_err": "0.3"})),
    "final_null": ("a completed run without its final metrics", lambda s: s.update(final=None)),
    # Text where an arm's name goes would be printed into report.md's table as it stands.
    "arm_not_its_ablations": ("its arm 'no_lrn | **fake** |\\n\\n# Injected' is not its "
                              "ablations' ('none')",
                              lambda s: s.update(arm="no_lrn | **fake** |\n\n# Injected")),
    "ablations_not_named": ("its ablations are not a list of named ablations",
                            lambda s: s.update(ablations=["no_lrn"])),
    # Each would stop a study's tools in a traceback, or read as another run than it is.
    "epoch_missing": ("history epoch 2: no epoch", lambda s: s["history"][1].pop("epoch")),
    "epoch_in_words": ("history epoch 1: its epoch is 'first', not a whole number",
                       lambda s: s["history"][0].update(epoch="first")),
    "num_classes_in_words": ("its num_classes is 'ten', not a number of classes (a whole "
                             "number >= 1)", lambda s: s.update(num_classes="ten")),
    "lr_in_words": ("its config.optimizer.lr is 'fast', not a learning rate (a finite number)",
                    lambda s: s["config"]["optimizer"].update(lr="fast")),
    "lr_a_list": ("its config.optimizer.lr is [0.1], not a learning rate (a finite number)",
                  lambda s: s["config"]["optimizer"].update(lr=[0.1])),
    # Paired as another seed (seed 1 for true), or with nothing while its seed reads as missing.
    "seed_a_string": ("its seed is '1', not a whole number (or null)",
                      lambda s: s.update(seed="1")),
    "seed_true": ("its seed is True, not a whole number (or null)", lambda s: s.update(seed=True)),
    "version_in_words": ("its summary_version is '1', not a version number",
                         lambda s: s.update(summary_version="1")),
}
# Records the suite writes, in a study where they cannot be read as its runs: named for what
# they are, and what to do (not "run that run again" where that is not it).
SUMMARY_REFUSALS = {  # damage: (the commands, what the one line says)
    "newer_version": (["report", "figures", "curves", "load_study"],
                      "was written by a newer version of this suite (summary_version 99; this "
                      "code reads up to 1): update this code to read it"),
    "an_evaluation": (["report", "figures", "curves", "load_study"],
                      "is an evaluation's record (task eval, src/eval.py), not a training "
                      "run's: move it out of {tmp}/study"),
    # fig1 plots the runs of a directory that is no one study each as they are, labelled by seed
    "seed_null": (["report", "curves", "load_study"],
                  "records no seed (a run on a random seed): a study pairs its runs by seed; run "
                  "that run again with its seed, or remove its directory"),
    "seed_missing": (["report", "curves", "load_study"],
                     "records no seed (a run on a random seed): a study pairs its runs by seed; "
                     "run that run again with its seed, or remove its directory"),
    # Fig. 1's epochs to 25% would read "not reached", which is not what happened
    "no_train_error": (["report", "figures"],
                       ": a completed run without a per-epoch train/top1_err in its history, "
                       "which Fig. 1 measures: run that run again, or remove its directory"),
    "history_empty": (["report", "figures"],
                      ": a completed run without a per-epoch train/top1_err in its history, "
                      "which Fig. 1 measures: run that run again, or remove its directory"),
}
SUMMARY_REFUSAL_EDITS = {
    "newer_version": lambda s: s.update(summary_version=99),
    "an_evaluation": lambda s: s.update(task="eval"),
    "seed_null": lambda s: s.update(seed=None),
    "seed_missing": lambda s: s.pop("seed"),
    "no_train_error": lambda s: [row.pop("train/top1_err") for row in s["history"]],
    "history_empty": lambda s: s.update(history=[]),
}
for _name, (_says, _edit) in SUMMARY_EDITS.items():
    DAMAGES[_name] = Damage(_name, _summary_edit(_edit))
for _name, _edit in SUMMARY_REFUSAL_EDITS.items():
    DAMAGES[_name] = Damage(_name, _summary_edit(_edit))
def _lrn_gain_in_words(path: Path, world: Path) -> None:
    text = path.read_text()
    assert "  delta_top1: 1.4\n" in text  # lrn's
    path.write_text(text.replace("  delta_top1: 1.4\n", '  delta_top1: "one point four"\n', 1))


DAMAGES["number_in_words"] = Damage("number_in_words", _lrn_gain_in_words)


def _claim_pasted_twice(path: Path, world: Path) -> None:
    """A second ``lrn:`` entry at the end, with other numbers: plain YAML keeps the last."""
    path.write_text(path.read_text() + "\nlrn:\n  ablation: no_lrn\n  delta_top1: 9.0\n")


DAMAGES["key_twice"] = Damage("key_twice", _claim_pasted_twice)


def _labels_edit(edit: Callable[[np.ndarray], None]) -> Callable[[Path, Path], None]:
    """A prepared split's labels still a whole .npy file, with labels it never writes."""
    def apply(path: Path, world: Path) -> None:
        labels = np.load(path)
        edit(labels)
        np.save(path, labels)
    return apply


def _stats_edit(path: Path, world: Path) -> None:
    stats = json.loads(path.read_text())
    stats["num_classes"] += 3  # a 3-more-way net would be trained on classes that do not exist
    path.write_text(json.dumps(stats))


def _move_first_label(labels: np.ndarray) -> None:
    """The first usable row to the next class: in range, but counted otherwise."""
    row = np.flatnonzero(labels >= 0)[0]
    labels[row] = (labels[row] + 1) % (labels.max() + 1)


DAMAGES["label_out_of_range"] = Damage("label_out_of_range",
                                       _labels_edit(lambda y: y.__setitem__(0, 12)))
DAMAGES["label_moved"] = Damage("label_moved", _labels_edit(_move_first_label))
DAMAGES["num_classes_edited"] = Damage("num_classes_edited", _stats_edit)
FOREIGN = {  # what stands in for a file of another kind
    "summary": "summary.json", "stats": "stats.json", "npy": "mean_image.npy",
    "labels": "train_labels.npy", "images": "val_images.npy", "ckpt": "run.ckpt",
    "batch": "data_batch_1", "meta": "batches.meta", "claims": "claims.yaml",
    "mat": "meta.mat",
}
for _name, _file in FOREIGN.items():
    DAMAGES[f"a_{_name}"] = Damage(f"a_{_name}", _foreign(_file))
EVERY_CUT = ["empty", "cut_1", "cut_half", "cut_end", "random"]


# -- the world: one of each file, made once --------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A tiny copy of every kind of input: a checkpoint (the tiny net's, written as src/train.py
    writes its checkpoints), a prepared dataset, a study, CIFAR-10's batches and archive, an image
    folder, the claims; and ``foreign/``, one file of each kind to put in another's place."""
    from hydra.utils import instantiate

    root = tmp_path_factory.mktemp("world")
    cfg = compose_config("train", TINY, root / "x", data_dir)
    net = instantiate(cfg.model, num_classes=10)
    (root / "ckpt").mkdir()
    torch.save({"alexnet_config": OmegaConf.to_container(cfg, resolve=True),
                "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "optimizer_states": [], "loops": {}}, root / "ckpt" / "run.ckpt")
    stats = json.loads((prepared_copy(root, data_dir) / "stats.json").read_text())
    stats["source"] = {"kind": "imagefolder"}  # the built-in data's, as an image folder's
    (root / "prepared" / "stats.json").write_text(json.dumps(stats))
    for arm in ("none", "tanh"):
        for seed in (1, 2):
            fake_fig1_run(root / "study", arm, 0.01, seed, [0.8, 0.5, 0.3, 0.2])
    write_cifar10(root / "cifar" / "cifar-10-batches-py")
    (root / "cifar_tar").mkdir()
    with tarfile.open(root / "cifar_tar" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(root / "cifar" / "cifar-10-batches-py", "cifar-10-batches-py")
    write_image_classes(root, {"cat": 4, "dog": 4})  # root / "images"
    truth = make_imagenet(root / "imagenet_loc", val="flat")  # Kaggle's layout, then the devkit's
    write_loc_solution(root / "imagenet_loc" / "LOC_val_solution.csv", truth)
    (root / "imagenet_loc" / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} words of {w}\n" for w in WNIDS))
    write_devkit(root / "imagenet_devkit" / "ILSVRC2012_devkit_t12",
                 make_imagenet(root / "imagenet_devkit", val="flat"))
    (root / "claims").mkdir()
    shutil.copy(ROOT / "ablations" / "claims.yaml", root / "claims" / "claims.yaml")
    foreign = root / "foreign"
    foreign.mkdir()
    for name in FOREIGN.values():
        source = next(p for p in sorted(root.rglob(name)) if foreign not in p.parents)
        shutil.copy(source, foreign / name)
    return root


# -- the commands --------------------------------------------------------------------------------
def _hydra_entry(config: str, task: Callable, base: list[str]) -> Callable:
    def run(tmp: Path, data_dir: Path, args: list[str]) -> int:
        cfg = compose_config(config, [*base, f"paths.log_dir={tmp}/logs", *args],
                             tmp / "logs" / "run", data_dir)
        with pytest.raises(SystemExit) as stopped:
            task(cfg)
        return stopped.value.code
    return run


def _argparse_entry(path: Path) -> Callable:
    main = load_script(path).main
    return lambda tmp, data_dir, args: main(args)


def _library(call: Callable[[str], object], error: type[Exception]) -> Callable:
    """A library function as a notebook calls it: its exception's message is what one sees."""
    def run(tmp: Path, data_dir: Path, args: list[str]) -> int:
        with pytest.raises(error) as raised:
            call(args[0])
        print(f"error: {raised.value}", file=sys.stderr)
        return 2
    return run


IMAGES_BASE = [a for a in TINY if not a.startswith(("data.train_per", "data.val_per"))]


def _entries() -> dict[str, Callable]:
    from alexnet.analysis.network_figures import load_network
    from alexnet.analysis.study import StudyError, load_study
    from alexnet.exits import UserError

    return {
        "eval": _hydra_entry("eval", reports_user_errors(evaluate), []),
        "resume": _hydra_entry("train", reports_user_errors(train), TINY),
        "train": _hydra_entry("train", reports_user_errors(train), IMAGES_BASE),
        "prepare": _hydra_entry("prepare", prepare_main(), ["progress=false", "workers=1"]),
        "figures": _argparse_entry(ROOT / "src" / "figures.py"),
        "curves": _argparse_entry(ROOT / "src" / "figures.py"),
        "report": _argparse_entry(ROOT / "ablations" / "report.py"),
        "load_study": _library(load_study, StudyError),
        "load_network": _library(load_network, UserError),
    }


# -- the table -----------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    kind: str
    file: str  # the damaged file, under the case's copy of the world
    damage: str
    entry: str
    args: list[str]  # with {tmp}
    says: list[str]  # what the one line must hold besides "error: " and the file, with {tmp}


def _case(kind: str, file: str, damage: str, entry: str, args: list[str], says: list[str],
          label: str | None = None) -> Case:
    name = label or Path(file).name.replace(".", "_")
    return Case(f"{kind}-{name}-{damage}-{entry}", kind, file, damage, entry, args, says)


CKPT = "ckpt/run.ckpt"
CKPT_COMMANDS = {
    "eval": ["ckpt_path={tmp}/" + CKPT],
    "resume": ["ckpt_path={tmp}/" + CKPT],
    "figures": ["fig3", "{tmp}/" + CKPT, "--out", "{tmp}/figure"],
    "load_network": ["{tmp}/" + CKPT],
}
PREPARE_AGAIN = ("; to prepare it: python src/prepare.py data=imagefolder "
                 "data.root=/path/to/images data.image_size=80 data.val_fraction=0.1 "
                 "data.test_fraction=0.1 data.prepared_dir={tmp}/prepared force=true")
PREPARED_FILES = {  # file: the foreign files that stand in for it
    "train_images.npy": ["a_stats", "a_labels"], "train_labels.npy": ["a_stats", "a_images"],
    "val_images.npy": ["a_stats", "a_labels"], "val_labels.npy": ["a_stats", "a_images"],
    "test_images.npy": ["a_stats", "a_labels"], "test_labels.npy": ["a_stats", "a_images"],
    "mean_image.npy": ["a_stats", "a_labels"], "stats.json": ["a_summary", "a_npy"],
}
SUMMARY = "study/none/lr0.01/seed1/summary.json"
SUMMARY_COMMANDS = {
    "report": ["{tmp}/study"],
    "figures": ["fig1", "{tmp}/study", "--out", "{tmp}/figure"],
    "curves": ["curves", "{tmp}/study", "--out", "{tmp}/figure"],
    "load_study": ["{tmp}/study"],
}
IMAGENET_FILES = {  # the files that label ILSVRC-2012's flat val/ and name its classes
    # cut_end leaves Kaggle's csv and its class names readable and whole (the last line's tail)
    "imagenet_loc/LOC_val_solution.csv": ["empty", "cut_1", "cut_half", "random", "a_summary",
                                          "a_npy"],
    "imagenet_loc/LOC_synset_mapping.txt": ["cut_1", "cut_half", "random", "a_summary",
                                            "a_npy"],
    "imagenet_devkit/ILSVRC2012_devkit_t12/data/meta.mat": [*EVERY_CUT, "a_summary", "a_npy"],
    "imagenet_devkit/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": [
        *EVERY_CUT, "a_summary", "a_mat"],
}
CIFAR_FILES = ["data_batch_1", "data_batch_5", "test_batch", "batches.meta"]
CIFAR_ARGS = ["data=cifar10", "data.root={tmp}/cifar", "data.prepared_dir={tmp}/prepared"]
CIFAR_AGAIN = "replace it with the file of a fresh copy of cifar-10-python.tar.gz"


def _table() -> list[Case]:
    cases = []
    for damage in [*EVERY_CUT, "a_summary", "a_npy"]:
        for entry, args in CKPT_COMMANDS.items():
            cases.append(_case("checkpoint", CKPT, damage, entry, args,
                               ["is not a readable checkpoint"]))
    for file, foreign in PREPARED_FILES.items():
        for damage in [*EVERY_CUT, *foreign]:
            cases.append(_case("prepared", f"prepared/{file}", damage, "train",
                               ["data=imagefolder", *PREP, "data.prepared_dir={tmp}/prepared"],
                               [PREPARE_AGAIN]))
    for file, damage, says in (
            ("train_labels.npy", "label_out_of_range", "train_labels.npy holds label 12, but "
                                                       "stats.json has 10 classes"),
            ("val_labels.npy", "label_moved", "val_labels.npy: its labels count other numbers "
                                              "of each class than stats.json does"),
            ("stats.json", "num_classes_edited", "stats.json says num_classes 13 but lists 10 "
                                                 "classes")):
        cases.append(_case("prepared", f"prepared/{file}", damage, "train",
                           ["data=imagefolder", *PREP, "data.prepared_dir={tmp}/prepared"],
                           [says, PREPARE_AGAIN]))
    for damage in [*EVERY_CUT, "a_stats", "a_npy"]:
        for entry, args in SUMMARY_COMMANDS.items():
            cases.append(_case("summary", SUMMARY, damage, entry, args,
                               ["run that run again, or remove its directory"]))
    for damage, (says, _) in SUMMARY_EDITS.items():
        for entry, args in SUMMARY_COMMANDS.items():
            cases.append(_case("summary", SUMMARY, damage, entry, args,
                               [f"is damaged: {says}",
                                "run that run again, or remove its directory"]))
    for damage, (commands, says) in SUMMARY_REFUSALS.items():
        for entry in commands:
            cases.append(_case("summary", SUMMARY, damage, entry, SUMMARY_COMMANDS[entry],
                               [says]))
    for file in CIFAR_FILES:
        others = ["a_meta"] if file != "batches.meta" else ["a_batch"]
        for damage in [*EVERY_CUT, *others, "a_npy"]:
            cases.append(_case("cifar10", f"cifar/cifar-10-batches-py/{file}", damage, "prepare",
                               CIFAR_ARGS, [CIFAR_AGAIN]))
    for damage in [*EVERY_CUT, "a_summary", "a_batch"]:
        cases.append(_case("cifar10", "cifar_tar/cifar-10-python.tar.gz", damage, "prepare",
                           ["data=cifar10", "data.root={tmp}/cifar_tar",
                            "data.prepared_dir={tmp}/prepared"],
                           ["download cifar-10-python.tar.gz again"], label="archive"))
    for file, damages in IMAGENET_FILES.items():
        args = ["data=imagenet", f"data.root={{tmp}}/{file.split('/')[0]}", *PREP,
                "data.prepared_dir={tmp}/prepared"]
        for damage in damages:
            cases.append(_case("imagenet", file, damage, "prepare", args, []))
    for damage in ["empty", "cut_1", "random", "a_summary", "a_npy"]:
        cases.append(_case("claims", "claims/claims.yaml", damage, "report", ["{tmp}/study"],
                           ["restore it: git checkout -- ablations/claims.yaml"]))
    cases.append(_case("claims", "claims/claims.yaml", "number_in_words", "report",
                       ["{tmp}/study"], ["claims.yaml: lrn.delta_top1 must be a number or null, "
                                         "got 'one point four': restore it"]))
    cases.append(_case("claims", "claims/claims.yaml", "key_twice", "report", ["{tmp}/study"],
                       ["claims.yaml: key 'lrn' appears twice (lines", ": restore it"]))
    return cases


CASES = _table()


@pytest.fixture(scope="module")
def entries() -> dict[str, Callable]:
    return _entries()


RESULTS = {"summary.json", "stats.json", "report.md", "report.png", "inputs.json",
           "measurements.json"}


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _copy(world: Path, tmp: Path, *names: str) -> None:
    for name in names:
        shutil.copytree(world / name, tmp / name)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_file(case: Case, world: Path, entries: dict[str, Callable], tmp_path: Path,
                      data_dir: Path, capsys: pytest.CaptureFixture,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = tmp_path
    top = case.file.split("/")[0]
    _copy(world, tmp, top, *(["study"] if case.kind == "claims" else []))
    target = tmp / case.file
    DAMAGES[case.damage].apply(target, world)
    if case.kind == "claims":
        monkeypatch.setattr("alexnet.claims.CLAIMS_FILE", target)
    before = _files(tmp)
    capsys.readouterr()
    code = entries[case.entry](tmp, data_dir, [a.format(tmp=tmp) for a in case.args])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    (line,) = lines
    assert line.startswith("error: ") and str(target) in line, line
    for part in case.says:
        assert part.format(tmp=tmp) in line, line
    assert code == 2, line
    assert captured.out == ""
    made = [p for p in _files(tmp) - before
            if not any(part.endswith(".partial") for part in p.relative_to(tmp).parts)]
    assert not [p for p in made if p.name in RESULTS or p.suffix in (".ckpt", ".png", ".npy")]
    assert not (tmp / "prepared").exists() or case.kind == "prepared"


def test_the_table_covers_every_kind_and_damage() -> None:
    kinds = {c.kind for c in CASES}
    assert kinds == {"checkpoint", "prepared", "summary", "cifar10", "imagenet", "claims"}
    for kind in kinds:
        damages = {c.damage for c in CASES if c.kind == kind}
        assert {"empty", "cut_1", "random"} <= damages
        assert any(d.startswith("a_") for d in damages)
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("entry", list(SUMMARY_COMMANDS))
def test_two_runs_of_one_arm_and_seed_are_refused(entry: str, world: Path, tmp_path: Path,
                                                   entries: dict[str, Callable],
                                                   capsys: pytest.CaptureFixture) -> None:
    """A run copied beside itself (a sweep started twice into one folder) would replace its twin
    in every pairing, silently; the study commands name both. fig1 plots every run found then,
    each labelled, which hides nothing."""
    _copy(world, tmp_path, "study")
    seed = tmp_path / "study" / "none" / "lr0.01"
    shutil.copytree(seed / "seed1", seed / "seed1_again")
    capsys.readouterr()
    code = entries[entry](tmp_path, tmp_path, [a.format(tmp=tmp_path)
                                              for a in SUMMARY_COMMANDS[entry]])
    err = capsys.readouterr().err.strip()
    if entry == "figures":
        assert code == 0 and err == ""
        return
    assert code == 2
    assert err == (f"error: two runs of arm none, seed 1, lr 0.01: {seed / 'seed1'} and "
                   f"{seed / 'seed1_again'}; remove one (or keep each study in a sweep "
                   "directory of its own)")


def test_a_run_without_the_curves_metric_is_named(world: Path, tmp_path: Path,
                                                  entries: dict[str, Callable],
                                                  capsys: pytest.CaptureFixture) -> None:
    """A completed run with no epoch rows (or none holding the metric) is no curve: it is left
    out, with a note naming it, and listed in measurements.json, not dropped unsaid."""
    _copy(world, tmp_path, "study")
    target = tmp_path / SUMMARY
    _summary_edit(lambda s: s.update(history=[]))(target, world)
    out = tmp_path / "figure"
    capsys.readouterr()
    code = entries["curves"](tmp_path, tmp_path, ["curves", str(tmp_path / "study"), "--metric",
                                                  "train/top1_err", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err.strip().splitlines() == [
        f"note: {target} has no per-epoch train/top1_err in its history: left out of the curves"]
    measured = json.loads((out / "measurements.json").read_text())
    assert measured["left_out"] == [str(target)]
    assert measured["seeds_paired"] == {"tanh, lr 0.01": [2]}
    inputs = json.loads((out / "inputs.json").read_text())
    assert str(target.resolve()) not in [s["path"] for s in inputs["summaries"]]
    assert len(inputs["summaries"]) == 3


@pytest.mark.parametrize("tested", [False, True])
def test_a_run_without_test_errors_is_named_in_the_report(tested: bool, world: Path,
                                                          tmp_path: Path) -> None:
    """A completed run that records no test error (test=false; or its errors removed by hand)
    is left out of the deltas of a study of test errors, and the report's list of runs not
    counted says so and why (the report still reads every completed run)."""
    from alexnet.analysis.ablation_report import write_report

    _copy(world, tmp_path, "study")
    for path in sorted((tmp_path / "study").rglob("summary.json")):
        def edit(s: dict, path: Path = path) -> None:
            s["config"]["study"].pop("lrs")  # a study of test errors, not Fig. 1's
            s["config"]["test"] = tested
            if path == tmp_path / SUMMARY:
                s["final"].pop("test/top1_err")
        _summary_edit(edit)(path, world)
    md, _, study = write_report(tmp_path / "study")
    text = md.read_text()
    why = ("completed, but its summary.json records no test error (final test/top1_err)"
           if tested else "completed without a test (its config has test=false)")
    assert (f"## Runs not counted\n\n- `none` seed 1: {why}: left out of those deltas\n\nThe "
            "deltas below use only the seeds where both runs of a pair completed and tested (n "
            "says how many).") in text
    row = next(line for line in text.splitlines() if line.startswith("| `tanh`"))
    assert "| 1 |" in row and "n = 1, no interval" in row
    assert "Runs read: 4 completed summary.json files" in text and len(study.runs) == 4


def test_the_undamaged_world_is_read_without_complaint(world: Path) -> None:
    """The table's files, undamaged, pass the readers that refuse them damaged."""
    from alexnet.analysis.study import load_study
    from alexnet.claims import load_claims
    from alexnet.data import cifar10, imagenet
    from alexnet.data.datamodule import PreparedDataModule
    from alexnet.training.checkpoints import load_checkpoint

    assert load_checkpoint(world / CKPT)["optimizer_states"] == []
    data = PreparedDataModule(str(world / "prepared"), source="imagefolder", image_size=80,
                              crop_size=67)
    assert data.load_stats()["counts"]["train"]["total"] == 20
    assert len(load_study(world / "study").runs) == 4
    for root in ("cifar", "cifar_tar"):
        assert cifar10.find_cifar10(world / root)["classes"][0] == "airplane"
    assert "relu" in load_claims(world / "claims" / "claims.yaml")
    for root in ("imagenet_loc", "imagenet_devkit"):
        listing = imagenet.find_imagenet(world / root)
        assert len(listing.files["val"]) == 6 and listing.class_names[0] == f"words of {WNIDS[0]}"


# -- image files: a file that cannot be decoded is skipped and named (docs/data.md) ---------------
IMAGE = "images/cat/0.jpg"
IMAGE_ARGS = ["data=imagefolder", "data.root={tmp}/images", "data.image_size=32",
              "data.prepared_dir={tmp}/prepared", "progress=false", "workers=1"]


@pytest.mark.parametrize("damage", [*EVERY_CUT, "a_summary"])
def test_an_image_that_cannot_be_decoded_is_skipped_and_named(
        damage: str, world: Path, tmp_path: Path, data_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    _copy(world, tmp_path, "images")
    target = tmp_path / IMAGE
    DAMAGES[damage].apply(target, world)
    capsys.readouterr()
    cfg = compose_config("prepare", [f"paths.log_dir={tmp_path}/logs",
                                     *(a.format(tmp=tmp_path) for a in IMAGE_ARGS)],
                         tmp_path / "logs" / "run", data_dir)
    prepare_main()(cfg)  # completes
    captured = capsys.readouterr()
    assert (f"1 files could not be decoded and were skipped (listed under 'skipped' in "
            f"stats.json), e.g. {target}") in captured.out
    assert captured.out.splitlines()[-1].startswith("completed: ")
    stats = json.loads((tmp_path / "prepared" / "stats.json").read_text())
    assert [s["path"] for s in stats["skipped"]] == [str(target)]
    assert sum(c["total"] for c in stats["counts"].values()) == 7  # of 8 images


def test_a_split_of_which_no_image_can_be_decoded(world: Path, tmp_path: Path, data_dir: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    _copy(world, tmp_path, "images")
    for image in sorted((tmp_path / "images").rglob("*.jpg")):
        _random(image, world)
    capsys.readouterr()
    cfg = compose_config("prepare", [f"paths.log_dir={tmp_path}/logs",
                                     *(a.format(tmp=tmp_path) for a in IMAGE_ARGS)],
                         tmp_path / "logs" / "run", data_dir)
    with pytest.raises(SystemExit) as stopped:
        prepare_main()(cfg)
    (line,) = capsys.readouterr().err.splitlines()
    assert stopped.value.code == 2
    assert line.startswith(f"error: {tmp_path}/images: none of the ")
    assert f"images could be decoded (first: {tmp_path}/images/" in line
    assert not (tmp_path / "prepared").exists()  # the work so far stays in prepared.partial


# -- a study's earlier record: read by skip_completed, replaced by the run -----------------------
# A sweep started again (skip_completed=true) reads each run directory's summary.json to skip the
# runs that completed. A damaged one, or another file by that name, is no result to keep: the run
# is run again, with a note naming the file, and its own record replaces it.
EARLIER = {"json_list": b"[]\n", "json_string": b'"completed"\n',
           "config_not_a_mapping": b'{"task": "train", "status": "completed", "config": 3}\n'}


@pytest.mark.parametrize("damage", [*EVERY_CUT, "a_npy", *EARLIER])
def test_a_damaged_earlier_summary_is_run_again_with_a_note(
        damage: str, world: Path, tmp_path: Path, data_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    from alexnet.jobs.checks import completed_summary

    cfg = compose_config("train", [*TINY, "skip_completed=true"], tmp_path, data_dir)
    earlier = tmp_path / "summary.json"
    earlier.write_bytes(EARLIER.get(damage) or (world / SUMMARY).read_bytes())
    if damage not in EARLIER:
        DAMAGES[damage].apply(earlier, world)
    capsys.readouterr()
    assert completed_summary(earlier, cfg) is None
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"note: {earlier} is not a ") and line.endswith(
        "; running this run again")


def test_the_run_replaces_a_damaged_earlier_summary(world: Path, tmp_path: Path, data_dir: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    cfg = compose_config("train", [*TINY, "skip_completed=true", "trainer.max_epochs=1"],
                         tmp_path, data_dir)
    earlier = tmp_path / "summary.json"
    earlier.write_bytes((world / SUMMARY).read_bytes()[:100])
    capsys.readouterr()
    summary = train(cfg)
    assert f"note: {earlier} is not a readable summary.json" in capsys.readouterr().err
    assert summary["status"] == "completed"
    assert json.loads(earlier.read_text())["status"] == "completed"


@pytest.mark.parametrize("config", ["train", "eval"])
def test_a_directory_where_the_record_goes_is_refused_before_the_work(
        config: str, world: Path, tmp_path: Path, data_dir: Path, entries: dict[str, Callable],
        capsys: pytest.CaptureFixture) -> None:
    """summary.json is written after the work: a directory in its place would fail only then."""
    (tmp_path / "summary.json").mkdir()
    args = [*TINY] if config == "train" else [f"ckpt_path={world / CKPT}"]
    cfg = compose_config(config, args, tmp_path, data_dir)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        reports_user_errors(train if config == "train" else evaluate)(cfg)
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"error: {tmp_path}/summary.json is not a file, and the run writes its record "
                    "there: remove it, or choose another run directory (hydra.run.dir)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


# -- a config file of the user's: read by Hydra, before any of the suite's code ----------------
@pytest.mark.parametrize("content", [b"trainer: [unclosed\n  max_epochs: 1\n",
                                     bytes(range(256)) * 2, b"trainer:\n  max_epochs: 1\n  x"],
                         ids=["not_yaml", "random_bytes", "cut_short"])
def test_a_config_file_that_is_not_yaml(tmp_path: Path, content: bytes,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Hydra reads the config files before the suite's code runs; the entry point's run_command
    checks them first (exits.check_config_files), or Hydra's parser would end in a traceback."""
    from alexnet.exits import check_config_files

    broken = tmp_path / "conf" / "experiment" / "broken.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(content)
    argv = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "experiment=broken"]
    with pytest.raises(SystemExit) as stopped:
        check_config_files(argv, CONF)
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {broken}") and "not a valid YAML config file" in line


def test_the_entry_point_checks_config_files_before_hydra(tmp_path: Path, data_dir: Path) -> None:
    broken = tmp_path / "conf" / "experiment" / "broken.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(bytes(range(256)) * 2)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), "--cfg", "job",
         f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "experiment=broken",
         f"paths.log_dir={tmp_path}/logs", f"paths.data_dir={data_dir}"],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {broken}") and "not a valid YAML config file" in line
    assert not result.stdout and not (tmp_path / "logs").exists()


def test_a_claim_missing_from_claims_yaml_is_said_in_the_report(world: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """claims.yaml without the claim an arm's runs name: the report still compares what it has,
    and says which arm has no paper number because of it (not a silent "no number")."""
    import yaml

    from alexnet.analysis.ablation_report import write_report

    _copy(world, tmp_path, "study", "claims")
    claims = tmp_path / "claims" / "claims.yaml"
    entries = yaml.safe_load(claims.read_text())
    del entries["relu"]  # the claim the tanh arm tests
    claims.write_text(yaml.safe_dump(entries))
    monkeypatch.setattr("alexnet.claims.CLAIMS_FILE", claims)
    md, _, _ = write_report(tmp_path / "study")
    text = md.read_text()
    assert ("Arms that no claim of `ablations/claims.yaml` names (no paper number beside them):"
            "\n\n- `tanh` (its runs name the claim `relu`)") in text


@pytest.mark.parametrize("file", ["val_labels.npy", "val_images.npy", "mean_image.npy",
                                  "stats.json", "summary.json"])
def test_a_file_this_user_may_not_read_is_named_as_such(file: str, world: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that is there but may not be read (its permissions; root ignores them, so the
    refusal is made here by the reading call): one line saying so, not that it is damaged, and no
    command that would prepare the data or run the run again over it."""
    from alexnet.data.datamodule import PreparedDataModule
    from alexnet.exits import DataError, UserError
    from alexnet.run_record import read_runs

    _copy(world, tmp_path, "prepared", "study")
    path = (sorted((tmp_path / "study").rglob(file))[0] if file == "summary.json"
            else tmp_path / "prepared" / file)
    def refusing(real: Callable) -> Callable:
        def call(what: Path, *args: object, **kwargs: object) -> object:
            if Path(what) == path:
                raise PermissionError(13, "Permission denied", str(what))
            return real(what, *args, **kwargs)
        return call

    monkeypatch.setattr(np, "load", refusing(np.load))
    monkeypatch.setattr(Path, "read_text", refusing(Path.read_text))
    says = (f"cannot read {path}: permission denied; fix its permissions (or run as a user who "
            "may read it), then run the same command again")
    if file == "summary.json":
        with pytest.raises(UserError) as refused:
            read_runs(tmp_path / "study")
    else:
        data = PreparedDataModule(str(tmp_path / "prepared"), source="imagefolder",
                                  image_size=80, batch_size=4, crop_size=67, num_workers=0)
        with pytest.raises(DataError) as refused:
            data.prepare_data()
            data.setup("fit")
    assert str(refused.value) == says
