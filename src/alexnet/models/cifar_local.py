"""The paper's "four-layer CNN" on CIFAR-10 (Sec. 3.3: 13% test error without normalisation, 11%
with; Sec. 3.1, Fig. 1: ReLU against tanh): the conv-local nets of the authors' cuda-convnet.

The paper describes the net only as "a four-layer CNN" and points to the code's project page
(footnote 3). Its two example layer files there match the two numbers:
``example-layers/layers-conv-local-13pct.cfg`` (svn r456, no normalisation) and
``layers-conv-local-11pct.cfg`` (r550, cross-map response normalisation), with their
``layer-params-conv-local-13pct.cfg`` (r461) and ``layer-params-conv-local-11pct.cfg`` (r550).
These are those files' last revisions on the project's svn trunk (r562), each checked against the
md5 recorded there. At the 24 x 24 input of cuda-convnet's cropped CIFAR-10 provider
(``--crop-border=4``; the 11pct file's ``--multiview-test=1`` needs that provider), the layers,
with "act" the ``neuron=relu`` of each layer that has one:

    layer   cfg section   what                                      out     11pct      13pct
    conv1   [conv1]       conv 64 5x5 pad 2 -> act                  24      4,864      4,864
    pool1   [pool1]       max 3x3 stride 2                          12
    rnorm1  [rnorm1]      cmrnorm size 9 (11pct only)               12
    conv2   [conv2]       conv 64 5x5 pad 2 -> act                  12    102,464    102,464
    rnorm2  [rnorm2]      cmrnorm size 9 (11pct only)               12
    pool2   [pool2]       max 3x3 stride 2                           6
    local3  [local3]      local 64 (11pct) / 32 (13pct) 3x3 pad 1    6  1,329,408    664,704
                          -> act
    local4  [local4]      local 32 3x3 pad 1 -> act                  6    664,704    332,928
    fc10    [fc10]        fc 10 from 32 x 6 x 6 = 1152 (logits)          11,530     11,530
    total                                                             2,112,970  1,116,490

The two files differ in more than the normalisation: local3 has 64 filters in the 11pct file and
32 in the 13pct one, and the 11pct parameters decay fc10 by 0.01 instead of 0.004. ``lrn`` here
switches the two rnorm layers alone (``+ablation=no_lrn`` on the 11pct net is that net without
them); ``local3_filters`` and ``weight_decay`` give the other two differences, and
``conf/model/cifar_13pct.yaml`` sets all three.

Details taken from cuda-convnet (v1) rather than the layer files:

* Pooling (``layer.py``, ``PoolLayerParser``):
  ``outputsX = ceil((in - start - sizeX) / stride) + 1`` with windows clipped at the far edge:
  24 -> 12 -> 6 (PyTorch's floor would give 11 -> 5). ``nn.MaxPool2d(3, 2, ceil_mode=True)`` is
  the same pooling.
* Cross-map normalisation (``type=cmrnorm``): ``layer.py`` divides ``scale`` by ``size`` and
  ``conv_util.cu`` (``kFCNorm``) computes a / (1 + (scale / size) * sum a_j^2)^pow over maps
  f - size/2 .. f - size/2 + size - 1 clamped to the layer: k = 1 with alpha / n, the ``"caffe"``
  convention of :class:`LocalResponseNorm`, with ``scale=0.001``, ``pow=0.75`` from the 11pct
  layer-params file.
* Initialisation (``initW``): weights N(0, initW^2), biases 0 (``make_weights(..., 0)``).
* Locally connected layers (``type=local``): one bias per output position and filter
  (:class:`LocallyConnected2d`).
* Updates (``weights.cuh``, ``Weights::update``): inc = momW * inc + (epsW / batch) * sum of
  gradients - wc * epsW * w; w += inc. That is :class:`alexnet.training.optim.PaperSGD` with lr =
  epsW and
  weight_decay = wc; biases have no decay (``WeightLayer`` gives them wc = 0). Every layer of both
  files has epsW 0.001, epsB 0.002, momentum 0.9; :meth:`CifarLocalNet.param_groups` gives each
  layer's wc and the biases' epsB / epsW = 2.
"""

from collections.abc import Mapping
from functools import partial

from torch import Tensor, nn

from .activations import activation as activation_module
from .activations import check_activation
from .locally_connected import LocallyConnected2d
from .lrn import check_lrn_convention, lrn_or_identity

INITS: tuple[str, ...] = ("cuda_convnet", "default")
LAYERS: tuple[str, ...] = ("conv1", "conv2", "local3", "local4", "fc10")
# initW of each layer, in both layer files.
INIT_STD: dict[str, float] = {
    "conv1": 1e-4, "conv2": 1e-2, "local3": 0.04, "local4": 0.04, "fc10": 0.01,
}
# wc of each layer: layer-params-conv-local-11pct.cfg (the 13pct file has fc10 0.004).
WEIGHT_DECAY_11PCT: dict[str, float] = {
    "conv1": 0.0, "conv2": 0.0, "local3": 0.004, "local4": 0.004, "fc10": 0.01,
}
CONV_FILTERS, LOCAL4_FILTERS = 64, 32  # conv1/conv2, local4 in both files
POOL_KERNEL, POOL_STRIDE = 3, 2


def _pool_out(size: int) -> int:
    """cuda-convnet's pooled size, ceil((size - 3) / 2) + 1; 0 when the window does not fit."""
    if size < POOL_KERNEL:
        return 0
    return -(-(size - POOL_KERNEL) // POOL_STRIDE) + 1


def cifar_local_sizes(crop_size: int) -> list[int]:
    """Spatial sizes after [conv1, pool1, conv2, pool2, local3, local4]; 24 -> 24, 12, 12, 6, 6, 6.

    The 5x5 convs (pad 2) and 3x3 local layers (pad 1) keep the size; the pools round up.
    Raises ValueError when the crop is too small for pool2 (crop_size < 6).
    """
    pool1 = _pool_out(crop_size)
    pool2 = _pool_out(pool1)
    if crop_size < 1 or pool2 < 1:
        raise ValueError(f"crop_size={crop_size} is too small: need crop_size >= 6")
    return [crop_size, pool1, pool1, pool2, pool2, pool2]


class CifarLocalNet(nn.Module):
    """cuda-convnet's conv-local CIFAR-10 nets, the paper's "four-layer CNN" (Sec. 3.1, 3.3).

    The defaults are ``layers-conv-local-11pct.cfg``; ``lrn=False, local3_filters=32`` and fc10's
    weight decay 0.004 are ``layers-conv-local-13pct.cfg`` (see the module docstring's table).

    Input: (B, 3, crop_size, crop_size) float. Output: logits (B, num_classes).

    Args:
        num_classes: outputs of fc10 (>= 2).
        lrn: the two cross-map normalisation layers of the 11pct file (rnorm1 after pool1, rnorm2
            between conv2's activation and pool2).
        local3_filters: filters of local3: 64 in the 11pct file, 32 in the 13pct one.
        activation: "relu" (the files' ``neuron=relu``) or "tanh" (Fig. 1's comparison), after
            conv1, conv2, local3 and local4.
        lrn_convention, lrn_size, lrn_alpha, lrn_beta, lrn_k: see :class:`LocalResponseNorm`;
            the 11pct file's are "caffe" (k = 1, alpha / n), 9, 0.001, 0.75.
        init: "cuda_convnet" (each layer's initW as the std of N(0, std^2) weights, biases 0) or
            "default" (PyTorch's).
        weight_decay: each layer's wc, absolute, on its weights: a mapping with the keys of
            :data:`LAYERS`; None means the 11pct file's.
        bias_lr_mult: the biases' learning rate over the weights' (epsB / epsW = 2 in both files).
        crop_size: input height and width (>= 6); 24 in cuda-convnet's CIFAR-10 runs.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        lrn: bool = True,
        local3_filters: int = 64,
        activation: str = "relu",
        lrn_convention: str = "caffe",
        lrn_size: int = 9,
        lrn_alpha: float = 1e-3,
        lrn_beta: float = 0.75,
        lrn_k: float | None = None,
        init: str = "cuda_convnet",
        weight_decay: Mapping[str, float] | None = None,
        bias_lr_mult: float = 2.0,
        crop_size: int = 24,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if local3_filters < 1:
            raise ValueError(f"local3_filters must be >= 1, got {local3_filters}")
        check_activation(activation)
        check_lrn_convention(lrn_convention)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        decay = dict(WEIGHT_DECAY_11PCT if weight_decay is None else weight_decay)
        if set(decay) != set(LAYERS):
            raise ValueError(f"weight_decay must give each of {LAYERS}, got {sorted(decay)}")
        if any(float(v) < 0 for v in decay.values()) or bias_lr_mult < 0:
            raise ValueError("weight_decay values and bias_lr_mult must be >= 0")
        sizes = cifar_local_sizes(crop_size)  # raises if the crop is too small
        pooled = sizes[3]

        self.num_classes = num_classes
        self.crop_size = crop_size
        self.weight_decay = {name: float(decay[name]) for name in LAYERS}
        self.bias_lr_mult = float(bias_lr_mult)

        act = partial(activation_module, activation)  # each call a new module
        norm = partial(lrn_or_identity, lrn, lrn_size, lrn_alpha, lrn_beta, lrn_k, lrn_convention)

        self.conv1 = nn.Conv2d(3, CONV_FILTERS, kernel_size=5, padding=2)
        self.act1 = act()
        self.pool1 = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.norm1 = norm()  # [rnorm1] inputs=pool1
        self.conv2 = nn.Conv2d(CONV_FILTERS, CONV_FILTERS, kernel_size=5, padding=2)
        self.act2 = act()
        self.norm2 = norm()  # [rnorm2] inputs=conv2: before the pooling, unlike rnorm1
        self.pool2 = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.local3 = LocallyConnected2d(CONV_FILTERS, local3_filters, pooled, 3, padding=1)
        self.act3 = act()
        self.local4 = LocallyConnected2d(local3_filters, LOCAL4_FILTERS, pooled, 3, padding=1)
        self.act4 = act()
        self.fc10 = nn.Linear(LOCAL4_FILTERS * pooled * pooled, num_classes)

        if init == "cuda_convnet":
            for name in LAYERS:
                layer = getattr(self, name)
                nn.init.normal_(layer.weight, mean=0.0, std=INIT_STD[name])
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(self.pool1(self.act1(self.conv1(x))))
        x = self.pool2(self.norm2(self.act2(self.conv2(x))))
        x = self.act3(self.local3(x))
        x = self.act4(self.local4(x))
        return self.fc10(x.flatten(1))

    def param_groups(self) -> list[dict]:
        """The layer-params file's settings, one group per layer's weights and one per its biases.

        Each dict: ``name``, ``params``, ``lr_mult`` (multiplies optimizer.lr: 1 for weights,
        ``bias_lr_mult`` for biases) and ``weight_decay`` (absolute: the layer's wc on weights, 0
        on biases, which cuda-convnet never decays). With optimizer.lr = epsW = 0.001 this gives
        every layer's epsW, epsB and wc (see ``src/alexnet/training/optim.py``, ``param_groups``).
        """
        groups: list[dict] = []
        for name in LAYERS:
            layer = getattr(self, name)
            groups.append({"name": f"{name}.weight", "params": [layer.weight], "lr_mult": 1.0,
                           "weight_decay": self.weight_decay[name]})
            groups.append({"name": f"{name}.bias", "params": [layer.bias],
                           "lr_mult": self.bias_lr_mult, "weight_decay": 0.0})
        return groups


__all__ = ["INIT_STD", "LAYERS", "WEIGHT_DECAY_11PCT", "CifarLocalNet", "cifar_local_sizes"]
