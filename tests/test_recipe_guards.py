"""Guards on the recipe's details that a run would not notice: each test feeds hand-made inputs
whose right answer is known, so that a plausible slip (top-5 computed as top-1, logits averaged
instead of probabilities, LRN in the wrong place, the worst epoch kept, the schedule watching the
loss, the two centre patches one pixel apart, a half-written run record) fails here."""

from __future__ import annotations

import builtins
import io
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
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
from alexnet.training.summary import build_summary, read_summary, write_summary

NUM_CLASSES = 6

# -- top-1 and top-5 error on logits where they differ -----------------------------------------
# Every row ranks the classes 0 > 1 > 2 > 3 > 4 > 5 (in a different order of columns, so that
# nothing depends on the label's index); the label sits at the rank named on the right.
RANKED = torch.tensor([
    [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # label 0: rank 1, right in top-1 and top-5
    [0.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 2: rank 2, wrong in top-1, right in top-5
    [1.0, 0.0, 5.0, 4.0, 3.0, 2.0],  # label 0: rank 5, wrong in top-1, right in top-5
    [2.0, 1.0, 0.0, 5.0, 4.0, 3.0],  # label 2: rank 6, wrong in both
])
RANKED_LABELS = torch.tensor([0, 2, 0, 2])
RANKED_TOP1, RANKED_TOP5 = 3 / 4, 1 / 4


def _cross_entropy(logits: list[float], label: int) -> float:
    """-log softmax(logits)[label], written out."""
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


RANKED_LOSS = sum(
    _cross_entropy(row, label) for row, label in zip(RANKED.tolist(), RANKED_LABELS.tolist(),
                                                     strict=True)
) / len(RANKED)


def _classifier() -> ImageClassifier:
    """The real LightningModule around a "network" that passes its input through: the batch
    holds the logits themselves, as (B, C, 1, 1) or (B, crops, C, 1, 1)."""
    return ImageClassifier(nn.Flatten(), optimizer=torch.optim.SGD, num_classes=NUM_CLASSES)


def _trainer() -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False)


def _loader(x: Tensor, y: Tensor) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=2)  # two batches: epoch-level means


def _as_input(logits: Tensor, crops: int | None) -> Tensor:
    x = logits[:, :, None, None]
    return x if crops is None else x[:, None].expand(-1, crops, -1, -1, -1).contiguous()


@pytest.mark.parametrize(("stage", "crops"), [("val", None), ("test", None), ("test10", 10)])
def test_logged_errors_are_top1_and_top5_on_known_logits(stage: str, crops: int | None) -> None:
    # For test10 each image's ten patches are identical, so the average keeps the ranking.
    loader = _loader(_as_input(RANKED, crops), RANKED_LABELS)
    module, trainer = _classifier(), _trainer()
    if stage == "val":
        (logged,) = trainer.validate(module, dataloaders=loader, verbose=False)
    else:
        (logged,) = trainer.test(module, dataloaders=loader, verbose=False)
    assert logged[f"{stage}/top1_err"] == pytest.approx(RANKED_TOP1)
    assert logged[f"{stage}/top5_err"] == pytest.approx(RANKED_TOP5)
    assert logged[f"{stage}/loss"] == pytest.approx(RANKED_LOSS, rel=1e-5)


def test_training_logs_top1_and_top5_on_known_logits() -> None:
    module = _classifier()
    logged: dict[str, Any] = {}
    module.log = lambda name, value, **kw: logged.setdefault(name, value)  # type: ignore[method-assign]
    module.training_step((_as_input(RANKED, None), RANKED_LABELS), 0)
    assert logged["train/top1_err"].compute().item() == pytest.approx(RANKED_TOP1)
    assert logged["train/top5_err"].compute().item() == pytest.approx(RANKED_TOP5)
    assert logged["train/loss"].item() == pytest.approx(RANKED_LOSS, rel=1e-5)


# -- top-1 and top-5 error row by row, where a shuffled pairing changes the count -------------
# Eight classes, so that top-5 leaves three out. Each row ranks the classes 7 > 6 > ... > 0 from a
# different column on; the label sits at the rank named on the right. Unlike RANKED, pairing each
# row's logits with another row's label (labels or logits rolled by one within the batch) or with
# the next class (labels + 1) changes both counts of errors.
SHUFFLE_CLASSES = 8
ASYMMETRIC = torch.tensor([
    [0.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 2: rank 2, wrong in top-1, right in top-5
    [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 7.0],  # label 6: rank 8, wrong in both
    [3.0, 2.0, 1.0, 0.0, 7.0, 6.0, 5.0, 4.0],  # label 1: rank 6, wrong in both
    [5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 7.0, 6.0],  # label 6: rank 1, right in both
    [4.0, 3.0, 2.0, 1.0, 0.0, 7.0, 6.0, 5.0],  # label 5: rank 1, right in both
])
ASYMMETRIC_LABELS = torch.tensor([2, 6, 1, 6, 5])
ASYMMETRIC_RANKS = [2, 8, 6, 1, 1]
# Each row's (top-1 error, top-5 error): the batch's errors are their means, 3/5 and 2/5.
ASYMMETRIC_ROWS = [(float(rank > 1), float(rank > 5)) for rank in ASYMMETRIC_RANKS]


def _error_counts(logits: Tensor, labels: Tensor) -> tuple[int, int]:
    """(top-1 errors, top-5 errors), counted by hand: a label's rank is 1 + the number of classes
    scored above it."""
    ranks = [1 + sum(v > row[label] for v in row)
             for row, label in zip(logits.tolist(), labels.tolist(), strict=True)]
    return sum(r > 1 for r in ranks), sum(r > 5 for r in ranks)


def test_the_asymmetric_logits_tell_every_shuffled_pairing_apart() -> None:
    """The fixture is what its comments say, and each slip that pairs logits with the wrong
    labels within the batch changes both counts, so that the tests below catch it."""
    right = _error_counts(ASYMMETRIC, ASYMMETRIC_LABELS)
    assert right == (3, 2)
    assert [_error_counts(ASYMMETRIC[i : i + 1], ASYMMETRIC_LABELS[i : i + 1])
            for i in range(len(ASYMMETRIC))] == [(int(a), int(b)) for a, b in ASYMMETRIC_ROWS]
    shuffles = {
        "labels rolled by one": (ASYMMETRIC, ASYMMETRIC_LABELS.roll(1)),
        "labels rolled back by one": (ASYMMETRIC, ASYMMETRIC_LABELS.roll(-1)),
        "labels + 1": (ASYMMETRIC, (ASYMMETRIC_LABELS + 1) % SHUFFLE_CLASSES),
        "logits rolled by one": (ASYMMETRIC.roll(1, 0), ASYMMETRIC_LABELS),
        "logits rolled back by one": (ASYMMETRIC.roll(-1, 0), ASYMMETRIC_LABELS),
    }
    for name, (logits, labels) in shuffles.items():
        top1, top5 = _error_counts(logits, labels)
        assert top1 != right[0] and top5 != right[1], name


def _step_errors(stage: str, logits: Tensor, labels: Tensor) -> tuple[float, float]:
    """The top-1 and top-5 errors that the module's own training, validation or test step
    logs for one batch of these logits (test10: ten identical patches an image)."""
    module = ImageClassifier(nn.Flatten(), optimizer=torch.optim.SGD,
                             num_classes=SHUFFLE_CLASSES)
    logged: dict[str, Any] = {}
    module.log = lambda name, value, **kw: logged.setdefault(name, value)  # type: ignore[method-assign]
    batch = (_as_input(logits, 10 if stage == "test10" else None), labels)
    if stage == "train":
        module.training_step(batch, 0)
    elif stage == "val":
        module.validation_step(batch, 0)
    else:
        module.test_step(batch, 0)
    return (logged[f"{stage}/top1_err"].compute().item(),
            logged[f"{stage}/top5_err"].compute().item())


@pytest.mark.parametrize("stage", ["train", "val", "test", "test10"])
def test_top1_and_top5_row_by_row_and_for_the_batch(stage: str) -> None:
    for row, expected in enumerate(ASYMMETRIC_ROWS):
        one = slice(row, row + 1)
        assert _step_errors(stage, ASYMMETRIC[one], ASYMMETRIC_LABELS[one]) == expected, row
    assert _step_errors(stage, ASYMMETRIC, ASYMMETRIC_LABELS) == pytest.approx((3 / 5, 2 / 5))


@pytest.mark.parametrize(("stage", "crops"), [("val", None), ("test", None), ("test10", 10)])
def test_evaluation_loops_log_the_asymmetric_errors(stage: str, crops: int | None) -> None:
    """The same batch through Lightning's validation and test loops, in one batch so that a
    shuffle within the batch reaches every row."""
    loader = DataLoader(TensorDataset(_as_input(ASYMMETRIC, crops), ASYMMETRIC_LABELS),
                        batch_size=len(ASYMMETRIC))
    module = ImageClassifier(nn.Flatten(), optimizer=torch.optim.SGD,
                             num_classes=SHUFFLE_CLASSES)
    run = _trainer().validate if stage == "val" else _trainer().test
    (logged,) = run(module, dataloaders=loader, verbose=False)
    assert logged[f"{stage}/top1_err"] == pytest.approx(3 / 5)
    assert logged[f"{stage}/top5_err"] == pytest.approx(2 / 5)


# -- the 10-patch test averages probabilities, not logits (Sec. 4.1) ----------------------------
# One image of class 1: one patch is very sure of class 0, the other nine mildly prefer class 1.
# Averaging the logits picks class 0 (20 / 10 = 2 against 9 / 10); averaging the softmax outputs
# picks class 1 (the sure patch's probability mass is capped at 1).
SURE = [20.0, 0.0, 0.0, 0.0, 0.0, 0.0]
MILD = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
TEN_PATCHES = torch.tensor([[SURE] + [MILD] * 9])  # (1 image, 10 patches, 6 classes)
TEN_LABEL = 1


def _softmax(logits: list[float]) -> list[float]:
    total = sum(math.exp(v) for v in logits)
    return [math.exp(v) / total for v in logits]


def test_ten_patch_test_averages_softmax_not_logits() -> None:
    probs = [(a + 9 * b) / 10 for a, b in zip(_softmax(SURE), _softmax(MILD), strict=True)]
    mean_logits = [(a + 9 * b) / 10 for a, b in zip(SURE, MILD, strict=True)]
    # The case is built so that the two averages disagree; check that it does.
    assert max(range(6), key=probs.__getitem__) == TEN_LABEL
    assert max(range(6), key=mean_logits.__getitem__) == 0
    x = TEN_PATCHES[:, :, :, None, None]
    (logged,) = _trainer().test(_classifier(), dataloaders=_loader(x, torch.tensor([TEN_LABEL])),
                                verbose=False)
    assert set(logged) == {"test10/loss", "test10/top1_err", "test10/top5_err"}
    assert logged["test10/top1_err"] == 0.0
    # The loss is that of the averaged prediction: -log of the mean probability of the label
    # (not the mean of the ten patches' losses, nor the loss of the mean logits).
    assert logged["test10/loss"] == pytest.approx(-math.log(probs[TEN_LABEL]), rel=1e-5)
    per_patch = (_cross_entropy(SURE, TEN_LABEL) + 9 * _cross_entropy(MILD, TEN_LABEL)) / 10
    assert logged["test10/loss"] != pytest.approx(per_patch, rel=1e-3)
    assert logged["test10/loss"] != pytest.approx(_cross_entropy(mean_logits, TEN_LABEL),
                                                  rel=1e-3)


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
    assert read_summary(path) == {"task": "new"}
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
    assert read_summary(path) == {"task": "new"}


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
