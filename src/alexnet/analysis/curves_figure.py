"""A study's learning curves from its ``summary.json`` files: a per-epoch error of every arm (each
seed thin, the mean over seeds thick), and each ablation's gap to the baseline epoch by epoch,
paired by seed as the report pairs the test errors. Where the report gives one number at the end,
this shows when the gap opened (Sec. 3.3's normalisation, e.g., through the learning-rate drops).
Reads summaries only: no torch. ``src/figures.py curves`` calls it; every mistake raises
``UserError`` or ``StudyError`` with one line."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexnet.analysis.figure_dir import file_record
from alexnet.analysis.study import Study, load_study
from alexnet.exits import UserError
from alexnet.names import BASELINE_ARM, TRAIN_TOP1, VAL_TOP1
from alexnet.run_record import Run

CURVES_FILE = "curves.png"
CURVE_METRICS = (VAL_TOP1, TRAIN_TOP1)  # the per-epoch errors every run's history holds


@dataclass
class ArmCurves:
    """One arm's runs: each seed's (epoch, error) and the mean over the seeds at each epoch that
    all of them reached."""

    arm: str
    lr: float | None
    runs: dict[Any, list[tuple[int, float]]]
    summaries: list[Path]
    mean: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Curves:
    study: str
    metric: str
    arms: list[ArmCurves]
    # ablation arm: (epoch, mean over the seeds of ablation minus baseline, in points)
    gaps: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    seeds_paired: dict[str, list[Any]] = field(default_factory=dict)
    left_out: list[Path] = field(default_factory=list)  # runs without the metric in their history


def _mean(runs: dict[Any, list[tuple[int, float]]]) -> list[tuple[int, float]]:
    by_epoch = [dict(history) for history in runs.values()]
    common = sorted(set.intersection(*(set(h) for h in by_epoch)))
    return [(e, sum(h[e] for h in by_epoch) / len(by_epoch)) for e in common]


def study_curves(study: Study | str | os.PathLike, metric: str = VAL_TOP1) -> Curves:
    """The curves of ``metric`` for every arm (and learning rate, in a study that sweeps them)
    of ``study`` (loaded, or its sweep directory), with each ablation's paired gap to the
    baseline. A run whose history holds no ``metric`` is left out of the curves and named, in
    ``left_out`` and in a note on stderr (not when no run has it: UserError then)."""
    if metric not in CURVE_METRICS:
        raise UserError(f"--metric {metric!r}: one of {', '.join(CURVE_METRICS)}")
    if not isinstance(study, Study):
        study = load_study(study)
    swept = study.spec.get("lrs")  # a study over learning rates (Fig. 1): each rate its curve
    lrs = sorted({r.lr for r in study.runs if r.lr is not None}) if swept else [None]
    arms, left_out = [], []
    for arm in study.arms:
        for lr in lrs:
            runs: dict[Any, Run] = study.by_arm(arm, lr)
            histories = {seed: run.history(metric) for seed, run in runs.items()}
            left_out += [runs[seed].path for seed, h in histories.items() if not h]
            histories = {seed: h for seed, h in histories.items() if h}
            if histories:
                arms.append(ArmCurves(arm, lr, histories,
                                      [runs[s].path for s in histories], _mean(histories)))
    if not arms:
        raise UserError(f"no run below {study.directory} has a per-epoch {metric} in its "
                        "summary.json history")
    curves = Curves(study.name, metric, arms, left_out=left_out)
    for path in left_out:
        print(f"note: {path} has no per-epoch {metric} in its history: left out of the curves",
              file=sys.stderr)
    baselines = {a.lr: a for a in arms if a.arm == BASELINE_ARM}
    for ablated in arms:
        base = baselines.get(ablated.lr)
        if ablated.arm == BASELINE_ARM or base is None:
            continue
        seeds = sorted(set(base.runs) & set(ablated.runs), key=str)
        if not seeds:
            continue
        paired = {s: [(e, 100 * (dict(ablated.runs[s])[e] - dict(base.runs[s])[e]))
                      for e in sorted(set(dict(ablated.runs[s])) & set(dict(base.runs[s])))]
                  for s in seeds}
        key = _label(ablated)
        curves.gaps[key] = _mean(paired)
        curves.seeds_paired[key] = seeds
    return curves


def _label(arm: ArmCurves) -> str:
    return arm.arm if arm.lr is None else f"{arm.arm}, lr {arm.lr:g}"


def plot_curves(curves: Curves) -> Any:
    """The matplotlib figure: the metric (%) against epochs, each seed thin and each arm's mean
    thick; beside it each ablation's mean paired gap to the baseline (points; above zero, the
    component helps, the report's sign)."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, gap_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, arm in enumerate(curves.arms):
        colour = colours[i % len(colours)]
        for history in arm.runs.values():
            ax.plot([e for e, _ in history], [100 * v for _, v in history], color=colour,
                    linewidth=0.6, alpha=0.5)
        ax.plot([e for e, _ in arm.mean], [100 * v for _, v in arm.mean], color=colour,
                linewidth=2, label=f"{_label(arm)} ({len(arm.runs)} seeds)")
    ax.set_xlabel("epochs")
    ax.set_ylabel(f"{curves.metric}, %")
    ax.set_title(f"study {curves.study}: {curves.metric} per epoch (thin: seeds; thick: mean)",
                 fontsize=9)
    ax.legend(fontsize=7)
    for i, (key, gap) in enumerate(curves.gaps.items()):
        gap_ax.plot([e for e, _ in gap], [g for _, g in gap], color=colours[(i + 1) % len(colours)],
                    label=f"{key} minus {BASELINE_ARM} ({len(curves.seeds_paired[key])} seeds)")
    gap_ax.axhline(0, color="grey", linewidth=0.8)
    gap_ax.set_xlabel("epochs")
    gap_ax.set_ylabel("points (above 0: the component helps)")
    gap_ax.set_title(f"each ablation's paired gap in {curves.metric}", fontsize=9)
    if curves.gaps:
        gap_ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def curves_record(curves: Curves) -> tuple[dict[str, Any], dict[str, Any]]:
    """(inputs, measurements) of the figure for ``inputs.json`` and ``measurements.json``."""
    inputs = {"summaries": [file_record(p) for a in curves.arms for p in a.summaries],
              "metric": curves.metric}
    measured = {
        "study": curves.study, "metric": curves.metric,
        "mean_by_epoch": {_label(a): a.mean for a in curves.arms},
        "gap_points_by_epoch": curves.gaps, "seeds_paired": curves.seeds_paired,
        "left_out": [str(p) for p in curves.left_out],
    }
    return inputs, measured
