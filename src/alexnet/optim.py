"""The paper's stochastic gradient descent with momentum and weight decay (Sec. 5).

    v <- momentum * v - weight_decay * lr * w - lr * dL/dw
    w <- w + v

The velocity v is kept in parameter units: a learning-rate change affects only the new gradient
term, and the momentum already accumulated carries on at its old size. ``torch.optim.SGD`` keeps
its buffer in gradient units (b <- momentum * b + g + weight_decay * w; w <- w - lr * b), so it
rescales all the accumulated momentum by the new lr at once. At a constant lr the two are the same
update (v = -lr * b); they differ from the first step after a learning-rate change.
"""

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class PaperSGD(torch.optim.Optimizer):
    """SGD with the paper's momentum and weight-decay update (Sec. 5).

    Args:
        params: parameters or param groups; each group may set its own ``lr``, ``momentum``
            and ``weight_decay`` (e.g. no weight decay on biases), and schedulers change
            ``group["lr"]`` as with any torch optimizer.
        lr: the learning rate epsilon (paper: 0.01, divided by 10 on plateaus).
        momentum: paper: 0.9. Must be in [0, 1).
        weight_decay: paper: 0.0005. Scaled by the learning rate, as in the formula.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("PaperSGD does not support sparse gradients")
                state = self.state[p]
                if "velocity" not in state:
                    # v starts at 0, so the first step is w <- w - lr * (g + weight_decay * w).
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                v = state["velocity"]
                v.mul_(momentum)
                if weight_decay != 0.0:
                    v.add_(p, alpha=-weight_decay * lr)
                v.add_(p.grad, alpha=-lr)
                p.add_(v)
        return loss


__all__ = ["PaperSGD"]
