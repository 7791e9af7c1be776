"""What a run and a study show in Weights & Biases beyond the logged metrics.

- :class:`WandbMedia`, a callback (``conf/callbacks/*.yaml``: ``wandb_media``): the run's
  resolved configuration and its ablations as the wandb run config, and at the end of every
  validation epoch conv1's kernels as an image (Fig. 3's grid, :mod:`alexnet.kernels`) with each
  column's colour specificity. It does nothing without a ``WandbLogger`` (``logger=wandb``);
  ``callbacks.wandb_media.kernels=false`` turns the images off.
- :func:`log_study`: a study's report (``report.png``), its Fig. 1 plot and its tables as one
  wandb run, on request (``python ablations/report.py SWEEP_DIR --wandb``).

The top-1/top-5 error curves need nothing here: ``ImageClassifier`` logs them to every logger.
Runs are offline unless asked otherwise (``logger.wandb.offline=false``, ``--wandb-online``);
``wandb sync DIR`` uploads them later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import OmegaConf

from alexnet.ablation import applied_ablations
from alexnet.kernels import column_scores, columns_of, first_conv, kernel_grid
from alexnet.models.columns import AlexNetColumn, gather_rows
from alexnet.names import TRAIN_TOP1, arm_name

KERNELS_KEY = "media/conv1_kernels"


def _wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def run_config(config: dict[str, Any]) -> dict[str, Any]:
    """The wandb run config of a run: its resolved configuration, plus ``arm`` (the ablations'
    names joined by +, ``none`` for the recipe), which a dashboard groups a sweep by."""
    names = [a["name"] for a in applied_ablations(OmegaConf.create(config))]
    return {**config, "arm": arm_name(names)}


class WandbMedia(L.Callback):
    """Sends the run config and, each validation epoch, conv1's kernel grid to wandb."""

    def __init__(self, kernels: bool = True, config: bool = True, zoom: int = 4) -> None:
        self.kernels, self.config, self.zoom = kernels, config, zoom
        self._warned = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = getattr(pl_module, "run_config", None)
        if not self.config or not config:
            return
        for logger in _wandb_loggers(trainer):
            logger.log_hyperparams(run_config(config))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = _wandb_loggers(trainer)
        if not (self.kernels and loggers) or trainer.sanity_checking:
            return
        net = getattr(pl_module, "net", pl_module)
        try:
            conv = first_conv(net)
        except ValueError as err:
            if not self._warned:
                rank_zero_warn(f"no conv1 kernel images in wandb: {err}")
                self._warned = True
            return
        weight = conv.weight.detach()
        if isinstance(net, AlexNetColumn):  # trainer=model_parallel: both columns' kernels
            weight = gather_rows(weight, net.group)  # (every process calls this hook)
        weight = weight.float().cpu()
        columns = columns_of(net) if weight.shape[0] % columns_of(net) == 0 else 1
        image, _ = kernel_grid(weight, columns, self.zoom)
        scores = column_scores(weight, columns)
        caption = (f"epoch {trainer.current_epoch}: conv1, {weight.shape[0]} kernels in "
                   f"{columns} column(s); colour specificity "
                   + ", ".join(f"{s:.3f}" for s in scores))
        metrics = {f"conv1/colour_specificity_col{c}": s for c, s in enumerate(scores)}
        for logger in loggers:
            logger.log_image(KERNELS_KEY, [image], step=trainer.global_step, caption=[caption])
            logger.log_metrics(metrics, step=trainer.global_step)


def log_study(sweep_dir: str | os.PathLike, report_png: str | os.PathLike, *,
              online: bool = False, wandb_dir: str | os.PathLike | None = None) -> Path:
    """Log a study as one wandb run (offline by default, into ``wandb_dir``, by default the
    sweep directory): ``study/report`` (report.png), ``study/fig1`` (when the study has ReLU and
    tanh runs), ``study/runs`` (one row per run) and ``study/deltas`` (the report's table).
    Returns the wandb run's directory."""
    import io

    import wandb
    from PIL import Image

    from alexnet.fig1_report import FIG1_TARGET
    from alexnet.figures import fig1_curves, plot_fig1
    from alexnet.report import claims_by_ablation
    from alexnet.study import BASELINE, ERRORS, arm_errors, epochs_to_error, load_study
    from alexnet.study import paired_delta as delta

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
    if any(r.arm == "tanh" for r in study.runs):
        buffer = io.BytesIO()
        plot_fig1(fig1_curves([study.directory])).savefig(buffer, format="png", dpi=110)
        media["study/fig1"] = wandb.Image(Image.open(buffer))
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
