"""Guards on the recipe's details that a run would not notice: each test feeds hand-made inputs
whose right answer is known, so that a plausible slip (LRN in the wrong place, the worst epoch
kept, the schedule watching the loss, the two centre patches one pixel apart, a half-written run
record, a config naming a file or metric that is not there) fails here. The errors and losses
from known logits are tests/test_module_metrics.py."""

from __future__ import annotations

import builtins
import io
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers import CONF, ROOT, TINY, compose_config, train_keeping_the_run
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import alexnet.jobs.train as train_job
from alexnet.callbacks.history import MetricHistory
from alexnet.data import synthetic
from alexnet.data.datamodule import PreparedDataModule
from alexnet.data.loader import PreparedImages
from alexnet.models import AlexNet
from alexnet.training.module import ImageClassifier
from alexnet.training.summary import build_summary, write_summary


# -- LRN after the ReLU and before the pooling (Sec. 3.3) --------------------------------------
def test_lrn_sits_between_the_relu_and_the_pooling_in_forward() -> None:
    """The order in which forward() calls the modules, and what each one is given: attribute
    order says nothing about it."""
    torch.manual_seed(0)
    net = AlexNet(num_classes=10, crop_size=67).eval()
    names = ["conv1", "act1", "norm1", "pool1", "conv2", "act2", "norm2", "pool2", "conv3"]
    calls: list[tuple[str, Tensor, Tensor]] = []
    handles = [
        getattr(net, name).register_forward_hook(
            lambda _m, inputs, output, name=name: calls.append((name, inputs[0], output))
        )
        for name in names
    ]
    try:
        with torch.no_grad():
            net(torch.randn(1, 3, 67, 67))
    finally:
        for handle in handles:
            handle.remove()
    assert [name for name, _, _ in calls] == names
    assert all(type(getattr(net, f"act{i}")) is nn.ReLU for i in (1, 2))
    # Each module is fed the previous module's output, not a tensor from elsewhere.
    for (_, _, previous_output), (name, given, _) in zip(calls, calls[1:], strict=False):
        assert given is previous_output, f"{name} is not fed what precedes it"


# -- "best" is the lowest error; the checkpoint and the schedule follow val/top1_err ------------
def test_best_is_the_lowest_error_and_loss() -> None:
    history = MetricHistory()
    history.history = [
        {"epoch": 0, "step": 10, "val/top1_err": 0.6, "val/top5_err": math.nan, "val/loss": 2.0,
         "train/img_per_s": 100.0},
        {"epoch": 1, "step": 20, "val/top1_err": 0.3, "val/top5_err": 0.2, "val/loss": 2.5,
         "train/img_per_s": 300.0},
        {"epoch": 2, "step": 30, "val/top1_err": 0.8, "val/top5_err": 0.4, "val/loss": 1.5,
         "train/img_per_s": 200.0},
    ]
    expected = {"val/top1_err": 0.3, "val/top5_err": 0.2, "val/loss": 1.5}
    assert history.best() == expected  # no throughput, no epoch or step: only lower-is-better
    trainer = SimpleNamespace(callback_metrics={}, interrupted=False, current_epoch=3,
                              global_step=30)
    summary = build_summary(
        task="train", cfg=OmegaConf.create({"seed": 1}), trainer=trainer, history=history,
        num_params=1, num_classes=2, ablations=[], wall_time_s=1.0, img_per_s=None,
        checkpoints={}, output_dir=Path("."),
    )
    assert summary["best"] == expected
    assert summary["final"]["val/top1_err"] == 0.8  # the last epoch's, not the best


class ScriptedValidation(ImageClassifier):
    """The real module, optimizer and schedule, with validation metrics given per epoch."""

    def __init__(self, errors: list[float], losses: list[float], **kwargs: Any) -> None:
        super().__init__(nn.Linear(4, 3), num_classes=3, **kwargs)
        self.errors, self.val_losses = errors, losses

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log("val/top1_err", self.errors[self.current_epoch])
        self.log("val/loss", self.val_losses[self.current_epoch])


def _scripted_fit(tmp_path: Path, errors: list[float], losses: list[float]):
    """Fit for len(errors) epochs with the configured checkpoint callback, optimizer and plateau
    schedule (the paper's recipe, experiment=none), built as src/train.py builds them."""
    cfg = compose_config(
        "train",
        ["experiment=none", "trainer.accelerator=cpu", f"trainer.max_epochs={len(errors)}",
         "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
         "trainer.enable_progress_bar=false", "~callbacks.progress_bar"],
        tmp_path, tmp_path,
    )
    module = ScriptedValidation(errors, losses, optimizer=instantiate(cfg.optimizer),
                                scheduler=instantiate(cfg.scheduler))
    trainer = train_job.build_trainer(cfg, [])
    data = DataLoader(TensorDataset(torch.randn(4, 4), torch.tensor([0, 1, 2, 0])), batch_size=4)
    trainer.fit(module, train_dataloaders=data, val_dataloaders=data)
    return cfg, trainer


def test_checkpoint_keeps_the_epoch_of_lowest_val_top1_err(tmp_path: Path) -> None:
    # The best error is at epoch 1; the worst at epoch 2; the lowest loss at epoch 0.
    cfg, trainer = _scripted_fit(tmp_path, [0.6, 0.3, 0.8, 0.5], [1.0, 2.0, 3.0, 4.0])
    best = trainer.checkpoint_callback
    assert Path(best.best_model_path).name == "epoch_001.ckpt"
    assert best.best_model_score.item() == pytest.approx(0.3)
    # Three epochs without a better error is not yet a plateau (patience 2): lr unchanged,
    # although the loss got worse every epoch.
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(cfg.optimizer.lr)


def test_plateau_follows_the_error_not_the_loss(tmp_path: Path) -> None:
    # The error stalls while the loss improves: the paper divides the learning rate by 10
    # "when the validation error rate stopped improving" (Sec. 5).
    cfg, trainer = _scripted_fit(tmp_path, [0.5, 0.5, 0.5, 0.5], [4.0, 3.0, 2.0, 1.0])
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(cfg.optimizer.lr / 10)


def test_a_run_wires_the_schedule_and_the_checkpoint_to_val_top1_err(
    tmp_path: Path, data_dir: Path
) -> None:
    """What src/train.py builds: the trainer's scheduler and checkpoint monitors."""
    cfg = compose_config(
        "train", [*TINY, "scheduler=plateau", "trainer.fast_dev_run=true", "test=false"],
        tmp_path, data_dir,
    )
    trainer = train_keeping_the_run(cfg)[1].trainer
    (scheduler,) = trainer.lr_scheduler_configs
    assert isinstance(scheduler.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert scheduler.monitor == "val/top1_err" and scheduler.scheduler.mode == "min"
    assert trainer.checkpoint_callback.monitor == "val/top1_err"
    assert trainer.checkpoint_callback.mode == "min"


# -- the centre patch is the same patch for the one-patch and the 10-patch test -----------------
@pytest.mark.parametrize("image_size", [16, 17])  # slack 6 and 7 around a 10-pixel crop
def test_centre_patch_agrees_with_the_ten_patch_centre(image_size: int, tmp_path: Path) -> None:
    crop = 10
    root = tmp_path / "prepared"
    synthetic.generate(root, num_classes=2, train_per_class=1, val_per_class=2,
                       image_size=image_size, workers=1, progress=False)
    data = PreparedDataModule(str(root), image_size=image_size, crop_size=crop, num_workers=0,
                              ten_crop=True, pca_jitter=False)
    data.setup()
    rows = list(range(len(data.test_set)))
    centre_set = PreparedImages(root, data.test_split, crop_size=crop)  # the same test images
    centre, _ = data.network_input(centre_set.__getitems__(rows), data.eval_preset)
    ten, _ = data.network_input(data.test_set.__getitems__(rows), data.test_preset)
    assert centre.shape == (len(rows), 3, crop, crop) and ten.shape == (len(rows), 10, 3, crop,
                                                                         crop)
    assert torch.allclose(ten[:, 4], centre)  # patch 4: the centre (then its reflection, 9)
    assert torch.allclose(ten[:, 9], centre.flip(-1))


# -- summary.json is replaced whole, never rewritten where it lies ------------------------------
def test_summary_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "summary.json"
    write_summary(path, {"task": "old"})
    inode = path.stat().st_ino
    write_summary(path, {"task": "new"})
    assert json.loads(path.read_text()) == {"task": "new"}
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # nothing left beside it

    # A write that dies half-way (a full disk, a kill) leaves the previous record readable.
    real_open = io.open

    class HalfWritten:
        def __init__(self, file: Any) -> None:
            self.file = file

        def write(self, text: str) -> int:
            self.file.write(text[: len(text) // 2])
            raise OSError("No space left on device")

        def __enter__(self) -> HalfWritten:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.file, name)

    def dying_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        opened = real_open(file, mode, *args, **kwargs)
        return HalfWritten(opened) if "w" in mode or "a" in mode else opened

    with monkeypatch.context() as patch:
        patch.setattr(io, "open", dying_open)
        patch.setattr(builtins, "open", dying_open)
        with pytest.raises(OSError, match="No space"):
            write_summary(path, {"task": "newer", "padding": "x" * 1000})
    assert json.loads(path.read_text()) == {"task": "new"}


# -- the configs: every logger resolves under both entry points; references point somewhere ------
LOGGERS = sorted(p.stem for p in (CONF / "logger").glob("*.yaml"))


@pytest.mark.parametrize("logger", LOGGERS)
@pytest.mark.parametrize("entry", ["train", "eval"])
def test_every_logger_resolves_in_train_and_eval(entry: str, logger: str,
                                                 tmp_path: Path) -> None:
    extra = ["ckpt_path=some.ckpt"] if entry == "eval" else []
    cfg = compose_config(entry, [f"logger={logger}", *extra], tmp_path, tmp_path)
    OmegaConf.resolve(cfg)  # e.g. wandb's ${tags} and ${task_name}
    if "wandb" in cfg.logger:
        assert list(cfg.logger.wandb.tags) == list(cfg.tags)
        assert cfg.logger.wandb.job_type == entry


def test_eval_with_wandb_builds_its_logger(tmp_path: Path) -> None:
    cfg = compose_config("eval", ["logger=wandb", "ckpt_path=some.ckpt", "tags=[x]"], tmp_path,
                         tmp_path)
    logger = instantiate(cfg.logger.wandb)
    assert logger.__class__.__name__ == "WandbLogger"


def test_files_named_in_the_configs_exist() -> None:
    """Comments in conf/ send the reader to the project's docs: each such file must be there
    (src/ paths are left out: comments also cite other projects' sources)."""
    named = {
        (path.relative_to(ROOT), ref)
        for path in CONF.rglob("*.yaml")
        for ref in re.findall(r"\b((?:docs|ablations|conf)/[\w./-]+\.\w+|README\.md)\b",
                              path.read_text())
    }
    missing = [f"{path}: {ref}" for path, ref in sorted(named) if not (ROOT / ref).exists()]
    assert not missing, missing


def test_the_configs_name_the_metrics_the_module_logs() -> None:
    """conf/ spells VAL_TOP1 where it monitors it: alexnet.names is the one definition."""
    import yaml

    from alexnet.names import VAL_TOP1

    callbacks = yaml.safe_load((CONF / "callbacks" / "default.yaml").read_text())
    assert callbacks["model_checkpoint"]["monitor"] == VAL_TOP1
    monitored = [line.split(":", 1)[1].split("#")[0].strip()
                 for path in CONF.rglob("*.yaml") for line in path.read_text().splitlines()
                 if line.strip().startswith(("monitor:", "scheduler_monitor:"))]
    assert monitored and all(m in (VAL_TOP1, "null") for m in monitored), monitored
