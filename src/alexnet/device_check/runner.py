"""Runs the device check's steps inside one budget and records what they gave.

Each step is a subprocess with its own log and a time limit; one that fails or runs out of time is
recorded as such and the check goes on. After every step the record is written again
(``results.json``, ``README.md``) and, where the results must travel through a folder that takes
only a few files (a device machine's ``$OUT``: at most 8 files, 2 folders deep), the whole folder
is packed into one archive beside them: a check cut short still returns what it measured.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from alexnet.provenance import REPO_ROOT

PYTHON = sys.executable
ARCHIVE_NAME = "device_check.tar.gz"


def step_env(**extra: str) -> dict[str, str]:
    """The environment of a step: the project's ``src`` first on the path, and whatever path the
    caller had after it (on a device machine, the packages installed from carried wheels)."""
    path = [str(REPO_ROOT / "src"),
            *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "WANDB_SILENT": "true", **extra}


def _shown(args: list[str]) -> str:
    return " ".join(a if " " not in a else repr(a) for a in args)


class Check:
    """Runs the steps, each with a log and a time limit, and records what they gave in ``out``;
    with ``pack_to``, also as one archive (plus the record) in that folder after every step."""

    def __init__(self, out: Path, budget: float, smoke: bool, pack_to: Path | None = None) -> None:
        self.out, self.smoke, self.pack_to = out, smoke, pack_to
        self.began = time.monotonic()
        self.deadline = self.began + budget
        self.reserved = 0.0  # seconds at the budget's end that only a later step may spend
        self.lock = threading.Lock()  # --smoke runs steps side by side (device_check.main)
        self.results: dict[str, Any] = {"smoke": smoke, "started": datetime.now().isoformat(
            timespec="seconds"), "budget_s": budget, "steps": {}}
        (out / "logs").mkdir(parents=True, exist_ok=True)

    @property
    def work(self) -> Path:
        """Scratch space of the steps (data, checkpoints): inside the results folder for
        ``--smoke`` (removed at the end), else ``logs/device_check`` of the repository."""
        return self.out / "work" if self.smoke else REPO_ROOT / "logs" / "device_check"

    def since(self, started: float) -> float:
        """When a step that began at ``started`` (``time.monotonic()``) began, in seconds into
        the check: --smoke's steps overlap, and the record shows how."""
        return round(started - self.began, 1)

    def left(self) -> float:
        """Seconds the step in progress may still spend."""
        return self.deadline - self.reserved - time.monotonic()

    def reserve(self, seconds: float) -> None:
        """Keep the budget's last ``seconds`` for a later step (which calls ``reserve(0)``)."""
        self.reserved = seconds

    def record(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        """Keep a step's record and write everything out again."""
        with self.lock:
            self.results["steps"][name] = record
            self.write()
        return record

    def env(self, **extra: str) -> dict[str, str]:
        """A step's environment; in ``--smoke``, whose steps run side by side, one intra-op
        thread each (several processes each spinning a thread per core slow them all)."""
        return step_env(**{**({"OMP_NUM_THREADS": "1"} if self.smoke else {}), **extra})

    def run(self, name: str, args: list[str], limit: float, **extra: Any) -> dict[str, Any]:
        """Run ``args`` (from the repository root) for at most ``limit`` seconds of the budget."""
        limit = max(1.0, min(limit, self.left()))
        started = time.monotonic()
        log = self.out / "logs" / f"{name}.log"
        with open(log, "w") as f:
            try:
                rc = subprocess.run(args, cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT,
                                    env=self.env(), timeout=limit).returncode
                status = "passed" if rc == 0 else f"failed (exit {rc})"
            except subprocess.TimeoutExpired:
                status = f"out of time after {limit:.0f} s"
        record = {"status": status, "started_s": self.since(started),
                  "seconds": round(time.monotonic() - started, 1), "command": _shown(args),
                  "log": str(log.relative_to(self.out)), **extra}
        print(f"{name}: {status} in {record['seconds']} s", flush=True)
        return self.record(name, record)

    def run_together(self, name: str, commands: list[list[str]], limit: float,
                     expect: list[int] | None = None, **extra: Any) -> dict[str, Any]:
        """Run ``commands`` side by side (one log each) for at most ``limit`` seconds of the
        budget; passed when each exits with its status of ``expect`` (default: all 0;
        ``exits``: each one's status, or ``stopped``)."""
        expected = [str(code) for code in expect or [0] * len(commands)]
        limit = max(1.0, min(limit, self.left()))
        started = time.monotonic()
        deadline = started + limit
        logs = [self.out / "logs" / f"{name}.{i}.log" for i in range(len(commands))]
        files = [open(log, "w") for log in logs]
        procs = [subprocess.Popen(args, cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT,
                                  env=self.env(OMP_NUM_THREADS="1"), start_new_session=True)
                 for args, f in zip(commands, files, strict=True)]
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.returncode not in (None, int(e))
                   for p, e in zip(procs, expected, strict=True)):
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
        if codes == expected:
            status = "passed"
        elif all(c in (e, "stopped") for c, e in zip(codes, expected, strict=True)):
            status = f"out of time after {limit:.0f} s"
        else:
            status = f"failed (exit {', '.join(codes)})"
        record = {"status": status, "started_s": self.since(started),
                  "seconds": round(time.monotonic() - started, 1), "exits": codes,
                  "commands": [_shown(args) for args in commands],
                  "logs": [str(log.relative_to(self.out)) for log in logs], **extra}
        print(f"{name}: {status} in {record['seconds']} s", flush=True)
        return self.record(name, record)

    def write(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2) + "\n")
        (self.out / "README.md").write_text(render_readme(self.results))
        if self.pack_to is not None:
            pack(self.out, self.pack_to)


def pack(out: Path, to: Path) -> Path:
    """``out`` as one archive in ``to`` (``device_check.tar.gz``, unpacking into a folder named
    as ``out``), with ``results.json`` and ``README.md`` beside it: three files, whatever the
    folder holds. Scratch space (``work/``) stays behind."""
    to.mkdir(parents=True, exist_ok=True)
    partial = to / f".{ARCHIVE_NAME}.partial"
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(out, arcname=out.name, filter=lambda member: None if Path(
            member.name).parts[1:2] == ("work",) else member)
    partial.replace(to / ARCHIVE_NAME)  # a check killed while packing leaves the last archive
    for name in ("results.json", "README.md"):
        (to / name).write_bytes((out / name).read_bytes())
    return to / ARCHIVE_NAME


def render_readme(results: dict[str, Any]) -> str:
    """The record as a short markdown table, one row per step."""
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
