"""Networks: AlexNet (Sec. 3), the paper's four-layer CIFAR-10 nets (Sec. 3.1, 3.3) and
cuda-convnet's 18% CIFAR-10 net."""

from .alexnet import FEATURE_LAYERS, AlexNet, feature_sizes
from .cifar18pct import Cifar18pct, cifar18pct_feature_sizes
from .cifar_local import CifarLocalNet, cifar_local_sizes
from .locally_connected import LocallyConnected2d
from .lrn import LRN_CONVENTIONS, LRN_IMPLS, LocalResponseNorm

__all__ = [
    "FEATURE_LAYERS",
    "LRN_CONVENTIONS",
    "LRN_IMPLS",
    "AlexNet",
    "Cifar18pct",
    "CifarLocalNet",
    "LocalResponseNorm",
    "LocallyConnected2d",
    "cifar18pct_feature_sizes",
    "cifar_local_sizes",
    "feature_sizes",
]
