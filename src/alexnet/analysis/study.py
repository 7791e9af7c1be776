"""An ablation study's runs, read back from their ``summary.json`` files and compared.

A study (``conf/experiment/study_*.yaml``) is one Hydra multirun: every arm (the baseline,
``none``, and one ablation each) over the same seeds, so that each ablation's run can be paired
with the baseline's run of the same seed (same data order; same initialisation wherever the
ablation leaves the shapes alone). This module reads nothing but the runs' ``summary.json``:

- :func:`load_study` finds the runs, checks that each has a seed and that they differ only in
  what an arm and a seed may change, and lists the expected runs that are missing, failed or
  were interrupted;
- :func:`paired_delta` is the measured delta of one ablation, ablation minus baseline in points
  of error (the paper's sign: what the technique gains), with a Student-t 95% interval over the
  seeds;
- :func:`image_sampling`: a top-1 delta's interval with the test images' own sampling counted.

Each record is read by :mod:`alexnet.run_record` (:class:`~alexnet.run_record.Run`); a record
that cannot be read is a :class:`~alexnet.run_record.RecordError`, of which :class:`StudyError`
is the kind that concerns runs read together.

``ablations/report.py`` turns these into ``report.md`` and ``report.png``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

import numpy as np
from scipy import stats

from alexnet.names import BASELINE_ARM
from alexnet.run_record import RecordError, Run, comparable, flatten_config, read_runs

BASELINE = BASELINE_ARM  # the arm without an ablation (conf/ablation/none.yaml)
ERRORS = ("top1_err", "top5_err")
# Keys that differ between the runs of one study by construction: where the run was written,
# its labels, the study's own spec, and the seed. An arm may change its ablations' keys besides.
_RUN_KEYS = ("seed", "tags", "study", "ablations", "paths.output_dir")


class StudyError(RecordError):
    """The runs cannot be compared (none found, or settings that differ): one line for the user."""


@dataclass
class Study:
    """The runs of one sweep directory, checked to be comparable."""

    directory: Path
    runs: list[Run]                       # every completed run (and diverged, if lrs are swept)
    incomplete: list[Run] = field(default_factory=list)   # failed or interrupted runs
    missing: list[tuple[str, Any, float | None]] = field(default_factory=list)  # (arm, seed, lr)

    @property
    def spec(self) -> dict[str, Any]:
        return self.runs[0].config.get("study") or {}

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.directory.name)

    @property
    def arms(self) -> list[str]:
        """Arms in the study's order (the baseline first), then any others found."""
        order = [BASELINE, *(a for a in self.spec.get("arms") or [] if a != BASELINE)]
        found = {r.arm for r in self.runs}
        return [a for a in order if a in found] + sorted(found - set(order))

    @property
    def seeds(self) -> list[Any]:
        return sorted({r.seed for r in self.runs}, key=str)

    def by_arm(self, arm: str, lr: float | None = None) -> dict[Any, Run]:
        """The completed runs of one arm (at one learning rate, if given), by seed."""
        return {r.seed: r for r in self.runs
                if r.arm == arm and (lr is None or r.lr == lr)}


def load_study(directory: str | os.PathLike) -> Study:
    """Read every ``summary.json`` below ``directory``; StudyError when there is none, when a
    run has no seed, or when the completed runs differ in anything but their arm's keys, the
    seed and a swept lr. A record that is not a training run's (an evaluation's) is refused by
    :func:`~alexnet.run_record.read_runs`, naming it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise StudyError(f"{directory} is a file, not a sweep directory" if directory.exists()
                         else f"no such sweep directory: {directory}")
    try:
        runs = read_runs(directory)
    except RecordError as err:
        raise StudyError(str(err)) from None
    for run in runs:  # else paired with nothing, and its seed's run listed as missing
        if run.seed is None:
            raise StudyError(f"{run.path} records no seed (a run on a random seed): a study "
                             "pairs its runs by seed; run that run again with its seed, or "
                             "remove its directory")
    # In a study that sweeps learning rates (Fig. 1), a run that diverged is a result: its rate
    # is too high. Elsewhere it is a run to look at, not a measurement.
    sweeps_lr = any((r.config.get("study") or {}).get("lrs") for r in runs)
    counted = ("completed", "diverged") if sweeps_lr else ("completed",)
    completed = [r for r in runs if r.status in counted]
    incomplete = [r for r in runs if r.status not in counted]
    if not completed:
        raise StudyError(f"none of the {len(runs)} runs below {directory} has completed")
    _check_one_run_each(completed)
    study = Study(directory, completed, incomplete)
    _check_comparable(study)
    study.missing = _missing(study, runs)
    return study


def _comparable_config(run: Run) -> dict[str, Any]:
    """The run's resolved configuration, flattened, with its own directory written as ``<run>``
    (checkpoint and logger paths derive from it)."""
    out = str(run.summary.get("output_dir") or run.config.get("paths", {}).get("output_dir", ""))
    flat = comparable(flatten_config(run.config))
    if out:
        flat = {k: v.replace(out, "<run>") if isinstance(v, str) else v for k, v in flat.items()}
    return flat


def _arm_keys(run: Run) -> set[str]:
    return {key for a in run.summary.get("ablations") or [] for key in a.get("changes") or []}


def _check_one_run_each(runs: list[Run]) -> None:
    """Two counted runs of the same arm, seed (and learning rate) would have one replace the
    other in every pairing: refused, naming both."""
    seen: dict[tuple[str, Any, Any], Run] = {}
    for run in runs:
        key = (run.arm, run.seed, run.lr)
        if key in seen:
            raise StudyError(
                f"two runs of arm {run.arm}, seed {run.seed}"
                + (f", lr {run.lr}" if (run.config.get("study") or {}).get("lrs") else "")
                + f": {seen[key].path.parent} and {run.path.parent}; remove one (or keep each "
                "study in a sweep directory of its own)")
        seen[key] = run


def _check_comparable(study: Study) -> None:
    """Every completed run must equal the first baseline run (or the first run) in every key but
    those its arm changes, the seed, and the learning rate when the study sweeps it."""
    reference = next((r for r in study.runs if r.arm == BASELINE), study.runs[0])
    ref_flat, ref_keys = _comparable_config(reference), _arm_keys(reference)
    swept = {"optimizer.lr"} if study.spec.get("lrs") else set()
    for run in study.runs:
        flat, allowed = _comparable_config(run), ref_keys | _arm_keys(run) | swept
        differing = sorted(
            key for key in ref_flat.keys() | flat.keys()
            if ref_flat.get(key) != flat.get(key)
            and key not in allowed and not key.startswith(_RUN_KEYS)
        )
        if differing:
            shown = ", ".join(
                f"{k}={ref_flat.get(k)!r} vs {flat.get(k)!r}" for k in differing[:3]
            ) + (f" and {len(differing) - 3} more" if len(differing) > 3 else "")
            raise StudyError(
                f"refusing to mix runs whose settings differ in more than the ablation and the "
                f"seed: {reference.path.parent} and {run.path.parent} differ in {shown}"
            )


def _missing(study: Study, runs: list[Run]) -> list[tuple[str, Any, float | None]]:
    """The (arm, seed, lr) the study's spec asks for that no completed run covers."""
    arms, seeds, lrs = set(), set(), set()
    for run in runs:
        spec = run.config.get("study") or {}
        arms.update(spec.get("arms") or [])
        seeds.update(spec.get("seeds") or [])
        lrs.update(spec.get("lrs") or [])
    done = {(r.arm, r.seed, r.lr if lrs else None) for r in study.runs}
    return [
        (arm, seed, lr)
        for arm in [a for a in study.arms if a in arms] + sorted(arms - set(study.arms))
        for seed in sorted(seeds, key=str)
        for lr in (sorted(lrs) or [None])
        if (arm, seed, lr) not in done
    ]


@dataclass
class Delta:
    """A paired difference over seeds, in points: its mean, 95% interval and the pairs used."""

    mean: float
    n: int
    low: float | None = None    # None with a single pair: no interval
    high: float | None = None
    per_seed: dict[Any, float] = field(default_factory=dict)

    def contains(self, value: float) -> bool | None:
        return None if self.low is None else self.low <= value <= self.high


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """The mean of ``values`` and the half-width of its Student-t interval (None for n < 2)."""
    mean = fmean(values)
    if len(values) < 2:
        return mean, None
    quantile = stats.t.ppf(0.5 + confidence / 2, len(values) - 1)
    return mean, quantile * stdev(values) / math.sqrt(len(values))


def paired_delta(baseline: dict[Any, float], ablated: dict[Any, float]) -> Delta | None:
    """Ablated minus baseline, seed by seed (only seeds present in both), in points of error
    (fractions x 100): the paper's sign, what the technique gains. None without a pair."""
    seeds = sorted(baseline.keys() & ablated.keys(), key=str)
    if not seeds:
        return None
    diffs = {s: 100.0 * (ablated[s] - baseline[s]) for s in seeds}
    mean, half = t_interval(list(diffs.values()))
    if half is None:
        return Delta(mean, len(seeds), per_seed=diffs)
    return Delta(mean, len(seeds), mean - half, mean + half, diffs)


@dataclass
class ImageSampling:
    """A top-1 delta with what the choice of the test images adds to its uncertainty."""

    mean: float                 # points: the seed-paired mean delta, from the per-image records
    n: int                      # seeds paired
    images: int                 # test images
    image_se: float             # points: sd over the images of their seed-averaged differences
    low: float                  # the 95% interval of the seeds' and the images' errors together
    high: float


def image_sampling(study: Study, arm: str) -> ImageSampling | None:
    """``arm`` against the baseline image by image, where every paired run records its per-image
    top-1 results (summary.json ``evaluation.top1_correct``) over the same test images: each
    image's error difference averaged over the seeds, their mean (the delta) and standard error
    over the images (the test images taken as a sample of the images they stand for), combined
    with the seeds' Student-t interval as independent errors. None where a record is missing."""
    baseline, ablated = study.by_arm(BASELINE), study.by_arm(arm)
    seeds = sorted(baseline.keys() & ablated.keys(), key=str)
    pairs = [(baseline[s].test_per_image(), ablated[s].test_per_image()) for s in seeds]
    if not pairs or any(a is None or b is None for a, b in pairs) or len(
            {x.size for pair in pairs for x in pair}) != 1:
        return None
    # error(ablated) - error(baseline) = correct(baseline) - correct(ablated), per image
    per_image = np.mean([a.astype(float) - b.astype(float) for a, b in pairs], axis=0)
    mean = 100.0 * float(per_image.mean())
    image_se = 100.0 * float(per_image.std(ddof=1)) / math.sqrt(per_image.size)
    seed_half = t_interval([100.0 * float(a.mean() - b.mean()) for a, b in pairs])[1] or 0.0
    half = math.hypot(seed_half, float(stats.norm.ppf(0.975)) * image_se)
    return ImageSampling(mean, len(pairs), int(per_image.size), image_se, mean - half, mean + half)


def arm_errors(study: Study, arm: str, error: str, split: str = "test") -> dict[Any, float]:
    """The test error (fraction) of each seed's run of ``arm``; with ``split="val"`` the val
    error at the last epoch."""
    read = Run.val_error if split == "val" else Run.test_error
    return {seed: value for seed, run in study.by_arm(arm).items()
            if (value := read(run, error)) is not None}
