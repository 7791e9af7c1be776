"""Fig. 3 and Fig. 4 (Sec. 6.1) from a checkpoint's network:

- :func:`fig3`: conv1's kernels as an image grid, one block per column, and each column's colour
  specificity (:mod:`alexnet.models.conv1_kernels`).
- :func:`fig4`: validation images and the training images nearest to them in fc7 feature space,
  Euclidean distance.

They read checkpoints (``alexnet.training.checkpoints.load_checkpoint``) and the prepared dataset a
checkpoint names, nothing of training's internals; ``src/figures.py`` and the notebooks call them.
Every mistake raises ``UserError`` (or ``DataError``) with one line, before anything is written.
Fig. 1 is :mod:`alexnet.analysis.fig1_figure`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from alexnet.exits import UserError, building
from alexnet.models.conv1_kernels import (
    colour_specificity,
    column_scores,
    columns_of,
    first_conv,
    kernel_grid,
)
from alexnet.training.checkpoints import (
    check_classes,
    dataset_config,
    load_checkpoint,
    trained_classes,
    weights_mismatch,
)
from alexnet.training.module import CONFIG_KEY

FIG3_FILE, FIG4_FILE = "fig3_kernels.png", "fig4_neighbours.png"


@dataclass
class Loaded:
    """A network rebuilt from a checkpoint, with its training configuration."""

    path: Path
    net: nn.Module
    config: dict[str, Any]
    classes: list[str] | None = None  # the class names it was trained on (trained_classes)


def load_network(path: str | os.PathLike) -> Loaded:
    """The network of a checkpoint written by ``src/train.py``, in eval mode, built from the
    configuration the checkpoint carries (as ``src/eval.py`` builds it)."""
    checkpoint = load_checkpoint(path)
    state = {k[len("net."):]: v for k, v in (checkpoint.get("state_dict") or {}).items()
             if k.startswith("net.")}
    classifier = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    if not classifier:
        raise UserError(f"{path} holds no network weights (state_dict net.*)")
    config = checkpoint[CONFIG_KEY]
    with building(f"cannot rebuild the network of {path}"):
        # The last linear layer is the classifier: its rows are the classes.
        net = instantiate(OmegaConf.create(config["model"]), num_classes=classifier[-1].shape[0])
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"the weights do not fit the network its configuration names "
                             f"({weights_mismatch(err)})") from None
    return Loaded(Path(path), net.eval(), config, trained_classes(checkpoint))


# -- Fig. 3 --------------------------------------------------------------------------------------
@dataclass
class Fig3:
    image: np.ndarray                 # uint8 (H, W, 3)
    layout: dict[str, int]
    columns: int
    column_scores: list[float]        # mean colour specificity of each column's kernels
    kernel_scores: list[float]
    scaling: str


def fig3(net: nn.Module, zoom: int = 4, scaling: str = "per_kernel") -> Fig3:
    """conv1's kernels as a grid, one block per column, and each column's colour specificity."""
    try:
        weight = first_conv(net).weight.detach().float().cpu()
        columns = columns_of(net)
        if weight.shape[0] % columns:
            columns = 1  # a first layer the column split does not apply to: one block
        image, layout = kernel_grid(weight, columns, zoom, scaling)
    except ValueError as err:  # no RGB first convolution, or kernels that are not square
        raise UserError(str(err)) from None
    return Fig3(image.numpy(), layout.as_dict(), columns, column_scores(weight, columns),
                [float(s) for s in colour_specificity(weight)], scaling)


# -- Fig. 4 --------------------------------------------------------------------------------------
def nearest_neighbours(queries: torch.Tensor, candidates: torch.Tensor,
                       k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, distances), each (Q, k): the ``k`` rows of ``candidates`` nearest to each row of
    ``queries`` in Euclidean distance, nearest first (ties: the lower index first)."""
    k = min(k, candidates.shape[0])
    distances = torch.cdist(queries.double(), candidates.double())
    order = torch.argsort(distances, dim=1, stable=True)[:, :k]
    return order, distances.gather(1, order)


@dataclass
class Fig4:
    image: np.ndarray                   # uint8: one row per query, query first, then neighbours
    queries: list[int]                  # val dataset indices
    neighbours: list[list[int]]         # train dataset indices, nearest first
    distances: list[list[float]]
    query_labels: list[int]
    neighbour_labels: list[list[int]]
    prepared_dir: str
    train_searched: int
    tile: int
    gap: int = 4
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def same_class(self) -> float:
        """The fraction of neighbours of the query's class (Sec. 6.1: "often" the same)."""
        pairs = [(q, n) for q, row in zip(self.query_labels, self.neighbour_labels, strict=True)
                 for n in row]
        return sum(q == n for q, n in pairs) / len(pairs)


def _features(net: nn.Module, dataset: Any, preset: Any, count: int,
              batch: int = 64) -> torch.Tensor:
    """fc7 features (post-activation, the net in eval mode) of the first ``count`` images of a
    centre-cropped split, as the network sees them at test time."""
    device = next(net.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, count, batch):
            rows = list(range(start, min(count, start + batch)))
            images, _, geometry = dataset.__getitems__(rows)
            x = preset(images.to(device), torch.as_tensor(geometry).to(device))
            out.append(net.embed(x).float().cpu())
    return torch.cat(out)


def fig4(loaded: Loaded, images: list[int] | None = None, k: int = 6,
         max_train: int | None = None, prepared_dir: str | None = None,
         tile: int = 128) -> Fig4:
    """For validation images (dataset indices; default five spread over the split), the ``k``
    training images nearest in fc7 space, over the first ``max_train`` training images (all by
    default), shown from the prepared dataset's own pixels."""
    from alexnet.data import prepared
    from alexnet.data.loader import PreparedImages

    if not callable(getattr(loaded.net, "embed", None)):
        raise UserError(f"{type(loaded.net).__name__} has no fc7 features (no embed method): "
                        "Fig. 4 needs AlexNet")
    if k < 1:
        raise UserError(f"the number of neighbours must be at least 1, got {k}")
    with building(f"cannot read the dataset of {loaded.path}"):
        datamodule = instantiate(dataset_config(OmegaConf.create(loaded.config), prepared_dir))
        datamodule.prepare_data()  # the built-in data are drawn again if their cache is gone
        datamodule.setup("validate")
        check_classes(loaded.classes, datamodule.class_names, datamodule.root, loaded.path)
        root = datamodule.root
        val = PreparedImages(root, "val", crop_size=datamodule.crop_size, crop="center")
        train = PreparedImages(root, "train", crop_size=datamodule.crop_size, crop="center")
    if images is None:
        images = sorted({int(i) for i in np.linspace(0, len(val) - 1, min(5, len(val)))})
    bad = [i for i in images if not 0 <= i < len(val)]
    if bad or not images:
        raise UserError(f"validation image indices must be in [0, {len(val) - 1}], got {bad}")
    count = len(train) if max_train is None else min(max_train, len(train))
    if count < 1:
        raise UserError(f"--max-train must be at least 1, got {max_train}")
    preset = datamodule.eval_preset
    if torch.cuda.is_available():  # a pass over ImageNet's training set wants a GPU
        loaded.net.cuda()
    train_features = _features(loaded.net, train, preset, count)
    query_features = torch.cat([_features(loaded.net, _Subset(val, i), preset, 1)
                                for i in images])
    index, dist = nearest_neighbours(query_features, train_features, k)
    val_pixels, _ = prepared.open_split(root, "val")
    train_pixels, _ = prepared.open_split(root, "train")
    rows = [[val_pixels[val.rows[q]]] + [train_pixels[train.rows[n]] for n in row.tolist()]
            for q, row in zip(images, index, strict=True)]
    result = Fig4(
        image=np.zeros(0), queries=list(images), neighbours=index.tolist(),
        distances=dist.tolist(), query_labels=[int(val.labels[q]) for q in images],
        neighbour_labels=[[int(train.labels[n]) for n in row] for row in index.tolist()],
        prepared_dir=str(root), train_searched=count, tile=tile,
        extra={"classes": (datamodule.stats or {}).get("classes")},
    )
    result.image = image_rows(rows, tile, result.gap)
    return result


class _Subset:
    """One image of a split, as a dataset of length 1 (for :func:`_features`)."""

    def __init__(self, dataset: Any, index: int) -> None:
        self.dataset, self.index = dataset, index

    def __getitems__(self, indices: list[int]) -> Any:
        return self.dataset.__getitems__([self.index])


def image_rows(rows: list[list[np.ndarray]], tile: int, gap: int = 4) -> np.ndarray:
    """uint8 (H, W, 3) rows of images, each resized to ``tile`` pixels, white between them and a
    double gap after the first column (the query, as in the paper's Fig. 4)."""
    from PIL import Image

    cols = max(len(r) for r in rows)
    width = gap + cols * (tile + gap) + gap
    canvas = np.full((gap + len(rows) * (tile + gap), width, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, pixels in enumerate(row):
            picture = Image.fromarray(np.ascontiguousarray(pixels))
            if picture.size != (tile, tile):
                picture = picture.resize((tile, tile), Image.BILINEAR)
            top = gap + r * (tile + gap)
            left = gap + c * (tile + gap) + (gap if c else 0)
            canvas[top:top + tile, left:left + tile] = np.asarray(picture)
    return canvas
