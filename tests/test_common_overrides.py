"""The overrides a Lightning and Hydra user types first, as a table: each one either works and
changes what it says, or stops with one clear line. Every row trains the tiny configuration for
one epoch in-process (alexnet.jobs.train.train) and looks at the trainer it built and what the run
wrote."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import CONF, TINY, compose_config, run_entry_point, train_keeping_the_run
from hydra.errors import ConfigCompositionException
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
    ProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import OmegaConf

import alexnet.jobs.train as train_job
from alexnet.exits import UserError
from alexnet.jobs.checks import completed_summary
from alexnet.run_record import comparable, flatten_config

# TINY without its two progress-bar lines: the rows below choose the bar themselves.
BASE = [o for o in TINY if "progress_bar" not in o] + [
    "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]


@dataclass
class Run:
    trainer: L.Trainer
    summary: dict[str, Any]
    out: Path
    stdout: str

    def callbacks(self, kind: type) -> list[L.Callback]:
        return [c for c in self.trainer.callbacks if isinstance(c, kind)]

    def checkpoints(self) -> list[Path]:
        return sorted(self.out.rglob("*.ckpt"))


def no_progress_bar(run: Run) -> None:
    assert not run.callbacks(ProgressBar) and run.trainer.progress_bar_callback is None


def no_checkpoint(run: Run) -> None:
    assert not run.callbacks(ModelCheckpoint) and run.checkpoints() == []
    assert run.summary["checkpoints"] == {"best": None, "last": None}
    # tested all the same, on the weights training left, and the record and last line say so
    assert run.summary["evaluation"]["checkpoint_tested"] is None
    assert run.summary["final"]["test/top1_err"] is not None
    assert "(test split: test, last weights)" in run.stdout


def best_checkpoint_tested(run: Run) -> None:
    best = run.summary["checkpoints"]["best"]
    assert best and Path(best).is_file()
    assert run.summary["evaluation"]["checkpoint_tested"] == best
    assert "last weights" not in run.stdout


def lightning_checkpoint(run: Run) -> None:
    """Without the configured ModelCheckpoint Lightning adds its own (the last epoch's)."""
    (checkpoint,) = run.callbacks(ModelCheckpoint)
    assert checkpoint.monitor is None
    best_checkpoint_tested(run)


def attribute(name: str, value: Any) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert getattr(run.trainer, name) == value, (name, getattr(run.trainer, name))
    return check


def precision_32(run: Run) -> None:
    assert run.trainer.precision == "32-true"
    assert run.summary["precision"] == {"precision": "32", "why": "set by the configuration"}


def no_project_callbacks(run: Run) -> None:
    assert not run.callbacks(LearningRateMonitor)
    assert not any(type(c).__module__.startswith("alexnet.callbacks.wandb_media")
                   for c in run.trainer.callbacks)


def csv_metrics(run: Run) -> None:
    assert [type(x) for x in run.trainer.loggers] == [CSVLogger]
    assert (run.out / "csv" / "metrics.csv").is_file()


def tensorboard_events(run: Run) -> None:
    assert [type(x) for x in run.trainer.loggers] == [TensorBoardLogger]
    assert list((run.out / "tensorboard").rglob("events.out.tfevents.*"))


def no_logger(run: Run) -> None:
    assert run.trainer.loggers == [] and not (run.out / "csv").exists()


def both(*checks: Callable[[Run], None]) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        for c in checks:
            c(run)
    return check


# override(s) -> what it must change. The default callbacks hold a progress bar and a
# ModelCheckpoint, so the two trainer switches are the rows that once stopped the run.
WORKS: dict[str, tuple[list[str], Callable[[Run], None]]] = {
    "enable_progress_bar=false": (["trainer.enable_progress_bar=false"], no_progress_bar),
    "enable_checkpointing=false": (["trainer.enable_checkpointing=false"], no_checkpoint),
    "both switches": (["trainer.enable_progress_bar=false", "trainer.enable_checkpointing=false"],
                      both(no_progress_bar, no_checkpoint)),
    "the defaults": ([], both(best_checkpoint_tested,
                              lambda run: run.callbacks(ProgressBar) or pytest.fail("no bar"))),
    "log_every_n_steps=1": (["trainer.log_every_n_steps=1"], attribute("log_every_n_steps", 1)),
    "devices=1": (["trainer.devices=1"], attribute("num_devices", 1)),
    "precision=32": (["trainer.precision=32"], precision_32),
    "limit_train_batches=1": (["trainer.limit_train_batches=1"],
                              attribute("num_training_batches", 1)),
    "limit_test_batches=1": (["trainer.limit_test_batches=1"], attribute("num_test_batches", [1])),
    "max_steps=1": (["trainer.max_steps=1"], attribute("global_step", 1)),
    "fast_dev_run=true": (["trainer.fast_dev_run=true"],
                          lambda run: run.summary["evaluation"]["checkpoint_tested"] is None
                          or pytest.fail("fast_dev_run keeps no checkpoint")),
    "+enable_model_summary=false": (["+trainer.enable_model_summary=false"],
                                    lambda run: not run.callbacks(ModelSummary)
                                    or pytest.fail("a model summary")),
    "+gradient_clip_val=1": (["+trainer.gradient_clip_val=1.0"],
                             attribute("gradient_clip_val", 1.0)),
    "callbacks=none": (["callbacks=none"], both(no_project_callbacks, lightning_checkpoint)),
    "callbacks=none, no checkpointing": (
        ["callbacks=none", "trainer.enable_checkpointing=false"],
        both(no_project_callbacks, no_checkpoint)),
    "~callbacks.progress_bar": (["~callbacks.progress_bar", "trainer.enable_progress_bar=false"],
                                no_progress_bar),
    "~callbacks.model_checkpoint": (["~callbacks.model_checkpoint"], lightning_checkpoint),
    "callbacks.progress_bar=null": (["callbacks.progress_bar=null",
                                     "trainer.enable_progress_bar=false"], no_progress_bar),
    "callbacks=study": (["callbacks=study"], best_checkpoint_tested),
    "logger=csv": (["logger=csv"], csv_metrics),
    "logger=tensorboard": (["logger=tensorboard"], tensorboard_events),
    "logger=none": (["logger=none"], no_logger),
    "~logger": (["~logger"], no_logger),
}


def run_tiny(overrides: list[str], out: Path, data_dir: Path,
             capsys: pytest.CaptureFixture[str]) -> Run:
    cfg = compose_config("train", [*BASE, *overrides], out, data_dir)
    summary, built = train_keeping_the_run(cfg)
    assert summary["status"] == "completed"
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    return Run(built.trainer, summary, out, capsys.readouterr().out)


@pytest.mark.parametrize("name", list(WORKS))
def test_a_common_override_works(name: str, tmp_path: Path, data_dir: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    overrides, check = WORKS[name]
    check(run_tiny(overrides, tmp_path / "run", data_dir, capsys))


def test_a_trainer_key_the_config_lacks_names_the_plus_fix(tmp_path: Path) -> None:
    """Hydra's own message, before anything runs: the key, and the `+` spelling that adds it."""
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("train", ["trainer.enable_model_summary=false"], tmp_path, tmp_path)
    assert "To append to your config use +trainer.enable_model_summary=false" in str(err.value)


def test_gpus_on_a_machine_without_one_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = compose_config("train", [*BASE, "trainer.accelerator=gpu", "trainer.devices=2"],
                         tmp_path, data_dir)
    with pytest.raises(UserError, match=r"^invalid configuration: trainer.accelerator=gpu but "
                                        r"this machine has no GPU: use trainer.accelerator=cpu"):
        train_job.train(cfg)
    assert not (tmp_path / "summary.json").exists()


def test_a_run_recorded_before_the_new_trainer_keys_still_counts_as_completed(
        tmp_path: Path, data_dir: Path) -> None:
    """trainer.enable_checkpointing and limit_test_batches joined conf/trainer after studies had
    completed: a summary without them, at the values that do what their absence did, is the same
    configuration (skip_completed skips it); at another value it is not."""
    from omegaconf import OmegaConf

    cfg = compose_config("train", [*BASE, "skip_completed=true"], tmp_path, data_dir)
    recorded = OmegaConf.to_container(cfg, resolve=True)
    for key in ("enable_checkpointing", "limit_test_batches"):
        del recorded["trainer"][key]
    (tmp_path / "summary.json").write_text(json.dumps({"task": "train", "status": "completed",
                                                       "final": {"val/top1_err": 0.5},
                                                       "config": recorded}))
    assert completed_summary(tmp_path / "summary.json", cfg) is not None
    # and a study that mixes runs from before and after them is not refused as mixed
    current = OmegaConf.to_container(cfg, resolve=True)
    assert comparable(flatten_config(recorded)) == comparable(flatten_config(current))
    changed = compose_config("train", [*BASE, "skip_completed=true",
                                       "trainer.enable_checkpointing=false"], tmp_path, data_dir)
    with pytest.raises(UserError, match=r"differs in trainer.enable_checkpointing\)"):
        completed_summary(tmp_path / "summary.json", changed)


def test_a_run_recorded_before_model_fc_width_is_the_paper_width(tmp_path: Path,
                                                                  data_dir: Path) -> None:
    """model.fc_width joined conf/model after the committed studies: their summaries and
    checkpoints, without it, are the paper's 4096 (skipped as completed, resumable); a narrower
    net is another configuration."""
    from alexnet.models.alexnet import HIDDEN_FC
    from alexnet.run_record import ADDED_KEYS
    from alexnet.training.checkpoints import config_differences

    paper = [o for o in BASE if not o.startswith("model.fc_width")]
    cfg = compose_config("train", [*paper, "skip_completed=true"], tmp_path, data_dir)
    assert cfg.model.fc_width == HIDDEN_FC == ADDED_KEYS["model.fc_width"] == 4096
    recorded = OmegaConf.to_container(cfg, resolve=True)
    del recorded["model"]["fc_width"]
    (tmp_path / "summary.json").write_text(json.dumps({"task": "train", "status": "completed",
                                                       "final": {"val/top1_err": 0.5},
                                                       "config": recorded}))
    assert completed_summary(tmp_path / "summary.json", cfg) is not None
    current = OmegaConf.to_container(cfg, resolve=True)
    assert config_differences(recorded, current) == []
    narrow = compose_config("train", [*paper, "skip_completed=true", "model.fc_width=256"],
                            tmp_path, data_dir)
    assert config_differences(recorded, OmegaConf.to_container(narrow, resolve=True)) == [
        "model.fc_width"]
    with pytest.raises(UserError, match=r"differs in model.fc_width\)"):
        completed_summary(tmp_path / "summary.json", narrow)


def test_a_cifar10_folder_run_recorded_before_its_layout_checks_is_the_same_run(
        tmp_path: Path, data_dir: Path) -> None:
    """data.expected_classes and data.test_folder_required check the tree and change nothing a
    run computes: the committed CIFAR-10 studies, recorded before them, still count as completed
    (skip_completed), and their checkpoints still resume."""
    from alexnet.training.checkpoints import config_differences

    cfg = compose_config("train", ["experiment=study_fig1_cifar10_jpeg", "skip_completed=true",
                                   f"data.prepared_dir={tmp_path}/prepared"], tmp_path, data_dir)
    recorded = OmegaConf.to_container(cfg, resolve=True)
    assert (recorded["data"]["expected_classes"], recorded["data"]["test_folder_required"]) == (
        10, True)
    for key in ("expected_classes", "test_folder_required"):
        del recorded["data"][key]
    (tmp_path / "summary.json").write_text(json.dumps({
        "task": "train", "status": "completed", "seed": 1, "final": {"val/top1_err": 0.5},
        "config": recorded}))
    assert completed_summary(tmp_path / "summary.json", cfg) is not None
    assert config_differences(recorded, OmegaConf.to_container(cfg, resolve=True)) == []


@pytest.mark.parametrize("arg, instead", [("logger=null", "logger=none or ~logger"),
                                          ("callbacks=null", "callbacks=none or ~callbacks"),
                                          ("scheduler=null", "scheduler=none or ~scheduler")])
def test_a_group_set_to_null_is_one_line(arg: str, instead: str, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Hydra itself stops on GROUP=null with a traceback; the entry point's run_command says
    what removes a group instead, before Hydra (the entry point's main) starts."""
    from alexnet.exits import run_command

    started = []
    monkeypatch.setattr(sys, "argv", ["train.py", arg])
    with pytest.raises(SystemExit) as stopped:
        run_command(lambda: started.append(True), CONF)
    assert stopped.value.code == 2 and not started
    assert capsys.readouterr().err.strip() == (
        f"error: {arg}: a config group cannot be null; {instead} removes it")


def test_the_entry_point_refuses_a_null_group_before_hydra(tmp_path: Path,
                                                           data_dir: Path) -> None:
    result = run_entry_point("train.py", ["logger=null"], tmp_path, data_dir, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: logger=null: a config group cannot be null; "
                                     "logger=none or ~logger removes it")
    assert not (tmp_path / "logs").exists()
