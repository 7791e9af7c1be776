"""The first layer's kernels as the paper shows them (Fig. 3), and how colour-specific they are.

Fig. 3 shows the 96 11x11x3 kernels of conv1: the 48 of GPU 1 (column 0 here) in the top rows,
the 48 of GPU 2 (column 1) below, and Sec. 6.1 observes that "the kernels on GPU 1 are largely
color-agnostic, while the kernels on GPU 2 are largely color-specific". This module makes that
observation a number and draws the grid; it works on tensors only, so the Fig. 3 command
(:mod:`alexnet.analysis.network_figures`) and the wandb callback
(:mod:`alexnet.callbacks.wandb_media`) share it.

Display scaling follows the authors' ``shownet.py`` (cuda-convnet2, ``plot_filters`` with
``--norm-filters``): each kernel minus its own mean, divided by its own standard deviation (over
its 3 x 11 x 11 values, so the balance of its colours is kept), then the whole set shifted and
divided into [0, 1] by its global minimum and maximum. ``scaling="global"`` is the same without
the per-kernel standardisation (``shownet.py`` without ``--norm-filters``).

Colour specificity of a kernel w (3 x k x k): the fraction of its energy outside the grey axis,

    s(w) = sum_xy |w_xy - g_xy (1, 1, 1)|^2 / sum_xy |w_xy|^2,   g_xy = mean of w_xy's R, G, B,

where w_xy is the RGB weight vector at one position. s = 0 for a kernel that weighs R, G and B
alike everywhere (it responds to luminance only: colour-agnostic), s = 1 for a kernel whose
weights sum to zero over R, G, B at every position (it responds to colour only), and s = 2/3 in
expectation for independent random weights (two of the three RGB directions are chromatic), the
value at initialisation. A column's score is the mean of its kernels' s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

SCALINGS = ("per_kernel", "global")
KERNELS_PER_ROW = 16  # shownet.py's FILTERS_PER_ROW: 48 kernels make three rows per column


def first_conv(net: nn.Module) -> nn.Conv2d:
    """The network's first convolution over RGB input: ``conv1`` when it has one (AlexNet and the
    CIFAR-10 nets), else the first ``nn.Conv2d`` with 3 input channels; ValueError if none."""
    conv = getattr(net, "conv1", None)
    if not isinstance(conv, nn.Conv2d):
        conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None or conv.in_channels != 3 or conv.groups != 1:
        raise ValueError(f"{type(net).__name__} has no first convolution over RGB input")
    return conv


def columns_of(net: nn.Module) -> int:
    """The number of columns ("GPUs", Sec. 3.2) the first layer's kernels split into: 1 for
    one column of a net split over two devices (``trainer=model_parallel``), which holds only
    its own column's kernels."""
    if getattr(net, "column", None) is not None:
        return 1
    return int(getattr(net, "columns", 1) or 1)


def colour_specificity(kernels: Tensor) -> Tensor:
    """s(w) of each kernel of a (N, 3, k, k) weight tensor, as a (N,) tensor in [0, 1] (see the
    module's docstring); 0 for an all-zero kernel."""
    if kernels.ndim != 4 or kernels.shape[1] != 3:
        raise ValueError(f"expected (N, 3, k, k) RGB kernels, got {tuple(kernels.shape)}")
    w = kernels.detach().double()
    chroma = w - w.mean(dim=1, keepdim=True)  # the part orthogonal to the grey axis (1, 1, 1)
    total = w.pow(2).sum(dim=(1, 2, 3))
    return torch.where(total > 0, chroma.pow(2).sum(dim=(1, 2, 3)) / total.clamp_min(1e-300),
                       torch.zeros_like(total))


def column_scores(kernels: Tensor, columns: int) -> list[float]:
    """Mean colour specificity of each column's kernels: column c holds kernels
    [c N / columns, (c + 1) N / columns) (conv1's first 48 and last 48 in the paper's net)."""
    if kernels.shape[0] % columns:
        raise ValueError(f"{kernels.shape[0]} kernels do not split into {columns} columns")
    per_kernel = colour_specificity(kernels)
    return [float(part.mean()) for part in per_kernel.chunk(columns)]


def display_scale(kernels: Tensor, scaling: str = "per_kernel") -> Tensor:
    """(N, 3, k, k) kernels mapped into [0, 1] for display, as ``shownet.py`` does."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    w = kernels.detach().float().cpu()
    if scaling == "per_kernel":
        flat = w.flatten(1)
        std = flat.std(dim=1, unbiased=False).clamp_min(1e-12)
        w = ((flat - flat.mean(dim=1, keepdim=True)) / std[:, None]).view_as(w)
    low, high = w.min(), w.max()
    return (w - low) / (high - low) if high > low else torch.full_like(w, 0.5)


@dataclass(frozen=True)
class GridLayout:
    """Where each kernel's tile lies in the grid image: ``blocks`` stacked vertically (one per
    column), each ``rows`` x ``per_row`` tiles of ``tile`` pixels, ``gap`` pixels between tiles
    and around them, ``block_gap`` between blocks."""

    blocks: int
    per_block: int
    per_row: int
    rows: int
    tile: int
    gap: int
    block_gap: int

    @property
    def width(self) -> int:
        return self.per_row * (self.tile + self.gap) + self.gap

    @property
    def block_height(self) -> int:
        return self.rows * (self.tile + self.gap) + self.gap

    @property
    def height(self) -> int:
        return self.blocks * self.block_height + (self.blocks - 1) * self.block_gap

    def origin(self, index: int) -> tuple[int, int]:
        """(top, left) pixel of kernel ``index``'s tile."""
        block, within = divmod(index, self.per_block)
        row, col = divmod(within, self.per_row)
        top = block * (self.block_height + self.block_gap) + self.gap + row * (self.tile + self.gap)
        return top, self.gap + col * (self.tile + self.gap)

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "width": self.width, "height": self.height}


def grid_layout(count: int, columns: int, kernel_size: int, zoom: int = 4,
                per_row: int = KERNELS_PER_ROW) -> GridLayout:
    """The layout of ``count`` kernels in ``columns`` blocks, each enlarged ``zoom`` times."""
    if count % columns:
        raise ValueError(f"{count} kernels do not split into {columns} columns")
    per_block = count // columns
    per_row = min(per_row, per_block)
    return GridLayout(blocks=columns, per_block=per_block, per_row=per_row,
                      rows=-(-per_block // per_row), tile=kernel_size * zoom, gap=zoom,
                      block_gap=4 * zoom)


def kernel_grid(kernels: Tensor, columns: int = 1, zoom: int = 4,
                scaling: str = "per_kernel") -> tuple[Tensor, GridLayout]:
    """The Fig. 3 image of (N, 3, k, k) kernels: a uint8 (H, W, 3) tensor on the CPU (``.numpy()``
    for an image library), white between tiles, each kernel enlarged ``zoom`` times by pixel
    repetition; and its layout."""
    if kernels.ndim != 4 or kernels.shape[1] != 3 or kernels.shape[2] != kernels.shape[3]:
        raise ValueError(f"expected (N, 3, k, k) RGB kernels, got {tuple(kernels.shape)}")
    layout = grid_layout(kernels.shape[0], columns, kernels.shape[2], zoom)
    scaled = display_scale(kernels, scaling)
    tiles = scaled.repeat_interleave(zoom, dim=2).repeat_interleave(zoom, dim=3)
    tiles = (tiles.permute(0, 2, 3, 1) * 255.0).round().clamp(0, 255).to(torch.uint8).cpu()
    image = torch.full((layout.height, layout.width, 3), 255, dtype=torch.uint8)
    for index, tile in enumerate(tiles):
        top, left = layout.origin(index)
        image[top:top + layout.tile, left:left + layout.tile] = tile
    return image, layout
