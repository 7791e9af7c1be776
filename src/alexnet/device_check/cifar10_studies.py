"""The device check's CIFAR-10 step: the paper's two CIFAR-10 experiments on the JPEG tree (Fig.
1's study and Sec. 3.3's on a 60-epoch schedule), one process per arm and seed side by side on the
one GPU until the budget is spent; every run that completes is a result (the studies are
resumable, and their reports list what is missing). Then their reports and Fig. 1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import zlib
from pathlib import Path

from alexnet.device_check.runner import PYTHON, Check
from alexnet.names import BASELINE_ARM
from alexnet.provenance import REPO_ROOT


class ArchiveError(ValueError):
    """The CIFAR-10 archive cannot be read whole, or does not hold the JPEG tree."""


def check_archive(archive: Path) -> dict[str, int]:
    """Read the whole archive once (a damaged gzip stream or tar shows only when read through),
    before any step runs; returns the number of images of each split, raises ArchiveError."""
    counts = {"train": 0, "test": 0}
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                parts = Path(member.name).parts
                if member.isfile() and len(parts) == 4 and parts[1] in counts:
                    counts[parts[1]] += 1
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        why = str(error).splitlines()[0].rstrip(":")  # tarfile's lists one line per method
        raise ArchiveError(f"{archive} is not a readable tar archive ({why}); replace it with "
                           "a fresh copy of CIFAR-10-images.tar.gz") from None
    if not all(counts.values()):
        raise ArchiveError(f"{archive} holds no <folder>/<train|test>/<class>/<image> "
                           f"files (train {counts['train']}, test {counts['test']}): not the "
                           "CIFAR-10 JPEG archive")
    return counts


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



def _jobs(prefix: str, command: list[str], seeds: list[int], arms: tuple[str, ...],
          smoke: bool) -> list[tuple[str, list[str]]]:
    """One process per arm and seed, side by side on the GPU; in ``--smoke`` one per study (its
    arms one after the other: each process's imports cost the CPU more than its tiny runs)."""
    if smoke:
        return [(f"{prefix}seed{seeds[0]}", [*command, f"study.seeds=[{seeds[0]}]",
                                             f"study.arms=[{','.join(arms)}]"])]
    return [(f"{prefix}seed{s}_{arm}", [*command, f"study.seeds=[{s}]", f"study.arms=[{arm}]"])
            for s in seeds for arm in arms]


def cifar10_studies(check: Check, tree: Path | None) -> None:
    """Prepare the tree, run both studies side by side until the budget is spent, then report."""
    check.reserve(0)  # what the earlier steps were kept from is this step's
    if tree is None:
        check.record("cifar10", {"status": "skipped: no CIFAR-10 archive (--cifar)"})
        return
    work = check.work
    prepared = work / "prepared" / "cifar10-folder"
    record = check.run("cifar10_prepare", [PYTHON, "src/prepare.py", "data=cifar10_folder",
                                           f"data.root={tree}", f"data.prepared_dir={prepared}"],
                       120)
    if record["status"] != "passed":
        return
    suffix = "_smoke" if check.smoke else "_gpu"
    name, sec33_name = "fig1_cifar10_jpeg" + suffix, "sec33_60ep_jpeg" + suffix

    def sweep_command(experiment: str, study_name: str) -> list[str]:
        """A study preset's sweep on the prepared tree, under this check's name for it."""
        return [PYTHON, "src/train.py", "-m", f"experiment={experiment}",
                f"data.prepared_dir={prepared}", "data.root=null", f"study.name={study_name}",
                f"paths.log_dir={work / 'logs'}"]

    common = sweep_command("study_fig1_cifar10_jpeg", name)
    if check.smoke:
        common += ["trainer.max_epochs=1", "data.batch_size=40", "data.num_workers=0",
                   "study.lrs=[0.004]", "trainer.accelerator=cpu"]
    else:  # the preset pins float32 for its CPU results; on the GPU bf16 is where the speed is
        common += ["data.num_workers=3", "trainer.precision=bf16-mixed"]
    seeds = [1] if check.smoke else [1, 2]
    fig1_arms, sec33_arms = (BASELINE_ARM, "tanh"), (BASELINE_ARM, "no_lrn")
    jobs = _jobs("", common, seeds, fig1_arms, check.smoke)
    # Sec. 3.3 beside it: the 11% net with and without normalisation, 50 + 5 + 5 epochs.
    # (the preset the CPU's runs of it use: the same settings, bf16 on both)
    sec33 = sweep_command("study_sec33_60ep_jpeg", sec33_name)
    if check.smoke:
        sec33 += ["trainer.max_epochs=1", "scheduler.milestones=[1,2]", "data.batch_size=40",
                  "data.num_workers=0", "trainer.accelerator=cpu"]
    else:
        sec33 += ["data.num_workers=2"]
    jobs += _jobs("sec33_", sec33, seeds, sec33_arms, check.smoke)
    started = time.monotonic()
    limit = max(1.0, check.left() - (20 if check.smoke else 45))  # room for the reports
    procs = []
    for job, args in jobs:  # side by side on the one GPU: the net is small
        log = open(check.out / "logs" / f"cifar10_{job}.log", "w")
        procs.append((job, log, subprocess.Popen(args, cwd=REPO_ROOT, stdout=log,
                                                 stderr=subprocess.STDOUT, env=check.env(),
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
    check.record("cifar10_runs", {
        "status": "; ".join(f"{j}: {s}" for j, s in statuses.items()),
        "started_s": check.since(started), "seconds": round(time.monotonic() - started, 1),
        "studies": [name, sec33_name]})
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
        check.record(f"{step}_report", report)
