"""The paper's stochastic gradient descent with momentum and weight decay (Sec. 5).

    v <- momentum * v - weight_decay * lr * w - lr * dL/dw
    w <- w + v

The velocity v is kept in parameter units: a learning-rate change affects only the new gradient
term, and the momentum already accumulated carries on at its old size. ``torch.optim.SGD`` keeps
its buffer in gradient units (b <- momentum * b + g + weight_decay * w; w <- w - lr * b), so it
rescales all the accumulated momentum by the new lr at once. At a constant lr the two are the same
update (v = -lr * b); they differ from the first step after a learning-rate change.

Which parameters decay, and at what learning rate (:func:`param_groups`): the paper's update names
the weights w and gives "an equal learning rate for all layers" (Sec. 5). The authors' code decays
weights only (cuda-convnet2's layer parameter ``wc`` applies to weights; biases have none) and so
does Caffe (``decay_mult: 0`` on biases); both also give biases twice the weights' learning rate
(cuda-convnet2 ``layers/layer-params-223-ce2-1gpu.cfg``, every layer: ``wc=0.0005``,
``epsW=dexp[base=0.01;...]``, ``epsB=dexp[base=0.02;...]``; Caffe: ``lr_mult: 2``).
The defaults here: weights only decay (the authors' code, as the formula names w), and biases at
the weights' learning rate (the paper's text); ``decay_biases`` and ``bias_lr_mult`` switch each.
A network may instead give its own groups (``param_groups()``, e.g. per-layer settings of a
cuda-convnet layer-params file).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau as TorchReduceLROnPlateau


class PaperSGD(torch.optim.Optimizer):
    """SGD with the paper's momentum and weight-decay update (Sec. 5).

    Args:
        params: parameters or param groups; each group may set its own ``lr``, ``momentum``
            and ``weight_decay`` (e.g. no weight decay on biases), and schedulers change
            ``group["lr"]`` as with any torch optimizer.
        lr: the learning rate epsilon (paper: 0.01, divided by 10 on plateaus).
        momentum: paper: 0.9. Must be in [0, 1).
        weight_decay: paper: 0.0005. Scaled by the learning rate, as in the formula.
        fused: one pass over each parameter, its gradient and its momentum (torch's fused SGD
            kernel, on CPU and CUDA float32/float16/bfloat16 tensors) instead of four
            (``v *= momentum; v -= weight_decay * lr * w; v -= lr * g; w += v``): the same
            update to float32 rounding. Other tensors, and a zero learning rate, take the four.

    The fused kernel is torch's SGD step, b <- momentum * b + g + weight_decay * w,
    w <- w - lr * b, whose buffer b is the velocity in gradient units: v = -lr * b. At a constant
    learning rate that *is* the paper's update; when the rate changes from lr0 to lr1, the
    velocity the paper carries over is kept by rescaling b by lr0 / lr1 once. So a fused
    parameter's state holds ``buffer`` and ``buffer_lr`` (the rate b is in units of) and an
    unfused one ``velocity``; :meth:`velocity` gives v either way, and each form is converted to
    the other when a checkpoint of one is loaded into the other.
    """

    FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        fused: bool = True,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        self.fused = bool(fused)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            batches: dict[tuple, list[tuple[Tensor, Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("PaperSGD does not support sparse gradients")
                if self._fusable(p, lr):
                    batches.setdefault((p.device, p.dtype), []).append((p, self._buffer(p, lr)))
                    continue
                v = self._velocity_state(p)
                v.mul_(momentum)
                if weight_decay != 0.0:
                    v.add_(p, alpha=-weight_decay * lr)
                v.add_(p.grad, alpha=-lr)
                p.add_(v)
            for pairs in batches.values():
                params = [p for p, _ in pairs]
                torch._fused_sgd_(
                    params, [p.grad for p in params], [b for _, b in pairs],
                    weight_decay=weight_decay, momentum=momentum, lr=lr, dampening=0.0,
                    nesterov=False, maximize=False, is_first_step=False, grad_scale=None,
                    found_inf=None,
                )
        return loss

    def velocity(self, p: Tensor) -> Tensor | None:
        """The paper's v of ``p`` (a new tensor), whichever form its state holds; None before its
        first step."""
        state = self.state.get(p, {})
        if "buffer" in state:
            return state["buffer"] * -state["buffer_lr"]
        return state["velocity"].clone() if "velocity" in state else None

    def _fusable(self, p: Tensor, lr: float) -> bool:
        return (self.fused and lr != 0.0 and p.device.type in ("cpu", "cuda")
                and p.dtype in self.FUSED_DTYPES and p.grad.dtype == p.dtype
                and p.grad.layout == torch.strided)

    def _buffer(self, p: Tensor, lr: float) -> Tensor:
        """``p``'s momentum in the units of ``lr`` (the fused form), made or converted in place."""
        state = self.state[p]
        if "velocity" in state:  # from the four passes, or a checkpoint of them: b = v / -lr
            state["buffer"], state["buffer_lr"] = state.pop("velocity").div_(-lr), lr
        elif "buffer" not in state:  # v starts at 0: the first step is w -= lr * (g + wd * w)
            state["buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["buffer_lr"] = lr
        elif state["buffer_lr"] != lr:  # a new rate: rescaled, so that v stays what it was
            state["buffer"].mul_(state["buffer_lr"] / lr)
            state["buffer_lr"] = lr
        return state["buffer"]

    def _velocity_state(self, p: Tensor) -> Tensor:
        """``p``'s velocity (the four passes' form), made or converted in place."""
        state = self.state[p]
        if "buffer" in state:
            state["velocity"] = state.pop("buffer").mul_(-state.pop("buffer_lr"))
        elif "velocity" not in state:
            state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["velocity"]


Params = nn.Module | Iterable[Tensor] | Iterable[tuple[str, Tensor]]


def is_bias(parameter: Tensor) -> bool:
    """A bias, for decay and learning rate: any parameter of one dimension (ndim == 1)."""
    return parameter.ndim == 1


def param_groups(
    params: Params,
    *,
    lr: float,
    weight_decay: float,
    decay_biases: bool = False,
    bias_lr_mult: float = 1.0,
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups, each with its ``lr``, ``weight_decay`` and ``lr_mult``.

    ``params``: a network, its (named) parameters, or plain tensors. By default two groups, always
    in this order and always both (possibly empty), so that schedulers, the learning-rate monitor
    and checkpoints see the same layout whatever the network: ``weights`` (ndim != 1) at ``lr``
    with ``weight_decay``, and ``biases`` (ndim == 1) at ``lr * bias_lr_mult`` with
    ``weight_decay`` if ``decay_biases`` else 0.

    A network with a ``param_groups()`` method gives its own groups instead: dicts with
    ``params`` (a list of tensors) and optionally ``lr_mult`` (multiplies ``lr``; default 1) and
    ``weight_decay`` (an absolute value that replaces ``weight_decay``); other keys (``name``,
    ``momentum``) go to the optimizer as they are. ``decay_biases`` and ``bias_lr_mult`` do not
    apply to them. One rule holds for every group: ``weight_decay == 0`` switches decay off in all
    of them (the ``no_weight_decay`` ablation), a group's own value included.
    """
    if lr < 0.0:
        raise ValueError(f"optimizer.lr must be >= 0, got {lr}")
    if weight_decay < 0.0:
        raise ValueError(f"optimizer.weight_decay must be >= 0, got {weight_decay}")
    if bias_lr_mult < 0.0:
        raise ValueError(f"optimizer.bias_lr_mult must be >= 0, got {bias_lr_mult}")
    hook = getattr(params, "param_groups", None)
    if isinstance(params, nn.Module) and callable(hook):
        return _network_groups(params, hook(), lr=lr, weight_decay=weight_decay)
    if isinstance(params, nn.Module):
        params = params.parameters()
    tensors = [p[1] if isinstance(p, tuple) else p for p in params]
    weights = [p for p in tensors if not is_bias(p)]
    biases = [p for p in tensors if is_bias(p)]
    return [
        {"params": weights, "name": "weights", "lr": lr, "lr_mult": 1.0,
         "weight_decay": weight_decay},
        {"params": biases, "name": "biases", "lr": lr * bias_lr_mult, "lr_mult": bias_lr_mult,
         "weight_decay": weight_decay if decay_biases else 0.0},
    ]


def _network_groups(net: nn.Module, groups: list[dict[str, Any]], *, lr: float,
                    weight_decay: float) -> list[dict[str, Any]]:
    """A network's own groups (see :func:`param_groups`), checked to hold each of its trainable
    parameters exactly once: a parameter left out would silently never train."""
    out, seen = [], set()
    for k, group in enumerate(groups):
        if "params" not in group:
            raise ValueError(f"{type(net).__name__}.param_groups()[{k}] has no 'params'")
        if "lr" in group:
            raise ValueError(f"{type(net).__name__}.param_groups()[{k}] sets 'lr': give "
                             "'lr_mult', which multiplies optimizer.lr")
        params = list(group["params"])
        for p in params:
            if id(p) in seen:
                raise ValueError(f"a parameter of {type(net).__name__} is in two of its "
                                 "param_groups()")
            seen.add(id(p))
        lr_mult = float(group.get("lr_mult", 1.0))
        decay = float(group.get("weight_decay", weight_decay)) if weight_decay != 0.0 else 0.0
        if lr_mult < 0.0 or decay < 0.0:
            raise ValueError(f"{type(net).__name__}.param_groups()[{k}]: lr_mult and "
                             "weight_decay must be >= 0")
        extra = {key: v for key, v in group.items()
                 if key not in ("params", "lr_mult", "weight_decay")}
        out.append({**extra, "params": params, "lr": lr * lr_mult, "lr_mult": lr_mult,
                    "weight_decay": decay})
    missing = [name for name, p in net.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(f"{type(net).__name__}.param_groups() leaves out {', '.join(missing)}")
    return out


def _sgd(optimizer_class: type[torch.optim.Optimizer], params: Params, *, lr: float,
         momentum: float, weight_decay: float, decay_biases: bool,
         bias_lr_mult: float, **options: Any) -> torch.optim.Optimizer:
    groups = param_groups(params, lr=lr, weight_decay=weight_decay, decay_biases=decay_biases,
                          bias_lr_mult=bias_lr_mult)
    return optimizer_class(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **options)


def paper_sgd(
    params: Params,
    *,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    decay_biases: bool = False,
    bias_lr_mult: float = 1.0,
    fused: bool = True,
) -> PaperSGD:
    """:class:`PaperSGD` over :func:`param_groups` (``conf/optimizer/sgd_paper.yaml``)."""
    return _sgd(PaperSGD, params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                decay_biases=decay_biases, bias_lr_mult=bias_lr_mult, fused=fused)


def torch_sgd(
    params: Params,
    *,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    decay_biases: bool = False,
    bias_lr_mult: float = 1.0,
) -> torch.optim.SGD:
    """``torch.optim.SGD`` over :func:`param_groups` (``conf/optimizer/torch_sgd.yaml``)."""
    return _sgd(torch.optim.SGD, params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                decay_biases=decay_biases, bias_lr_mult=bias_lr_mult)


BUILDERS = (paper_sgd, torch_sgd)  # factories that take the network itself


def build_optimizer(factory: Callable[..., torch.optim.Optimizer],
                    net: nn.Module) -> torch.optim.Optimizer:
    """``factory``'s optimizer for ``net``: a builder above (or a partial of one) gets the
    network, to form its groups; any other optimizer class or factory gets its parameters."""
    target = factory.func if isinstance(factory, functools.partial) else factory
    return factory(net if target in BUILDERS else net.parameters())


class ReduceLROnPlateau(TorchReduceLROnPlateau):
    """torch's ``ReduceLROnPlateau``, with a single ``min_lr`` read as the floor of a group at
    ``optimizer.lr`` and scaled by each group's ``lr_mult`` (see :func:`param_groups`). torch
    would apply one floor to every group, so a group at twice the learning rate (biases with
    ``bias_lr_mult=2``) would be divided once more than the others before reaching it; scaled,
    every group is divided the same number of times (the paper's three, Sec. 5). A list gives
    each group's floor as torch does."""

    def __init__(self, optimizer: torch.optim.Optimizer, *args: Any,
                 min_lr: float | list[float] = 0.0, **kwargs: Any) -> None:
        if isinstance(min_lr, int | float):
            min_lr = [min_lr * group.get("lr_mult", 1.0) for group in optimizer.param_groups]
        else:
            min_lr = list(min_lr)
        super().__init__(optimizer, *args, min_lr=min_lr, **kwargs)


__all__ = ["PaperSGD", "ReduceLROnPlateau", "build_optimizer", "is_bias", "paper_sgd",
           "param_groups", "torch_sgd"]
