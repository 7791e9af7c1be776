"""Fig. 1's measure over a study's runs (Sec. 3.1): epochs to 25% training error of ReLU and tanh,
each at the learning rate of the study's grid where it gets there soonest, and their ratio.

Reads only the runs' ``summary.json`` (through :mod:`alexnet.analysis.study`). What it adds to the
measure itself (:func:`alexnet.run_record.epochs_to_error`):

- the choice of each activation's rate: the lowest mean over the seeds among the rates where
  every seed reached 25%, as the paper chose "independently ... to make training as fast as
  possible"; whether that rate is *inside* the grid (a faster rate above and below it would have
  been seen) or at one of its edges, where a wider grid could move the ratio;
- the ratio tanh / ReLU with its uncertainty: the per-seed ratios (each seed's tanh epochs over
  its ReLU epochs, both at their chosen rates), their geometric mean and a Student-t 95% interval
  on their logarithms (ratios multiply: a factor of 2 above and below count alike);
- how each run ended: reached 25% and held it (``ended_early.reason == "target"``), stopped once
  another rate of its seed had won (``outpaced``), diverged, or trained to its last epoch.
"""

from __future__ import annotations

import math
from statistics import fmean
from typing import Any

from alexnet.analysis.study import BASELINE, Study, StudyError, t_interval
from alexnet.names import TRAIN_TOP1
from alexnet.run_record import Run, epochs_to_error

FIG1_TARGET = 0.25  # Fig. 1: training error 25%
FIG1_ARMS = (BASELINE, "tanh")  # ReLU (the recipe) and its tanh ablation
FIG1_LABELS = dict(zip(FIG1_ARMS, ("ReLU", "tanh"), strict=True))
TRAIN_ERROR = TRAIN_TOP1  # the epoch's mean training error, as the network trains


def run_ending(run: Run) -> str:
    """How a run of a Fig. 1 study ended, in words."""
    epochs = len(run.history(TRAIN_ERROR))
    ended = run.summary.get("ended_early") or {}
    if run.status == "diverged":
        return f"diverged in epoch {epochs + 1}"
    if ended.get("reason") == "target":
        return f"stopped after {ended['epoch']} epochs, {ended['patience']} of them at or below 25%"
    if ended.get("reason") == "outpaced":
        return (f"stopped after {ended['epoch']} epochs: another rate of its seed had reached 25% "
                f"in {ended['leader_epochs']:.2f}")
    return f"trained all {epochs} epochs"


def _speed_rank(option: dict[str, Any]) -> tuple[float, int, float]:
    """Fastest first: the mean epochs where every seed reached 25%; else the most seeds that did,
    then the lowest final training error."""
    reached = sum(e is not None for e in option["epochs"].values())
    last = [r.history(TRAIN_ERROR)[-1][1] for r in option["runs"].values()
            if r.history(TRAIN_ERROR) and r.status != "diverged"]
    mean = math.inf if option["mean"] is None else option["mean"]
    return mean, -reached, sum(last) / len(last) if last else math.inf


def _position(options: list[dict[str, Any]], best: dict[str, Any]) -> str:
    """Where the chosen rate lies in the grid: inside it, or at an edge (a wider grid could find a
    faster rate beyond it)."""
    rates = sorted(o["lr"] for o in options if o["lr"] is not None)
    if best["lr"] is None or len(rates) < 2:
        return "only rate"
    if best["lr"] == rates[-1]:
        return "largest rate of the grid"
    if best["lr"] == rates[0]:
        return "smallest rate of the grid"
    return "inside the grid"


def _ratio(relu: dict[str, Any], tanh: dict[str, Any]) -> dict[str, Any]:
    """Per-seed ratios tanh / ReLU of the chosen rates' runs, their geometric mean and 95% interval
    (Student t on the log ratios, over the seeds where both reached 25%)."""
    seeds = sorted(relu["epochs"].keys() & tanh["epochs"].keys(), key=str)
    per_seed = {s: tanh["epochs"][s] / relu["epochs"][s] for s in seeds
                if relu["epochs"][s] and tanh["epochs"][s]}
    if not per_seed:
        return {"per_seed": {}, "ratio": None, "low": None, "high": None, "n": 0}
    mean, half = t_interval([math.log(r) for r in per_seed.values()])
    return {"per_seed": per_seed, "ratio": math.exp(mean), "n": len(per_seed),
            "low": None if half is None else math.exp(mean - half),
            "high": None if half is None else math.exp(mean + half)}


def fig1_result(study: Study) -> dict[str, Any] | None:
    """Fig. 1 over a study with a ReLU (``none``) and a ``tanh`` arm; None without both.

    ``arms[arm]``: ``options`` (one per learning rate: ``lr``, ``runs`` and ``epochs`` by seed,
    ``mean``, ``ended`` by seed), ``best`` (the chosen option) and ``position`` (inside the grid or
    at an edge). ``ratio`` (of the chosen options' means), ``seeds`` (:func:`_ratio`),
    ``ratio_at_least`` (when tanh never reached 25%: the epochs trained over ReLU's).

    StudyError for a completed run of either arm whose history has no training error at all:
    not a run that never reached 25% (a diverged run may have none: it is counted as not
    reaching it)."""
    wanted = set(study.spec.get("arms") or []) | {r.arm for r in study.runs}
    if not set(FIG1_ARMS) <= wanted or not study.by_arm(BASELINE):
        return None  # not a comparison of ReLU and tanh (or no ReLU run has completed yet)
    for run in study.runs:  # its epochs would read "not reached", which they are not
        if run.arm in FIG1_ARMS and run.status != "diverged" and not run.history(TRAIN_ERROR):
            raise StudyError(f"{run.path}: a {run.status} run without a per-epoch {TRAIN_ERROR} "
                             "in its history, which Fig. 1 measures: run that run again, or "
                             "remove its directory")
    chance = study.runs[0].chance_error
    lrs = sorted({r.lr for r in study.runs}) if study.spec.get("lrs") else [None]
    result: dict[str, Any] = {"arms": {}, "max_epochs": 0}
    for arm in FIG1_ARMS:
        if not study.by_arm(arm):  # a study still running: its report shows what is done
            result["arms"][arm] = None
            continue
        options = []
        for lr in lrs:
            runs = study.by_arm(arm, lr)
            if not runs:
                continue
            epochs = {s: epochs_to_error(r.history(TRAIN_ERROR), FIG1_TARGET, chance)
                      for s, r in runs.items()}
            result["max_epochs"] = max(result["max_epochs"],
                                       *(len(r.history(TRAIN_ERROR)) for r in runs.values()))
            reached = [e for e in epochs.values() if e is not None]
            mean = fmean(reached) if reached and len(reached) == len(epochs) else None
            options.append({"lr": lr, "epochs": epochs, "mean": mean, "runs": runs,
                            "ended": {s: run_ending(r) for s, r in runs.items()}})
        best = min(options, key=_speed_rank)
        result["arms"][arm] = {"options": options, "best": best,
                               "position": _position(options, best)}
    if result["arms"]["tanh"] is None:
        result |= {"ratio": None, "ratio_at_least": None,
                   "seeds": {"per_seed": {}, "ratio": None, "low": None, "high": None, "n": 0}}
        return result
    relu, tanh = (result["arms"][a]["best"] for a in FIG1_ARMS)
    result["ratio"] = tanh["mean"] / relu["mean"] if relu["mean"] and tanh["mean"] else None
    result["ratio_at_least"] = (result["max_epochs"] / relu["mean"]
                                if relu["mean"] and tanh["mean"] is None else None)
    result["seeds"] = _ratio(relu, tanh)
    return result


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def fig1_lines(fig1: dict[str, Any], paper: float | None, swept: bool) -> list[str]:
    """The report's Fig. 1 section."""
    lines = ["", "## Fig. 1: epochs to 25% training error, ReLU against tanh", ""]
    if not swept:
        lines += ["Fig. 1's measure on this study's runs: with its regularisation and one learning "
                  "rate for both, unlike Fig. 1 (none, and each net's fastest rate; "
                  "`experiment=study_fig1` runs that).", ""]
    lines += ["| activation | learning rate | epochs per seed | mean | chosen "
              "| how the runs ended |", "|---|---|---|---|---|---|"]
    for arm in FIG1_ARMS:
        entry = fig1["arms"][arm]
        if entry is None:
            lines.append(f"| {FIG1_LABELS[arm]} | — | no completed run yet | — | | |")
            continue
        for option in entry["options"]:
            per_seed = ", ".join("not reached" if e is None else f"{e:.2f}"
                                 for e in option["epochs"].values())
            lr = "—" if option["lr"] is None else f"{option['lr']:g}"
            chosen = "yes" if option is entry["best"] else ""
            ended = "; ".join(f"seed {s}: {text}" for s, text in option["ended"].items())
            lines.append(f"| {FIG1_LABELS[arm]} | {lr} | {per_seed} | "
                         f"{_fmt(option['mean'])} | {chosen} | {ended} |")
    lines.append("")
    paper_text = f" (paper: {paper:g}× on CIFAR-10)" if paper else ""
    if fig1["ratio"] is not None:
        lines.append(f"tanh needs **{fig1['ratio']:.1f}×** the epochs of ReLU to reach 25% "
                     f"training error{paper_text}.")
        seeds = fig1["seeds"]
        if seeds["n"]:
            per_seed = ", ".join(f"seed {s}: {r:.2f}" for s, r in seeds["per_seed"].items())
            interval = (f"95% interval [{seeds['low']:.1f}, {seeds['high']:.1f}] (Student t on "
                        f"the log ratios, n = {seeds['n']})" if seeds["low"] is not None
                        else "one seed: no interval")
            lines.append(f"Per seed (tanh epochs / ReLU epochs, each at its chosen rate): "
                         f"{per_seed}; geometric mean {seeds['ratio']:.1f}×, {interval}.")
    elif fig1["arms"]["tanh"] is None:
        lines.append("No tanh run has completed yet: no ratio.")
    elif fig1["ratio_at_least"] is not None:
        lines.append(f"tanh did not reach 25% within {fig1['max_epochs']} epochs: ReLU is at least "
                     f"{fig1['ratio_at_least']:.1f}× faster{paper_text}.")
    else:
        lines.append("ReLU did not reach 25% training error in every run: no ratio.")
    if swept:
        lines += ["", "Each activation's learning rate is the one of the study's grid that "
                  "reaches 25% soonest on average over the seeds (Fig. 1: chosen independently "
                  "per net). Where it lies in the grid: " + "; ".join(
                      f"{FIG1_LABELS[a]} {fig1['arms'][a]['best']['lr']:g}, "
                      f"{fig1['arms'][a]['position']}" for a in FIG1_ARMS
                      if fig1["arms"][a] and fig1["arms"][a]["best"]["lr"] is not None) + "."]
        edges = [FIG1_LABELS[a] for a in FIG1_ARMS
                 if fig1["arms"][a] and fig1["arms"][a]["position"].endswith("of the grid")]
        if edges:
            lines.append(f"At an edge ({', '.join(edges)}): a rate beyond the grid might be "
                         "faster still, and the ratio may move with it.")
    return lines
