"""Fig. 1 (Sec. 3.1) from a study's ``summary.json`` files: training error against epochs, ReLU
against tanh when pointed at a study with both arms, or any runs, with the 25% line and the epoch
at which each run reaches it (:func:`alexnet.run_record.epochs_to_error`, the function the
report uses). Reads summaries only: no torch. ``src/figures.py fig1``, the notebooks and the wandb
study log call it; every mistake raises ``UserError`` or ``StudyError`` with one line."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnet.analysis.ablation_report import claims_by_ablation
from alexnet.analysis.fig1_report import FIG1_ARMS, FIG1_TARGET, fig1_result
from alexnet.analysis.figure_dir import file_record
from alexnet.analysis.study import StudyError, load_study
from alexnet.exits import UserError
from alexnet.names import TRAIN_TOP1
from alexnet.run_record import Run, epochs_to_error, read_runs

FIG1_FILE = "fig1.png"
_ARM_LABELS = dict(zip(FIG1_ARMS, ("ReLU", "tanh"), strict=True))


@dataclass
class Curve:
    """One run's training error per epoch, and the epoch at which it reached 25%."""

    label: str
    arm: str
    seed: Any
    lr: float | None
    summary: Path
    epochs: list[int]
    errors: list[float]
    reached: float | None


@dataclass
class Fig1:
    curves: list[Curve]
    ratio: float | None = None          # tanh / ReLU epochs to 25% (a study with both arms)
    ratio_at_least: float | None = None  # when tanh never reached it
    study: str | None = None


def fig1_curves(paths: list[str | os.PathLike]) -> Fig1:
    """Fig. 1's curves from ``paths``: one sweep directory of a study with a ReLU (``none``) and a
    ``tanh`` arm gives each arm's runs at the learning rate the study's report chose (see
    :func:`alexnet.analysis.fig1_report.fig1_result`); anything else (several directories,
    summary.json files, runs of mixed settings) gives every training run found, each labelled by
    its arm and seed."""
    if not paths:
        raise UserError("no runs given: name a sweep directory or summary.json files")
    if len(paths) == 1 and Path(paths[0]).is_dir():
        try:
            study = load_study(paths[0])
        except StudyError:
            study = None  # not one comparable study: plot its runs as they are
        result = fig1_result(study) if study is not None else None
        if result is not None:
            curves = []
            for arm in FIG1_ARMS:
                if result["arms"][arm] is None:  # a study still running: what is done
                    continue
                best = result["arms"][arm]["best"]
                for seed, run in best["runs"].items():
                    curves.append(_curve(run, best["epochs"][seed]))
            return Fig1(curves, result["ratio"], result["ratio_at_least"], study.name)
    runs = [run for path in paths for run in read_runs(path)]
    curves = [_curve(run) for run in runs if run.history(TRAIN_TOP1)]
    for run in runs:  # named, not dropped unsaid
        if not run.history(TRAIN_TOP1):
            print(f"note: {run.path} has no per-epoch {TRAIN_TOP1} in its history: left out of "
                  "Fig. 1", file=sys.stderr)
    if not curves:
        raise UserError("none of the runs found has a per-epoch training error "
                        "(train/top1_err in its summary.json history)")
    labels = [c.label for c in curves]
    for curve in curves:  # runs of different studies may share an arm and a seed
        if labels.count(curve.label) > 1:
            curve.label += f" ({curve.summary.parent})"
    return Fig1(curves)


def _curve(run: Run, reached: float | None = None) -> Curve:
    history = run.history(TRAIN_TOP1)
    if reached is None:  # Fig. 1's measure, from the same function the report uses
        reached = epochs_to_error(history, FIG1_TARGET, run.chance_error)
    label = f"{_ARM_LABELS.get(run.arm, run.arm)} seed {run.seed}"
    if run.lr is not None:
        label += f", lr {run.lr:g}"
    # Drawn from epoch 0 at chance, the start epochs_to_error interpolates from.
    return Curve(label, run.arm, run.seed, run.lr, run.path, [0] + [e for e, _ in history],
                 [run.chance_error] + [v for _, v in history], reached)


def plot_fig1(fig1: Fig1) -> Any:
    """The matplotlib figure: training error (%) against epochs, ReLU solid and tanh dashed as in
    the paper's Fig. 1, the 25% line, and a marker where each run first reaches it."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, curve in enumerate(fig1.curves):
        colour = colours[i % len(colours)]
        reached = ("not reached" if curve.reached is None
                   else f"25% at {curve.reached:.2f} epochs")
        ax.plot(curve.epochs, [100 * e for e in curve.errors], color=colour,
                linestyle="--" if curve.arm == "tanh" else "-", label=f"{curve.label}: {reached}")
        if curve.reached is not None:
            ax.plot([curve.reached], [100 * FIG1_TARGET], marker="o", color=colour)
            ax.axvline(curve.reached, color=colour, linewidth=0.6, linestyle=":")
    ax.axhline(100 * FIG1_TARGET, color="grey", linewidth=0.8)
    ax.set_xlabel("epochs")
    ax.set_ylabel("training error rate, %")
    ax.set_ylim(bottom=0)
    title = "Fig. 1: training error, ReLU (solid) and tanh (dashed)"
    if fig1.study:
        title += f", study {fig1.study}"
    paper = (claims_by_ablation().get("tanh") or {}).get("speedup")  # ablations/claims.yaml
    if fig1.ratio is not None:
        title += f"\ntanh / ReLU epochs to 25%: {fig1.ratio:.1f}x"
        title += f" (paper: {paper:g}x on CIFAR-10)" if paper else ""
    elif fig1.ratio_at_least is not None:
        title += f"\ntanh did not reach 25%: ReLU at least {fig1.ratio_at_least:.1f}x faster"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig1_record(fig1: Fig1) -> tuple[dict[str, Any], dict[str, Any]]:
    """(inputs, measurements) of a Fig. 1 for ``inputs.json`` and ``measurements.json``."""
    inputs = {"summaries": [file_record(c.summary) for c in fig1.curves],
              "metric": TRAIN_TOP1, "target": FIG1_TARGET}
    measured = {
        "study": fig1.study, "ratio_tanh_over_relu": fig1.ratio,
        "ratio_at_least": fig1.ratio_at_least,
        "runs": [{"label": c.label, "arm": c.arm, "seed": c.seed, "lr": c.lr,
                  "summary": str(c.summary), "epochs_to_25pct": c.reached} for c in fig1.curves],
    }
    return inputs, measured
