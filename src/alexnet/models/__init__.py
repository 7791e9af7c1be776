"""Networks of the paper: AlexNet (Sec. 3) and the small CIFAR-10 net (Sec. 3.1, 3.3)."""

from .alexnet import FEATURE_LAYERS, AlexNet, feature_sizes
from .cifar_convnet import CifarConvNet, cifar_feature_sizes
from .lrn import LRN_CONVENTIONS, LocalResponseNorm

__all__ = [
    "FEATURE_LAYERS",
    "LRN_CONVENTIONS",
    "AlexNet",
    "CifarConvNet",
    "LocalResponseNorm",
    "cifar_feature_sizes",
    "feature_sizes",
]
