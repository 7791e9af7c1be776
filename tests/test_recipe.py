"""The training recipe as configured: the paper's schedule, the optimizers, the experiments.

The CIFAR-10 nets' recipes are tested in test_cifar_recipes.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_config, errors_by_hand, train_keeping_the_run
from hydra.utils import instantiate

from alexnet.training.optim import PaperSGD


def _optimizer_and_scheduler(tmp_path: Path, *overrides: str):
    cfg = compose_config("train", ["experiment=none", *overrides], tmp_path, tmp_path)
    params = [torch.zeros(3, requires_grad=True)]
    optimizer = instantiate(cfg.optimizer)(params)
    scheduler = instantiate(cfg.scheduler)(optimizer) if cfg.scheduler else None
    return cfg, optimizer, scheduler


def test_plateau_divides_by_ten_at_most_three_times(tmp_path: Path) -> None:
    cfg, optimizer, scheduler = _optimizer_and_scheduler(
        tmp_path, "optimizer.lr=0.01", "scheduler=plateau"
    )
    assert isinstance(optimizer, PaperSGD)
    assert optimizer.param_groups[0]["momentum"] == 0.9
    assert optimizer.param_groups[0]["weight_decay"] == 5e-4
    lrs = []
    for _ in range(60):  # a validation error that never improves
        scheduler.step(0.5)
        lrs.append(optimizer.param_groups[0]["lr"])
    distinct = sorted(set(round(lr, 12) for lr in lrs), reverse=True)
    assert distinct == pytest.approx([0.01, 0.001, 0.0001, 0.00001])


def test_plateau_waits_while_the_error_improves(tmp_path: Path) -> None:
    _, optimizer, scheduler = _optimizer_and_scheduler(tmp_path, "scheduler=plateau")
    lr0 = optimizer.param_groups[0]["lr"]
    for error in torch.linspace(0.9, 0.3, 20).tolist():
        scheduler.step(error)
    assert optimizer.param_groups[0]["lr"] == lr0


def test_step_schedule(tmp_path: Path) -> None:
    _, optimizer, scheduler = _optimizer_and_scheduler(
        tmp_path, "optimizer.lr=0.01", "scheduler=step", "scheduler.step_size=2"
    )
    for _ in range(4):
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0001)


def test_no_schedule(tmp_path: Path, data_dir: Path) -> None:
    cfg = compose_config(
        "train", ["scheduler=none", "data.image_size=80", "data.crop_size=67",
                  "data.train_per_class=2", "data.val_per_class=1", "data.batch_size=4",
                  "data.num_workers=0", "trainer.fast_dev_run=true", "test=false",
                  "~callbacks.progress_bar", "trainer.enable_progress_bar=false"],
        tmp_path, data_dir,
    )
    assert not cfg.scheduler
    summary, run = train_keeping_the_run(cfg)
    assert run.trainer.lr_scheduler_configs == []  # the optimizer alone
    # The logged errors are those of the trained network on the one validation batch.
    final = summary["final"]
    top1, top5 = errors_by_hand(run.net, run.datamodule, "val", cfg.data.batch_size)
    assert (final["val/top1_err"], final["val/top5_err"]) == pytest.approx((top1, top5))


def test_torch_sgd(tmp_path: Path) -> None:
    _, optimizer, _ = _optimizer_and_scheduler(tmp_path, "optimizer=torch_sgd")
    assert type(optimizer) is torch.optim.SGD


def test_paper_experiment_is_the_paper_recipe(tmp_path: Path) -> None:
    cfg = compose_config("train", ["experiment=paper"], tmp_path, tmp_path)
    assert cfg.model.init == "paper" and cfg.model.bias_init == 1.0
    assert cfg.model.columns == 2 and cfg.model.lrn and cfg.model.dropout == 0.5
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.weight_decay == 5e-4
    assert cfg.data.batch_size == 128 and cfg.data.crop_size == 227
    assert cfg.data.pca_jitter and cfg.data.crop and cfg.data.flip and cfg.data.ten_crop
    assert cfg.trainer.max_epochs == 90


def test_the_default_run_is_the_demo(tmp_path: Path) -> None:
    demo = compose_config("train", [], tmp_path, tmp_path)
    none = compose_config("train", ["experiment=none"], tmp_path, tmp_path)
    assert "demo" in demo.tags
    assert (demo.data.image_size, demo.data.crop_size, demo.data.scale) == (128, 115, 0.017)
    assert demo.model.init == "kaiming" and not demo.scheduler
    # Without the demo every group is at its own defaults: the paper's settings.
    assert (none.data.image_size, none.data.crop_size, none.data.scale) == (256, 227, 1.0)
    assert none.model.init == "paper" and none.scheduler._target_.endswith("ReduceLROnPlateau")
    # A scheduler chosen beside the demo keeps only its own keys.
    beside = compose_config("train", ["scheduler=plateau"], tmp_path, tmp_path)
    assert set(beside.scheduler) == set(none.scheduler)
