"""The paper's figures from runs and checkpoints: Fig. 1, Fig. 3 and Fig. 4.

- :func:`fig1_curves` and :func:`plot_fig1`: training error against epochs (Fig. 1, Sec. 3.1),
  ReLU against tanh when pointed at a study with both arms, or any runs, with the 25% line and
  the epoch at which each run reaches it (:func:`alexnet.analysis.study.epochs_to_error`).
- :func:`fig3`: conv1's kernels as an image grid, one block per column (Fig. 3, Sec. 6.1), and
  each column's colour specificity (:mod:`alexnet.analysis.conv1_kernels`).
- :func:`fig4`: validation images and the training images nearest to them in fc7 feature space,
  Euclidean distance (Fig. 4, Sec. 6.1).

They read ``summary.json`` files and checkpoints (``alexnet.training.checkpoints.load_checkpoint``)
only; ``src/figures.py`` and the notebooks call them. Every mistake raises ``UserError`` (or
``StudyError``, ``DataError``) with one line, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from alexnet.analysis.ablation_report import claims_by_ablation
from alexnet.analysis.conv1_kernels import (
    colour_specificity,
    column_scores,
    columns_of,
    first_conv,
    kernel_grid,
)
from alexnet.analysis.fig1_report import FIG1_ARMS, FIG1_TARGET, fig1_result
from alexnet.analysis.study import Run, StudyError, epochs_to_error, load_study, read_runs
from alexnet.exits import UserError, building
from alexnet.names import TRAIN_TOP1
from alexnet.training.checkpoints import dataset_config, load_checkpoint
from alexnet.training.module import CONFIG_KEY
from alexnet.training.summary import git_state

FIG1_FILE, FIG3_FILE, FIG4_FILE = "fig1.png", "fig3_kernels.png", "fig4_neighbours.png"
_ARM_LABELS = dict(zip(FIG1_ARMS, ("ReLU", "tanh"), strict=True))


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """A file as an input: its absolute path, size and sha256."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


# -- Fig. 1 --------------------------------------------------------------------------------------
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
    summary.json
    files, runs of mixed settings) gives every training run found, each labelled by its arm and
    seed."""
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


# -- checkpoints ---------------------------------------------------------------------------------
@dataclass
class Loaded:
    """A network rebuilt from a checkpoint, with its training configuration."""

    path: Path
    net: nn.Module
    config: dict[str, Any]


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
                             f"({' '.join(str(err).split())[:200]})") from None
    return Loaded(Path(path), net.eval(), config)


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
    return Fig3(image, layout.as_dict(), columns, column_scores(weight, columns),
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


# -- the run directory ---------------------------------------------------------------------------
def write_figure_dir(out: str | os.PathLike, pngs: dict[str, Any], inputs: dict[str, Any],
                     measurements: dict[str, Any]) -> list[Path]:
    """Write the PNGs (uint8 arrays or matplotlib figures), ``inputs.json`` (what they were made
    from, exactly) and ``measurements.json`` into ``out``, a directory of their own."""
    from PIL import Image

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, picture in pngs.items():
        path = out / name
        if isinstance(picture, np.ndarray):
            Image.fromarray(picture).save(path)
        else:
            picture.savefig(path, dpi=120)
        written.append(path)
    record = {**inputs, "argv": sys.argv, "git": git_state(),
              "torch": torch.__version__}
    for name, data in (("inputs.json", record), ("measurements.json", measurements)):
        (out / name).write_text(json.dumps(data, indent=2, default=str) + "\n")
        written.append(out / name)
    return written


__all__ = [
    "Curve", "Fig1", "Fig3", "Fig4", "Loaded", "fig1_curves", "fig1_record", "fig3",
    "fig4", "file_record", "image_rows", "load_network", "nearest_neighbours", "plot_fig1",
    "write_figure_dir",
]
