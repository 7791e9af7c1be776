"""cuda-convnet's "18% on CIFAR-10" net with cross-map normalisation: three conv layers, one FC.

This is ``example-layers/layers-18pct.cfg`` of the authors' cuda-convnet (with
``layer-params-18pct.cfg``) except for its normalisation, at the default 32x32 input:

    conv1 32 5x5 pad 2 -> act -> max-pool 3/2 -> LRN      32 -> 16
    conv2 32 5x5 pad 2 -> act -> avg-pool 3/2 -> LRN      16 -> 8
    conv3 64 5x5 pad 2 -> act -> avg-pool 3/2              8 -> 4
    fc   num_classes from 64 x 4 x 4 = 1024

The file's two normalisation layers are ``type=rnorm``: same-map normalisation over 3x3 spatial
neighbourhoods (``size=3``, ``scale=0.00005``, ``pow=.75``). Here they are cross-map (the paper's
kind, Sec. 3.3) with size 5, alpha 0.001, beta 0.75 in the ``"caffe"`` convention (k = 1, alpha
divided by the size, as cuda-convnet's ``cmrnorm``), the defaults. The file's initialisation
(initW 0.0001 for conv1, 0.01 elsewhere) and per-layer learning parameters (wc 0.004 on the conv
layers, 1 on fc10) are not reproduced. It is not the paper's four-layer CIFAR-10 net: that is
:class:`alexnet.models.CifarLocalNet` (the ``conv-local`` files).

Pools use ceil mode, as cuda-convnet sizes its pooling outputs (32 -> 16, not 15); a window that
hangs over the edge averages only the pixels inside the image.
"""
import math
from functools import partial

from torch import Tensor, nn

from .activations import activation as activation_module
from .activations import check_activation
from .lrn import check_lrn_convention, lrn_or_identity

INITS: tuple[str, ...] = ("default", "paper")
CONV_CHANNELS: tuple[int, int, int] = (32, 32, 64)
POOL_KERNEL, POOL_STRIDE = 3, 2


def _pool_out(size: int) -> int:
    """Output size of a 3/2 pool in ceil mode, no padding; 0 when the window does not fit."""
    if size < POOL_KERNEL:
        return 0
    out = math.ceil((size - POOL_KERNEL) / POOL_STRIDE) + 1
    # PyTorch's ceil-mode rule: the last window must start inside the input.
    if (out - 1) * POOL_STRIDE >= size:
        out -= 1
    return out


def cifar18pct_feature_sizes(crop_size: int) -> list[int]:
    """Spatial sizes after [conv1, pool1, conv2, pool2, conv3, pool3]; 32 -> 32, 16, 16, 8, 8, 4.

    Raises ValueError when the crop is too small to leave a 1x1 map after pool3.
    """
    sizes = _sizes(crop_size)
    if sizes[-1] < 1:
        smallest = next(c for c in range(1, 1000) if _sizes(c)[-1] >= 1)
        raise ValueError(
            f"crop_size={crop_size} is too small: "
            f"need crop_size >= {smallest} for a 1x1 map after pool3"
        )
    return sizes


def _sizes(crop_size: int) -> list[int]:
    pool1 = _pool_out(crop_size)  # 5x5 convs with pad 2 keep the size
    pool2 = _pool_out(pool1)
    pool3 = _pool_out(pool2)
    return [crop_size, pool1, pool1, pool2, pool2, pool3]


class Cifar18pct(nn.Module):
    """cuda-convnet's layers-18pct.cfg with cross-map instead of its 3x3 same-map normalisation.

    Input: (B, 3, crop_size, crop_size) float. Output: logits (B, num_classes).
    At 10 classes and 32x32 it has 89,578 parameters.

    Args:
        num_classes: size of the output layer (>= 2).
        activation: "relu" or "tanh" (Fig. 1), after each conv layer.
        lrn: cross-channel LRN after pool1 and pool2 (where the file normalises).
        lrn_convention, lrn_size, lrn_alpha, lrn_beta, lrn_k: see :class:`LocalResponseNorm`.
        init: "default" (PyTorch's) or "paper" (weights N(0, 0.01^2), biases 0).
        crop_size: input height and width (>= 12); the FC input size follows from it.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        activation: str = "relu",
        lrn: bool = True,
        lrn_convention: str = "caffe",
        lrn_size: int = 5,
        lrn_alpha: float = 1e-3,
        lrn_beta: float = 0.75,
        lrn_k: float | None = None,
        init: str = "default",
        crop_size: int = 32,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        check_activation(activation)
        check_lrn_convention(lrn_convention)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        final = cifar18pct_feature_sizes(crop_size)[-1]  # raises if the crop is too small

        self.num_classes = num_classes
        self.crop_size = crop_size
        c1, c2, c3 = CONV_CHANNELS

        act = partial(activation_module, activation)  # each call a new module
        norm = partial(lrn_or_identity, lrn, lrn_size, lrn_alpha, lrn_beta, lrn_k, lrn_convention)

        self.conv1 = nn.Conv2d(3, c1, kernel_size=5, padding=2)
        self.act1 = act()
        self.pool1 = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.norm1 = norm()
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5, padding=2)
        self.act2 = act()
        self.pool2 = nn.AvgPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.norm2 = norm()
        self.conv3 = nn.Conv2d(c2, c3, kernel_size=5, padding=2)
        self.act3 = act()
        self.pool3 = nn.AvgPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.fc = nn.Linear(c3 * final * final, num_classes)

        if init == "paper":
            # Sec. 5's weight scale; biases 0 (the "1" biases are specific to the ImageNet net).
            for layer in (self.conv1, self.conv2, self.conv3, self.fc):
                nn.init.normal_(layer.weight, mean=0.0, std=0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(self.pool1(self.act1(self.conv1(x))))
        x = self.norm2(self.pool2(self.act2(self.conv2(x))))
        x = self.pool3(self.act3(self.conv3(x)))
        return self.fc(x.flatten(1))


__all__ = ["Cifar18pct", "cifar18pct_feature_sizes"]
