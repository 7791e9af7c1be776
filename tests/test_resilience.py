"""Long runs survive: a real training process interrupted by a real signal in an epoch's middle
resumes to the same metrics, epoch by epoch, as an uninterrupted run; two runs with one seed are
bit-identical; records and checkpoints are written whole or not at all."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TINY, compose_config

from alexnet.jobs.train import train
from alexnet.training import summary as summary_module
from alexnet.training.checkpoints import read_checkpoint
from alexnet.training.rng import mix_seed, rng_states, set_rng_states

# Three epochs of five batches, two loader workers, and a plateau schedule that divides the
# learning rate after every epoch: the resumed run must restore the optimizer, the scheduler, the
# loader's position and the random states to match.
LONG = [*TINY, "data.num_workers=2", "trainer.max_epochs=3", "trainer.deterministic=true",
        "test=false", "scheduler=plateau", "scheduler.patience=0", "scheduler.threshold=0.5",
        "seed=11"]


def _draw_data(data_dir: Path) -> None:
    """Draw the tiny built-in dataset once, before processes that read it start side by side."""
    from hydra.utils import instantiate

    instantiate(compose_config("train", TINY, data_dir / "unused", data_dir).data).prepare_data()


def _start(args: list[str], log_dir: Path, data_dir: Path, **env: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **env}
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), f"paths.log_dir={log_dir}",
           f"paths.data_dir={data_dir}", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=log_dir.parent)


def _finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def _summaries(log_dir: Path) -> list[dict]:
    paths = sorted((log_dir / "train" / "runs").glob("*/summary.json"))
    return [json.loads(p.read_text()) for p in paths]


def _metrics(history: list[dict]) -> list[dict]:
    """The per-epoch rows without the wall-clock throughput, which no two runs share."""
    return [{k: v for k, v in row.items() if "img_per_s" not in k} for row in history]


def test_interrupted_mid_epoch_resumes_to_identical_metrics(tmp_path: Path,
                                                            data_dir: Path) -> None:
    whole, cut = tmp_path / "whole" / "logs", tmp_path / "cut" / "logs"
    for d in (whole, cut):
        d.mkdir(parents=True)
    _draw_data(data_dir)
    # Step 7 is the third batch of epoch 1: the signal arrives in the middle of an epoch.
    uninterrupted = _start(LONG, whole, data_dir)
    interrupted = _start(LONG, cut, data_dir, ALEXNET_SELF_SIGNAL="TERM@7")
    code, _, err = _finish(interrupted)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    (stopped,) = _summaries(cut)
    assert stopped["status"] == "interrupted"
    assert stopped["stopped"] == {"signal": "SIGTERM", "epoch": 1, "step": 7}
    ckpt = stopped["resume"]["checkpoint"]
    assert Path(ckpt).is_file() and ckpt.endswith("checkpoints/last.ckpt")
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("interrupted at epoch 1 step 7: val/top1_err ")
    assert f"-> {stopped['output_dir']}; resume with: python src/train.py " in last_line
    assert last_line.endswith(f"ckpt_path={ckpt}") and "seed=11" in last_line
    assert "test/top1_err" not in stopped["final"]

    resumed = _start([*LONG, "ckpt_path=last"], cut, data_dir)
    code, out, err = _finish(resumed)
    assert code == 0, err[-3000:]
    code, _, err = _finish(uninterrupted)
    assert code == 0, err[-3000:]

    (reference,) = _summaries(whole)
    after = _summaries(cut)[-1]
    assert after["status"] == "completed" and after["output_dir"] != stopped["output_dir"]
    assert after["resumed_from"] == {"checkpoint": ckpt,
                                     "run_dir": str(Path(ckpt).parent.parent)}
    assert out.strip().splitlines()[-1] == (
        f"completed: val/top1_err {after['final']['val/top1_err']:.4f} -> {after['output_dir']}")
    # Bit-identical, epoch by epoch: losses, errors and learning rates (which the plateau
    # schedule divided at the end of the epoch that was cut).
    assert [r["epoch"] for r in after["history"]] == [0, 1, 2]
    assert _metrics(after["history"]) == _metrics(reference["history"])
    rates = [r["lr-PaperSGD/weights"] for r in reference["history"]]
    assert rates[1] > rates[2]
    a = read_checkpoint(Path(reference["checkpoints"]["last"]))["state_dict"]
    b = read_checkpoint(Path(after["checkpoints"]["last"]))["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
def test_a_signal_from_outside_stops_with_a_checkpoint(tmp_path: Path, data_dir: Path,
                                                       signum: signal.Signals) -> None:
    """SLURM's warning signal from another process, as a cluster would send it: SIGUSR1 (an
    sbatch script's --signal=USR1@90) or SIGUSR2 (submitit's, under hydra/launcher=slurm)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    process = _start([*TINY, "trainer.max_epochs=200", "test=false"], logs, data_dir)
    deadline = time.time() + 120
    # last.ckpt first appears after epoch 1's first batch: training is under way.
    while not list(logs.glob("train/runs/*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.time() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.2)
    process.send_signal(signum)
    code, _, err = _finish(process)
    assert code == 128 + signum, err[-3000:]
    (record,) = _summaries(logs)
    assert record["status"] == "interrupted" and record["stopped"]["signal"] == signum.name
    assert 0 < record["stopped"]["epoch"] < 199
    assert f"received {signum.name}: saving a checkpoint at the next batch" in err
    assert err.strip().splitlines()[-1].endswith(f"ckpt_path={record['resume']['checkpoint']}")
    saved = read_checkpoint(record["resume"]["checkpoint"])  # weights_only=True
    assert saved["global_step"] == record["stopped"]["step"]


def test_same_seed_is_bit_identical_with_loader_workers(tmp_path: Path, data_dir: Path) -> None:
    runs = []
    for name in ("a", "b"):
        cfg = compose_config("train", [*TINY, "data.num_workers=2", "trainer.max_epochs=2",
                                       "trainer.limit_train_batches=3", "test=false", "seed=3",
                                       "trainer.deterministic=true"],
                             tmp_path / name, data_dir)
        runs.append(train(cfg))
    a, b = runs
    assert _metrics(a["history"]) == _metrics(b["history"]) and len(a["history"]) == 2
    wa = read_checkpoint(a["checkpoints"]["last"])["state_dict"]
    wb = read_checkpoint(b["checkpoints"]["last"])["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_random_states_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    states = rng_states()
    path = tmp_path / "states.ckpt"
    torch.save({"rng": states}, path)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_states(torch.load(path, weights_only=True)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert mix_seed(1, 2) != mix_seed(2, 1) and 0 <= mix_seed(2**40, 10**9) < 2**63


def test_summary_on_a_full_disk_leaves_no_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(summary_module.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        summary_module.write_summary(tmp_path / "summary.json", {"status": "completed"})
    assert list(tmp_path.iterdir()) == []


def test_a_run_directory_removed_mid_run_is_said_in_one_line(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    """A cleanup script or a hand that removes the run's directory while it trains: the summary
    cannot be written; one line naming it and status 1, not FileNotFoundError's traceback."""
    from omegaconf import OmegaConf

    from alexnet.exits import FAILED, reports_user_errors

    run_dir = tmp_path / "runs" / "gone"
    run_dir.mkdir(parents=True)

    @reports_user_errors
    def task(cfg: object) -> None:
        run_dir.rmdir()  # removed while the run ran
        summary_module.write_summary(run_dir / "summary.json", {"status": "completed"})

    with pytest.raises(SystemExit) as exit_:
        task(OmegaConf.create({}))
    assert exit_.value.code == FAILED
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"error: cannot write {run_dir}/summary.json: its directory was removed "
                    "while the run ran")
    assert list((tmp_path / "runs").iterdir()) == []  # nothing recreated, nothing half-written


def test_crops_depend_on_seed_epoch_and_image_alone() -> None:
    from alexnet.data.resumable_batches import geometry

    first = geometry([5, 9, 2], seed=1, epoch=3, room=13, random_crop=True, flip=True)
    # The same images in another batch, another order or another worker: the same draws.
    apart = torch.cat([geometry([2], 1, 3, 13, True, True), geometry([5, 9], 1, 3, 13, True, True)])
    assert torch.equal(first, apart[[1, 2, 0]])
    assert not torch.equal(first, geometry([5, 9, 2], 1, 4, 13, True, True))  # next epoch
    assert not torch.equal(first, geometry([5, 9, 2], 2, 3, 13, True, True))  # another seed
    many = geometry(list(range(20_000)), 0, 0, 13, True, True)
    assert many[:, :2].min() == 0 and many[:, :2].max() == 13
    assert abs(many[:, 2].float().mean().item() - 0.5) < 0.02
    centre = geometry([1, 2], 0, 0, 13, random_crop=False, flip=False)
    assert centre.tolist() == [[6, 6, 0], [6, 6, 0]]


def test_a_resumed_epoch_skips_the_batches_it_trained_on() -> None:
    from alexnet.data.resumable_batches import KeyedBatch, ResumableBatches
    from alexnet.data.sampling import EpochOrder

    def batches(skip: int) -> list[list[int]]:
        sampler = ResumableBatches(EpochOrder(23, shuffle=True, seed=4), 5, drop_last=True)
        sampler.resume_at(2, skip)
        return list(sampler)

    whole, rest = batches(0), batches(3)
    assert rest == whole[3:] and len(whole) == 4
    assert all(isinstance(b, KeyedBatch) and (b.seed, b.epoch) == (4, 2) for b in rest)
    sampler = ResumableBatches(EpochOrder(23, shuffle=True, seed=4), 5, drop_last=True)
    sampler.resume_at(2, 3)
    list(sampler)
    assert len(list(sampler)) == 4  # the skip applies once, to the epoch it was set for


def test_a_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from alexnet.training import checkpoints

    io, path = checkpoints.AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    def full(obj: object, f: object) -> None:
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints.torch, "save", full)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    assert read_checkpoint(path)["step"].item() == 1


def test_finding_the_checkpoint_to_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from alexnet.training.checkpoints import find_last_checkpoint, find_requeued_checkpoint

    runs = tmp_path / "train" / "runs"
    for name, job in (("old", "41"), ("new", "42"), ("other", "43")):
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "checkpoints" / "last.ckpt").write_bytes(b"")
        (runs / name / "summary.json").write_text(json.dumps({"slurm_job_id": job}))
        time.sleep(0.01)  # distinct modification times
    os.utime(runs / "new" / "checkpoints" / "last.ckpt")
    assert find_last_checkpoint(tmp_path, "train", tmp_path / "fresh") == (
        runs / "new" / "checkpoints" / "last.ckpt")
    # A study's job resumes its own directory's checkpoint, whatever is newer elsewhere.
    assert find_last_checkpoint(tmp_path, "train", runs / "old") == (
        runs / "old" / "checkpoints" / "last.ckpt")
    assert find_last_checkpoint(tmp_path, "eval", tmp_path / "fresh") is None

    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert find_requeued_checkpoint(tmp_path, "train") is None  # the job's first run
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert find_requeued_checkpoint(tmp_path, "train") == runs / "old" / "checkpoints" / "last.ckpt"


def test_one_exit_status_table_matches_readme() -> None:
    """alexnet.exits is the one table; the documentation's (docs/long-runs.md) states the same
    statuses, every signal handled included, and no entry point spells a status as a literal."""
    import re

    from doc_pages import docs_text

    from alexnet import exits
    from alexnet.training.signals import SIGNALS

    readme = docs_text()
    rows = re.findall(r"^\| ([\d, ]+) \| (.+) \|$", readme, flags=re.MULTILINE)
    codes = {int(c) for first, _ in rows for c in first.split(",")}
    assert {exits.COMPLETED, exits.FAILED, exits.USER_ERROR, exits.DIVERGED} <= codes
    assert {exits.interrupted(s) for s in SIGNALS} <= codes
    entry_points = [*(ROOT / "src").glob("*.py"), ROOT / "ablations" / "report.py"]
    for path in entry_points:
        assert not re.search(r"sys\.exit\(\d+\)|return [0-9]+\n", path.read_text()), path


@pytest.mark.parametrize("folder", ["runs/plain", "log dir=x", "a,b", 'q"uote', "back\\slash",
                                    "it's", "[x]", "end\\"])
def test_the_printed_resume_command_can_be_pasted(folder: str, tmp_path: Path) -> None:
    """The resume command names the checkpoint so that the shell and then Hydra read back its
    path, whatever the folder's name holds ('=' and ',' are Hydra's own signs)."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from alexnet.training.checkpoints import resume_command

    ckpt = tmp_path / folder / "checkpoints" / "last.ckpt"
    argv = shlex.split(resume_command(ckpt, ["experiment=demo", "ckpt_path=old"]))
    assert argv[:3] == ["python", "src/train.py", "experiment=demo"] and len(argv) == 4
    assert OverridesParser.create().parse_override(argv[3]).value() == str(ckpt)


def test_a_run_resumed_from_a_moved_folder_tests_the_checkpoint_where_it_is_now(
        tmp_path: Path, data_dir: Path) -> None:
    """Lightning restores the path of the checkpoint val chose as the first run recorded it (a
    finished run resumed trains no more and tests that one); its folder moved since, the test
    reads it beside the checkpoint resumed from."""
    first = [*TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false"]
    train(compose_config("train", first, tmp_path / "first", data_dir))
    (tmp_path / "first").rename(tmp_path / "moved")
    resumed = tmp_path / "moved" / "checkpoints" / "last.ckpt"
    again = [*first[:-1], f"ckpt_path={resumed}"]
    summary = train(compose_config("train", again, tmp_path / "second", data_dir))
    assert summary["status"] == "completed" and "test/top1_err" in summary["final"]
    assert summary["checkpoints"]["best"] == str(tmp_path / "moved" / "checkpoints" /
                                                 "epoch_000.ckpt")
