"""The default configuration trains, tests and writes a correct run record."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import (
    TINY,
    compose_config,
    errors_by_hand,
    find_summaries,
    run_entry_point,
    train_keeping_the_run,
)
from hydra.utils import instantiate
from omegaconf import OmegaConf

from alexnet.analysis.network_figures import load_network
from alexnet.exits import UserError
from alexnet.jobs.evaluate import evaluate
from alexnet.jobs.train import train
from alexnet.training.module import CLASSES_KEY

METRICS = ("train/loss", "train/top1_err", "val/loss", "val/top1_err", "val/top5_err")


@pytest.fixture(scope="module")
def fast_dev_summary(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict:
    out = tmp_path_factory.mktemp("run")
    cfg = compose_config("train", [*TINY, "trainer.fast_dev_run=true"], out, data_dir)
    summary, run = train_keeping_the_run(cfg)
    assert (out / "summary.json").is_file()
    # fast_dev_run: one batch of each split, the test on the weights of the one training step.
    by_hand = {f"{split}/top{k}_err": error for split in ("val", "test")
               for k, error in zip((1, 5), errors_by_hand(run.net, run.datamodule, split,
                                                          cfg.data.batch_size), strict=True)}
    return json.loads((out / "summary.json").read_text()) | {"_returned": summary,
                                                              "_by_hand": by_hand}


def test_fast_dev_run_writes_summary(fast_dev_summary: dict) -> None:
    s = fast_dev_summary
    assert s["task"] == "train" and s["status"] == "completed"
    for name in (*METRICS, "test/top1_err", "test/top5_err"):
        assert math.isfinite(s["final"][name]), name
    for name, error in s["_by_hand"].items():  # the trained network's errors, counted again
        assert s["final"][name] == pytest.approx(error), name
    # One epoch: its row is the history, and the best of one epoch is that epoch.
    assert [row["epoch"] for row in s["history"]] == [0]
    for name in ("val/top1_err", "val/top5_err", "val/loss"):
        assert s["history"][0][name] == pytest.approx(s["final"][name]), name
        assert s["best"][name] == pytest.approx(s["final"][name]), name
    assert s["num_classes"] == 10
    assert s["num_params"] > 1_000_000
    assert s["seed"] == 2012
    assert s["ablations"] == []
    assert s["img_per_s"] > 0
    assert s["wall_time_s"] > 0
    assert s["config"]["model"]["_target_"] == "alexnet.models.AlexNet"
    assert s["config"]["data"]["crop_size"] == 67
    assert "python" in s["environment"] and "torch" in s["environment"]


def test_summary_num_params_matches_the_network(fast_dev_summary: dict) -> None:
    from alexnet.models import AlexNet

    cfg = fast_dev_summary["config"]["model"]
    kwargs = {k: v for k, v in cfg.items() if k != "_target_"}
    net = AlexNet(num_classes=10, **kwargs)
    assert fast_dev_summary["num_params"] == sum(p.numel() for p in net.parameters())


def test_short_run_checkpoints_and_eval_reads_them(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "train"
    cfg = compose_config(
        "train",
        [*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"],
        out, data_dir,
    )
    summary = train(cfg)
    ckpt = Path(summary["checkpoints"]["best"])
    assert ckpt.is_file() and ckpt.parent == out / "checkpoints"
    assert "test/top1_err" not in summary["final"]  # test=false skips testing

    result = run_entry_point("eval.py", [f"ckpt_path={ckpt}", "ten_crop=true"], tmp_path, data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = find_summaries(tmp_path / "logs")
    assert record["task"] == "eval"
    # ten_crop=true: the paper's 10-patch test is what is logged, and it is the checkpoint's
    # network's error on the whole test split, the softmax averaged over the ten patches.
    loaded = load_network(ckpt)
    data = instantiate(OmegaConf.create(loaded.config).data, ten_crop=True)
    data.setup("test")
    top1, top5 = errors_by_hand(loaded.net, data, "test")
    assert (record["final"]["test10/top1_err"], record["final"]["test10/top5_err"]) == \
        pytest.approx((top1, top5))
    assert record["num_params"] == summary["num_params"]
    assert record["train_config"]["data"]["crop_size"] == 67

    # Same weights, same data, centre crop: eval reproduces the training run's val error (in
    # this process: the command's own path is the one above).
    again = evaluate(compose_config("eval", [f"ckpt_path={ckpt}"], tmp_path / "again", data_dir))
    assert again["final"]["test/top1_err"] == pytest.approx(summary["final"]["val/top1_err"])

    # The checkpoint names its classes; a dataset of as many classes under other names is
    # refused before it is measured (its weights would load, and its error mean nothing).
    assert loaded.classes == data.class_names and len(set(loaded.classes)) == 10
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint[CLASSES_KEY] = [*loaded.classes[:3], "ant", *loaded.classes[4:]]
    torch.save(checkpoint, tmp_path / "renamed.ckpt")
    other = tmp_path / "other"
    with pytest.raises(UserError) as refused:
        evaluate(compose_config("eval", [f"ckpt_path={tmp_path / 'renamed.ckpt'}"], other,
                                data_dir))
    assert str(refused.value) == (
        f"{data.root} has other classes than {tmp_path / 'renamed.ckpt'} was trained on "
        f"(label 3 is {loaded.classes[3]!r} there, 'ant' in training): give the dataset it was "
        "trained on")
    assert not list(other.rglob("summary.json"))


def test_seed_makes_runs_repeatable(tmp_path: Path, data_dir: Path) -> None:
    losses = []
    for name in ("a", "b"):
        cfg = compose_config(
            "train",
            [*TINY, "trainer.fast_dev_run=2", "test=false", "seed=7"],
            tmp_path / name, data_dir,
        )
        losses.append(train(cfg)["final"]["train/loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_throughput_is_logged(tmp_path: Path, data_dir: Path) -> None:
    cfg = compose_config(
        "train",
        [*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=3",
         "trainer.log_every_n_steps=1", "trainer.limit_val_batches=1", "test=false"],
        tmp_path, data_dir,
    )
    train(cfg)
    header, *rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    columns = header.split(",")
    assert "train/img_per_s" in columns and "val/top1_err" in columns
    rates = [float(r) for row in rows if (r := row.split(",")[columns.index("train/img_per_s")])]
    assert len(rates) == 3 and all(r > 0 for r in rates)  # one a training step
    # The epoch's rate is its images over the sum of the steps' times (4 images a step).
    (epoch_rate,) = [float(r) for row in rows
                     if (r := row.split(",")[columns.index("train/epoch_img_per_s")])]
    assert epoch_rate == pytest.approx(12 / sum(4 / r for r in rates), rel=1e-4)


def test_runs_never_share_a_directory(tmp_path: Path, data_dir: Path) -> None:
    args = [*TINY, "trainer.fast_dev_run=true", "test=false"]
    for _ in range(2):
        result = run_entry_point("train.py", args, tmp_path, data_dir)
        assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 2
    assert all((r / "summary.json").is_file() for r in runs)


def test_topk_error_metric() -> None:
    from alexnet.training.module import TopKError

    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    top1, top2 = TopKError(3, 1), TopKError(3, 2)
    top1.update(scores, labels)
    top2.update(scores, labels)
    assert top1.compute().item() == pytest.approx(2 / 3)  # only the first is right
    assert top2.compute().item() == pytest.approx(1 / 3)  # the third's label is ranked last


def test_ten_crop_batches_average_softmax() -> None:
    from alexnet.training.module import ImageClassifier

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))
    module = ImageClassifier(net, optimizer=torch.optim.SGD, num_classes=3)
    x = torch.randn(2, 10, 3, 4, 4)
    y = torch.tensor([0, 2])
    logged = {}
    module.log = lambda name, value, **kw: logged.setdefault(name, value)
    module.test_step((x, y), 0)
    assert {"test10/loss", "test10/top1_err", "test10/top5_err"} <= set(logged)
    probs = torch.softmax(net(x.flatten(0, 1)), 1).view(2, 10, 3).mean(1)
    expected = (probs.argmax(1) != y).float().mean()
    assert module.metrics["test10_top1"].compute() == pytest.approx(expected.item())


def test_testing_an_earlier_best_checkpoint_keeps_every_epoch(tmp_path: Path,
                                                              data_dir: Path) -> None:
    # The best checkpoint is the first epoch's; restoring it for the test must not cut the
    # history back to that epoch.
    cfg = compose_config("train", [*TINY, "trainer.max_epochs=3", "test=true",
                                   "callbacks.model_checkpoint.monitor=epoch",
                                   "callbacks.model_checkpoint.mode=min"], tmp_path, data_dir)
    summary = train(cfg)
    assert summary["checkpoints"]["best"].endswith("epoch_000.ckpt")
    assert [row["epoch"] for row in summary["history"]] == [0, 1, 2]
    assert "test/top1_err" in summary["final"]


def test_a_completed_run_is_not_replaced_by_another_in_its_directory(
        tmp_path: Path, data_dir: Path) -> None:
    """A run directory given again (hydra.run.dir=...) holding a completed run: refused before
    any work, the record and checkpoints kept; skip_completed=true keeps it, ckpt_path resumes."""
    short = [*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=1", "test=false"]
    train(compose_config("train", short, tmp_path, data_dir))
    record = (tmp_path / "summary.json").read_text()
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(UserError, match=r"holds a completed run \(its summary.json\), which this "
                                        r"run would replace: choose another run directory"):
        train(compose_config("train", [*short, "model.activation=tanh"], tmp_path, data_dir))
    assert (tmp_path / "summary.json").read_text() == record
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == kept
    assert train(compose_config("train", [*short, "skip_completed=true"], tmp_path,
                                data_dir)) == json.loads(record)
