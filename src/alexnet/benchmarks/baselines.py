"""The baseline every speed ratio is measured against: the same network as stock PyTorch builds
it (``F.local_response_norm``, a locally connected layer by ``F.unfold`` and ``einsum``, float32,
NCHW, no fused update), so that a ratio says what the fast path buys."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from alexnet.models import LocallyConnected2d, LocalResponseNorm


class StockColumnLRN(nn.Module):
    """``nn.LocalResponseNorm`` applied to each column's maps on their own (the paper's two-GPU
    net normalises each GPU's kernels separately, Sec. 3.2-3.3), from stock modules only."""

    def __init__(self, groups: int, lrn: nn.LocalResponseNorm) -> None:
        super().__init__()
        self.groups, self.lrn = groups, lrn

    def forward(self, x: Tensor) -> Tensor:
        if self.groups == 1:
            return self.lrn(x)
        return torch.cat([self.lrn(part) for part in x.chunk(self.groups, dim=1)], dim=1)


class UnfoldLocallyConnected2d(nn.Module):
    """A :class:`~alexnet.models.LocallyConnected2d` as plain PyTorch writes it: ``F.unfold``'s
    (B, C*kh*kw, L) columns, then one product per position by ``einsum``, which transposes them
    first. It holds the layer's own parameters (shared, not copied): the same result."""

    def __init__(self, layer: LocallyConnected2d) -> None:
        super().__init__()
        self.weight, self.bias = layer.weight, layer.bias
        self.out_channels, self.out_size = layer.out_channels, layer.out_size
        self.kernel_size, self.stride, self.padding = layer.kernel_size, layer.stride, layer.padding

    def forward(self, x: Tensor) -> Tensor:
        oh, ow = self.out_size
        cols = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)
        weight = self.weight.reshape(oh * ow, self.out_channels, -1)
        out = torch.einsum("bkl,lok->bol", cols, weight).reshape(x.shape[0], -1, oh, ow)
        return out if self.bias is None else out + self.bias


def stock_net(net: nn.Module) -> nn.Module:
    """A copy of ``net`` (AlexNet, or a CIFAR-10 net of ``alexnet.models``) with its LRN,
    dropout and locally connected layers replaced by the stock modules: the paper's alpha as
    torch's ``nn.LocalResponseNorm`` takes it (alpha * n), inverted ``nn.Dropout``, and
    :class:`UnfoldLocallyConnected2d`."""
    stock = copy.deepcopy(net)
    for name, module in list(stock.named_children()):
        if isinstance(module, LocallyConnected2d):
            setattr(stock, name, UnfoldLocallyConnected2d(module))
            continue
        if isinstance(module, LocalResponseNorm):
            alpha = module.effective_alpha * module.size  # torch divides by the size again
            lrn = nn.LocalResponseNorm(module.size, alpha, module.beta, module.k)
            setattr(stock, name, StockColumnLRN(module.groups, lrn))
        elif isinstance(module, nn.Dropout):
            setattr(stock, name, nn.Dropout(module.p))
    return stock
