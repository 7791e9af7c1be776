"""The ablation study: the statistics against hand-computed answers, a real sweep at
fast_dev_run scale and its report, re-running a sweep, and the refusals."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, TINY, compose_config, fake_fig1_run, run_entry_point
from omegaconf import OmegaConf

from alexnet.analysis.ablation_report import claims_by_ablation
from alexnet.analysis.study import load_study, paired_delta, t_interval
from alexnet.run_record import epochs_to_error

# t(0.975, 2) = 4.302653: the 95% quantile of Student's t with 2 degrees of freedom.
T_975_DF2 = 4.302652729911275


def test_paired_delta_by_hand() -> None:
    baseline = {1: 0.20, 2: 0.25, 3: 0.22, 4: 0.30}  # seed 4 has no ablated run: not paired
    ablated = {1: 0.23, 2: 0.26, 3: 0.27, 5: 0.10}   # seed 5 has no baseline run
    delta = paired_delta(baseline, ablated)
    # Differences 3, 1, 5 points: mean 3, sample sd 2, half-width t * 2 / sqrt(3).
    assert delta.n == 3
    assert delta.per_seed == pytest.approx({1: 3.0, 2: 1.0, 3: 5.0})
    assert delta.mean == pytest.approx(3.0)
    half = T_975_DF2 * 2.0 / math.sqrt(3)
    assert (delta.low, delta.high) == pytest.approx((3.0 - half, 3.0 + half))
    assert delta.contains(7.9) and not delta.contains(8.0)


def test_paired_delta_sign_is_ablation_minus_baseline() -> None:
    delta = paired_delta({1: 0.30, 2: 0.30}, {1: 0.20, 2: 0.22})
    assert delta.mean == pytest.approx(-9.0)  # the ablation did better: a negative gain


def test_paired_delta_single_pair_and_none() -> None:
    one = paired_delta({1: 0.2}, {1: 0.25})
    assert one.n == 1 and one.mean == pytest.approx(5.0) and one.low is None
    assert paired_delta({1: 0.2}, {2: 0.25}) is None


def test_t_interval_by_hand() -> None:
    mean, half = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # sd = sqrt(2.5); t(0.975, 4) = 2.776445
    assert mean == 3.0 and half == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5))
    assert t_interval([4.0]) == (4.0, None)


def test_epochs_to_error_interpolates() -> None:
    assert epochs_to_error([(1, 0.5), (2, 0.3), (3, 0.2)]) == pytest.approx(2.5)
    assert epochs_to_error([(1, 0.2)], start=0.9) == pytest.approx(0.65 / 0.7)
    assert epochs_to_error([(1, 0.2)]) == 1.0
    assert epochs_to_error([(1, 0.5), (2, 0.26)]) is None


def test_claims_by_ablation() -> None:
    claims = claims_by_ablation()
    assert claims["no_lrn"]["delta_top1"] == 1.4 and claims["no_lrn"]["section"] == "3.3"
    assert claims["tanh"]["speedup"] == 6.0


def test_study_preset_sweeps_every_arm_over_its_seeds(tmp_path: Path) -> None:
    cfg = compose_config("train", ["experiment=study_cpu"], tmp_path, tmp_path)
    assert cfg.study.arms[0] == "none" and len(cfg.study.seeds) >= 3
    assert cfg.skip_completed
    arms = set(cfg.study.arms) - {"none"}
    claims = claims_by_ablation()
    assert arms <= set(claims), "every arm of the CPU study tests a claim of the paper"
    for name in cfg.study.arms:  # every arm is an ablation config
        assert (ROOT / "conf" / "ablation" / f"{name}.yaml").is_file()


def test_wandb_groups_a_study_and_tags_its_arms(tmp_path: Path) -> None:
    cfg = compose_config("train", ["experiment=study_cpu", "logger=wandb", "+ablation=no_lrn"],
                         tmp_path, tmp_path)
    from alexnet.jobs.train import tag_run
    from alexnet.training.ablation import applied_ablations

    tag_run(cfg, applied_ablations(cfg))
    wandb = OmegaConf.to_container(cfg.logger.wandb, resolve=True)
    assert wandb["group"] == "cpu" and wandb["offline"] is True
    assert {"no_lrn", "seed=2012"} <= set(wandb["tags"])
    plain = compose_config("train", ["logger=wandb"], tmp_path, tmp_path)
    assert OmegaConf.to_container(plain.logger.wandb, resolve=True)["group"] is None


STUDY = [
    *(o for o in TINY if o != "~callbacks.progress_bar"),  # the study's callbacks have none
    "experiment=study_cpu",
    "study.arms=[none,no_lrn,plain_pool]",
    "study.seeds=[1,2]",
    "trainer.fast_dev_run=true",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A real study: three arms (the baseline and two ablations) by two seeds, one multirun."""
    tmp = tmp_path_factory.mktemp("study")
    result = run_entry_point("train.py", ["-m", *STUDY], tmp, tmp / "data")
    return tmp, result


def _report(sweep_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "ablations" / "report.py"), str(sweep_dir)],
                          capture_output=True, text=True, timeout=120)


def test_sweep_runs_every_arm_and_seed(sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    tmp, result = sweep
    assert result.returncode == 0, result.stderr[-2000:]
    sweep_dir = tmp / "logs" / "study" / "cpu"
    found = {}
    for path in sweep_dir.rglob("summary.json"):
        summary = json.loads(path.read_text())
        found[(summary["arm"], summary["seed"])] = summary
    assert set(found) == {(a, s) for a in ("none", "no_lrn", "plain_pool") for s in (1, 2)}
    run = found[("no_lrn", 2)]
    assert run["study"]["name"] == "cpu" and run["status"] == "completed"
    assert {"no_lrn", "seed=2"} <= set(run["tags"])
    assert (sweep_dir / "no_lrn" / "seed2" / "summary.json").is_file()


def test_report_of_a_real_sweep(sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    tmp, _ = sweep
    sweep_dir = tmp / "logs" / "study" / "cpu"
    result = _report(sweep_dir)
    assert result.returncode == 0, result.stderr
    text = (sweep_dir / "report.md").read_text()
    rows = {}  # each arm's first row: the table of test deltas
    for line in text.splitlines():
        if line.startswith("| `"):
            rows.setdefault(line.split("|")[1].strip(), line)
    assert set(rows) == {"`no_lrn`", "`plain_pool`"}
    assert "lrn (3.3)" in rows["`no_lrn`"] and "+1.4" in rows["`no_lrn`"]
    assert "overlapping_pooling (3.4)" in rows["`plain_pool`"] and "+0.4" in rows["`plain_pool`"]
    assert "| 2 |" in rows["`no_lrn`"]  # n: two seeds paired
    assert "2 seeds (1, 2)" in text and "CPU" in text and "fast_dev_run" in text
    png = (sweep_dir / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_rerun_completes_only_what_is_missing(
    sweep: tuple[Path, subprocess.CompletedProcess],
) -> None:
    tmp, _ = sweep
    sweep_dir = tmp / "logs" / "study" / "cpu"
    (sweep_dir / "plain_pool" / "seed2" / "summary.json").unlink()  # as if killed mid-run
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("summary.json")}
    result = run_entry_point("train.py", ["-m", *STUDY], tmp, tmp / "data")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("skipped:") == 5
    after = {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("summary.json")}
    assert {p: after[p] for p in before} == before  # the finished runs were not repeated
    assert (sweep_dir / "plain_pool" / "seed2" / "summary.json").is_file()


def test_rerun_with_other_settings_is_refused(
    sweep: tuple[Path, subprocess.CompletedProcess],
) -> None:
    tmp, _ = sweep
    args = [*STUDY, "study.arms=[none]", "study.seeds=[1]", "data.batch_size=2"]
    result = run_entry_point("train.py", ["-m", *args], tmp, tmp / "data")
    assert result.returncode != 0
    assert "holds a completed run of another configuration (differs in data.batch_size" in (
        result.stderr)


def _copy_sweep(sweep: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> Path:
    sweep_dir = sweep[0] / "logs" / "study" / "cpu"
    copied = tmp_path / "cpu"
    shutil.copytree(sweep_dir, copied, ignore=shutil.ignore_patterns("*.ckpt"))
    return copied


def test_report_refuses_mixed_settings(
    sweep: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    copied = _copy_sweep(sweep, tmp_path)
    path = copied / "no_lrn" / "seed1" / "summary.json"
    summary = json.loads(path.read_text())
    summary["config"]["data"]["batch_size"] = 64
    path.write_text(json.dumps(summary))
    (copied / "report.md").unlink()
    result = _report(copied)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to mix runs")
    assert "data.batch_size=4 vs 64" in lines[0]
    assert not (copied / "report.md").exists()


def test_report_lists_missing_and_failed_runs(
    sweep: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    copied = _copy_sweep(sweep, tmp_path)
    (copied / "plain_pool" / "seed1" / "summary.json").unlink()
    failed = copied / "no_lrn" / "seed2" / "summary.json"
    summary = json.loads(failed.read_text())
    summary.update(status="failed", error="RuntimeError: loss is nan")
    failed.write_text(json.dumps(summary))
    result = _report(copied)
    assert result.returncode == 0 and "3 runs; " not in result.stdout
    assert "warning: 2 expected runs" in result.stderr
    text = (copied / "report.md").read_text()
    assert "`plain_pool` seed 1: missing (no summary.json)" in text
    assert "`no_lrn` seed 2: failed: RuntimeError: loss is nan" in text
    study = load_study(copied)
    assert len(study.runs) == 4
    row = next(line for line in text.splitlines() if line.startswith("| `no_lrn`"))
    assert "| 1 |" in row and "n = 1, no interval" in row


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    for target in (tmp_path / "absent", tmp_path):
        result = _report(target)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith("error: ")


def test_a_failing_run_does_not_stop_the_sweep(tmp_path: Path) -> None:
    args = [*STUDY, "study.arms=[none]", "study.seeds=[1]", "seed=bad,1"]
    result = run_entry_point("train.py", ["-m", *args], tmp_path, tmp_path / "data")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    said = "seed must be a whole number from 0 to 4294967295 (or null: a random one), got 'bad'"
    assert f"error: invalid configuration: {said}" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (  # Hydra's traceback of it, in one line
        f"error: the sweep ran every run, and at least one failed (its line is above: invalid "
        f"configuration: {said})")
    done = list((tmp_path / "logs" / "study" / "cpu").rglob("summary.json"))
    assert [json.loads(p.read_text())["seed"] for p in done] == [1]


def test_fig1_chooses_each_activations_best_lr_and_the_ratio(tmp_path: Path) -> None:
    chance = 0.9
    # ReLU: at lr 0.02 the error reaches 25% at epoch 2 (0.3 -> 0.2: 1.5 + 0.5 = 2.0 by
    # interpolation from 0.3 after epoch 1), at lr 0.01 at epoch 3.
    for seed in (1, 2):
        fake_fig1_run(tmp_path, "none", 0.01, seed, [0.5, 0.3, 0.25, 0.2])
        fake_fig1_run(tmp_path, "none", 0.02, seed, [0.3, 0.2, 0.1])
        # tanh: at lr 0.01 never within 6 epochs; at 0.02 exactly at epoch 5 (5.0).
        fake_fig1_run(tmp_path, "tanh", 0.01, seed, [0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
        fake_fig1_run(tmp_path, "tanh", 0.02, seed, [0.8, 0.6, 0.5, 0.4, 0.25, 0.2])
    from alexnet.analysis.fig1_report import fig1_result

    study = load_study(tmp_path)
    result = fig1_result(study)
    relu, tanh = result["arms"]["none"]["best"], result["arms"]["tanh"]["best"]
    assert relu["lr"] == 0.02 and relu["mean"] == pytest.approx(1.0 + 0.05 / 0.1)
    assert tanh["lr"] == 0.02 and tanh["mean"] == pytest.approx(5.0)
    assert result["ratio"] == pytest.approx(5.0 / 1.5)
    assert epochs_to_error([(1, 0.3), (2, 0.2)], start=chance) == pytest.approx(1.5)
    result = subprocess.run([sys.executable, str(ROOT / "ablations" / "report.py"),
                             str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "report.md").read_text()
    assert "tanh needs **3.3×** the epochs of ReLU" in text and "paper: 6×" in text
    assert "not reached" in text and "Measured deltas" not in text


def test_fig1_study_sweeps_learning_rates(tmp_path: Path, data_dir: Path) -> None:
    args = ["experiment=study_fig1", "study.seeds=[1]", "study.lrs=[0.001,0.002]",
            "trainer.fast_dev_run=true", "data.train_per_class=2", "data.val_per_class=1",
            "data.batch_size=4", "data.num_workers=0", "trainer.accelerator=cpu"]
    result = run_entry_point("train.py", ["-m", *args], tmp_path, data_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    sweep_dir = tmp_path / "logs" / "study" / "fig1"
    found = sorted(str(p.parent.relative_to(sweep_dir)) for p in sweep_dir.rglob("summary.json"))
    assert found == ["none/lr0.001/seed1", "none/lr0.002/seed1",
                     "tanh/lr0.001/seed1", "tanh/lr0.002/seed1"]
    summary = json.loads((sweep_dir / "tanh/lr0.002/seed1/summary.json").read_text())
    cfg = summary["config"]
    assert cfg["model"]["activation"] == "tanh" and cfg["optimizer"]["lr"] == 0.002
    assert cfg["optimizer"]["weight_decay"] == 0.0
    assert not cfg["data"]["crop"] and not cfg["data"]["flip"] and not cfg["data"]["pca_jitter"]
    assert _report(sweep_dir).returncode == 0
    assert "## Fig. 1" in (sweep_dir / "report.md").read_text()


RESULTS = ROOT / "ablations" / "results"


@pytest.mark.parametrize("name", sorted(p.name for p in RESULTS.iterdir() if p.is_dir()))
def test_committed_studies_are_complete_and_comparable(name: str) -> None:
    """Every committed study loads and mixes no settings; one still running across sessions says
    so in IN_PROGRESS.md (what is done, how to continue), and its report lists what is missing."""
    study = load_study(RESULTS / name)  # refuses mixed settings
    assert not study.incomplete
    if (RESULTS / name / "IN_PROGRESS.md").is_file():
        assert study.missing and "## Runs not counted" in (RESULTS / name / "report.md").read_text()
    else:
        assert not study.missing
    assert (RESULTS / name / "report.md").is_file() and (RESULTS / name / "report.png").is_file()


def test_study_runs_test_the_last_epoch(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    for preset in ("study_cpu", "study_fig1", "study_paper"):
        cfg = compose_config("train", [f"experiment={preset}"], tmp_path, tmp_path)
        callback = instantiate(cfg.callbacks.model_checkpoint)
        # No monitor and one file kept: the checkpoint tested is the last epoch's, never one
        # chosen on the validation images it is then tested on.
        assert callback.monitor is None and callback.save_top_k == 1, preset
        assert cfg.skip_completed and cfg.study.name


def test_stop_at_target_holds_the_target_then_races_the_leader(tmp_path: Path) -> None:
    """A Fig. 1 run ends after the target has held for `patience` epochs; another rate of the
    same arm and seed stops once it has trained race_factor x the leader's epochs without it."""
    from types import SimpleNamespace

    from alexnet.callbacks.stop_at_target import StopAtTarget

    def epochs(callback: StopAtTarget, run_dir: Path, errors: list[float]) -> int:
        trainer = SimpleNamespace(default_root_dir=str(run_dir), should_stop=False,
                                  callback_metrics={}, current_epoch=0)
        for epoch, error in enumerate(errors):
            trainer.current_epoch, trainer.callback_metrics = epoch, {"train/top1_err": error}
            callback.on_train_epoch_end(trainer, None)
            if trainer.should_stop:
                return epoch + 1
        return len(errors)

    sweep = tmp_path / "none"
    leader = StopAtTarget(patience=2, race_factor=1.5)
    errors = [0.6, 0.4, 0.3, 0.24, 0.2, 0.18, 0.15]
    (sweep / "lr0.004" / "seed1").mkdir(parents=True)
    assert epochs(leader, sweep / "lr0.004" / "seed1", errors) == 5  # 25% at 4, held at 5
    assert leader.ended_early["reason"] == "target" and leader.reached_at == 4
    history = [{"epoch": e, "train/top1_err": v} for e, v in enumerate(errors[:5])]
    (sweep / "lr0.004" / "seed1" / "summary.json").write_text(json.dumps(
        {"task": "train", "status": "completed", "num_classes": 10, "history": history,
         "final": history[-1]}))

    # 25% after 3.83 epochs (interpolated between 0.30 and 0.24): a slower rate of seed 1 stops
    # after ceil(1.5 x 3.83) = 6 of its 8.
    slow_errors = [0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.38, 0.36]
    slow = StopAtTarget(patience=2, race_factor=1.5)
    assert epochs(slow, sweep / "lr0.001" / "seed1", slow_errors) == 6
    assert slow.ended_early["reason"] == "outpaced"
    assert slow.ended_early["leader_epochs"] == pytest.approx(3 + 0.05 / 0.06, abs=1e-3)
    # Another seed has no leader yet; and without race_factor nothing races.
    for seed, factor in (("seed2", 1.5), ("seed1", None)):
        free = StopAtTarget(patience=2, race_factor=factor)
        assert epochs(free, sweep / "lr0.001" / seed, slow_errors) == 8
        assert free.ended_early is None


@pytest.mark.parametrize("name", sorted(p.name for p in RESULTS.iterdir() if p.is_dir()))
def test_committed_reports_are_what_the_report_makes_now(name: str) -> None:
    """A committed report.md is remade from its summaries alone (python ablations/report.py
    FOLDER): one that the report's code has moved past would show other tables than it does."""
    from alexnet.analysis.ablation_report import claims_by_ablation, render_markdown

    study = load_study(RESULTS / name)
    claims = claims_by_ablation(None, study.spec.get("claims"))
    assert render_markdown(study, claims) == (RESULTS / name / "report.md").read_text(), (
        f"run: python ablations/report.py ablations/results/{name}")


def test_report_shows_val_deltas_only_where_val_selected_nothing(
    sweep: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    copied = _copy_sweep(sweep, tmp_path)
    val = {("none", 1): 0.30, ("none", 2): 0.32, ("no_lrn", 1): 0.33, ("no_lrn", 2): 0.36}
    for (arm, seed), error in val.items():
        path = copied / arm / f"seed{seed}" / "summary.json"
        summary = json.loads(path.read_text())
        assert summary["evaluation"]["val_selects"] == []
        summary["final"]["val/top1_err"] = error
        path.write_text(json.dumps(summary))
    assert _report(copied).returncode == 0
    text = (copied / "report.md").read_text()
    # +3 and +4 points: mean 3.5, t(0.975, 1) 12.706 x 0.707 / sqrt(2) = 6.35
    assert "**The val split, a second look.**" in text
    assert "| `no_lrn` | 2 | +3.5 [-2.9, +9.9] | " in text

    path = copied / "none" / "seed2" / "summary.json"  # one run that chose its checkpoint on val
    summary = json.loads(path.read_text())
    summary["evaluation"]["val_selects"] = ["the checkpoint tested (lowest val/top1_err)"]
    path.write_text(json.dumps(summary))
    assert _report(copied).returncode == 0
    assert "second look" not in (copied / "report.md").read_text()


def test_image_sampling_pairs_runs_image_by_image() -> None:
    """Two seeds, four test images: the per-image error differences averaged over the seeds,
    their standard error over the images, and the seeds' t interval combined with it."""
    from alexnet.analysis.study import Study, image_sampling
    from alexnet.run_record import Run, pack_per_image

    right = {("none", 1): [1, 1, 1, 0], ("none", 2): [1, 1, 0, 0],
             ("no_lrn", 1): [1, 0, 1, 0], ("no_lrn", 2): [0, 1, 0, 0]}
    runs = [Run(Path(f"{arm}/seed{seed}/summary.json"), {
        "task": "train", "status": "completed", "arm": arm, "seed": seed,
        "evaluation": {"top1_correct": {"test": pack_per_image(flags)}}})
        for (arm, seed), flags in right.items()]
    found = image_sampling(Study(Path("study"), runs), "no_lrn")
    # per image (none minus no_lrn correct, averaged over the seeds): 0.5, 0.5, 0, 0
    assert found.n == 2 and found.images == 4 and found.mean == pytest.approx(25.0)
    image_se = 100 * np.std([0.5, 0.5, 0, 0], ddof=1) / 2  # 14.43 points
    assert found.image_se == pytest.approx(image_se)
    # seeds: +25 points each, no spread: the interval is the images' alone
    assert (found.low, found.high) == pytest.approx((25 - 1.959964 * image_se,
                                                     25 + 1.959964 * image_se))
    # a run without the record, or over other images: nothing to pair
    runs[3].summary["evaluation"] = {}
    assert image_sampling(Study(Path("study"), runs), "no_lrn") is None
    runs[3].summary["evaluation"] = {"top1_correct": {"test": pack_per_image([1, 0, 1])}}
    assert image_sampling(Study(Path("study"), runs), "no_lrn") is None


def test_a_run_records_which_test_images_it_got_right(
    sweep: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    """The real sweep's runs (one process each) record their per-image results, consistent with
    their test error, and the report pairs them image by image."""
    from alexnet.run_record import unpack_per_image

    copied = _copy_sweep(sweep, tmp_path)
    for path in copied.rglob("summary.json"):
        summary = json.loads(path.read_text())
        flags = unpack_per_image(summary["evaluation"]["top1_correct"]["test"])
        assert flags.size > 0
        assert 1 - flags.mean() == pytest.approx(summary["final"]["test/top1_err"], abs=1e-6)
    assert _report(copied).returncode == 0
    text = (copied / "report.md").read_text()
    assert "**The test images' share.**" in text and "but for the last table's." in text
    assert re.search(r"\| `no_lrn` \| 2 \| [\d,]+ \| ", text)


def test_a_study_gathered_through_links_reads_every_run_once(tmp_path: Path) -> None:
    """A run folder that is a symbolic link (runs kept elsewhere) is read like the others; a
    link back up the tree (a loop) is read once and ends; report.md in the way as a folder is
    refused before anything is written."""
    study = tmp_path / "study"
    shutil.copytree(ROOT / "ablations" / "results" / "sec33_short_jpeg", study)
    whole = load_study(study)
    run = sorted(study.rglob("summary.json"))[0].parent
    elsewhere = tmp_path / "kept_elsewhere"
    run.rename(elsewhere)
    run.symlink_to(elsewhere, target_is_directory=True)
    (study / "loop").symlink_to(study, target_is_directory=True)
    linked = load_study(study)
    assert len(linked.runs) == len(whole.runs) and not linked.missing
    for name in ("report.md", "report.png"):
        (study / name).unlink()
    (study / "report.md").mkdir()
    result = subprocess.run([sys.executable, str(ROOT / "ablations" / "report.py"), str(study)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {study / 'report.md'} is in the way of the report (it is not a file): move it "
        "away and run the report again"]
    assert not (study / "report.png").exists()
