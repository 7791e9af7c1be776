"""What the tests share: the paths and the tiny configuration, composing the real configs and
running the real entry points, writing the inputs of each kind that the suite reads, and
measuring a trained network's errors by hand. Plain functions and constants; the fixtures are in
conftest.py."""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image
from torch import nn

from alexnet.data import cifar10
from alexnet.resolvers import register_resolvers

register_resolvers()  # as every entry point does before it composes a config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# 1000 real ImageNet JPEGs, one a class, beside the clone (absent from a user's clone).
SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"
# Every ablation; `none` is the baseline arm of a study (no ablation), tested in test_study.py.
ABLATIONS = sorted(p.stem for p in (CONF / "ablation").glob("*.yaml") if p.stem != "none")

# A tiny but real configuration: AlexNet at its smallest crop on small built-in images, with fc6
# and fc7 of 256 neurons instead of the paper's 4096 (which would be 80% of its weights and most
# of a tiny run's time: writing 160 MB checkpoints and updating 17 M weights a step).
TINY = [
    "data.image_size=80",
    "data.crop_size=67",
    "model.fc_width=256",
    "data.train_per_class=2",
    "data.val_per_class=1",
    "data.batch_size=4",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "~callbacks.progress_bar",
    "trainer.enable_progress_bar=false",
]
PREP = ["data.image_size=80", "data.crop_size=67"]  # TINY's sizes, for prepare.py


# -- the configs and the entry points -----------------------------------------------------------
def compose_config(
    config_name: str, overrides: list[str], output_dir: Path, data_dir: Path
) -> DictConfig:
    """Compose conf/<config_name>.yaml as the entry point would, with outputs in ``output_dir``."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(
            config_name=config_name,
            overrides=[f"paths.data_dir={data_dir}", f"paths.log_dir={output_dir}", *overrides],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def compose_train(tmp_path: Path, *overrides: str) -> DictConfig:
    """conf/train.yaml with ``overrides``, its outputs and data (if any were read) in tmp_path."""
    return compose_config("train", list(overrides), tmp_path, tmp_path)


def run_entry_point(
    script: str, args: list[str], tmp_path: Path, data_dir: Path, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run src/<script> as a user would, with logs under ``tmp_path``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WANDB_SILENT": "true"}
    flags = [a for a in args if a.startswith("-") and not a.startswith("~")]
    overrides = [a for a in args if a not in flags]
    cmd = [
        sys.executable, str(ROOT / "src" / script), *flags,
        f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}", *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=tmp_path)



def run_watching_imports(script: Path, argv: list[str], cwd: Path
                         ) -> tuple[int | str | None, list[str], subprocess.CompletedProcess]:
    """Run ``script`` with ``argv`` in a fresh interpreter, as ``python script argv...`` would;
    returns its exit status, which of torch and Lightning it had imported by then (seconds of
    import each), and the finished process."""
    code = (f"import runpy, sys; sys.argv = [{script.name!r}, *{argv!r}]\n"
            f"try:\n    runpy.run_path({str(script)!r}, run_name='__main__')\n"
            "except SystemExit as stop:\n"
            "    print(repr(stop.code), sorted({'torch', 'lightning'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    last = (result.stdout.strip().splitlines() or ["None []"])[-1]
    status, _, loaded = last.partition(" ")
    return ast.literal_eval(status), ast.literal_eval(loaded), result

def find_summaries(log_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(log_dir.rglob("summary.json"))]


def load_script(path: Path, name: str | None = None) -> ModuleType:
    """A script that is not a package module (src/figures.py, ablations/report.py), imported."""
    spec = importlib.util.spec_from_file_location(name or f"entry_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare_main() -> Callable:
    """src/prepare.py's function under @hydra.main: reports_user_errors(...)."""
    return load_script(ROOT / "src" / "prepare.py", "prepare_entry").main.__wrapped__


# -- networks -----------------------------------------------------------------------------------
def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- inputs of each kind ------------------------------------------------------------------------
WNIDS = ["n01440764", "n01443537", "n01484850"]


def write_image(path: Path, colour: tuple[int, int, int] = (200, 60, 20),
                size: tuple[int, int] = (40, 30), fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


def class_colour(label: int) -> tuple[int, int, int]:
    return (40 + 80 * label, 128, 200 - 60 * label)


def make_imagenet(root: Path, *, val: str = "folders", per_class: int = 2,
                  wnids: list[str] = WNIDS) -> list[str]:
    """train/<wnid>/ and val/ (class folders or flat); returns the wnid of each flat val image
    ILSVRC2012_val_00000001.JPEG, ... in order."""
    for label, wnid in enumerate(wnids):
        for i in range(per_class):
            write_image(root / "train" / wnid / f"{wnid}_{i}.JPEG", class_colour(label))
    # Val images in an order that is not the class order, as in ILSVRC-2012.
    truth = [wnids[(2 * i + 1) % len(wnids)] for i in range(per_class * len(wnids))]
    for number, wnid in enumerate(truth, start=1):
        name = f"ILSVRC2012_val_{number:08d}.JPEG"
        folder = root / "val" / wnid if val == "folders" else root / "val"
        write_image(folder / name, class_colour(wnids.index(wnid)))
    return truth


def write_loc_solution(path: Path, truth: list[str]) -> None:
    rows = [(f"ILSVRC2012_val_{n:08d}", f"{w} 10 20 30 40 {w} 1 2 3 4")
            for n, w in enumerate(truth, start=1)]
    with open(path, "w", newline="") as f:
        writer_ = csv.writer(f)
        writer_.writerow(["ImageId", "PredictionString"])
        writer_.writerows(reversed(rows))  # Kaggle's file is not in image order


def write_devkit(folder: Path, truth: list[str], wnids: list[str] = WNIDS) -> None:
    """The devkit's ground truth (ILSVRC2012_IDs) and meta.mat (ID -> wnid), with IDs that are
    not in wnid order, as in the real devkit."""
    savemat = pytest.importorskip("scipy.io").savemat
    ids = {w: len(wnids) - i for i, w in enumerate(wnids)}
    data = folder / "data"
    data.mkdir(parents=True)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{ids[w]}\n" for w in truth))
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = [(ids[w], w, f"words of {w}", 0) for w in wnids] + [(99, "n00001740", "entity", 3)]
    savemat(data / "meta.mat", {"synsets": np.array(synsets, dtype=dtype)})


def cifar_batch(count: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"batch",
        b"labels": [int(y) for y in rng.integers(0, 10, count)],
        b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(count)],
    }


def write_cifar10(folder: Path, per_batch: int = 6) -> dict[str, dict]:
    """A small copy in the standard format: pickled dicts with bytes keys, rows of 3072 bytes
    (the red plane, then green, then blue)."""
    folder.mkdir(parents=True)
    batches = {}
    for i, name in enumerate([*cifar10.BATCHES["train"], *cifar10.BATCHES["test"]]):
        batches[name] = cifar_batch(per_batch, i)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return batches


def write_image_classes(tmp: Path, classes: dict[str, int]) -> None:
    """tmp/images/<class>/<k>.jpg: ``count`` images of each class."""
    for name, count in classes.items():
        folder = tmp / "images" / name
        folder.mkdir(parents=True)
        for k in range(count):
            Image.new("RGB", (40, 30), (k * 40, 90, 200)).save(folder / f"{k}.jpg")


def prepared_copy(tmp: Path, data_dir: Path) -> Path:
    """A copy of the tiny built-in dataset's prepared directory (drawn by the session)."""
    cfg = compose_config("train", TINY, tmp / "x", data_dir)
    source = Path(cfg.data.prepared_dir)
    if not source.is_dir():
        from hydra.utils import instantiate

        instantiate(cfg.data).prepare_data()
    target = tmp / "prepared"
    target.mkdir()
    for item in source.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


def fake_fig1_run(root: Path, arm: str, lr: float, seed: int, train_errors: list[float]) -> None:
    """A summary.json as a Fig. 1 run writes it, with a hand-made training-error curve."""
    out = root / arm / f"lr{lr}" / f"seed{seed}"
    out.mkdir(parents=True)
    ablations = [] if arm == "none" else [
        {"name": arm, "claim": "relu", "component": "activation", "changes": ["model.activation"]}
    ]
    summary = {
        "task": "train", "status": "completed", "arm": arm, "seed": seed, "num_classes": 10,
        "ablations": ablations, "output_dir": str(out),
        "history": [{"epoch": e, "train/top1_err": v} for e, v in enumerate(train_errors)],
        "final": {"test/top1_err": 0.3, "test/top5_err": 0.05},
        "environment": {"device": "cpu", "cpu_count": 2}, "git": {"commit": "0" * 40},
        "config": {
            "study": {"name": "fig1", "arms": ["none", "tanh"], "seeds": [1, 2],
                      "lrs": [0.01, 0.02]},
            "optimizer": {"lr": lr}, "model": {"activation": "tanh" if arm == "tanh" else "relu"},
            "data": {"image_size": 32, "crop_size": 24}, "trainer": {"max_epochs": 6},
            "paths": {"output_dir": str(out)},
        },
    }
    (out / "summary.json").write_text(json.dumps(summary))


# -- a run's results, measured again by hand ----------------------------------------------------
def train_keeping_the_run(cfg: DictConfig) -> tuple[dict[str, Any], Any]:
    """``train(cfg)``'s summary, and the run it built (network, data module, trainer), so that a
    test can measure the trained network again."""
    import alexnet.jobs.train as train_job

    kept: list[Any] = []
    build = train_job.build

    def keep(*args: Any, **kwargs: Any) -> Any:
        kept.append(build(*args, **kwargs))
        return kept[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_job, "build", keep)
        summary = train_job.train(cfg)
    (run,) = kept
    return summary, run


def errors_by_hand(net: nn.Module, datamodule: Any, split: str,
                   count: int | None = None) -> tuple[float, float]:
    """The top-1 and top-5 errors of ``net`` on the first ``count`` images (all by default) of
    the data module's ``val`` or ``test`` set, as its presets give them to the network (with
    ``ten_crop``: the softmax averaged over the ten patches), counted without the module's
    metrics: a label's rank is 1 + the number of classes scored above it."""
    dataset, preset = {"val": (datamodule.val_set, datamodule.eval_preset),
                       "test": (datamodule.test_set, datamodule.test_preset)}[split]
    rows = list(range(len(dataset) if count is None else min(count, len(dataset))))
    x, y = datamodule.network_input(dataset.__getitems__(rows), preset)
    net.eval()
    with torch.no_grad():
        if x.ndim == 5:  # (images, patches, C, H, W)
            scores = torch.softmax(net(x.flatten(0, 1)), 1).view(len(rows), x.shape[1], -1)
            scores = scores.mean(1)
        else:
            scores = net(x)
    ranks = 1 + (scores > scores.gather(1, y[:, None].long())).sum(1)
    return (ranks > 1).double().mean().item(), (ranks > 5).double().mean().item()
