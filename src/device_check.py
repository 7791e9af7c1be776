"""The prepared device check: every GPU claim of this version measured by one command, in a few
minutes of a lent GPU, into one folder of results to commit.

    python src/device_check.py --prepare    # here: the wheels and archive a device machine needs
    python src/device_check.py [--out DIR] [--budget SECONDS] [--cifar ARCHIVE] [--only STEPS]
    python src/device_check.py --smoke      # every step, tiny, on the CPU, side by side

Steps, each a subprocess with its own log and time limit; a step that fails or runs out of time is
recorded as such and the check goes on:

1. ``environment``: Python, torch, Lightning, Hydra, CUDA, the GPU (``nvidia-smi``), CPU cores,
   and any package the project needs that is missing;
2. ``gpu_tests``: the tests that run only where there is a GPU;
3. ``benchmark`` and ``benchmark_compile``: ``src/benchmark.py`` at the paper's 227 x 227, batch
   128, the automatic precision (bf16 on a GPU that has it), model-only against the stock fp32
   loop and end to end through the run assembly, MFU against the measured matmul peak; the second
   with ``speed.compile=true``;
   ``benchmark_nonfinite_every_50``: end to end with the loss's finiteness read every 50 steps
   instead of every step (one device-to-host sync a step: ``nonfinite_every``);
4. ``input_pipeline``: ``src/benchmark_data.py``, the prepared uint8 batches through the loader
   alone, images/s beside what the GPU's step consumes (from step 3);
5. ``resume``: a short run stopped by SIGTERM in an epoch's middle and resumed
   (``ckpt_path=last``) against the same run uninterrupted (the two first runs side by side, one
   intra-op thread each, as the resumed one): the largest relative difference of
   their final weights, and whether their per-epoch metrics are equal (bit-identical on a CPU;
   cuDNN's kernels need not be);
6. ``two_columns``: the paper's two-column layout (``trainer=model_parallel``) as far as one GPU
   allows: two processes on the one device, started by two ``torchrun`` launches as two nodes of
   one process each (so that both take ``cuda:0``), a few steps of the tiny built-in data; first
   with the default backend (NCCL, which is expected to refuse two ranks on one GPU: its first
   error line is recorded), then over gloo. ``--smoke`` runs the gloo launch on CPU processes;
7. ``cifar10``: the paper's CIFAR-10 experiments on real images (the JPEG tree, ``--cifar``): Fig.
   1's study (``study_fig1_cifar10_jpeg``) and Sec. 3.3's (``study_sec33_60ep_jpeg``, 50 + 5 + 5
   epochs), one process per arm and seed side by side on the one GPU, until the
   budget is spent. Then their reports and Fig. 1.

``--only`` runs some of the steps, named as the record names them
(``gpu_tests,benchmark,input_pipeline,resume,two_columns,cifar10``), so that a session can
spread the check over two calls of its GPU time.

Writes ``DIR/results.json`` (every step's status, seconds and figures), ``DIR/README.md`` (a short
table) and ``DIR/logs/<step>.log``; the studies' ``summary.json`` files, reports and figures under
``DIR/studies/``. ``DIR`` defaults to ``logs/device_check/device_check_<time>``. Where ``$OUT`` is
set (a device machine's result folder, which returns at most 8 files), the folder is also packed
into ``$OUT/device_check.tar.gz`` with ``results.json`` and ``README.md`` beside it, after every
step. ``--prepare`` (here, before a device is called) makes what a bare device machine lacks and
prints the command and the paths to carry (``alexnet.device_check.carry``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from alexnet import exits
from alexnet.benchmarks.arguments import positive_float
from alexnet.device_check import carry, steps
from alexnet.device_check.cifar10_studies import (
    ArchiveError,
    check_archive,
    cifar10_studies,
    extract_subset,
)
from alexnet.device_check.runner import PYTHON, Check
from alexnet.provenance import REPO_ROOT

ARCHIVES = (REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "CIFAR-10-images.tar.gz",
            REPO_ROOT / carry.ARCHIVE)
# The steps --only takes, named as results.json records them.
STEPS = ("gpu_tests", "benchmark", "input_pipeline", "resume", "two_columns", "cifar10")
CIFAR10_SHARE = 0.35  # of the budget, kept for the CIFAR-10 studies when they are run


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(exits.USER_ERROR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--budget", type=positive_float, default=None,
                        help="seconds in all (default 470; --smoke 900)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--cifar", type=Path, default=None, help="CIFAR-10-images.tar.gz")
    parser.add_argument("--only", default=",".join(STEPS),
                        help=f"comma-separated steps of {', '.join(STEPS)} (default: all)")
    parser.add_argument("--prepare", action="store_true",
                        help="make the wheels and archive a device machine needs, print the call")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := [s for s in only if s not in STEPS]:
        fail(f"--only: unknown step {unknown[0]!r}; the steps are {', '.join(STEPS)}")
    if not only:
        fail(f"--only names no step; the steps are {', '.join(STEPS)}")
    if args.cifar is not None and args.cifar.is_dir():
        fail(f"--cifar {args.cifar} is a folder: give the archive, CIFAR-10-images.tar.gz")
    if args.cifar is not None and not args.cifar.is_file():
        fail(f"--cifar {args.cifar} does not exist")
    if args.out is not None and (args.out.is_file() or any(
            p.exists() and not p.is_dir() for p in args.out.parents)):
        fail(f"--out {args.out}: a file is in the way of that folder; choose another --out")
    archive = args.cifar or next((a for a in ARCHIVES if a.is_file()), None)
    if archive is not None and (args.prepare or {"input_pipeline", "cifar10"} & set(only)):
        try:  # before anything is written, and before a device's time is spent on it
            check_archive(archive)
        except ArchiveError as error:
            fail(str(error))
    if args.prepare:
        call = carry.prepare(archive)
        print(json.dumps(call, indent=2))
        if archive is None:
            print("note: no CIFAR-10 archive (--cifar): the cifar10 and input_pipeline steps will "
                  "be skipped there", file=sys.stderr)
        return
    pack_to = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    out = args.out or REPO_ROOT / "logs" / "device_check" / datetime.now().strftime(
        "device_check_%Y%m%d-%H%M%S")
    check = Check(out, args.budget or (900 if args.smoke else 470), args.smoke, pack_to=pack_to)
    steps.environment(check)
    if "cifar10" in only and archive is not None and not args.smoke:
        # The studies come last and take what is left: keep them a share that completes a few of
        # their runs (a ReLU run of Fig. 1 is about 10 epochs, at about 2 s an epoch on an H100:
        # docs/cifar10.md), whatever the others take.
        check.reserve(CIFAR10_SHARE * check.left())
    tree = None
    if archive is not None and {"input_pipeline", "cifar10"} & set(only):  # unpacked first
        tree = extract_subset(archive, check.work, *((20, 4) if args.smoke else (None, None)))
    # Each part of the check, in the order a GPU runs them; each holds steps that depend on one
    # another (the resumed run after the cut one, the studies' reports after their runs).
    parts: list[Callable[[], None]] = []
    if "gpu_tests" in only and not args.smoke:
        parts.append(lambda: check.run("gpu_tests", [
            PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "4", "-rs",
            *steps.GPU_TESTS], 120))
    if "benchmark" in only:
        parts.append(lambda: steps.benchmarks(check))
    if "input_pipeline" in only:
        parts.append(lambda: steps.input_pipeline(
            check, None if tree is None else steps.flat_images(tree, check)))
    if "resume" in only:
        parts.append(lambda: steps.resume(check))
    if "two_columns" in only:  # before the studies, which take whatever budget is left
        parts.append(lambda: steps.two_columns(check))
    if "cifar10" in only:
        parts.append(lambda: cifar10_studies(check, tree))
    if args.smoke:
        # Side by side, longest first (the studies, resume, the two columns): --smoke measures
        # nothing, and most of each step is its processes' imports, which other cores shorten.
        # On a GPU one after the other, so that no figure is measured beside another step's work.
        at_once = max(2, (os.cpu_count() or 2) // 2)
        with ThreadPoolExecutor(max_workers=at_once) as pool:
            for done in [pool.submit(part) for part in reversed(parts)]:
                done.result()
    else:
        for part in parts:
            part()
    check.write()
    if args.smoke:
        shutil.rmtree(check.out / "work", ignore_errors=True)
    print(f"wrote {out / 'results.json'} and {out / 'README.md'}"
          + (f"; packed into {pack_to}" if pack_to else ""))


if __name__ == "__main__":
    main()
