"""One column of the two-column AlexNet, for running the columns on two devices as the paper did.

Sec. 3.2 and Fig. 2: "the GPUs communicate only in certain layers". Each device holds half of the
kernels of every conv layer and half of the neurons of fc6 and fc7; the kernels of conv2, conv4
and conv5 read only their own device's maps, while conv3 and every fully connected layer read
both devices' outputs. :class:`AlexNetColumn` is column ``c`` of an :class:`~.alexnet.AlexNet`:
each weight layer holds rows ``[c * n / 2, (c + 1) * n / 2)`` of the two-column net's weights
(out-channels of a conv, out-features of fc6/fc7), and activations cross between the processes
exactly where the paper's cross between its GPUs:

    conv1 (48 of 96 kernels, on the whole image) -> act -> LRN -> pool    local
    conv2 (128 of 256, on this column's 48 maps) -> act -> LRN -> pool    local
    conv3 (192 of 384, on both columns' 256 maps)                         gathered input
    conv4 (192 of 384), conv5 (128 of 256) on this column's maps -> pool   local
    fc6 (2048 of 4096), fc7 (2048 of 4096)                                gathered input
    fc8 (all classes, the same in both processes)                         gathered input

fc8's 1000-way softmax is computed in both processes alike, so both hold the whole loss. The LRN of
the two-column net already normalises each column on its own (``groups=2``), so a column's LRN is
the same layer over its 48 (or 128) maps.

Only torch here: the process group of the two columns is given to the module (``group``), and the
two gathers below are autograd functions over ``torch.distributed``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .alexnet import AlexNet, PaperDropout, conv1_far_padding

COLUMNS = 2
# Layers whose rows are split between the columns; fc8 is whole in both processes.
SPLIT_LAYERS: tuple[str, ...] = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


class _GatherColumns(torch.autograd.Function):
    """All columns' activations, concatenated along the channel axis in column order.

    Backward: the columns that read the gathered tensor are different layers (conv3's, fc6's and
    fc7's halves), so each column's gradient is the sum of what every column sends back for its
    part (an all-reduce, then this column's chunk). With ``replicated=True`` the layer that reads
    it is the same in every process (fc8 and the loss), each already holding the whole gradient:
    this column's chunk is taken as it is.
    """

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup, replicated: bool) -> Tensor:
        ctx.group, ctx.replicated = group, replicated
        ctx.rank, ctx.size = dist.get_rank(group), dist.get_world_size(group)
        parts = [torch.empty_like(x) for _ in range(ctx.size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        grad = grad.contiguous()
        if not ctx.replicated:
            grad = grad.clone()
            dist.all_reduce(grad, group=ctx.group)
        return grad.chunk(ctx.size, dim=1)[ctx.rank].contiguous(), None, None


def gather_columns(x: Tensor, group: dist.ProcessGroup, *, replicated: bool = False) -> Tensor:
    """Both columns' ``x`` side by side (dim 1). See :class:`_GatherColumns` for the gradient."""
    return _GatherColumns.apply(x, group, replicated)


def rows(tensor: Tensor, column: int) -> Tensor:
    """Column ``column``'s rows of a whole tensor (its chunk along dim 0)."""
    return tensor.chunk(COLUMNS, dim=0)[column].clone()


def gather_rows(tensor: Tensor, group: dist.ProcessGroup | None) -> Tensor:
    """The whole tensor from each column's rows, stacked in column order (a collective)."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=0)


def _column_conv(full: nn.Conv2d, column: int) -> nn.Conv2d:
    """Column ``column`` of a conv layer: its half of the kernels, reading this column's maps when
    the layer is grouped per column (groups=2), or the whole input when it is not."""
    out_channels = full.out_channels // COLUMNS
    in_channels = full.in_channels // COLUMNS if full.groups == COLUMNS else full.in_channels
    conv = nn.Conv2d(in_channels, out_channels, full.kernel_size, full.stride, full.padding)
    with torch.no_grad():
        conv.weight.copy_(rows(full.weight, column))
        conv.bias.copy_(rows(full.bias, column))
    return conv.to(full.weight.device)


def _column_linear(full: nn.Linear, column: int) -> nn.Linear:
    linear = nn.Linear(full.in_features, full.out_features // COLUMNS)
    with torch.no_grad():
        linear.weight.copy_(rows(full.weight, column))
        linear.bias.copy_(rows(full.bias, column))
    return linear.to(full.weight.device)


class ColumnDropout(nn.Module):
    """Dropout on one column's half of fc6's (or fc7's) outputs, as the whole layer's would be.

    Both column processes draw from the same random stream (they must crop and flip alike), so
    masks drawn per column would drop the same units in both halves. Instead each draws the mask
    of the whole layer and keeps its half: units are dropped independently across the layer, as
    on one device. ``dropout`` is the whole net's module (``PaperDropout``, ``nn.Dropout`` or
    ``nn.Identity``); its rule at test time is kept.
    """

    def __init__(self, dropout: nn.Module, column: int) -> None:
        super().__init__()
        self.p = float(getattr(dropout, "p", 0.0))
        self.inverted = isinstance(dropout, nn.Dropout) and not isinstance(dropout, PaperDropout)
        self.column = column

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0:
            return x
        if not self.training:  # the paper's rule: every unit, times 1 - p (Sec. 4.2)
            return x if self.inverted else x * (1.0 - self.p)
        whole = x.new_empty(x.shape[0], COLUMNS * x.shape[1]).bernoulli_(1.0 - self.p)
        keep = whole.chunk(COLUMNS, dim=1)[self.column]
        return x * keep / (1.0 - self.p) if self.inverted else x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}, inverted={self.inverted}, column={self.column}"


class AlexNetColumn(nn.Module):
    """Column ``column`` of a two-column :class:`AlexNet` (same parameter names, half the rows).

    ``group`` is the process group of the two column processes that run one network; ranks 0 and 1
    of that group hold columns 0 and 1. :meth:`full_state_dict` rebuilds the whole net's
    ``state_dict`` (a collective: both columns call it), so that a checkpoint loads into a plain
    :class:`AlexNet` on one device.
    """

    def __init__(self, net: AlexNet, column: int, group: dist.ProcessGroup | None) -> None:
        super().__init__()
        if net.columns != COLUMNS:
            raise ValueError(
                "the two-device model parallelism needs the two-column net (model.columns=2); "
                f"this net has {net.columns} column"
            )
        if column not in range(COLUMNS):
            raise ValueError(f"column must be 0 or 1, got {column}")
        self.column, self.group = column, group
        self.num_classes, self.columns = net.num_classes, net.columns
        self.conv1_geometry, self.crop_size = net.conv1_geometry, net.crop_size
        self.conv1 = _column_conv(net.conv1, column)
        self.conv2 = _column_conv(net.conv2, column)
        self.conv3 = _column_conv(net.conv3, column) if net.conv3 is not None else None
        self.conv4 = _column_conv(net.conv4, column) if net.conv4 is not None else None
        self.conv5 = _column_conv(net.conv5, column)
        # conv3 is the one conv layer whose kernels read both columns (groups=1), when present.
        self._conv_gathers = {"conv3": net.conv3 is not None and net.conv3.groups == 1,
                              "conv4": net.conv4 is not None and net.conv4.groups == 1}
        self.fc6 = _column_linear(net.fc6, column)
        self.fc7 = _column_linear(net.fc7, column)
        self.fc8 = copy.deepcopy(net.fc8)
        # Activations, LRN and pools have no parameters: the same modules serve.
        for name in ("act1", "norm1", "pool1", "act2", "norm2", "pool2", "act3", "act4", "act5",
                     "pool5", "act6", "act7"):
            setattr(self, name, copy.deepcopy(getattr(net, name)))
        self.drop6, self.drop7 = ColumnDropout(net.drop6, column), ColumnDropout(net.drop7, column)
        self._ungroup_lrn()

    def _ungroup_lrn(self) -> None:
        # In the whole net the LRN splits its channels into 2 blocks (one per column); here the
        # module sees one column's maps only: one block.
        for name in ("norm1", "norm2"):
            norm = getattr(self, name)
            if hasattr(norm, "groups"):
                norm.groups = 1

    def _gather(self, x: Tensor, replicated: bool = False) -> Tensor:
        if self.group is None:
            raise RuntimeError("AlexNetColumn needs its process group: set .group")
        return gather_columns(x, self.group, replicated=replicated)

    def forward(self, x: Tensor) -> Tensor:
        # The same far-edge padding as the whole net's conv1 (AlexNet.conv_features).
        pad_h = conv1_far_padding(x.shape[-2], self.conv1_geometry)
        pad_w = conv1_far_padding(x.shape[-1], self.conv1_geometry)
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h))
        x = self.pool1(self.norm1(self.act1(self.conv1(x))))
        x = self.pool2(self.norm2(self.act2(self.conv2(x))))
        for name in ("conv3", "conv4"):
            conv = getattr(self, name)
            if conv is not None:
                if self._conv_gathers[name]:
                    x = self._gather(x)
                x = getattr(self, name.replace("conv", "act"))(conv(x))
        x = self.pool5(self.act5(self.conv5(x)))
        x = self.drop6(self.act6(self.fc6(self._gather(x).flatten(1))))
        x = self.drop7(self.act7(self.fc7(self._gather(x))))
        return self.fc8(self._gather(x, replicated=True))

    def full_state_dict(self) -> dict[str, Tensor]:
        """The whole two-column net's ``state_dict``, on every column (a collective)."""
        return assemble(self.state_dict(), self.group)


def is_split(name: str) -> bool:
    """Whether parameter ``name`` (e.g. ``conv3.weight``, ``net.fc6.bias``) is split by rows."""
    parts = name.split(".")
    return len(parts) >= 2 and parts[-2] in SPLIT_LAYERS


def assemble(column_state: dict[str, Tensor], group: dist.ProcessGroup | None,
             split: Callable[[str], bool] = is_split) -> dict[str, Tensor]:
    """The whole tensors from each column's ``column_state``: split ones gathered and stacked by
    rows in column order, the others taken as they are (a collective over ``group``)."""
    return {name: gather_rows(t, group) if split(name) else t for name, t in column_state.items()}


def column_rows(full_state: dict[str, Tensor], column: int,
                split: Callable[[str], bool] = is_split) -> dict[str, Tensor]:
    """Column ``column``'s part of a whole ``state_dict``: the inverse of :func:`assemble`."""
    return {name: rows(t, column) if split(name) else t for name, t in full_state.items()}
