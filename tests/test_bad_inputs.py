"""Bad input, as a table: mistakes on the command line and in the configs, broken image folders and
prepared datasets, unusable checkpoints, signals and diverging numbers. Each must print exactly
one line, exit with its documented status (docs/long-runs.md), and leave nothing behind that
looks like a result: no completed summary.json, no checkpoint of a run that never trained, no
prepared dataset that looks complete.

The cases run in-process through the entry points' own wrapper (``reports_user_errors``), except
the one that Hydra itself meets first (an unwritable log directory), which runs the real command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    PREP,
    ROOT,
    TINY,
    compose_config,
    prepare_main,
    prepared_copy,
    write_image_classes,
)
from omegaconf import OmegaConf

from alexnet.exits import reports_user_errors
from alexnet.jobs.evaluate import evaluate
from alexnet.jobs.train import train

EXAMPLE_ROOT = "/path/to/images"


class Evil:
    """Unpickling this would create a file: a stand-in for code in a checkpoint from elsewhere."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@dataclass
class Case:
    id: str
    entry: str  # train | eval | prepare
    args: list[str]
    line: str  # the one line, with {tmp} (the case's directory) and {out} (its run directory)
    code: int
    setup: Callable[[Path, Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    stream: str = "err"


def _tiny_config(tmp: Path, data_dir: Path, *overrides: str) -> dict:
    cfg = compose_config("train", [*TINY, *overrides], tmp / "other", data_dir)
    return OmegaConf.to_container(cfg, resolve=True)


def _archive(path: Path) -> None:
    """A real (empty) gzipped tar archive at ``path``."""
    with tarfile.open(path, "w:gz"):
        pass


def _save(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


def _own_folder(folder: Path) -> None:
    """A folder of the user's own files, which no command may remove, beside images to prepare."""
    write_image_classes(folder.parent, {"cat": 4, "dog": 4})
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.txt").write_text("precious\n")


def _cifar_tree(tmp: Path, classes: int, test: bool) -> None:
    """tmp/images/train/<class>/ (and test/<class>/): a CIFAR-10-like tree of tiny images."""
    from PIL import Image

    for split in ("train", "test") if test else ("train",):
        for c in range(classes):
            folder = tmp / "images" / split / f"class{c}"
            folder.mkdir(parents=True)
            for k in range(3):
                Image.new("RGB", (32, 32), (k * 60, c * 20, 200)).save(folder / f"{k}.jpg")


def _tiny_checkpoint(tmp: Path, data_dir: Path, name: str, nan_in: str | None = None) -> None:
    """A checkpoint of the tiny net as src/train.py writes one, with NaN in one tensor if asked."""
    from hydra.utils import instantiate

    config = _tiny_config(tmp, data_dir)
    weights = instantiate(OmegaConf.create(config).model, num_classes=10).state_dict()
    if nan_in is not None:
        weights[nan_in].view(-1)[0] = float("nan")
    _save(tmp / name, {"alexnet_config": config,
                       "state_dict": {f"net.{k}": v for k, v in weights.items()}})


CASES = [
    # -- the command line and the configs ------------------------------------------------------
    Case("negative_lr", "train", ["optimizer.lr=-0.1"],
         "error: invalid configuration: optimizer.lr must be >= 0, got -0.1", 2),
    Case("momentum_one", "train", ["optimizer.momentum=1.0"],
         "error: invalid configuration: optimizer.momentum must be in [0, 1), got 1.0", 2),
    Case("zero_epochs", "train", ["trainer.max_epochs=0"],
         "error: invalid configuration: trainer.max_epochs must be at least 1 (or -1 with "
         "trainer.max_steps), got 0", 2),
    Case("lr_not_a_number", "train", ["optimizer.lr=fast"],
         "error: invalid configuration: optimizer.lr must be a number, got 'fast'", 2),
    Case("unknown_nonfinite_mode", "train", ["nonfinite=ignore"],
         "error: invalid configuration: nonfinite must be one of ['stop'], got 'ignore'", 2),
    Case("zero_batch", "train", ["data.batch_size=0"],
         "error: invalid configuration: data.batch_size must be at least 1, got 0", 2),
    Case("crop_larger_than_image", "train", ["data.crop_size=99"],
         "error: invalid configuration: data.crop_size must be between 1 and "
         "data.image_size=80, got 99", 2),
    Case("interpolation_of_nothing", "train", ["optimizer.lr=${{nope}}"],
         "error: invalid configuration: optimizer.lr: Interpolation key 'nope' not found", 2),
    Case("value_left_missing", "train", ["data.mean=???"],
         "error: invalid configuration: data.mean has no value (???): give data.mean=VALUE", 2),
    # Counts that are not whole, values that are not finite (nan passed every range check and
    # the run "diverged"), switches given as words, seeds numpy refuses.
    *[Case(f"fractional_{key.split('.')[-1]}", "train", [f"{key}={value}"],
           f"error: invalid configuration: {key} must be a whole number, got {value}", 2)
      for key, value in (("trainer.max_epochs", 1.5), ("data.batch_size", 4.5),
                         ("data.eval_batch_size", 2.5), ("model.fc_width", 256.5))],
    Case("odd_fc_width_in_two_columns", "train", ["model.fc_width=255"],
         "error: invalid configuration: fc_width must be a whole number of at least 2 and even "
         "(half of fc6 and fc7 in each column), got 255", 2),
    Case("zero_eval_batch", "train", ["data.eval_batch_size=0"],
         "error: invalid configuration: data.eval_batch_size must be at least 1 (or null: "
         "data.batch_size), got 0", 2),
    *[Case(f"{key.split('.')[-1]}_{value}", "train", [f"{key}={value}"],
           f"error: invalid configuration: {key} must be a finite number, got {value}", 2)
      for key, value in (("optimizer.lr", "nan"), ("optimizer.weight_decay", "inf"),
                         ("data.scale", "nan"))],
    *[Case(f"{key}_a_word", "train", [f"{key}=no"],
           f"error: invalid configuration: {key} must be true or false, got 'no'", 2)
      for key in ("test", "save_last", "skip_completed")],
    *[Case(f"seed_{name}", "train", [f"seed={value}"],
           "error: invalid configuration: seed must be a whole number from 0 to 4294967295 (or "
           f"null: a random one), got {shown}", 2)
      for name, value, shown in (("a_word", "abc", "'abc'"), ("negative", -1, -1),
                                 ("beyond_numpy", 2**32, 2**32))],
    Case("ablation_undone_by_an_override", "train", ["+ablation=no_lrn", "model.lrn=true"],
         "error: invalid configuration: +ablation=no_lrn sets model.lrn=false, but the "
         "configuration has model.lrn=true (an override after it): drop one of them", 2),
    Case("eval_checkpoint_a_list", "eval", ["ckpt_path=[a,b]"],
         "error: invalid configuration: ckpt_path must be a checkpoint's path, got ['a', 'b']", 2),
    Case("eval_checkpoint_last", "eval", ["ckpt_path=last"],
         "error: invalid configuration: ckpt_path=last resumes training (src/train.py); "
         "src/eval.py needs the checkpoint's path: logs/train/runs/<run>/checkpoints/last.ckpt", 2),
    # data=cifar10_folder is CIFAR-10's own tree: its test/ the test split, its 10 classes.
    Case("cifar10_folder_without_test", "prepare",
         ["data=cifar10_folder", "data.root={tmp}/images", "data.prepared_dir={tmp}/prepared"],
         "error: {tmp}/images has no test split from a test/<class>/ folder "
         "(data.test_folder_required=true): give the dataset's own tree", 2,
         setup=lambda tmp, d: _cifar_tree(tmp, classes=10, test=False)),
    Case("cifar10_folder_of_three_classes", "prepare",
         ["data=cifar10_folder", "data.root={tmp}/images", "data.prepared_dir={tmp}/prepared"],
         "error: {tmp}/images holds 3 classes, not the 10 of data.expected_classes: give the "
         "dataset's own tree", 2, setup=lambda tmp, d: _cifar_tree(tmp, classes=3, test=True)),
    Case("prepare_fractional_image_size", "prepare", ["data=imagefolder", "data.image_size=40.5"],
         "error: invalid configuration: data.image_size must be a whole number, got 40.5", 2),
    Case("prepare_interpolation_of_nothing", "prepare", ["data=imagefolder", "data.root=${{nope}}"],
         "error: invalid configuration: data.root: Interpolation key 'nope' not found", 2),
    # A prepared_dir is only ever replaced when it holds a prepared dataset: never the user's
    # own folder (the images themselves, say), force or not, nor a file.
    *[Case(f"prepared_dir_holds_other_files{'_force' if force else ''}", "prepare",
           ["data=imagefolder", "data.root={tmp}/images", "data.prepared_dir={tmp}/mine",
            *(["force=true"] if force else [])],
           "error: {tmp}/mine is not a prepared dataset (it holds 'sub' and 1 more): choose a "
           "new or empty folder for data.prepared_dir (nothing was changed)", 2,
           setup=lambda tmp, d: _own_folder(tmp / "mine")) for force in (False, True)],
    Case("prepared_dir_is_a_file", "prepare",
         ["data=imagefolder", "data.root={tmp}/images", "data.prepared_dir={tmp}/notes.txt"],
         "error: {tmp}/notes.txt is a file, not a folder: choose a new or empty folder for "
         "data.prepared_dir (nothing was changed)", 2,
         setup=lambda tmp, d: (write_image_classes(tmp, {"cat": 4, "dog": 4}),
                               (tmp / "notes.txt").write_text("mine\n"))),
    # src/prepare.py's settings, checked before any file is read (its messages name the key)
    Case("prepare_fraction_a_list", "prepare", ["data=imagefolder", "data.val_fraction=[0.1]"],
         "error: invalid configuration: data.val_fraction must be a number, got [0.1]", 2),
    Case("prepare_fraction_a_word", "prepare", ["data=imagefolder", "data.test_fraction=lots"],
         "error: invalid configuration: data.test_fraction must be a number, got 'lots'", 2),
    Case("prepare_fraction_of_one", "prepare", ["data=imagefolder", "data.val_fraction=1.0"],
         "error: invalid configuration: data.val_fraction must be in [0, 1), got 1.0", 2),
    *[Case(f"prepare_workers_{name}", "prepare", ["data=imagefolder", f"workers={value}"],
           "error: invalid configuration: workers must be a whole number >= 1 (or null: one per "
           f"CPU core), got {shown}", 2)
      for name, value, shown in (("zero", "0", "0"), ("negative", "-3", "-3"),
                                 ("a_word", "many", "'many'"))],
    Case("prepare_force_a_word", "prepare", ["data=imagefolder", "force=yes please"],
         "error: invalid configuration: force must be true or false, got 'yes please'", 2),
    Case("eval_without_checkpoint", "eval", [],
         "error: no checkpoint given: python src/eval.py ckpt_path=PATH/TO/FILE.ckpt", 2),
    # -- checkpoints ---------------------------------------------------------------------------
    Case("resume_last_without_runs", "train", ["ckpt_path=last"],
         "error: ckpt_path=last: no train run under {tmp}/logs has a checkpoints/last.ckpt to "
         "resume from", 2),
    Case("resume_missing_file", "train", ["ckpt_path={tmp}/gone.ckpt"],
         "error: checkpoint to resume from not found: {tmp}/gone.ckpt", 2),
    Case("resume_a_directory", "train", ["ckpt_path={tmp}"],
         "error: {tmp} is not a checkpoint file", 2),
    Case("resume_garbage", "train", ["ckpt_path={tmp}/garbage.ckpt"],
         "error: {tmp}/garbage.ckpt is not a readable checkpoint (not a file torch.save wrote)", 2,
         setup=lambda tmp, d: (tmp / "garbage.ckpt").write_bytes(b"not a checkpoint at all")),
    Case("resume_truncated", "train", ["ckpt_path={tmp}/cut.ckpt"],
         "error: {tmp}/cut.ckpt is not a readable checkpoint (PytorchStreamReader failed "
         "reading zip archive: failed finding central directory)", 2,
         setup=lambda tmp, d: (_save(tmp / "full.ckpt", {"w": torch.zeros(1000)}),
                               (tmp / "cut.ckpt").write_bytes(
                                   (tmp / "full.ckpt").read_bytes()[:900]))),
    Case("resume_code_in_checkpoint", "train", ["ckpt_path={tmp}/evil.ckpt"],
         "error: refused {tmp}/evil.ckpt: it needs unpickling arbitrary Python objects, which "
         "could run code; only checkpoints of tensors and plain containers are loaded", 2,
         setup=lambda tmp, d: _save(tmp / "evil.ckpt", {"alexnet_config": {"x": 1},
                                                         "payload": Evil(tmp / "ran")})),
    Case("resume_foreign_checkpoint", "train", ["ckpt_path={tmp}/foreign.ckpt"],
         "error: {tmp}/foreign.ckpt is not a checkpoint written by src/train.py (no "
         "alexnet_config)", 2,
         setup=lambda tmp, d: _save(tmp / "foreign.ckpt", {"state_dict": {}})),
    Case("resume_weights_only_checkpoint", "train", ["ckpt_path={tmp}/weights.ckpt"],
         "error: {tmp}/weights.ckpt holds weights only (no optimizer or loop state): it cannot "
         "be resumed; evaluate it with python src/eval.py ckpt_path={tmp}/weights.ckpt", 2,
         setup=lambda tmp, d: _save(tmp / "weights.ckpt", {
             "alexnet_config": _tiny_config(tmp, d), "state_dict": {}})),
    Case("resume_other_configuration", "train", ["ckpt_path={tmp}/tanh.ckpt"],
         "error: {tmp}/tanh.ckpt was written with another configuration (differs in "
         "model.activation): resume with the overrides of the run that wrote it", 2,
         setup=lambda tmp, d: _save(tmp / "tanh.ckpt", {
             "alexnet_config": _tiny_config(tmp, d, "model.activation=tanh"),
             "state_dict": {}, "optimizer_states": [], "loops": {}})),
    Case("eval_missing_file", "eval", ["ckpt_path={tmp}/gone.ckpt"],
         "error: checkpoint not found: {tmp}/gone.ckpt", 2),
    Case("eval_code_in_checkpoint", "eval", ["ckpt_path={tmp}/evil.ckpt"],
         "error: refused {tmp}/evil.ckpt: it needs unpickling arbitrary Python objects, which "
         "could run code; only checkpoints of tensors and plain containers are loaded", 2,
         setup=lambda tmp, d: _save(tmp / "evil.ckpt", {"payload": Evil(tmp / "ran")})),
    Case("eval_random_bytes", "eval", ["ckpt_path={tmp}/random.ckpt"],
         "error: {tmp}/random.ckpt is not a readable checkpoint (not a file torch.save wrote)", 2,
         # seed 17: bytes on which the weights-only unpickler raises IndexError
         setup=lambda tmp, d: (tmp / "random.ckpt").write_bytes(
             np.random.default_rng(17).integers(0, 256, 2000, dtype=np.uint8).tobytes())),
    Case("eval_nan_weights", "eval", ["ckpt_path={tmp}/nan.ckpt"],
         "error: {tmp}/nan.ckpt holds non-finite weights (net.conv2.weight): the run it comes "
         "from diverged; evaluate or resume from an earlier checkpoint", 2,
         setup=lambda tmp, d: _tiny_checkpoint(tmp, d, "nan.ckpt", nan_in="conv2.weight")),
    Case("eval_config_not_a_configuration", "eval", ["ckpt_path={tmp}/config.ckpt"],
         "error: {tmp}/config.ckpt is not a checkpoint written by src/train.py (its "
         "alexnet_config is not a configuration with a model and data)", 2,
         setup=lambda tmp, d: _save(tmp / "config.ckpt", {"alexnet_config": "experiment=demo",
                                                           "state_dict": {}})),
    Case("eval_batch_size_zero", "eval", ["ckpt_path={tmp}/run.ckpt", "batch_size=0"],
         "error: invalid configuration: batch_size must be a whole number >= 1 (or null: the "
         "training run's), got 0", 2,
         setup=lambda tmp, d: _tiny_checkpoint(tmp, d, "run.ckpt")),
    Case("eval_ten_crop_not_a_boolean", "eval", ["ckpt_path={tmp}/run.ckpt", "ten_crop=maybe"],
         "error: invalid configuration: ten_crop must be true or false, got 'maybe'", 2,
         setup=lambda tmp, d: _tiny_checkpoint(tmp, d, "run.ckpt")),
    Case("resume_random_bytes", "train", ["ckpt_path={tmp}/random.ckpt"],
         "error: {tmp}/random.ckpt is not a readable checkpoint (not a file torch.save wrote)", 2,
         setup=lambda tmp, d: (tmp / "random.ckpt").write_bytes(
             np.random.default_rng(17).integers(0, 256, 2000, dtype=np.uint8).tobytes())),
    # -- prepared datasets ---------------------------------------------------------------------
    Case("prepared_array_cut_short", "train",
         ["data=imagefolder", *PREP, "data.prepared_dir={tmp}/prepared"],
         "error: {tmp}/prepared/train_images.npy: the train split is cut short or damaged (mmap "
         "length is greater than file size); to prepare it: python src/prepare.py data=imagefolder "
         f"data.root={EXAMPLE_ROOT} data.image_size=80 data.val_fraction=0.1 "
         "data.test_fraction=0.1 data.prepared_dir={tmp}/prepared force=true", 2,
         setup=lambda tmp, d: os.truncate(prepared_copy(tmp, d) / "train_images.npy", 1000)),
    Case("prepared_missing", "train",
         ["data=imagefolder", *PREP, "data.prepared_dir={tmp}/prepared"],
         "error: prepared dataset not found: {tmp}/prepared does not exist; to prepare it: "
         f"python src/prepare.py data=imagefolder data.root={EXAMPLE_ROOT} data.image_size=80 "
         "data.val_fraction=0.1 data.test_fraction=0.1 data.prepared_dir={tmp}/prepared", 2),
    Case("prepared_left_partial", "train",
         ["data=imagefolder", *PREP, "data.prepared_dir={tmp}/prepared"],
         "error: prepared dataset not found: {tmp}/prepared does not exist; to prepare it: "
         f"python src/prepare.py data=imagefolder data.root={EXAMPLE_ROOT} data.image_size=80 "
         "data.val_fraction=0.1 data.test_fraction=0.1 data.prepared_dir={tmp}/prepared", 2,
         setup=lambda tmp, d: prepared_copy(tmp, d).rename(tmp / "prepared.partial")),
    Case("prepared_without_stats", "train",
         ["data=imagefolder", *PREP, "data.prepared_dir={tmp}/prepared"],
         "error: {tmp}/prepared is not a prepared dataset: stats.json is missing; to prepare "
         f"it: python src/prepare.py data=imagefolder data.root={EXAMPLE_ROOT} "
         "data.image_size=80 data.val_fraction=0.1 data.test_fraction=0.1 "
         "data.prepared_dir={tmp}/prepared", 2,
         setup=lambda tmp, d: (prepared_copy(tmp, d) / "stats.json").unlink()),
    Case("prepared_corrupt_stats", "train",
         ["data=imagefolder", *PREP, "data.prepared_dir={tmp}/prepared"],
         "error: {tmp}/prepared/stats.json is unreadable: Expecting property name enclosed in "
         "double quotes: line 1 column 2 (char 1); to prepare it: python src/prepare.py "
         f"data=imagefolder data.root={EXAMPLE_ROOT} data.image_size=80 data.val_fraction=0.1 "
         "data.test_fraction=0.1 data.prepared_dir={tmp}/prepared force=true", 2,
         setup=lambda tmp, d: (prepared_copy(tmp, d) / "stats.json").write_text("{oops")),
    Case("prepared_other_image_size", "train",
         ["data=imagefolder", "data.image_size=96", "data.crop_size=67",
          "data.prepared_dir={tmp}/prepared"],
         "error: {tmp}/prepared holds 80x80 images but the configuration expects 96x96: "
         "prepare it again or set data.image_size=80; to prepare it: python src/prepare.py "
         f"data=imagefolder data.root={EXAMPLE_ROOT} data.image_size=96 data.val_fraction=0.1 "
         "data.test_fraction=0.1 data.prepared_dir={tmp}/prepared force=true", 2,
         setup=lambda tmp, d: prepared_copy(tmp, d)),
    # -- image files ---------------------------------------------------------------------------
    Case("images_root_missing", "prepare",
         ["data=imagefolder", "data.root={tmp}/nowhere", "data.prepared_dir={tmp}/prepared"],
         "error: data.root={tmp}/nowhere does not exist", 2),
    Case("images_root_an_archive", "prepare",
         ["data=cifar10_folder", "data.root={tmp}/CIFAR-10-images.tar.gz",
          "data.prepared_dir={tmp}/prepared"],
         "error: data.root={tmp}/CIFAR-10-images.tar.gz is an archive, not a folder: extract it "
         "(mkdir DIR && tar -xf {tmp}/CIFAR-10-images.tar.gz -C DIR) and pass the folder it makes",
         2, setup=lambda tmp, d: _archive(tmp / "CIFAR-10-images.tar.gz")),
    Case("imagenet_root_a_zip", "prepare",
         ["data=imagenet", "data.root={tmp}/ILSVRC2012.zip", "data.prepared_dir={tmp}/prepared"],
         "error: data.root={tmp}/ILSVRC2012.zip is an archive, not a folder: extract it "
         "(unzip {tmp}/ILSVRC2012.zip -d DIR) and pass the folder it makes",
         2, setup=lambda tmp, d: (tmp / "ILSVRC2012.zip").write_bytes(b"PK\x05\x06" + bytes(18))),
    Case("cifar10_root_an_archive_of_something_else", "prepare",
         ["data=cifar10", "data.root={tmp}/cifar-10-python.tar.gz",
          "data.prepared_dir={tmp}/prepared"],
         "error: {tmp}/cifar-10-python.tar.gz does not hold CIFAR-10's data_batch_1, "
         "data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch", 2,
         setup=lambda tmp, d: _archive(tmp / "cifar-10-python.tar.gz")),
    Case("cifar10_root_a_file_that_is_no_archive", "prepare",
         ["data=cifar10", "data.root={tmp}/cifar-10-python.tar.gz",
          "data.prepared_dir={tmp}/prepared"],
         "error: data.root={tmp}/cifar-10-python.tar.gz is not a readable tar.gz archive (empty, "
         "cut short, damaged or another file): download cifar-10-python.tar.gz again", 2,
         setup=lambda tmp, d: (tmp / "cifar-10-python.tar.gz").write_bytes(b"not gzip")),
    Case("images_empty_class", "prepare",
         ["data=imagefolder", "data.root={tmp}/images", "data.prepared_dir={tmp}/prepared"],
         "error: class folder {tmp}/images/dog is empty: expected image files (.jpg, .jpeg, "
         ".png, .ppm, .bmp, .pgm, .tif, .tiff, .webp)", 2,
         setup=lambda tmp, d: (write_image_classes(tmp, {"cat": 3}),
                               (tmp / "images" / "dog").mkdir())),
    Case("images_one_class", "prepare",
         ["data=imagefolder", "data.root={tmp}/images", "data.prepared_dir={tmp}/prepared"],
         "error: {tmp}/images holds one class (cat): a classifier needs at least two", 2,
         setup=lambda tmp, d: write_image_classes(tmp, {"cat": 4})),
    Case("images_link_loop", "prepare",
         ["data=imagefolder", "data.root={tmp}/images", "data.prepared_dir={tmp}/prepared"],
         "error: {tmp}/images/cat/loop.jpg is a symbolic link loop (following it leads back to "
         "it): remove it, or point it at an image", 2,
         setup=lambda tmp, d: (write_image_classes(tmp, {"cat": 3, "dog": 3}),
                               (tmp / "images" / "cat" / "loop.jpg").symlink_to("loop.jpg"))),
    # -- signals and numbers: real signals to this process, real divergence --------------------
    Case("sigterm_mid_epoch", "train", ["test=false"],
         "interrupted at epoch 0 step 3 -> {out}; resume with: python src/train.py "
         "ckpt_path={out}/checkpoints/last.ckpt", 128 + signal.SIGTERM,
         env={"ALEXNET_SELF_SIGNAL": "TERM@3"}),
    Case("sigint_mid_epoch", "train", ["test=false"],
         "interrupted at epoch 0 step 2 -> {out}; resume with: python src/train.py "
         "ckpt_path={out}/checkpoints/last.ckpt", 128 + signal.SIGINT,
         env={"ALEXNET_SELF_SIGNAL": "INT@2"}),
    Case("sigusr1_mid_epoch", "train", ["test=false"],
         "interrupted at epoch 0 step 1 -> {out}; resume with: python src/train.py "
         "ckpt_path={out}/checkpoints/last.ckpt", 128 + signal.SIGUSR1,
         env={"ALEXNET_SELF_SIGNAL": "USR1@1"}),
    *[Case(f"self_signal_{name}", "train", [],
           f"error: ALEXNET_SELF_SIGNAL={value}: expected SIGNAL@STEP, a signal's name and an "
           "optimizer step >= 1 (TERM@5); it is a test hook: unset it", 2,
           env={"ALEXNET_SELF_SIGNAL": value})
      for name, value in (("misspelt", "TREM@2"), ("without_step", "TERM"),
                          ("step_zero", "TERM@0"), ("not_a_signal", "SIG_DFL@1"))],
    Case("loss_diverges", "train", ["optimizer.lr=1e9", "test=false"],
         "diverged at epoch 0 step 1 (training loss nan) -> {out}", 3),
    # Read every 3 steps: the loss of step 1 is found at step 2, the third.
    Case("loss_diverges_read_every_3", "train",
         ["optimizer.lr=1e9", "test=false", "nonfinite_every=3"],
         "diverged at epoch 0 step 2 (training loss nan) -> {out}", 3),
    Case("dropout_a_word", "train", ["model.dropout=high"],
         "error: invalid configuration: model.dropout must be a number, got 'high'", 2),
    Case("image_size_a_word", "train", ["data.image_size=big"],
         "error: invalid configuration: data.image_size must be a number, got 'big'", 2),
    Case("nonfinite_every_zero", "train", ["nonfinite_every=0"],
         "error: invalid configuration: nonfinite_every must be a whole number of steps >= 1, "
         "got 0", 2),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    tmp, out = tmp_path, tmp_path / "logs" / "run"
    if case.setup is not None:
        case.setup(tmp, data_dir)
    capsys.readouterr()
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    args = [a.format(tmp=tmp) for a in case.args]
    config = {"train": "train", "eval": "eval", "prepare": "prepare"}[case.entry]
    base = TINY if case.entry == "train" else ["progress=false"] if case.entry == "prepare" else []
    if "data=imagefolder" in args and case.entry == "train":  # no generator settings there
        base = [a for a in TINY if not a.startswith(("data.train_per", "data.val_per"))]
    cfg = compose_config(config, [*base, f"paths.log_dir={tmp}/logs", *args], out, data_dir)
    run = {"train": reports_user_errors(train), "eval": reports_user_errors(evaluate),
           "prepare": prepare_main()}[case.entry]
    with pytest.raises(SystemExit) as stopped:
        run(cfg)
    captured = capsys.readouterr()
    text = captured.err if case.stream == "err" else captured.out
    lines = [line for line in text.splitlines() if line.strip()]
    expected = case.line.format(tmp=tmp, out=out)
    if case.code == 2:  # a mistake found before any work: that line and nothing else
        assert len(lines) == 1, lines
    assert lines, text
    assert lines[-1] == expected
    assert stopped.value.code == case.code
    assert "Traceback" not in captured.err
    _assert_nothing_looks_like_a_result(tmp, out, case)
    if case.id.startswith("prepared_dir_"):  # the user's files are where they were, alone
        kept = ["images", "notes.txt" if case.id.endswith("a_file") else "mine"]
        assert sorted(p.name for p in tmp.iterdir() if p.name != "logs") == kept
        if "mine" in kept:
            assert sorted(p.name for p in (tmp / "mine").iterdir()) == ["sub", "thesis.txt"]


def _assert_nothing_looks_like_a_result(tmp: Path, out: Path, case: Case) -> None:
    for path in tmp.rglob("summary.json"):
        assert json.loads(path.read_text())["status"] != "completed", path
    assert not (tmp / "ran").exists()  # the checkpoint's code never ran
    assert not (tmp / "prepared" / "stats.json").exists() or case.id.startswith("prepared_")
    ckpts = sorted(p.name for p in out.rglob("*.ckpt")) if out.exists() else []
    if case.code > 128:  # an interrupted run keeps exactly the checkpoint to resume from
        assert ckpts == ["last.ckpt"]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "interrupted"
        assert summary["resume"]["checkpoint"] == str(out / "checkpoints" / "last.ckpt")
    else:
        assert ckpts == [], ckpts
    if case.code == 3:
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "diverged"
        assert summary["diverged"]["step"] == (2 if case.id.endswith("every_3") else 1)
    assert not list(tmp.rglob(".*.partial"))  # no half-written checkpoint


def test_unwritable_log_directory(tmp_path: Path, data_dir: Path) -> None:
    """Met by Hydra before the run starts: one line, exit status 1, nothing written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), f"paths.log_dir={blocker}/logs",
         f"paths.data_dir={data_dir}"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot write the run directory {blocker}/logs/train/runs/")
    assert line.endswith(": Not a directory"), line
    assert list(tmp_path.iterdir()) == [blocker]


def test_the_table_is_large_enough() -> None:
    assert len(CASES) + 1 >= 20
    assert np.unique([c.entry for c in CASES]).size == 3


def test_a_checkpoint_of_another_network_is_said_in_a_short_line(
        tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """Weights of the two-column net under a config that names the one-column net: the first
    misfit tensor and how many more, not PyTorch's kilobytes listing every tensor."""
    _tiny_checkpoint(tmp_path, data_dir, "two_columns.ckpt")
    checkpoint = torch.load(tmp_path / "two_columns.ckpt", weights_only=True)
    checkpoint["alexnet_config"]["model"]["columns"] = 1
    torch.save(checkpoint, tmp_path / "named_one_column.ckpt")
    cfg = compose_config("eval", [f"ckpt_path={tmp_path / 'named_one_column.ckpt'}",
                                  f"paths.log_dir={tmp_path}/logs"], tmp_path / "out", data_dir)
    with pytest.raises(SystemExit) as stopped:
        reports_user_errors(evaluate)(cfg)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(line) < 400, line
    assert line == (f"error: cannot evaluate: {tmp_path / 'named_one_column.ckpt'} does not fit "
                    "the dataset or model it names: size mismatch for net.conv1.weight: the "
                    "checkpoint's [96, 3, 11, 11] against the network's [48, 3, 11, 11] (and 7 "
                    "more)")
