"""The prepared device check: every GPU claim of this version measured by one command, in a few
minutes of a lent GPU, into one folder of results to commit.

    python src/device_check.py [--out DIR] [--budget SECONDS] [--cifar ARCHIVE]
    python src/device_check.py --smoke      # every step at tiny sizes on the CPU, about a minute

Steps, each a subprocess with its own log and time limit; a step that fails or runs out of time is
recorded as such and the check goes on:

1. ``environment``: torch, CUDA, the GPU (``nvidia-smi``), CPU cores;
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
   (``ckpt_path=last``) against the same run uninterrupted: the largest relative difference of
   their final weights, and whether their per-epoch metrics are equal (bit-identical on a CPU;
   cuDNN's kernels need not be);
6. ``two_columns``: the paper's two-column layout (``trainer=model_parallel``) as far as one GPU
   allows: two processes on the one device, started by two ``torchrun`` launches as two nodes of
   one process each (so that both take ``cuda:0``), a few steps of the tiny built-in data; first
   with the default backend (NCCL, which is expected to refuse two ranks on one GPU: its first
   error line is recorded), then over gloo. ``--smoke`` runs the gloo launch on CPU processes;
7. ``cifar10``: the paper's CIFAR-10 experiments on real images (the JPEG tree, ``--cifar``): Fig.
   1's study (``study_fig1_cifar10_jpeg``) and Sec. 3.3's (``study_sec33_jpeg`` on a 60-epoch
   schedule, 50 + 5 + 5), one process per arm and seed side by side on the one GPU, until the
   budget is spent; every run that completes is a result (the studies are resumable, and their
   reports list what is missing). Then their reports and Fig. 1.

``--only`` runs some of the steps (``tests,benchmark,pipeline,resume,two_columns,cifar10``), so
that a session can spread the check over two calls of its GPU time.

Writes ``DIR/results.json`` (every step's status, seconds and figures), ``DIR/README.md`` (a short
table) and ``DIR/logs/<step>.log``; the studies' ``summary.json`` files, reports and figures under
``DIR/studies/``. ``--out`` defaults to ``$OUT`` when set (the device machine's result folder),
else ``logs/device_check/<time>``. The CIFAR-10 archive is not in the repository: on a device
machine carry it as an ignored path (``data/CIFAR-10-images.tar.gz``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from alexnet import exits
from alexnet.names import BASELINE_ARM

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ARCHIVES = (ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "CIFAR-10-images.tar.gz",
            ROOT / "data" / "CIFAR-10-images.tar.gz")
STEPS = ("tests", "benchmark", "pipeline", "resume", "two_columns", "cifar10")
GPU_TESTS = ["tests/test_data_presets.py", "tests/test_fast_path.py", "tests/test_parallel.py"]
PAPER_SHAPES = ["data.image_size=256", "data.crop_size=227", "data.batch_size=128"]


def extract_subset(archive: Path, out: Path, train_per_class: int | None = None,
                   test_per_class: int | None = None) -> Path:
    """Unpack the CIFAR-10 JPEG archive's ``CIFAR-10-images`` tree into ``out`` (the first N
    images of every class of each split, all when None); returns the tree's root."""
    wanted = {"train": train_per_class, "test": test_per_class}
    taken: dict[tuple[str, str], int] = {}
    root = out / "CIFAR-10-images"
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 4 or parts[1] not in wanted:
                continue
            key, limit = (parts[1], parts[2]), wanted[parts[1]]
            if limit is not None and taken.get(key, 0) >= limit:
                continue
            taken[key] = taken.get(key, 0) + 1
            target = root / parts[1] / parts[2] / parts[3]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    return root


class Check:
    """Runs the steps, each with a log and a time limit, and records what they gave."""

    def __init__(self, out: Path, budget: float, smoke: bool) -> None:
        self.out, self.smoke = out, smoke
        self.deadline = time.monotonic() + budget
        self.results: dict[str, Any] = {"smoke": smoke, "started": datetime.now().isoformat(
            timespec="seconds"), "budget_s": budget, "steps": {}}
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, args: list[str], limit: float, **extra: Any) -> dict[str, Any]:
        """Run ``args`` (from the repository root) for at most ``limit`` seconds of the budget."""
        limit = max(1.0, min(limit, self.left()))
        started = time.monotonic()
        log = self.out / "logs" / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WANDB_SILENT": "true"}
        with open(log, "w") as f:
            try:
                rc = subprocess.run(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env,
                                    timeout=limit).returncode
                status = "passed" if rc == 0 else f"failed (exit {rc})"
            except subprocess.TimeoutExpired:
                status = f"out of time after {limit:.0f} s"
        record = {"status": status, "seconds": round(time.monotonic() - started, 1),
                  "command": " ".join(a if " " not in a else repr(a) for a in args),
                  "log": str(log.relative_to(self.out)), **extra}
        self.results["steps"][name] = record
        print(f"{name}: {status} in {record['seconds']} s", flush=True)
        return record

    def run_together(self, name: str, commands: list[list[str]], limit: float,
                     **extra: Any) -> dict[str, Any]:
        """Run ``commands`` side by side (one log each) for at most ``limit`` seconds of the
        budget; passed when every one exits 0."""
        limit = max(1.0, min(limit, self.left()))
        started = time.monotonic()
        deadline = started + limit
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WANDB_SILENT": "true",
               "OMP_NUM_THREADS": "1"}
        logs = [self.out / "logs" / f"{name}.{i}.log" for i in range(len(commands))]
        files = [open(log, "w") for log in logs]
        procs = [subprocess.Popen(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
                 for args, f in zip(commands, files, strict=True)]
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.returncode not in (None, 0) for p in procs):
                # A peer that died leaves the others waiting in a collective until the backend's
                # own timeout (many minutes): give them a few seconds to fail too, no more.
                deadline = min(deadline, time.monotonic() + 15)
            time.sleep(0.5)
        stopped = [i for i, p in enumerate(procs) if p.poll() is None]
        for i in stopped:  # SIGTERM first: torchrun then stops the workers it started
            os.killpg(procs[i].pid, signal.SIGTERM)
        for i in stopped:
            try:
                procs[i].wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(procs[i].pid, signal.SIGKILL)
                procs[i].wait()
        for f in files:
            f.close()
        codes = ["stopped" if i in stopped else str(p.returncode) for i, p in enumerate(procs)]
        if all(e == "0" for e in codes):
            status = "passed"
        elif all(e in ("0", "stopped") for e in codes):
            status = f"out of time after {limit:.0f} s"
        else:
            status = f"failed (exit {', '.join(codes)})"
        record = {"status": status, "seconds": round(time.monotonic() - started, 1),
                  "commands": [" ".join(a if " " not in a else repr(a) for a in args)
                               for args in commands],
                  "logs": [str(log.relative_to(self.out)) for log in logs], **extra}
        self.results["steps"][name] = record
        print(f"{name}: {status} in {record['seconds']} s", flush=True)
        return record

    def write(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2) + "\n")
        (self.out / "README.md").write_text(render(self.results))


def environment(check: Check) -> None:
    code = ("import json, os, torch; c = torch.cuda.is_available(); print(json.dumps({"
            "'torch': torch.__version__, 'cuda': torch.version.cuda, 'cudnn': "
            "torch.backends.cudnn.version() if c else None, 'gpu': torch.cuda.get_device_name(0) "
            "if c else None, 'gpus': torch.cuda.device_count(), 'bf16': c and "
            "torch.cuda.is_bf16_supported(), 'cpu_count': os.cpu_count()}))")
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
    shapes = ["--tiny", "trainer.accelerator=cpu"] if check.smoke else [
        *PAPER_SHAPES, "--rounds", "3", "--steps", "20", "--epochs", "2"]
    for name, extra in (("benchmark", []), ("benchmark_compile", ["speed.compile=true"]),
                        ("benchmark_nonfinite_every_50", ["nonfinite_every=50"])):
        if check.smoke and extra:  # compiling takes minutes on a CPU; the flag is tested elsewhere
            check.results["steps"][name] = {"status": "skipped in --smoke"}
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
        check.results["steps"]["input_pipeline"] = {"status": "skipped: no JPEGs (--cifar)"}
        return
    count, seconds, batch = ("40", "1", "8") if check.smoke else ("5000", "10", "128")
    workers = "0" if check.smoke else str(min(16, os.cpu_count() or 1))
    check.run("input_pipeline", [PYTHON, "src/benchmark_data.py", "--images", str(images),
                                 "--count", count, "--seconds", seconds, "--workers", workers,
                                 "--batch-size", batch], 90)


def resume(check: Check) -> None:
    """Stop a run by SIGTERM in its second epoch, resume it, and compare it with the same run
    uninterrupted."""
    work = check.out / "work" / "resume"
    args = [PYTHON, "src/train.py", "experiment=none", "data.image_size=80", "data.crop_size=67",
            "data.train_per_class=10", "data.val_per_class=5", "data.test_per_class=5",
            "data.batch_size=16", "trainer.max_epochs=2", "test=false", "seed=11",
            "model.init=kaiming", "data.scale=0.017", "optimizer.lr=0.01", "scheduler=none",
            "trainer.enable_progress_bar=false", "~callbacks.progress_bar",
            f"paths.data_dir={work / 'data'}", "data.num_workers=2"]
    if check.smoke:
        args.append("trainer.accelerator=cpu")
    # 6 steps an epoch: step 8 is the third batch of the second epoch.
    runs = {"whole": [], "cut": ["ALEXNET_SELF_SIGNAL=TERM@8"], "resumed": []}
    for name, env in runs.items():
        log_dir = work / ("whole" if name == "whole" else "cut")
        extra = ["ckpt_path=last"] if name == "resumed" else []
        command = ["env", *env, *args, f"paths.log_dir={log_dir}", *extra]
        record = check.run(f"resume_{name}", command, 240)
        expected = "failed (exit 143)" if name == "cut" else "passed"
        if record["status"] != expected:
            check.results["steps"]["resume"] = {"status": f"{name} run: {record['status']}"}
            return
    import torch  # only here: the other steps run in subprocesses

    def final(log_dir: Path) -> tuple[dict, list[dict]]:
        summary = json.loads(sorted((log_dir / "train" / "runs").glob("*/summary.json"))[-1]
                             .read_text())
        weights = torch.load(summary["checkpoints"]["last"], map_location="cpu",
                             weights_only=True)["state_dict"]
        rows = [{k: v for k, v in r.items() if "img_per_s" not in k} for r in summary["history"]]
        return weights, rows

    (whole, whole_rows), (resumed, resumed_rows) = final(work / "whole"), final(work / "cut")
    worst = max(float((resumed[k].float() - v.float()).abs().max()
                      / v.float().abs().max().clamp_min(1e-12)) for k, v in whole.items())
    check.results["steps"]["resume"] = {
        "status": "passed", "figures": {"resume": {
            "max_relative_weight_difference": worst,
            "metrics_identical": whole_rows == resumed_rows}}}
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
    work = (check.out / "work" if check.smoke else ROOT / "logs" / "device_check") / "two_columns"
    shutil.rmtree(work, ignore_errors=True)  # a completed run of the same config would be skipped
    # TINY of tests/helpers.py: the smallest crop on the built-in data, a few steps, no validation.
    train = ["src/train.py", "experiment=none", "data.image_size=80", "data.crop_size=67",
             "data.train_per_class=2", "data.val_per_class=1", "data.batch_size=4",
             "data.num_workers=0", "~callbacks.progress_bar", "trainer.enable_progress_bar=false",
             "trainer=model_parallel", "trainer.devices=1", "trainer.num_nodes=2",
             "model.columns=2", "trainer.max_steps=3", "test=false",
             "trainer.limit_val_batches=0", f"paths.log_dir={work / 'logs'}",
             f"trainer.accelerator={'cpu' if check.smoke else 'gpu'}"]
    backends = {"nccl": [], "gloo": ["+trainer.strategy.process_group_backend=gloo"]}
    records = {}
    for backend, extra in backends.items():
        name = f"two_columns_{backend}"
        if check.smoke and backend == "nccl":
            records[backend] = check.results["steps"][name] = {
                "status": "skipped in --smoke: NCCL needs a GPU"}
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
        record = check.run_together(name, commands, 35 if backend == "nccl" else 55)
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
    check.results["steps"]["two_columns"] = {
        "status": records["gloo"]["status"],
        "ran": f"trainer=model_parallel, two processes (one column each) on {device}, started "
               f"as two torchrun nodes of one process; 3 steps of the tiny built-in data. "
               + "; ".join(ran),
        "untested": TWO_COLUMNS_UNTESTED}


def cifar10(check: Check, tree: Path | None) -> None:
    if tree is None:
        check.results["steps"]["cifar10"] = {"status": "skipped: no CIFAR-10 archive (--cifar)"}
        return
    work = check.out / "work" if check.smoke else ROOT / "logs" / "device_check"
    prepared = work / "prepared" / "cifar10-folder"
    record = check.run("cifar10_prepare", [PYTHON, "src/prepare.py", "data=cifar10_folder",
                                           f"data.root={tree}", f"data.prepared_dir={prepared}"],
                       120)
    if record["status"] != "passed":
        return
    name = "fig1_cifar10_jpeg" + ("_smoke" if check.smoke else "_gpu")
    common = [PYTHON, "src/train.py", "-m", "experiment=study_fig1_cifar10_jpeg",
              f"data.prepared_dir={prepared}", "data.root=null", f"study.name={name}",
              f"paths.log_dir={work / 'logs'}"]
    if check.smoke:
        common += ["trainer.max_epochs=1", "data.batch_size=40", "data.num_workers=0",
                   "study.lrs=[0.004]", "trainer.accelerator=cpu"]
    else:
        common += ["data.num_workers=3"]
    seeds = [1] if check.smoke else [1, 2]
    jobs = [(f"seed{s}_{arm}", [*common, f"study.seeds=[{s}]", f"study.arms=[{arm}]"])
            for s in seeds for arm in (BASELINE_ARM, "tanh")]
    # Sec. 3.3 beside it: the 11% net with and without normalisation, 50 + 5 + 5 epochs.
    sec33_name = "sec33_60ep_jpeg" + ("_smoke" if check.smoke else "_gpu")
    sec33 = [PYTHON, "src/train.py", "-m", "experiment=study_sec33_jpeg",
             f"data.prepared_dir={prepared}", "data.root=null", f"study.name={sec33_name}",
             f"paths.log_dir={work / 'logs'}", "study.note='60 epochs, 50 + 5 + 5, of the "
             "recipe 500 + 10 + 10; CIFAR-10 from its quality-75 JPEG copy'"]
    if check.smoke:
        sec33 += ["trainer.max_epochs=1", "scheduler.milestones=[1,2]", "data.batch_size=40",
                  "data.num_workers=0", "trainer.accelerator=cpu"]
    else:
        sec33 += ["trainer.max_epochs=60", "scheduler.milestones=[50,55]", "data.num_workers=2"]
    jobs += [(f"sec33_seed{s}_{arm}", [*sec33, f"study.seeds=[{s}]", f"study.arms=[{arm}]"])
             for s in seeds for arm in (BASELINE_ARM, "no_lrn")]
    started = time.monotonic()
    limit = max(1.0, check.left() - (20 if check.smoke else 45))  # room for the reports
    procs = []
    for job, args in jobs:  # side by side on the one GPU: the net is small
        log = open(check.out / "logs" / f"cifar10_{job}.log", "w")
        procs.append((job, log, subprocess.Popen(args, cwd=ROOT, stdout=log,
                                                 stderr=subprocess.STDOUT,
                                                 start_new_session=True)))
    statuses = {}
    for job, log, proc in procs:
        try:
            rc = proc.wait(timeout=max(1.0, limit - (time.monotonic() - started)))
            statuses[job] = "passed" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:  # a stop request: the run in progress ends resumable
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            statuses[job] = "stopped at the budget (completed runs kept)"
        log.close()
    check.results["steps"]["cifar10_runs"] = {
        "status": "; ".join(f"{j}: {s}" for j, s in statuses.items()),
        "seconds": round(time.monotonic() - started, 1), "studies": [name, sec33_name]}
    for study, step in ((name, "cifar10_fig1"), (sec33_name, "cifar10_sec33")):
        sweep, studies = work / "logs" / "study" / study, check.out / "studies" / study
        report = check.run(f"{step}_report", [PYTHON, "ablations/report.py", str(sweep)], 60)
        if step == "cifar10_fig1":
            check.run("cifar10_fig1_figure", [PYTHON, "src/figures.py", "fig1", str(sweep),
                                              "--out", str(studies / "figure")], 60)
        for summary in sweep.rglob("summary.json"):  # the results, without the checkpoints
            target = studies / summary.relative_to(sweep)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(summary, target)
        for file in ("report.md", "report.png"):
            if (sweep / file).is_file():
                shutil.copy2(sweep / file, studies / file)
        report["completed_runs"] = sum(
            json.loads(p.read_text()).get("status") in ("completed", "diverged")
            for p in studies.rglob("summary.json"))


def render(results: dict[str, Any]) -> str:
    env = results.get("environment") or {}
    smoke = " (smoke: tiny sizes on the CPU, not a measurement)" if results["smoke"] else ""
    lines = [f"# Device check{smoke}",
             "", f"Started {results['started']}; budget {results['budget_s']:.0f} s. "
             f"{env.get('gpu') or 'no GPU'}, torch {env.get('torch')}, CUDA {env.get('cuda')}, "
             f"{env.get('cpu_count')} CPU cores. {results.get('nvidia_smi', '')}", "",
             "| step | status | seconds | figures |", "|---|---|---|---|"]
    for name, step in results["steps"].items():
        figures = step.get("figures") or {}
        shown = "; ".join(f"{k}: " + ", ".join(
            f"{m} {v:.3g}" if isinstance(v, (int, float)) else f"{m} {v}"
            for m, v in row.items() if v is not None)
            for k, row in figures.items() if isinstance(row, dict))
        if "completed_runs" in step:
            shown = f"{step['completed_runs']} runs completed"
        # What a step could not show is part of its result: why it failed, what it leaves out.
        notes = [f"{k.replace('_', ' ')}: {step[k]}" for k in ("first_error", "untested")
                 if step.get(k)]
        shown = "; ".join(([shown] if shown else []) + notes).replace("|", "/")
        lines.append(f"| {name} | {step['status']} | {step.get('seconds', '')} | {shown} |")
    lines += ["", "Each step's log is under `logs/`; the benchmarks' JSON beside this file; the "
              "CIFAR-10 studies' summaries, report and figure under `studies/`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds in all (default 470; --smoke 900)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--cifar", type=Path, default=None, help="CIFAR-10-images.tar.gz")
    parser.add_argument("--only", default=",".join(STEPS),
                        help=f"comma-separated steps of {', '.join(STEPS)} (default: all)")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := [s for s in only if s not in STEPS]:
        print(f"error: --only: unknown step {unknown[0]!r}; the steps are {', '.join(STEPS)}",
              file=sys.stderr)
        sys.exit(exits.USER_ERROR)
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else
                       ROOT / "logs" / "device_check" / datetime.now().strftime("%Y%m%d-%H%M%S"))
    archive = args.cifar or next((a for a in ARCHIVES if a.is_file()), None)
    if args.cifar is not None and not args.cifar.is_file():
        print(f"error: --cifar {args.cifar} does not exist", file=sys.stderr)
        sys.exit(exits.USER_ERROR)
    check = Check(out, args.budget or (900 if args.smoke else 470), args.smoke)
    environment(check)
    tree = None
    if archive is not None and {"pipeline", "cifar10"} & set(only):  # unpacked first
        work = check.out / "work" if args.smoke else ROOT / "logs" / "device_check"
        tree = extract_subset(archive, work, *((20, 4) if args.smoke else (None, None)))
    if "tests" in only and not args.smoke:
        check.run("gpu_tests", [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                "-n", "4", "-rs", *GPU_TESTS], 120)
    if "benchmark" in only:
        benchmarks(check)
    if "pipeline" in only:
        input_pipeline(check, None if tree is None else _flat_images(tree, check))
    if "resume" in only:
        resume(check)
    if "two_columns" in only:  # before the studies, which take whatever budget is left
        two_columns(check)
    if "cifar10" in only:
        cifar10(check, tree)
    check.write()
    if args.smoke:
        shutil.rmtree(check.out / "work", ignore_errors=True)
    print(f"wrote {out / 'results.json'} and {out / 'README.md'}")


def _flat_images(tree: Path, check: Check) -> Path:
    """The test JPEGs in one folder, named ``<class>_<n>.jpg`` as src/benchmark_data.py reads."""
    flat = (check.out / "work" if check.smoke else ROOT / "logs" / "device_check") / "flat"
    flat.mkdir(parents=True, exist_ok=True)
    for path in sorted((tree / "test").glob("*/*.jpg")):
        link = flat / f"{path.parent.name}_{path.name}"
        if not link.exists():
            link.symlink_to(path.resolve())
    return flat


if __name__ == "__main__":
    main()
