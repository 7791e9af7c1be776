"""What a bare device machine needs from here, made here, and the one command that runs the check
there.

A lent GPU machine starts from its own image, with PyTorch, Lightning and torchmetrics but without
Hydra, and reaches no package index; it receives the repository's working tree plus at most 8
ignored paths (``carry``, 64 MiB in all), and returns at most 8 files from ``$OUT``. So, here:

- ``.whl/``: wheels of the packages the image lacks (:data:`MISSING_THERE`, at the versions
  installed here, pure Python), installed there into ``/tmp/site`` before the check starts;
- ``data/CIFAR-10-images.tar.gz``: the CIFAR-10 JPEG archive, for the CIFAR-10 step;

and there, :data:`DEVICE_COMMAND`, which packs its results into three files of ``$OUT``
(:func:`alexnet.device_check.runner.pack`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from alexnet.provenance import REPO_ROOT

# The project's dependencies (pyproject.toml) that the device image holds, as its package list
# gives them (the device tool's KINDS.md, read 2026-11-17; its torch was 2.11, Python 3.12) ...
ON_THE_IMAGE = ("torch", "torchvision", "lightning", "torchmetrics", "numpy", "scipy",
                "matplotlib", "pillow", "tqdm", "tensorboard", "pytest", "pytest-xdist")
# ... those the check never imports (logger=wandb, hydra/launcher=slurm, the notebooks' tests,
# linting) ...
NOT_USED_BY_THE_CHECK = ("wandb", "hydra-submitit-launcher", "ruff", "nbclient", "nbformat",
                         "ipykernel")
# ... and the rest, which travel as wheels (with omegaconf's own dependency, antlr4).
MISSING_THERE = ("hydra-core", "omegaconf", "antlr4-python3-runtime")
WHEELS = ".whl"
ARCHIVE = "data/CIFAR-10-images.tar.gz"
CARRY = [WHEELS, ARCHIVE]
DEVICE_COMMAND = (
    f"python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "
    f"/tmp/site {WHEELS}/*.whl && export PYTHONPATH=/tmp/site && PYTHONUNBUFFERED=1 python3 "
    "src/device_check.py")


def make_wheels(target: Path) -> list[Path]:
    """Wheels of :data:`MISSING_THERE` at the versions installed here, in ``target`` (emptied
    first, so that two versions of one package cannot both travel)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    pins = [f"{name}=={metadata.version(name)}" for name in MISSING_THERE]
    # `pip wheel` takes a cached wheel where there is one and builds the rest (antlr4's 4.9.3 is
    # published as a source archive only); every one of these is pure Python, so a wheel made
    # here installs on the device's Python too.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
                    str(target), *pins], check=True)
    wheels = sorted(target.glob("*.whl"))
    impure = [w.name for w in wheels if not w.name.endswith("-py3-none-any.whl")]
    if impure or len(wheels) != len(MISSING_THERE):
        raise RuntimeError(f"expected {len(MISSING_THERE)} pure-Python wheels in {target}, got "
                           f"{[w.name for w in wheels]}")
    return wheels


def prepare(archive: Path | None, root: Path = REPO_ROOT) -> dict[str, object]:
    """Make the carried paths under ``root`` and return what to pass to the device tool."""
    wheels = make_wheels(root / WHEELS)
    carried = [WHEELS]
    if archive is not None:
        target = root / ARCHIVE
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.stat().st_size != archive.stat().st_size:
            shutil.copyfile(archive, target)
        carried.append(ARCHIVE)
    size = sum(w.stat().st_size for w in wheels) + sum(
        (root / p).stat().st_size for p in carried if (root / p).is_file())
    return {"command": DEVICE_COMMAND, "carry": carried, "carried_bytes": size,
            "wheels": [w.name for w in wheels]}
