"""A study's report (``report.png``), its curves, its Fig. 1 plot and its tables as one wandb run
(``python ablations/report.py SWEEP_DIR --wandb``): read from the runs' summary.json files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alexnet.analysis.ablation_report import claims_by_ablation
from alexnet.analysis.curves_figure import plot_curves, study_curves
from alexnet.analysis.fig1_figure import fig1_curves, plot_fig1
from alexnet.analysis.fig1_report import FIG1_TARGET
from alexnet.analysis.study import BASELINE, ERRORS, arm_errors, load_study
from alexnet.analysis.study import paired_delta as delta
from alexnet.exits import UserError
from alexnet.names import TRAIN_TOP1
from alexnet.run_record import epochs_to_error


def log_study(sweep_dir: str | os.PathLike, report_png: str | os.PathLike, *,
              online: bool = False, wandb_dir: str | os.PathLike | None = None) -> Path:
    """Log a study as one wandb run (offline by default, into ``wandb_dir``, by default the
    sweep directory): ``study/report`` (report.png), ``study/curves`` (each arm's validation
    error per epoch and each ablation's gap), ``study/fig1`` (when the study has ReLU and tanh
    runs), ``study/runs`` (one row per run) and ``study/deltas`` (the report's table). Returns
    the wandb run's directory."""
    import io

    import wandb
    from PIL import Image


    study = load_study(sweep_dir)
    claims = claims_by_ablation()
    runs = [[r.arm, str(r.seed), r.lr, r.status, r.test_error("top1_err"),
             r.test_error("top5_err"),
             epochs_to_error(r.history(TRAIN_TOP1), FIG1_TARGET, r.chance_error),
             r.summary.get("wall_time_s"), str(r.path.relative_to(study.directory))]
            for r in study.runs + study.incomplete]
    deltas = []
    for arm in study.arms:
        if arm == BASELINE:
            continue
        row: list[Any] = [arm, (claims.get(arm) or {}).get("key")]
        for error in ERRORS:
            d = delta(arm_errors(study, BASELINE, error), arm_errors(study, arm, error))
            paper = (claims.get(arm) or {}).get(f"delta_{error.split('_')[0]}")
            row += [None, None, None, paper] if d is None else [d.mean, d.low, d.high, paper]
        row.append(0 if d is None else d.n)
        deltas.append(row)
    directory = Path(wandb_dir or study.directory)
    directory.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project="alexnet", name=f"report-{study.name}", group=study.name,
                     job_type="report", dir=str(directory),
                     mode="online" if online else "offline",
                     config={"study": study.spec, "sweep_dir": str(study.directory.resolve()),
                             "runs": len(study.runs)})
    media: dict[str, Any] = {"study/report": wandb.Image(str(report_png))}
    figures = {}
    try:  # the study already read; a study without per-epoch validation errors has no curves
        curves = study_curves(study)
        figures["study/curves"] = lambda: plot_curves(curves)
    except UserError:
        pass
    if any(r.arm == "tanh" for r in study.runs):
        figures["study/fig1"] = lambda: plot_fig1(fig1_curves([study.directory]))
    for key, draw in figures.items():
        buffer = io.BytesIO()
        draw().savefig(buffer, format="png", dpi=110)
        media[key] = wandb.Image(Image.open(buffer))
    media["study/runs"] = wandb.Table(
        columns=["arm", "seed", "lr", "status", "test_top1_err", "test_top5_err",
                 "epochs_to_25pct_train_err", "wall_time_s", "summary"], data=runs)
    media["study/deltas"] = wandb.Table(
        columns=["ablation", "claim", "d_top1", "d_top1_low", "d_top1_high", "paper_top1",
                 "d_top5", "d_top5_low", "d_top5_high", "paper_top5", "n"], data=deltas)
    run.log(media)
    run_dir = Path(run.dir).parent
    run.finish()
    return run_dir
