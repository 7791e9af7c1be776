"""CIFAR-10 on real images: a small part of the shared JPEG tree (``../shared/data/cifar10-jpeg``,
train/<class>/ and test/<class>/), prepared and trained on as a user would. Skipped where the
shared tree is absent (a user's clone)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, run_entry_point

from alexnet.data import sources
from alexnet.data.datamodule import PreparedDataModule

sys.path.insert(0, str(ROOT / "src"))
from alexnet.data.prepared import open_split
from alexnet.exits import DataError
from device_check import extract_subset  # noqa: E402

ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "CIFAR-10-images.tar.gz"
TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 4
FAST = ["data.num_workers=0", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar"]

pytestmark = pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"{ARCHIVE} is absent")


def _tool(script: Path, *args: str) -> subprocess.CompletedProcess:
    """A tool that reads results (the report, the figures), run as a user would."""
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def cifar_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first TRAIN_PER_CLASS training and TEST_PER_CLASS test images of every class."""
    root = extract_subset(ARCHIVE, tmp_path_factory.mktemp("cifar"), TRAIN_PER_CLASS,
                          TEST_PER_CLASS)
    assert len(list(root.glob("*/*"))) == 20, "expected 10 classes in train/ and test/"
    return root


@pytest.fixture(scope="module")
def prepared_cifar(cifar_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    result = run_entry_point("prepare.py", ["data=cifar10_folder", f"data.root={cifar_tree}",
                                            f"data.prepared_dir={out / 'cifar'}"],
                             out, out / "data")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train 180, val 20, test 40" in result.stdout
    return out / "cifar"


def test_the_test_folder_is_the_test_split(cifar_tree: Path, prepared_cifar: Path) -> None:
    listing = sources.find_imagefolder(cifar_tree)
    files = {split: set(listing.files[split]) for split in ("train", "val", "test")}
    assert {s: len(f) for s, f in files.items()} == {"train": 180, "val": 20, "test": 40}
    # No image in two splits; val comes out of train/, test is test/ whole.
    assert not (files["train"] & files["val"] or files["train"] & files["test"]
                or files["val"] & files["test"])
    assert {Path(f).parts[-3] for f in files["val"]} == {"train"}
    assert {Path(f).parts[-3] for f in files["test"]} == {"test"}
    stats = json.loads((prepared_cifar / "stats.json").read_text())
    assert {s: c["total"] for s, c in stats["counts"].items()} == {"train": 180, "val": 20,
                                                                   "test": 40}
    assert set(stats["counts"]["test"]["per_class"].values()) == {TEST_PER_CLASS}
    assert set(stats["counts"]["val"]["per_class"].values()) == {2}  # 0.1 of each class
    assert stats["splits"]["test"] == "test/"
    assert stats["splits"]["val"].startswith("held out of train/")
    # The prepared rows are the images themselves: no test row equals a training row.
    train, _ = open_split(prepared_cifar, "train")
    test, _ = open_split(prepared_cifar, "test")
    train_rows = {bytes(np.asarray(image)) for image in train}
    assert not any(bytes(np.asarray(image)) in train_rows for image in test)
    assert stats["duplicates"] == []  # and the preparation's own check agrees


def test_checkpoint_chosen_on_val_and_measured_on_test(prepared_cifar: Path,
                                                        tmp_path: Path) -> None:
    args = ["experiment=cifar10_13pct", "data=cifar10_folder",
            f"data.prepared_dir={prepared_cifar}", "data.root=null", "trainer.max_epochs=3",
            "scheduler=none", "data.batch_size=20", "optimizer.lr=0.004", "seed=3", *FAST]
    result = run_entry_point("train.py", args, tmp_path, tmp_path / "data")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(next((tmp_path / "logs").rglob("summary.json")).read_text())
    evaluation = summary["evaluation"]
    assert evaluation["test_split"] == "test" and evaluation["test_split_from"] == "test/"
    assert evaluation["test_independent"] is True
    assert evaluation["test_copies_of_earlier_splits"] == 0
    assert evaluation["val_selects"] == ["the checkpoint tested (lowest val/top1_err)"]
    last_line = result.stdout.strip().splitlines()[-1]
    assert "(test split: test)" in last_line
    # The checkpoint tested is the epoch with the lowest val error, and its test error is what
    # src/eval.py measures of that checkpoint on the test split (40 images, not val's 20).
    rows = [r for r in summary["history"] if "val/top1_err" in r]
    best_epoch = min(rows, key=lambda r: r["val/top1_err"])["epoch"]
    best = Path(summary["checkpoints"]["best"])
    assert best.name == f"epoch_{best_epoch:03d}.ckpt"
    evaluated = run_entry_point("eval.py", [f"ckpt_path={best}", "trainer.accelerator=cpu"],
                                tmp_path / "eval",
                                tmp_path / "data")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    record = json.loads(next((tmp_path / "eval" / "logs").rglob("summary.json")).read_text())
    assert record["evaluation"]["test_split"] == "test"
    assert record["evaluation"]["test_copies_of_earlier_splits"] == 0
    assert record["final"]["test/top1_err"] == pytest.approx(summary["final"]["test/top1_err"])
    assert record["final"]["test/top1_err"] * 40 == pytest.approx(
        round(record["final"]["test/top1_err"] * 40))


def test_without_a_test_split_the_run_says_val_chose(cifar_tree: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "train").symlink_to(cifar_tree / "train")
    (tree / "val").symlink_to(cifar_tree / "test")  # a train/ + val/ tree, as ILSVRC-2012
    prepared = tmp_path / "prepared"
    # data=cifar10_folder wants CIFAR-10's own test/ (refused without it, test_bad_inputs.py);
    # a tree of other splits says so with data.test_folder_required=false.
    other = ["data=cifar10_folder", "data.test_folder_required=false"]
    result = run_entry_point("prepare.py", [*other, f"data.root={tree}",
                                            f"data.prepared_dir={prepared}"],
                             tmp_path, tmp_path / "data")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train 200, val 40 images" in result.stdout
    # Trained on as data=cifar10_folder, that dataset is refused: its test is no test/ folder.
    strict = PreparedDataModule(str(prepared), source="imagefolder", image_size=32, crop_size=24,
                                expected_classes=10, test_folder_required=True)
    with pytest.raises(DataError, match=r"has no test split from a test/<class>/ folder"):
        strict.prepare_data()
    args = ["experiment=cifar10_13pct", *other, f"data.prepared_dir={prepared}",
            "data.root=null", "trainer.max_epochs=1", "data.batch_size=50", *FAST]
    result = run_entry_point("train.py", args, tmp_path, tmp_path / "data")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(next((tmp_path / "logs").rglob("summary.json")).read_text())
    assert summary["evaluation"]["test_split"] == "val"
    assert summary["evaluation"]["test_independent"] is False
    assert "no independent test split" in result.stdout.strip().splitlines()[-1]


def test_fig1_study_on_real_images_end_to_end(prepared_cifar: Path, tmp_path: Path) -> None:
    args = ["-m", "experiment=study_fig1_cifar10_jpeg", f"data.prepared_dir={prepared_cifar}",
            "data.root=null", "study.seeds=[1]", "study.lrs=[0.004]", "trainer.max_epochs=2",
            "data.batch_size=30", *FAST[:2]]  # the study's callbacks have no progress bar
    result = run_entry_point("train.py", args, tmp_path, tmp_path / "data")
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = tmp_path / "logs" / "study" / "fig1_cifar10_jpeg"
    found = sorted(str(p.parent.relative_to(sweep)) for p in sweep.rglob("summary.json"))
    assert found == ["none/lr0.004/seed1", "tanh/lr0.004/seed1"]
    summary = json.loads((sweep / "tanh/lr0.004/seed1/summary.json").read_text())
    assert summary["config"]["model"]["activation"] == "tanh"
    assert [r["epoch"] for r in summary["history"]] == [0, 1]  # 180 real images, 6 batches each
    report = _tool(ROOT / "ablations" / "report.py", str(sweep))
    assert report.returncode == 0, report.stderr[-2000:]
    text = (sweep / "report.md").read_text()
    assert "quality-75 JPEG copy" in text and "## Fig. 1" in text
    assert "trained all 2 epochs" in text
    figure = _tool(ROOT / "src" / "figures.py", "fig1", str(sweep), "--out", str(tmp_path / "fig"))
    assert figure.returncode == 0, figure.stderr[-2000:]
    assert (tmp_path / "fig" / "fig1.png").is_file()


def test_sec33_study_on_real_images_end_to_end(prepared_cifar: Path, tmp_path: Path) -> None:
    args = ["-m", "experiment=study_sec33_short_jpeg", f"data.prepared_dir={prepared_cifar}",
            "data.root=null", "study.seeds=[1]", "trainer.max_epochs=1", "data.batch_size=30",
            *FAST[:2]]
    result = run_entry_point("train.py", args, tmp_path, tmp_path / "data")
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = tmp_path / "logs" / "study" / "sec33_short_jpeg"
    found = sorted(str(p.parent.relative_to(sweep)) for p in sweep.rglob("summary.json"))
    assert found == ["no_lrn/seed1", "none/seed1"]
    with_lrn, without = (json.loads((sweep / arm / "seed1" / "summary.json").read_text())
                         for arm in ("none", "no_lrn"))
    assert with_lrn["config"]["model"]["lrn"] and not without["config"]["model"]["lrn"]
    assert with_lrn["num_params"] == without["num_params"] == 2_112_970  # LRN has no weights
    assert with_lrn["evaluation"]["test_split"] == "test"
    report = _tool(ROOT / "ablations" / "report.py", str(sweep))
    assert report.returncode == 0, report.stderr[-2000:]
    text = (sweep / "report.md").read_text()
    assert "shortened schedule" in text and "quality-75 JPEG copy" in text
    assert "measured once, on the test split (test/)" in text
    # Sec. 3.3's CIFAR-10 figures, not ILSVRC's: 13% without normalisation, 11% with, Δ +2.
    assert "| `no_lrn` | lrn (3.3) | 1 |" in text and "| +2 |" in text
    assert "(paper 11%)" not in text and "paper 11%" in text and "paper 13%" in text


def test_the_last_line_counts_test_images_copied_from_training(prepared_cifar: Path,
                                                                tmp_path: Path) -> None:
    """stats.json's duplicates reach the run's record and its last line (a prepared copy whose
    stats list two test images as copies; the rows themselves are untouched)."""
    copied = tmp_path / "prepared"
    shutil.copytree(prepared_cifar, copied)
    stats = json.loads((copied / "stats.json").read_text())
    stats["duplicates"] = [{"split": "test", "path": f"test/x/{i}.jpg",
                            "same_as": {"split": "train", "path": f"train/x/{i}.jpg"}}
                           for i in range(2)]
    (copied / "stats.json").write_text(json.dumps(stats))
    args = ["experiment=cifar10_13pct", "data=cifar10_folder", f"data.prepared_dir={copied}",
            "data.root=null", "trainer.max_epochs=1", "data.batch_size=50", *FAST]
    result = run_entry_point("train.py", args, tmp_path, tmp_path / "data")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(next((tmp_path / "logs").rglob("summary.json")).read_text())
    assert summary["evaluation"]["test_copies_of_earlier_splits"] == 2
    assert ("(test split: test); 2 test images are copies of training or val images"
            in result.stdout.strip().splitlines()[-1])
