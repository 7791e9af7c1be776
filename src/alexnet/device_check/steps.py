"""The device check's steps on the GPU's own claims: the environment, the tests that need a GPU,
the benchmarks, the input pipeline, resume after SIGTERM, and the two columns on one GPU. Each
takes the :class:`~alexnet.device_check.runner.Check` and records what it measured there."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from alexnet import exits
from alexnet.device_check.runner import PYTHON, Check

GPU_TESTS = ["tests/test_data_presets.py", "tests/test_fast_path.py", "tests/test_parallel.py"]
PAPER_SHAPES = ["data.image_size=256", "data.crop_size=227", "data.batch_size=128"]


# Versions from the installed packages' metadata, not by importing them: Lightning and its
# torchmetrics take seconds to import; only torch is imported, for CUDA and the GPU.
ENVIRONMENT = """
import json, os, platform
from importlib import metadata
versions, missing = {}, []
for name, dist in (("torch", "torch"), ("torchvision", "torchvision"), ("lightning", "lightning"),
                   ("torchmetrics", "torchmetrics"), ("hydra", "hydra-core"),
                   ("omegaconf", "omegaconf"), ("numpy", "numpy")):
    try:
        versions[name] = metadata.version(dist)
    except metadata.PackageNotFoundError:
        missing.append(name)
import torch
versions["torch"] = torch.__version__  # with its build's suffix (+cu130)
c = torch.cuda.is_available()
print(json.dumps({**versions, "python": platform.python_version(), "missing": missing,
                  "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version() if c else None,
                  "gpu": torch.cuda.get_device_name(0) if c else None,
                  "gpus": torch.cuda.device_count(), "bf16": c and torch.cuda.is_bf16_supported(),
                  "cpu_count": os.cpu_count()}))
"""


def environment(check: Check) -> None:
    """The versions the check ran with, and any package the project needs that is missing (a
    device machine's image lacks Hydra: ``alexnet.device_check.carry`` brings it)."""
    code = ENVIRONMENT
    record = check.run("environment", [PYTHON, "-c", code], 60)
    text = (check.out / record["log"]).read_text().strip().splitlines()
    try:
        check.results["environment"] = json.loads(text[-1])
    except (IndexError, json.JSONDecodeError):
        check.results["environment"] = None
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True)
        check.results["nvidia_smi"] = smi.stdout.strip()


def benchmarks(check: Check) -> None:
    shapes = ["--tiny", "--epochs", "1", "trainer.accelerator=cpu"] if check.smoke else [
        *PAPER_SHAPES, "--rounds", "3", "--steps", "20", "--epochs", "2"]
    for name, extra in (("benchmark", []), ("benchmark_compile", ["speed.compile=true"]),
                        ("benchmark_nonfinite_every_50", ["nonfinite_every=50"])):
        if check.smoke and extra:  # compiling takes minutes on a CPU; the flag is tested elsewhere
            check.record(name, {"status": "skipped in --smoke"})
            continue
        out = check.out / f"{name}.json"
        record = check.run(name, [PYTHON, "src/benchmark.py", "--json", str(out), *shapes,
                                  *extra], 150)
        if out.is_file():
            data = json.loads(out.read_text())
            record["figures"] = _benchmark_figures(data)


def _benchmark_figures(data: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a src/benchmark.py JSON: images/s and MFU of each runner, end to
    end, and the ratios the targets are stated in."""
    figures = {name: {k: row.get(k) for k in ("img_per_s", "mfu")}
               for name, row in (data.get("model_only") or {}).items() if isinstance(row, dict)}
    figures["end_to_end"] = {name: (run or {}).get("img_per_s")
                             for name, run in (data.get("end_to_end") or {}).items()}
    figures["ratios"] = data.get("ratios") or {}
    figures["precision"] = {"precision": (data.get("config") or {}).get("precision")}
    return figures


def input_pipeline(check: Check, images: Path | None) -> None:
    if images is None:
        check.record("input_pipeline", {"status": "skipped: no JPEGs (--cifar)"})
        return
    count, seconds, batch = ("40", "1", "8") if check.smoke else ("5000", "10", "128")
    workers = "0" if check.smoke else str(min(16, os.cpu_count() or 1))
    check.run("input_pipeline", [PYTHON, "src/benchmark_data.py", "--images", str(images),
                                 "--count", count, "--seconds", seconds, "--workers", workers,
                                 "--batch-size", batch], 90)


def resume(check: Check) -> None:
    """Stop a run by SIGTERM in its second epoch, resume it, and compare it with the same run
    uninterrupted."""
    work = check.work / "resume"
    args = [PYTHON, "src/train.py", "experiment=none", "data.image_size=80", "data.crop_size=67",
            "data.train_per_class=10", "data.val_per_class=5", "data.test_per_class=5",
            "data.batch_size=16", "trainer.max_epochs=2", "test=false", "seed=11",
            "model.init=kaiming", "data.scale=0.017", "optimizer.lr=0.01", "scheduler=none",
            "trainer.enable_progress_bar=false", "~callbacks.progress_bar",
            "data.num_workers=2"]
    if check.smoke:  # fc6 and fc7 of 256 neurons as the tests' tiny runs: the CPU's seconds
        args += ["trainer.accelerator=cpu", "model.fc_width=256"]
    # 6 steps an epoch: step 8 is the third batch of the second epoch. The whole run and the
    # cut one are independent: side by side (one core each), then the cut one resumed. Each
    # draws the built-in data (the same images, from the same seed) into its own folder: in one
    # they would write the same files at once.
    def command(log_dir: str, *extra: str) -> list[str]:
        return [*args, f"paths.log_dir={work / log_dir}", f"paths.data_dir={work / log_dir}-data",
                *extra]

    stopped = exits.interrupted(signal.SIGTERM)  # the cut run's status: 143
    record = check.run_together("resume_whole_and_cut", [
        command("whole"), ["env", "ALEXNET_SELF_SIGNAL=TERM@8", *command("cut")]], 240,
        expect=[exits.COMPLETED, stopped])
    if record["status"] != "passed":
        check.record("resume", {"status": f"whole and cut runs: exits {record['exits']}, "
                                          f"expected 0 and {stopped}"})
        return
    # With one intra-op thread as the two before it (run_together's): another thread count sums
    # in another order, and the weights would differ by rounding on the CPU.
    record = check.run("resume_resumed", ["env", "OMP_NUM_THREADS=1",
                                          *command("cut", "ckpt_path=last")], 240)
    if record["status"] != "passed":
        check.record("resume", {"status": f"resumed run: {record['status']}"})
        return
    import torch  # only here: the other steps run in subprocesses

    def final(log_dir: Path) -> tuple[dict, list[dict]]:
        summary = json.loads(sorted((log_dir / "train" / "runs").glob("*/summary.json"))[-1]
                             .read_text())
        weights = torch.load(summary["checkpoints"]["last"], map_location="cpu",
                             weights_only=True)["state_dict"]
        rows = [{k: v for k, v in r.items() if "img_per_s" not in k} for r in summary["history"]]
        return weights, rows

    try:
        (whole, whole_rows), (resumed, resumed_rows) = final(work / "whole"), final(work / "cut")
        worst = max(float((resumed[k].float() - v.float()).abs().max()
                          / v.float().abs().max().clamp_min(1e-12)) for k, v in whole.items())
    except (IndexError, KeyError, OSError, RuntimeError) as err:  # recorded; the check goes on
        check.record("resume", {"status": f"failed comparing the runs: {err!r}"[:300]})
        return
    check.record("resume", {
        "status": "passed", "figures": {"resume": {
            "max_relative_weight_difference": worst,
            "metrics_identical": whole_rows == resumed_rows}}})
    print(f"resume: largest relative weight difference {worst:.3g}; per-epoch metrics "
          f"{'identical' if whole_rows == resumed_rows else 'differ'}", flush=True)


TWO_COLUMNS_UNTESTED = (
    "NCCL between two GPUs, the paper's layout as it trains: needs two GPUs; and the speed of the "
    "columns: two processes sharing one GPU measure nothing of it")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_error(logs: list[Path]) -> str | None:
    """The line that says why a launch failed: NCCL's own message when there is one, else the
    first exception line that is not torchrun's report of its failed worker."""
    lines = [line.strip() for log in logs if log.is_file()
             for line in log.read_text(errors="replace").splitlines()]
    for pattern in (r"Duplicate GPU", r"^(\w+\.)*\w*(Error|Exception)\b(?!: $)",
                    r"\berror\b"):
        for line in lines:
            if re.search(pattern, line, re.IGNORECASE if pattern == r"\berror\b" else 0) \
                    and "ChildFailedError" not in line:
                return line[:300]
    return None


def two_columns(check: Check) -> None:
    """The paper's two-column layout on one device: two processes, one column each, started as
    two torchrun nodes of one process so that each has LOCAL_RANK 0 and takes cuda:0."""
    work = check.work / "two_columns"
    shutil.rmtree(work, ignore_errors=True)  # a completed run of the same config would be skipped
    # TINY of tests/helpers.py: the smallest crop on the built-in data, a few steps, no validation
    # (the paper's 4096-wide fc6 and fc7 on the GPU; 256 in --smoke, as the tests' tiny runs).
    train = ["src/train.py", "experiment=none", "data.image_size=80", "data.crop_size=67",
             "data.train_per_class=2", "data.val_per_class=1", "data.batch_size=4",
             "data.num_workers=0", "~callbacks.progress_bar", "trainer.enable_progress_bar=false",
             "trainer=model_parallel", "trainer.devices=1", "trainer.num_nodes=2",
             "model.columns=2", "trainer.max_steps=3", "test=false",
             "trainer.limit_val_batches=0", f"paths.log_dir={work / 'logs'}",
             *(["trainer.accelerator=cpu", "model.fc_width=256"] if check.smoke
               else ["trainer.accelerator=gpu"])]
    backends = {"nccl": [], "gloo": ["+trainer.strategy.process_group_backend=gloo"]}
    records = {}
    for backend, extra in backends.items():
        name = f"two_columns_{backend}"
        if check.smoke and backend == "nccl":
            records[backend] = check.record(name, {
                "status": "skipped in --smoke: NCCL needs a GPU"})
            continue
        port = _free_port()
        # Both processes of the pair on this machine, each its own torchrun "node"; they must
        # share one run directory (alexnet.jobs.checks.check_parallel). Each node makes the
        # built-in data on its own disk (its LOCAL_RANK 0 prepares it), so here each is given its
        # own data directory: in one they would write the same files at once.
        commands = [[PYTHON, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                     f"--node_rank={node}", "--master_addr=127.0.0.1", f"--master_port={port}",
                     *train, *extra, f"paths.data_dir={work / f'data{node}'}",
                     f"hydra.run.dir={work / backend}"] for node in (0, 1)]
        # gloo's launch is given longer in --smoke, where other steps run beside it.
        limit = 35 if backend == "nccl" else 120 if check.smoke else 55
        record = check.run_together(name, commands, limit)
        if record["status"] != "passed":
            record["first_error"] = _first_error([check.out / log for log in record["logs"]])
        summary = work / backend / "summary.json"
        if summary.is_file():
            data = json.loads(summary.read_text())
            record["figures"] = {"run": {"status": data.get("status"),
                                         "steps": data.get("global_step"),
                                         "train_loss": (data.get("final") or {}).get(
                                             "train/loss")},
                                 "layout": data.get("parallel")}
        records[backend] = record
    device = "the CPU" if check.smoke else "one GPU (both on cuda:0)"
    ran = [f"{b.upper()}: {r['status']}" for b, r in records.items()]
    check.record("two_columns", {
        "status": records["gloo"]["status"],
        "ran": f"trainer=model_parallel, two processes (one column each) on {device}, started "
               f"as two torchrun nodes of one process; 3 steps of the tiny built-in data. "
               + "; ".join(ran),
        "untested": TWO_COLUMNS_UNTESTED})


def flat_images(tree: Path, check: Check) -> Path:
    """The test JPEGs in one folder, named ``<class>_<n>.jpg`` as src/benchmark_data.py reads."""
    flat = check.work / "flat"
    flat.mkdir(parents=True, exist_ok=True)
    for path in sorted((tree / "test").glob("*/*.jpg")):
        link = flat / f"{path.parent.name}_{path.name}"
        if not link.exists():
            link.symlink_to(path.resolve())
    return flat
