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
"""

from torch import Tensor, nn
from torch.nn import functional as F

LRN_CONVENTIONS: tuple[str, ...] = ("paper", "authors", "caffe")
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
    ) -> None:
        super().__init__()
        check_lrn_convention(convention)
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
            f"convention={self.convention!r}, groups={self.groups}, "
            f"effective_alpha={self.effective_alpha:g}"
        )


__all__ = ["LRN_CONVENTIONS", "LocalResponseNorm", "check_lrn_convention"]
