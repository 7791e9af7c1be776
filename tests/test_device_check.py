"""The prepared device check (src/device_check.py) runs whole at tiny sizes on the CPU, so that it
is known to work before a GPU is lent."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "src"))
from alexnet.device_check import carry  # noqa: E402
from device_check import ARCHIVES  # noqa: E402


def test_smoke_runs_every_step(tmp_path: Path) -> None:
    out, outbox = tmp_path / "check", tmp_path / "outbox"
    # With $OUT set, as on a device machine, whose $OUT returns at most 8 files, 2 folders deep.
    result = subprocess.run([sys.executable, str(ROOT / "src" / "device_check.py"), "--smoke",
                             "--out", str(out)], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OUT": str(outbox)})
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    steps = results["steps"]
    assert results["smoke"] and results["environment"]["torch"]
    expected = {"environment", "benchmark", "benchmark_compile", "benchmark_nonfinite_every_50",
                "input_pipeline", "resume_whole_and_cut", "resume_resumed", "resume",
                "two_columns_nccl", "two_columns_gloo", "two_columns"}
    if any(a.is_file() for a in ARCHIVES):
        expected |= {"cifar10_prepare", "cifar10_runs", "cifar10_fig1_report",
                     "cifar10_fig1_figure", "cifar10_sec33_report"}
    assert expected <= set(steps)
    for name, step in steps.items():
        assert step["status"] == "passed" or step["status"].startswith("skipped") or (
            name == "cifar10_runs" and all(part.endswith("passed")
                                           for part in step["status"].split("; "))), (name, step)
    assert steps["benchmark"]["figures"]["fast"]["img_per_s"] > 0
    assert steps["resume_whole_and_cut"]["exits"] == ["0", "143"]  # as expected: passed
    # --smoke runs its parts side by side: some step starts before another has ended.
    spans = sorted((s["started_s"], s["started_s"] + s["seconds"]) for s in steps.values()
                   if "started_s" in s)
    assert any(later < end for i, (_, end) in enumerate(spans) for later, _ in spans[i + 1:]), spans
    resumed = steps["resume"]["figures"]["resume"]
    assert resumed["metrics_identical"] and resumed["max_relative_weight_difference"] == 0.0
    # The two columns as two processes of one machine, over gloo on the CPU; NCCL needs a GPU.
    assert steps["two_columns_nccl"]["status"].startswith("skipped")
    gloo = steps["two_columns_gloo"]["figures"]
    assert gloo["run"]["status"] == "completed" and gloo["run"]["steps"] == 3
    assert gloo["layout"]["layout"] == "model_parallel"
    assert gloo["layout"]["processes"] == gloo["layout"]["num_nodes"] == 2
    columns = steps["two_columns"]
    assert columns["status"] == "passed"
    assert "on the CPU" in columns["ran"] and "GLOO: passed" in columns["ran"]
    assert "needs two GPUs" in columns["untested"]
    if "cifar10_fig1_report" in steps:
        assert steps["cifar10_fig1_report"]["completed_runs"] == 2  # ReLU and tanh, one seed
        assert steps["cifar10_sec33_report"]["completed_runs"] == 2  # with and without LRN
        studies = out / "studies"
        assert (studies / "fig1_cifar10_jpeg_smoke" / "report.md").is_file()
        assert (studies / "fig1_cifar10_jpeg_smoke" / "figure" / "fig1.png").is_file()
        assert "60 epochs" in (studies / "sec33_60ep_jpeg_smoke" / "report.md").read_text()
        assert not list(out.rglob("*.ckpt"))  # summaries only: no checkpoints come back
    readme = (out / "README.md").read_text()
    assert "smoke" in readme and "| benchmark | passed |" in readme
    assert "| two_columns | passed |" in readme and "untested: NCCL between two GPUs" in readme
    assert not (out / "work").exists()
    # Packed: the archive holds the folder as it stands (no scratch space), the record beside it.
    assert sorted(p.name for p in outbox.iterdir()) == ["README.md", "device_check.tar.gz",
                                                         "results.json"]
    assert (outbox / "results.json").read_text() == (out / "results.json").read_text()
    with tarfile.open(outbox / "device_check.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"check/results.json", "check/README.md", "check/logs/benchmark.log"} <= names
    assert not [n for n in names if n.startswith("check/work")]


def test_only_some_steps_and_a_bad_step_name(tmp_path: Path) -> None:
    script = str(ROOT / "src" / "device_check.py")
    bad = subprocess.run([sys.executable, script, "--smoke", "--only", "benchmark,warp",
                          "--out", str(tmp_path / "bad")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: --only: unknown step 'warp'; the steps are gpu_tests, benchmark, input_pipeline, "
        "resume, two_columns, cifar10")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(("args", "says"), [
    (["--only", ","], "--only names no step; the steps are gpu_tests, benchmark, input_pipeline, "
                      "resume, two_columns, cifar10"),
    (["--cifar", "{tmp}"], "--cifar {tmp} is a folder: give the archive, CIFAR-10-images.tar.gz"),
    (["--out", "{tmp}/a_file"], "--out {tmp}/a_file: a file is in the way of that folder; choose "
                                "another --out"),
    (["--out", "{tmp}/a_file/check"], "--out {tmp}/a_file/check: a file is in the way of that "
                                      "folder; choose another --out"),
], ids=["only_nothing", "cifar_a_folder", "out_a_file", "out_under_a_file"])
def test_a_mistaken_path_or_step_list_stops_before_anything_runs(
        args: list[str], says: str, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("mine\n")
    result = subprocess.run([sys.executable, str(ROOT / "src" / "device_check.py"), "--smoke",
                             *[a.format(tmp=tmp_path) for a in args]], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {says.format(tmp=tmp_path)}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    assert (tmp_path / "a_file").read_text() == "mine\n"


def _archive(path: Path, tree: str = "CIFAR-10-images/{split}/cat") -> Path:
    """A tar.gz of the JPEG tree's shape: one image of one class in each split."""
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            member = tarfile.TarInfo(f"{tree.format(split=split)}/0001.jpg")
            payload = os.urandom(3000)  # incompressible: cutting the file cuts into its data
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    return path


ARCHIVE_DAMAGES = {  # damage: what the one line says
    "cut_half": "is not a readable tar archive (Compressed file ended before the end-of-stream",
    "cut_to_10_bytes": "is not a readable tar archive",
    "empty": "is not a readable tar archive",
    "random": "is not a readable tar archive (file could not be opened successfully)",
    "another_tree": "holds no <folder>/<train|test>/<class>/<image> files (train 0, "
                    "test 0): not the CIFAR-10 JPEG archive",
}


@pytest.mark.parametrize("prepare", [False, True], ids=["check", "prepare"])
@pytest.mark.parametrize("damage", list(ARCHIVE_DAMAGES))
def test_a_damaged_cifar_archive_stops_before_anything_runs(damage: str, prepare: bool,
                                                            tmp_path: Path) -> None:
    """A damaged --cifar archive is found by reading it through before any step (here, and on a
    device before its time is spent): one line, exit status 2, no results folder."""
    archive = _archive(tmp_path / "CIFAR-10-images.tar.gz",
                       *(["images/{split}_cat"] if damage == "another_tree" else []))
    data = archive.read_bytes()
    archive.write_bytes({"cut_half": data[:len(data) // 2], "cut_to_10_bytes": data[:10],
                         "empty": b"", "random": os.urandom(len(data))}.get(damage, data))
    out = tmp_path / "check"
    args = ["--prepare"] if prepare else ["--smoke", "--only", "cifar10", "--out", str(out)]
    result = subprocess.run([sys.executable, str(ROOT / "src" / "device_check.py"), *args,
                             "--cifar", str(archive)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {archive} ") and ARCHIVE_DAMAGES[damage] in line, line
    assert not out.exists() and result.stdout == ""


def test_an_undamaged_archive_is_counted_by_split(tmp_path: Path) -> None:
    from alexnet.device_check.cifar10_studies import check_archive

    assert check_archive(_archive(tmp_path / "a.tar.gz")) == {"train": 1, "test": 1}


def test_a_device_machine_gets_every_dependency_it_lacks() -> None:
    """Every dependency of pyproject.toml is on the device image, carried as a wheel, or unused by
    the check: a new dependency fails here until it is put in one of the three."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower()
             for d in [*project["dependencies"], *project["optional-dependencies"]["dev"]]}
    sorted_out = {*carry.ON_THE_IMAGE, *carry.NOT_USED_BY_THE_CHECK, *carry.MISSING_THERE}
    assert names - sorted_out == set()
    assert not {*carry.ON_THE_IMAGE} & {*carry.MISSING_THERE}
    # The command fits the device tool's 2,000 characters; what it carries is ignored by git (the
    # tool carries ignored paths only) and sits where the command and the check look for it.
    assert len(carry.DEVICE_COMMAND) <= 2000 and len(carry.CARRY) <= 8
    assert f"{carry.WHEELS}/*.whl" in carry.DEVICE_COMMAND
    ignored = subprocess.run(["git", "check-ignore", *carry.CARRY], cwd=ROOT, capture_output=True,
                             text=True)
    assert ignored.stdout.split() == carry.CARRY
    assert ROOT / carry.ARCHIVE in ARCHIVES


def test_a_reserved_share_is_kept_from_the_earlier_steps(tmp_path: Path) -> None:
    """The CIFAR-10 studies come last: the share kept for them cuts an earlier step short, and the
    step that releases it gets it."""
    from alexnet.device_check.runner import Check

    check = Check(tmp_path / "check", budget=30, smoke=True)
    check.reserve(28)
    sleep = [sys.executable, "-c", "import time; time.sleep(20)"]
    assert check.run("early", sleep, 600)["status"] == "out of time after 2 s"
    check.reserve(0)
    assert check.left() > 20
    assert json.loads((tmp_path / "check" / "results.json").read_text())["steps"]["early"][
        "status"].startswith("out of time")


def test_steps_side_by_side_pass_on_the_statuses_they_expect(tmp_path: Path) -> None:
    """A step of several processes passes when each exits as expected (resume's cut run stops by
    SIGTERM: 143), and fails, naming every status, when one does not."""
    from alexnet.device_check.runner import Check

    check = Check(tmp_path / "check", budget=60, smoke=True)

    def exiting(code: int) -> list[str]:
        return [sys.executable, "-c", f"raise SystemExit({code})"]

    assert check.run_together("as_expected", [exiting(0), exiting(143)], 30,
                              expect=[0, 143])["status"] == "passed"
    other = check.run_together("not_as_expected", [exiting(0), exiting(1)], 30, expect=[0, 143])
    assert other["status"] == "failed (exit 0, 1)" and other["exits"] == ["0", "1"]
    assert check.run_together("all_zero", [exiting(0), exiting(0)], 30)["status"] == "passed"
