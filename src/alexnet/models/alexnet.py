"""AlexNet (Krizhevsky, Sutskever and Hinton, NIPS 2012), the whole net in one file.

Layout (Sec. 3.5, Fig. 2), at the default 227x227 crop (or at the paper's 224 with
``conv1_geometry="cuda_convnet"``, see below):

    conv1  96 11x11/4        -> act -> LRN -> max-pool 3/2      55 -> 27
    conv2 256  5x5 pad 2, g2 -> act -> LRN -> max-pool 3/2      27 -> 13
    conv3 384  3x3 pad 1, g1 -> act      (sees both columns)    13
    conv4 384  3x3 pad 1, g2 -> act                             13
    conv5 256  3x3 pad 1, g2 -> act -> max-pool 3/2             13 -> 6
    fc6 4096 -> act -> dropout
    fc7 4096 -> act -> dropout
    fc8 num_classes (logits; the softmax lives in the loss)

Dropout is the paper's by default (Sec. 4.2): units dropped with probability p in training, the
rest passed unchanged; every unit kept and its output multiplied by 1 - p at test time
(:class:`PaperDropout`). PyTorch's inverted dropout is the option ``dropout_mode="inverted"``.

224 or 227. The paper says 224x224 inputs. PyTorch sizes a convolution's output as
1 + floor((in - f) / s), which gives conv1's 55x55 only from 227 (54 from 224); the authors'
cuda-convnet sizes it as 1 + ceil((in - f) / s) (``layer.py``: ``modulesX``), which gives 55 from
224, the last row and column of windows hanging 3 pixels over the far edge, where the input is
zero. ``conv1_geometry="cuda_convnet"`` reproduces that exactly: conv1's input is zero-padded on
the far edge only (bottom and right) by whatever makes 1 + ceil((in - 11) / 4) outputs. At 227
both geometries are the same net (no padding), so 227 is an equivalent of the authors' 224, not a
correction of the paper.

The "two GPUs" of Sec. 3.2 are two columns: conv1's first 48 kernels (and LRN1's window) form
column 0, its last 48 column 1, and conv2/conv4/conv5 use ``groups=2`` so that each column sees
only its own half of the previous layer; conv3 and the FC layers see everything. Splitting the
net onto two devices is therefore a matter of slicing each layer's weights along the channel axis.
"""

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .activations import activation as activation_module
from .activations import check_activation
from .lrn import check_lrn_convention, lrn_or_identity

POOLINGS: tuple[str, ...] = ("overlapping", "plain")
INITS: tuple[str, ...] = ("paper", "default", "kaiming")
COLUMNS: tuple[int, ...] = (1, 2)
REMOVABLE_CONVS: tuple[int, ...] = (3, 4)
# "paper": Sec. 4.2's dropout (PaperDropout); "inverted": PyTorch's nn.Dropout.
DROPOUT_MODES: tuple[str, ...] = ("paper", "inverted")
# How conv1's output size follows from the input size: "floor" is PyTorch's 1 + floor((in - 11) / 4)
# (no padding); "cuda_convnet" the authors' 1 + ceil((in - 11) / 4), zero-padding the far edge.
CONV1_GEOMETRIES: tuple[str, ...] = ("floor", "cuda_convnet")
CONV1_KERNEL, CONV1_STRIDE = 11, 4  # Sec. 3.5: 96 kernels of 11x11x3, stride 4

# Kernels in conv1..conv5. Two columns: Sec. 3.5. One GPU (Sec. 3.2, footnote): half as many
# kernels in every conv layer except the last, which keeps 256; the FC layers are unchanged.
CONV_CHANNELS: dict[int, tuple[int, int, int, int, int]] = {
    2: (96, 256, 384, 384, 256),
    1: (48, 128, 192, 192, 256),
}

# (kernel, stride) of every pooling layer. Overlapping z=3, s=2 (Sec. 3.4); its comparison z=2,
# s=2 gives the same output sizes 55 -> 27 -> 13 -> 6.
POOL_GEOMETRY: dict[str, tuple[int, int]] = {"overlapping": (3, 2), "plain": (2, 2)}

# Names of the spatial sizes returned by feature_sizes(), in order.
FEATURE_LAYERS: tuple[str, ...] = (
    "conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5",
)  # fmt: skip

HIDDEN_FC: int = 4096  # neurons in fc6 and fc7 (Sec. 3.5), half of them in each column

# Sec. 5: biases are 1 in these layers (so ReLUs start in their positive region), 0 elsewhere.
_BIAS_ONE_LAYERS = frozenset({"conv2", "conv4", "conv5", "fc6", "fc7"})
_LAYER_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def _out_size(size: int, kernel: int, stride: int) -> int:
    """Output size of an unpadded window (floor mode); 0 when the window does not fit."""
    return (size - kernel) // stride + 1 if size >= kernel else 0


def conv1_far_padding(size: int, conv1_geometry: str = "floor") -> int:
    """Zeros added after the last row (or column) of a ``size``-pixel input before conv1.

    0 for "floor". For "cuda_convnet": enough for 1 + ceil((size - 11) / 4) windows of 11 at
    stride 4, the output size cuda-convnet computes (3 at 224, 0 at 227).
    """
    if conv1_geometry not in CONV1_GEOMETRIES:
        raise ValueError(
            f"conv1_geometry must be one of {CONV1_GEOMETRIES}, got {conv1_geometry!r}"
        )
    if conv1_geometry == "floor":
        return 0
    windows = 1 - (-(size - CONV1_KERNEL) // CONV1_STRIDE)  # 1 + ceil(...), in integers
    if windows < 1:  # not even one window starts inside the input: nothing to pad for
        return 0
    return (windows - 1) * CONV1_STRIDE + CONV1_KERNEL - size


def _sizes(crop_size: int, kernel: int, stride: int, conv1_geometry: str) -> list[int]:
    padded = crop_size + conv1_far_padding(crop_size, conv1_geometry)
    conv1 = _out_size(padded, CONV1_KERNEL, CONV1_STRIDE)
    pool1 = _out_size(conv1, kernel, stride)
    conv2 = pool1  # 5x5, pad 2 keeps the size
    pool2 = _out_size(conv2, kernel, stride)
    conv3 = conv4 = conv5 = pool2  # 3x3, pad 1 keeps the size
    pool5 = _out_size(conv5, kernel, stride)
    return [conv1, pool1, conv2, pool2, conv3, conv4, conv5, pool5]


def feature_sizes(
    crop_size: int, pooling: str = "overlapping", conv1_geometry: str = "floor"
) -> list[int]:
    """Spatial output size of each of :data:`FEATURE_LAYERS` for a square ``crop_size`` input.

    At 227 this is [55, 27, 27, 13, 13, 13, 13, 6] for both pooling modes and both conv1
    geometries; at 224 it is the same with ``conv1_geometry="cuda_convnet"`` and starts at 54 with
    "floor". Raises ValueError for an unknown ``pooling`` or ``conv1_geometry``, or a crop too
    small to leave at least a 1x1 map after pool5.
    """
    if pooling not in POOL_GEOMETRY:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    conv1_far_padding(crop_size, conv1_geometry)  # raises for an unknown geometry
    kernel, stride = POOL_GEOMETRY[pooling]
    sizes = _sizes(crop_size, kernel, stride, conv1_geometry)
    if sizes[-1] < 1:
        smallest = next(
            c for c in range(1, 10_000) if _sizes(c, kernel, stride, conv1_geometry)[-1] >= 1
        )
        raise ValueError(
            f"crop_size={crop_size} is too small for pooling={pooling!r}: "
            f"need crop_size >= {smallest} to get a 1x1 map after pool5"
        )
    return sizes


class PaperDropout(nn.Dropout):
    """Dropout as Sec. 4.2 describes it, not PyTorch's inverted dropout.

    Training: each unit's output is set to zero with probability ``p``; the kept outputs pass
    unchanged (nothing is scaled). Evaluation: every unit is kept and its output multiplied by
    ``1 - p`` ("at test time, we use all the neurons but multiply their outputs by 0.5").

    In expectation this is the same function as ``nn.Dropout`` (which multiplies the kept outputs by
    1 / (1 - p) in training and does nothing at test time), but the two do not train alike with the
    paper's initialisation and learning rate: with inverted dropout the next layer sees inputs
    1 / (1 - p) times larger in training (twice at p = 0.5). It subclasses ``nn.Dropout`` so that
    code looking for dropout layers (and their ``p``) finds these too.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0:
            return x
        if not self.training:
            return x.mul_(1.0 - self.p) if self.inplace else x * (1.0 - self.p)
        # A Bernoulli(1 - p) keep-mask multiplied in: kept values are exactly unchanged.
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p)
        return x.mul_(keep) if self.inplace else x * keep


def _dropout(p: float, mode: str) -> nn.Module:
    # Sec. 4.2: on the outputs of fc6 and fc7. p = 0 is the no-dropout ablation: no module at all.
    if p == 0.0:
        return nn.Identity()
    return PaperDropout(p) if mode == "paper" else nn.Dropout(p)


class AlexNet(nn.Module):
    """The paper's ImageNet network (Sec. 3), with every ablation of the paper as a switch.

    Input: raw, mean-subtracted RGB values on the 0-255 pixel scale (Sec. 2: "raw (centred) RGB
    values"), float NCHW of shape (B, 3, crop_size, crop_size). The model does no normalisation.
    Output: logits (B, num_classes).

    Args:
        num_classes: size of fc8 (>= 2).
        columns: 2 = the paper's two-column net (Sec. 3.2, Fig. 2, 60,965,224 parameters at 1000
            classes); 1 = the one-GPU comparison net of the Sec. 3.2 footnote, 48-128-192-192-256
            kernels, no grouping (59,798,312 parameters).
        activation: "relu" or "tanh" (Sec. 3.1), after every conv and hidden FC layer.
        lrn: local response normalisation after the activation of conv1 and conv2, before their
            pooling (Sec. 3.3). In the two-column net each column is normalised on its own.
        lrn_convention, lrn_size, lrn_alpha, lrn_beta, lrn_k: see :class:`LocalResponseNorm`.
        lrn_impl: "fast" (default) or "torch" (``F.local_response_norm``): the same function
            computed two ways, see :class:`LocalResponseNorm`.
        pooling: "overlapping" (3x3, stride 2, Sec. 3.4) or "plain" (2x2, stride 2).
        dropout: drop probability on the outputs of fc6 and fc7 (Sec. 4.2), in [0, 1).
        dropout_mode: "paper" (Sec. 4.2, the default): nothing scaled in training, outputs times
            1 - p at test time (:class:`PaperDropout`); "inverted": PyTorch's ``nn.Dropout``
            (kept outputs times 1 / (1 - p) in training, nothing at test time). Same function in
            expectation; with the paper's initialisation and learning rate they train differently.
        init: "paper" (Sec. 5): weights N(0, 0.01^2), biases ``bias_init`` in conv2, conv4, conv5,
            fc6, fc7 and 0 in conv1, conv3, fc8; "default": PyTorch's own initialisation;
            "kaiming": N(0, 2 / fan_in) weights and zero biases, for short runs on unit-scale
            inputs (the CPU study), not the paper's.
        bias_init: the paper's "1" biases. Caffe's replication found that 1 gave a flat loss at
            the start and used 0.1, hence the option. Used only with ``init="paper"``.
        remove_conv: None, 3 or 4: drop one middle conv layer (Sec. 7, depth). Removing conv4
            changes no other shape; removing conv3 makes conv4 take conv2's output directly
            (still grouped per column).
        crop_size: input height and width; fc6's input size follows from it (227, or 224 with
            the "cuda_convnet" geometry: 256 x 6 x 6 = 9216). 227 is the default: there both
            geometries give conv1's 55x55 without padding (Caffe crops 227 too).
        conv1_geometry: "floor" (default): PyTorch's output size, 1 + floor((in - 11) / 4), so a
            224 input gives 54x54; "cuda_convnet": the authors' 1 + ceil((in - 11) / 4), conv1's
            input zero-padded on the far edge only (bottom and right), so 224 gives 55x55 as in
            the authors' code (Sec. 3.5's 224x224 input). Identical nets at 227. Only conv1
            changes: cuda-convnet's pools also round up, but at 224 and 227 every pool's window
            fits exactly (55 -> 27 -> 13 -> 6), so PyTorch's pools give the same sizes.
        fc_width: neurons in fc6 and fc7, the paper's 4096 (Sec. 3.5; 2048 in each column).
            Smaller is not the paper's net: it makes a run on tiny images cheap where the
            4096-wide layers would be most of its time and of its checkpoints (the tests' tiny
            runs use 256). Even in the two-column net, whose columns hold half each.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        columns: int = 2,
        activation: str = "relu",
        lrn: bool = True,
        lrn_convention: str = "paper",
        lrn_size: int = 5,
        lrn_alpha: float = 1e-4,
        lrn_beta: float = 0.75,
        lrn_k: float | None = None,
        lrn_impl: str = "fast",
        pooling: str = "overlapping",
        dropout: float = 0.5,
        dropout_mode: str = "paper",
        init: str = "paper",
        bias_init: float = 1.0,
        remove_conv: int | None = None,
        crop_size: int = 227,
        conv1_geometry: str = "floor",
        fc_width: int = HIDDEN_FC,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if columns not in COLUMNS:
            raise ValueError(f"columns must be one of {COLUMNS}, got {columns!r}")
        check_activation(activation)
        check_lrn_convention(lrn_convention)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if dropout_mode not in DROPOUT_MODES:
            raise ValueError(
                f"dropout_mode must be one of {DROPOUT_MODES}, got {dropout_mode!r}"
            )
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if remove_conv is not None and remove_conv not in REMOVABLE_CONVS:
            raise ValueError(
                f"remove_conv must be None or one of {REMOVABLE_CONVS}, got {remove_conv!r}"
            )
        if isinstance(fc_width, bool) or not isinstance(fc_width, int) or fc_width < columns \
                or fc_width % columns:
            raise ValueError(f"fc_width must be a whole number of at least {columns}"
                             + (" and even (half of fc6 and fc7 in each column)"
                                if columns == 2 else "") + f", got {fc_width!r}")
        # Raises for an unknown conv1_geometry or a crop too small.
        sizes = feature_sizes(crop_size, pooling, conv1_geometry)

        self.num_classes = num_classes
        self.columns = columns
        self.dropout_mode = dropout_mode
        self.crop_size = crop_size
        self.conv1_geometry = conv1_geometry
        self.remove_conv = remove_conv
        self.conv_channels = CONV_CHANNELS[columns]
        c1, c2, c3, c4, c5 = self.conv_channels
        g = columns  # conv2, conv4 and conv5 see only their own column (Sec. 3.5)

        def norm() -> nn.Module:
            return lrn_or_identity(lrn, lrn_size, lrn_alpha, lrn_beta, lrn_k,
                                   convention=lrn_convention, groups=g, impl=lrn_impl)

        pool_kernel, pool_stride = POOL_GEOMETRY[pooling]

        # Column-wise layers. conv1 sees the whole image in both columns: groups=1.
        self.conv1 = nn.Conv2d(3, c1, kernel_size=11, stride=4)
        self.act1 = activation_module(activation)
        self.norm1 = norm()
        self.pool1 = nn.MaxPool2d(pool_kernel, pool_stride)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5, padding=2, groups=g)
        self.act2 = activation_module(activation)
        self.norm2 = norm()
        self.pool2 = nn.MaxPool2d(pool_kernel, pool_stride)
        # conv3 is the one conv layer whose kernels see both columns (groups=1).
        self.conv3: nn.Conv2d | None = None
        self.act3: nn.Module | None = None
        if remove_conv != 3:
            self.conv3 = nn.Conv2d(c2, c3, kernel_size=3, padding=1)
            self.act3 = activation_module(activation)
        self.conv4: nn.Conv2d | None = None
        self.act4: nn.Module | None = None
        if remove_conv != 4:
            c4_in = c2 if remove_conv == 3 else c3
            self.conv4 = nn.Conv2d(c4_in, c4, kernel_size=3, padding=1, groups=g)
            self.act4 = activation_module(activation)
        c5_in = c3 if remove_conv == 4 else c4
        self.conv5 = nn.Conv2d(c5_in, c5, kernel_size=3, padding=1, groups=g)
        self.act5 = activation_module(activation)
        self.pool5 = nn.MaxPool2d(pool_kernel, pool_stride)

        # Fully connected layers see all of the previous layer (Sec. 3.5).
        self.fc_width = fc_width
        self.fc6 = nn.Linear(c5 * sizes[-1] ** 2, fc_width)
        self.act6 = activation_module(activation)
        self.drop6 = _dropout(dropout, dropout_mode)
        self.fc7 = nn.Linear(fc_width, fc_width)
        self.act7 = activation_module(activation)
        self.drop7 = _dropout(dropout, dropout_mode)
        self.fc8 = nn.Linear(fc_width, num_classes)

        if init == "paper":
            self.init_paper(bias_init)
        elif init == "kaiming":
            self.init_kaiming()

    def layers(self) -> dict[str, nn.Conv2d | nn.Linear]:
        """The weight layers present, by name (conv1..conv5, fc6..fc8; removed convs omitted)."""
        return {n: getattr(self, n) for n in _LAYER_NAMES if getattr(self, n) is not None}

    def init_paper(self, bias_init: float = 1.0) -> None:
        """Sec. 5: weights N(0, 0.01^2); biases ``bias_init`` in conv2, conv4, conv5, fc6, fc7."""
        for name, layer in self.layers().items():
            nn.init.normal_(layer.weight, mean=0.0, std=0.01)
            nn.init.constant_(layer.bias, bias_init if name in _BIAS_ONE_LAYERS else 0.0)

    def init_kaiming(self) -> None:
        """Not the paper's: weights N(0, 2 / fan_in) (He et al., 2015), biases 0. It keeps the
        activations' scale through the eight layers, so a net on unit-scale inputs learns from
        the first epochs, where PyTorch's default (about 1 / (3 fan_in)) and the paper's
        N(0, 0.01^2) start on a long flat stretch of the loss: for short CPU runs."""
        for layer in self.layers().values():
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def conv_features(self, x: Tensor) -> Tensor:
        """The pool5 maps, (B, 256, 6, 6) at 227 (and at 224 with the cuda_convnet geometry)."""
        # cuda-convnet's conv1 windows hang over the far edge only: pad bottom and right (the
        # centred input's zero, as in the authors' code), from the actual input size.
        pad_h = conv1_far_padding(x.shape[-2], self.conv1_geometry)
        pad_w = conv1_far_padding(x.shape[-1], self.conv1_geometry)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.pool1(self.norm1(self.act1(self.conv1(x))))
        x = self.pool2(self.norm2(self.act2(self.conv2(x))))
        if self.conv3 is not None:
            x = self.act3(self.conv3(x))
        if self.conv4 is not None:
            x = self.act4(self.conv4(x))
        return self.pool5(self.act5(self.conv5(x)))

    def embed(self, x: Tensor) -> Tensor:
        """The last hidden layer, post-activation fc7, (B, 4096): the feature vectors whose
        Euclidean distances give Fig. 4's nearest neighbours. Call in eval mode for a
        deterministic result (drop6 is active in training mode)."""
        x = self.conv_features(x).flatten(1)
        x = self.drop6(self.act6(self.fc6(x)))
        return self.act7(self.fc7(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc8(self.drop7(self.embed(x)))


__all__ = [
    "AlexNet",
    "CONV1_GEOMETRIES",
    "DROPOUT_MODES",
    "FEATURE_LAYERS",
    "PaperDropout",
    "conv1_far_padding",
    "feature_sizes",
]
