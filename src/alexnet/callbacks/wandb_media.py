"""What a run and a study show in Weights & Biases beyond the logged metrics.

- :class:`WandbMedia`, a callback (``conf/callbacks/*.yaml``: ``wandb_media``): the run's
  resolved configuration and its ablations as the wandb run config, and at the end of every
  validation epoch conv1's kernels as an image (Fig. 3's grid,
  :mod:`alexnet.models.conv1_kernels`) with each column's colour specificity.
  It does nothing without a ``WandbLogger`` (``logger=wandb``);
  ``callbacks.wandb_media.kernels=false`` turns the images off.
- a study as one wandb run: :func:`alexnet.analysis.wandb_study.log_study`.

The top-1/top-5 error curves need nothing here: ``ImageClassifier`` logs them to every logger.
Runs are offline unless asked otherwise (``logger.wandb.offline=false``, ``--wandb-online``);
``wandb sync DIR`` uploads them later.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import OmegaConf

from alexnet.models.columns import AlexNetColumn, gather_rows
from alexnet.models.conv1_kernels import column_scores, columns_of, first_conv, kernel_grid
from alexnet.names import arm_name
from alexnet.training.ablation import applied_ablations

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
        image = kernel_grid(weight, columns, self.zoom)[0].numpy()
        scores = column_scores(weight, columns)
        caption = (f"epoch {trainer.current_epoch}: conv1, {weight.shape[0]} kernels in "
                   f"{columns} column(s); colour specificity "
                   + ", ".join(f"{s:.3f}" for s in scores))
        metrics = {f"conv1/colour_specificity_col{c}": s for c, s in enumerate(scores)}
        for logger in loggers:
            logger.log_image(KERNELS_KEY, [image], step=trainer.global_step, caption=[caption])
            logger.log_metrics(metrics, step=trainer.global_step)
