"""Local response normalisation across channels (Sec. 3.3).

The paper's formula, for the activity a^i_{x,y} of kernel i at position (x, y), N kernels in the
layer and a window of n adjacent kernel maps:

    b^i = a^i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} (a^j)^2)^beta

with k = 2, n = 5, alpha = 1e-4, beta = 0.75 (n/2 is integer division: 2 maps on each side).

Three conventions for these numbers are in use, each named by its source. They differ in whether
alpha is divided by n and in the default k:

* ``"paper"``: the paper's text. alpha multiplies the sum of squares as printed, k = 2.
* ``"authors"``: the authors' released code, k = 2 and alpha / n. cuda-convnet2's ImageNet layer
  parameters (``layers/layer-params-*.cfg``) set ``[rnorm1] scale=0.0001 pow=0.75 minDiv=2``;
  its ``layer.py`` (``NormLayerParser``) divides ``scale`` by ``size`` for cross-map
  normalisation, and ``cudaconv3/src/conv_util.cu`` computes the denominator as
  ``minDiv + addScale * sum``. With alpha = 1e-4 this is five times weaker than the printed formula.
* ``"caffe"``: Caffe's ``LRN`` layer and cuda-convnet v1's default, k = 1 and alpha / n. Caffe's
  ``src/caffe/layers/lrn_layer.cpp`` computes k + (alpha / size) * sum with ``LRNParameter.k``
  defaulting to 1 (``src/caffe/proto/caffe.proto``); cuda-convnet v1's ``layer.py`` divides
  ``scale`` by ``size`` and its ``cudaconv2/conv_util.cu`` computes ``1 + addScale * sum``.

``torch.nn.LocalResponseNorm`` also divides alpha by n: ``nn.LocalResponseNorm(5, alpha=1e-4,
beta=0.75, k=2)`` is the authors' layer, ``k=1`` Caffe's, and the paper's formula is
``nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)``.

``groups`` splits the channels into independent blocks, each normalised on its own with the window
clamped at the block's edges. The paper's two-GPU net normalises each GPU's kernel maps separately
(each GPU holds half of the kernels of conv1 and conv2, Sec. 3.2), which is ``groups=2``.

Two implementations compute the same function (``impl``). ``"torch"`` calls
``F.local_response_norm``, whose average pooling over a padded 3-d view and generic ``pow`` take
about 1 s forward + backward at AlexNet's 64 x 96 x 55 x 55 on a 2-core CPU, a quarter of a
training step. ``"fast"`` (the default) is :class:`_FastLRN`: the window sum as n - 1 shifted
adds along the channel axis, d^-0.75 as two square roots, and the closed-form backward, which
reuses the forward's denominator and output. The tests hold it to the paper's formula in values
and gradients.
"""

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

LRN_CONVENTIONS: tuple[str, ...] = ("paper", "authors", "caffe")
# "fast": _FastLRN (closed-form backward); "torch": F.local_response_norm.
LRN_IMPLS: tuple[str, ...] = ("fast", "torch")
# The additive constant each source uses: the paper's k = 2, the authors' minDiv=2 in
# cuda-convnet2's layer-params files, and Caffe's (and cuda-convnet v1's fixed) 1.
_DEFAULT_K: dict[str, float] = {"paper": 2.0, "authors": 2.0, "caffe": 1.0}
# Names that once meant something, so that an old config fails with a pointer to the new name.
_RENAMED: dict[str, str] = {
    "cuda_convnet": (
        "'cuda_convnet' was renamed: use 'authors' for the authors' code (k = 2, alpha / n) "
        "or 'caffe' for Caffe and cuda-convnet v1's default (k = 1, alpha / n)"
    ),
}


def check_lrn_convention(convention: str) -> None:
    """Raise ValueError unless ``convention`` is one of :data:`LRN_CONVENTIONS`."""
    if convention not in LRN_CONVENTIONS:
        message = f"lrn convention must be one of {LRN_CONVENTIONS}, got {convention!r}"
        if convention in _RENAMED:
            message = f"{message}: {_RENAMED[convention]}"
        raise ValueError(message)


def _window_sum(out: Tensor, t: Tensor, half: int) -> Tensor:
    """``out[:, :, i] = sum of t[:, :, j]`` for |i - j| <= half, j within the group: dim 2 holds
    one group's channels, so the window is clamped at the group's edges (the paper's max/min
    bounds), exactly the zero padding of the formula."""
    out.copy_(t)
    for d in range(1, min(half, t.shape[2] - 1) + 1):
        out[:, :, d:] += t[:, :, :-d]
        out[:, :, :-d] += t[:, :, d:]
    return out


def _inverse_power(out: Tensor, d: Tensor, beta: float, scratch: Tensor) -> Tensor:
    """``out = d ** -beta``. The paper's beta = 0.75 as 1 / sqrt(d) * 1 / sqrt(sqrt(d)): square
    roots are single, correctly rounded instructions, where a general pow is exp(log(.))."""
    if beta == 0.75:
        torch.rsqrt(d, out=out)
        torch.sqrt(d, out=scratch)
        return out.mul_(scratch.rsqrt_())
    return torch.pow(d, -beta, out=out)


class _FastLRN(torch.autograd.Function):
    """b = a * d^-beta with d = k + alpha' * S, S the window's sum of squares (Sec. 3.3), on a
    (B, G, C/G, *) view. Backward, the window being symmetric:
    da_j = g_j d_j^-beta - 2 alpha' beta a_j * sum_{i in window(j)} g_i b_i / d_i.

    Each step is one pass over the whole batch. Cache-sized slices of the batch were 20% faster
    on an idle 2-core CPU, but several times slower whenever the cores are shared (the loader's
    workers, other jobs): every small parallel region then waits for a descheduled thread."""

    @staticmethod
    def forward(ctx: object, a: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
        half = size // 2
        b, d, p = torch.empty_like(a), torch.empty_like(a), torch.empty_like(a)
        torch.mul(a, a, out=b)  # b holds the squares for a moment
        _window_sum(d, b, half).mul_(alpha).add_(k)
        _inverse_power(p, d, beta, scratch=b)
        torch.mul(a, p, out=b)
        ctx.save_for_backward(a, b, d, p)
        ctx.lrn = (half, alpha, beta)
        return b

    @staticmethod
    def backward(ctx: object, g: Tensor) -> tuple[Tensor | None, ...]:
        a, b, d, p = ctx.saved_tensors
        half, alpha, beta = ctx.lrn
        if g.stride() != a.stride():  # one layout for every pass (autograd may hand another)
            g = torch.empty_like(a).copy_(g)
        t = torch.mul(g, b).div_(d)
        grad = _window_sum(torch.empty_like(a), t, half)
        grad.mul_(a).mul_(-2.0 * alpha * beta).addcmul_(g, p)
        return grad, None, None, None, None


def fast_local_response_norm(
    x: Tensor, size: int, alpha: float, beta: float, k: float, groups: int = 1
) -> Tensor:
    """b = x / (k + alpha * S)^beta, S the sum of squares over ``size`` adjacent channels
    clamped at each of ``groups`` blocks' edges; ``alpha`` multiplies the sum as given (no
    division by ``size``). float16 and bfloat16 inputs (autocast) are computed in float32, as
    the sum of squares and the power need its range, and returned in their own dtype."""
    b, c = x.shape[:2]
    low = x.dtype in (torch.float16, torch.bfloat16)
    a = x.float() if low else x
    # Splitting the channel axis into (groups, channels per group) is a view in any layout.
    y = _FastLRN.apply(a.unflatten(1, (groups, c // groups)), size, alpha, beta, k)
    y = y.flatten(1, 2)
    return y.to(x.dtype) if low else y


class LocalResponseNorm(nn.Module):
    """Cross-channel local response normalisation, b = a / (k + alpha' * sum a_j^2)^beta.

    Args:
        size: n, the number of adjacent kernel maps in the window (odd, centred on the map).
        alpha: the paper's alpha; how it enters the formula depends on ``convention``.
        beta: the exponent.
        k: the additive constant; None means the convention's default (2 for "paper" and
            "authors", 1 for "caffe").
        convention: "paper" (alpha' = alpha), "authors" or "caffe" (alpha' = alpha / size).
        groups: number of independent channel blocks (1 = normalise across all channels).
        impl: "fast" (the default, :func:`fast_local_response_norm`) or "torch"
            (``F.local_response_norm``): the same function, to 1e-6 in float32.

    Input: (B, C, *) with C divisible by ``groups``; the output has the same shape.
    """

    def __init__(
        self,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float | None = None,
        convention: str = "paper",
        groups: int = 1,
        impl: str = "fast",
    ) -> None:
        super().__init__()
        check_lrn_convention(convention)
        if impl not in LRN_IMPLS:
            raise ValueError(f"lrn impl must be one of {LRN_IMPLS}, got {impl!r}")
        # An even n makes the paper's window i-n/2 .. i+n/2 hold n+1 maps, and torch's functional
        # form would silently make it lopsided; Caffe also accepts only odd sizes.
        if size < 1 or size % 2 == 0:
            raise ValueError(f"lrn size must be a positive odd integer, got {size}")
        if alpha < 0:
            raise ValueError(f"lrn alpha must be >= 0, got {alpha}")
        if groups < 1:
            raise ValueError(f"lrn groups must be >= 1, got {groups}")
        self.size = int(size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(_DEFAULT_K[convention] if k is None else k)
        if self.k < 0:
            raise ValueError(f"lrn k must be >= 0, got {self.k}")
        self.convention = convention
        self.groups = int(groups)
        self.impl = impl

    @property
    def effective_alpha(self) -> float:
        """The coefficient of the sum of squares in the denominator, whatever the convention."""
        # Only the paper's text uses alpha as printed; both codebases divide it by the window.
        return self.alpha if self.convention == "paper" else self.alpha / self.size

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 3:
            raise ValueError(f"expected input of shape (B, C, *), got {tuple(x.shape)}")
        b, c = x.shape[:2]
        if c % self.groups != 0:
            raise ValueError(f"{c} channels are not divisible into {self.groups} groups")
        if self.impl == "fast":
            return fast_local_response_norm(
                x, self.size, self.effective_alpha, self.beta, self.k, self.groups)
        # Fold the groups into the batch so that each block's window stops at its own edges.
        y = x.reshape(b * self.groups, c // self.groups, *x.shape[2:])
        # torch's functional form computes k + (alpha / size) * sum, with zero padding at the
        # channel edges, which is exactly the clamped sum of the paper's formula. The two codebases
        # share torch's convention, so their alpha goes in untouched (bit for bit
        # nn.LocalResponseNorm); the paper's alpha is multiplied by n to cancel torch's division.
        torch_alpha = self.alpha * self.size if self.convention == "paper" else self.alpha
        y = F.local_response_norm(y, self.size, torch_alpha, self.beta, self.k)
        return y.reshape(x.shape)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
            f"convention={self.convention!r}, groups={self.groups}, impl={self.impl!r}, "
            f"effective_alpha={self.effective_alpha:g}"
        )


__all__ = [
    "LRN_CONVENTIONS",
    "LRN_IMPLS",
    "LocalResponseNorm",
    "check_lrn_convention",
    "fast_local_response_norm",
]


def lrn_or_identity(enabled: bool, *args: Any, **kwargs: Any) -> nn.Module:
    """``LocalResponseNorm(*args, **kwargs)``, or an identity where the net is built without
    normalisation (Sec. 3.3's ablation, ``model.lrn=false``)."""
    return LocalResponseNorm(*args, **kwargs) if enabled else nn.Identity()
