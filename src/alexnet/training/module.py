"""The LightningModule that joins a network, the paper's loss and optimisation, and the metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from alexnet.names import TRAIN_TOP1, VAL_TOP1
from alexnet.training.optim import build_optimizer
from alexnet.training.speed import check_compile, to_layout

CONFIG_KEY = "alexnet_config"  # where a checkpoint keeps the resolved training configuration
LAYOUT_KEY = "alexnet_parallel_layout"  # and the parallel layout that wrote it (parallel.describe)
# and its dataset's class names in label order: eval and Fig. 4 refuse a dataset of other classes
CLASSES_KEY = "alexnet_classes"


class TopKError(MulticlassAccuracy):
    """Top-k error rate as a fraction in [0, 1]: the paper reports errors, not accuracies."""

    def __init__(self, num_classes: int, top_k: int) -> None:
        super().__init__(num_classes=num_classes, top_k=top_k, average="micro")

    def compute(self) -> Tensor:
        return 1.0 - super().compute()


class ImageClassifier(L.LightningModule):
    """Cross-entropy training of ``net`` with the configured optimizer and LR schedule.

    Logs ``{train,val,test}/loss``, ``*/top1_err``, ``*/top5_err``; a test batch of shape
    (B, 10, C, H, W) is the paper's 10-patch evaluation (softmax averaged over the patches,
    Sec. 4.1) and logs under ``test10/``.

    Speed switches (``speed.*`` in ``conf/train.yaml``, see ``alexnet.training.speed``): with
    ``channels_last`` the network's weights and every input batch are in the NHWC memory layout
    (else NCHW); ``compile`` (None, or a torch.compile mode) compiles the network in place, so
    that its parameters and checkpoints keep their names. Neither changes the function computed.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_monitor: str = VAL_TOP1,
        num_classes: int | None = None,
        channels_last: bool = False,
        compile: str | bool | None = None,
    ) -> None:
        super().__init__()
        self.channels_last = bool(channels_last)
        self.compile_mode = check_compile(compile)
        if self.channels_last:  # 4-d weights only; fc layers have no layout to change
            net = net.to(memory_format=torch.channels_last)
        if self.compile_mode is not None:
            net.compile(mode=self.compile_mode)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_monitor = scheduler_monitor
        if num_classes is None:
            num_classes = _output_features(net)
        self.num_classes = num_classes
        top5 = min(5, num_classes)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_top{k}": TopKError(num_classes, top_k)
                for stage in ("train", "val", "test", "test10")
                for k, top_k in ((1, 1), (5, top5))
            }
        )
        self.losses = nn.ModuleDict({s: MeanMetric() for s in ("val", "test", "test10")})

    run_config: dict[str, Any] | None = None  # the resolved configuration, kept in checkpoints
    # Per test image, in the test loader's order: was the top-1 guess right ("test", "test10").
    # Runs of one study test the same images in the same order, so a report can pair them image
    # by image (what the choice of the test images adds to a delta).
    test_correct: dict[str, list[Tensor]] | None = None
    parallel_layout: dict[str, Any] | None = None  # processes, replicas, columns (parallel.py)
    class_names: list[str] | None = None  # the dataset's classes in label order (CLASSES_KEY)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.run_config
        checkpoint[LAYOUT_KEY] = self.parallel_layout
        checkpoint[CLASSES_KEY] = self.class_names

    def forward(self, x: Tensor) -> Tensor:
        return self.net(to_layout(x, self.channels_last))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.metrics["train_top1"](logits, y)
        self.metrics["train_top5"](logits, y)
        # sync_dist: the mean over the processes, i.e. the global batch's loss in any layout.
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log(TRAIN_TOP1, self.metrics["train_top1"], on_step=False, on_epoch=True)
        self.log("train/top5_err", self.metrics["train_top5"], on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        if x.ndim == 5:  # (B, crops, C, H, W): average the softmax over the crops (Sec. 4.1)
            batch_size, crops = x.shape[:2]
            probs = F.softmax(self(x.flatten(0, 1)), dim=1)
            probs = probs.view(batch_size, crops, -1).mean(dim=1)
            stage = "test10" if stage == "test" else stage
            loss = F.nll_loss(torch.log(probs.clamp_min(1e-12)), y)
            scores = probs
        else:
            scores = self(x)
            loss = F.cross_entropy(scores, y)
        self.losses[stage].update(loss, weight=len(y))
        if stage in ("test", "test10") and self.test_correct is not None:
            self.test_correct.setdefault(stage, []).append(scores.argmax(dim=1) == y)
        self.metrics[f"{stage}_top1"](scores, y)
        self.metrics[f"{stage}_top5"](scores, y)
        prog = stage == "val"
        self.log(f"{stage}/loss", self.losses[stage], on_epoch=True, prog_bar=prog)
        self.log(f"{stage}/top1_err", self.metrics[f"{stage}_top1"], on_epoch=True, prog_bar=prog)
        self.log(f"{stage}/top5_err", self.metrics[f"{stage}_top5"], on_epoch=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_test_epoch_start(self) -> None:
        self.test_correct = {}

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> Any:
        # The builders of alexnet.training.optim take the network, to split weights from biases or
        # use its own param_groups(); a plain optimizer class gets the parameters.
        optimizer = build_optimizer(self.optimizer_factory, self.net)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.scheduler_monitor,
                "interval": "epoch",
            },
        }


def _output_features(net: nn.Module) -> int:
    last = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("cannot infer the number of classes: pass num_classes")
    return last[-1].out_features
