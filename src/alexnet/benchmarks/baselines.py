"""The baseline every speed ratio is measured against: the same network as stock PyTorch builds
it (``F.local_response_norm``, float32, NCHW, no fused update), so that a ratio says what the
fast path buys."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from alexnet.models import AlexNet, LocalResponseNorm


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


def stock_net(net: AlexNet) -> nn.Module:
    """A copy of ``net`` with its LRN and dropout replaced by the stock modules: the paper's
    alpha as torch's ``nn.LocalResponseNorm`` takes it (alpha * n), and inverted ``nn.Dropout``."""
    stock = copy.deepcopy(net)
    for name, module in list(stock.named_children()):
        if isinstance(module, LocalResponseNorm):
            alpha = module.effective_alpha * module.size  # torch divides by the size again
            lrn = nn.LocalResponseNorm(module.size, alpha, module.beta, module.k)
            setattr(stock, name, StockColumnLRN(module.groups, lrn))
        elif isinstance(module, nn.Dropout):
            setattr(stock, name, nn.Dropout(module.p))
    return stock
