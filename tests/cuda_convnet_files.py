"""cuda-convnet's CIFAR-10 example files, transcribed: the layer chains of the conv-local nets
(layers-conv-local-{11,13}pct.cfg) and their learning parameters (layer-params-conv-local-*.cfg),
with the paper's four-layer nets built as those files describe them. The nets' tests
(test_cifar_nets.py) and their recipes' tests (test_cifar_recipes.py) both check against these."""

from __future__ import annotations

from alexnet.models import CifarLocalNet

# The layer chains of cuda-convnet's example-layers/layers-conv-local-11pct.cfg (r550) and
# layers-conv-local-13pct.cfg (r456), section by section: (name, type, inputs, settings).
LAYERS_11PCT = [
    ("conv1", "conv", "data", {"filters": 64, "padding": 2, "filterSize": 5, "initW": 0.0001}),
    ("pool1", "pool", "conv1", {"sizeX": 3, "stride": 2}),
    ("rnorm1", "cmrnorm", "pool1", {"size": 9}),
    ("conv2", "conv", "rnorm1", {"filters": 64, "padding": 2, "filterSize": 5, "initW": 0.01}),
    ("rnorm2", "cmrnorm", "conv2", {"size": 9}),
    ("pool2", "pool", "rnorm2", {"sizeX": 3, "stride": 2}),
    ("local3", "local", "pool2", {"filters": 64, "padding": 1, "filterSize": 3, "initW": 0.04}),
    ("local4", "local", "local3", {"filters": 32, "padding": 1, "filterSize": 3, "initW": 0.04}),
    ("fc10", "fc", "local4", {"outputs": 10, "initW": 0.01}),
]
LAYERS_13PCT = [
    ("conv1", "conv", "data", {"filters": 64, "padding": 2, "filterSize": 5, "initW": 0.0001}),
    ("pool1", "pool", "conv1", {"sizeX": 3, "stride": 2}),
    ("conv2", "conv", "pool1", {"filters": 64, "padding": 2, "filterSize": 5, "initW": 0.01}),
    ("pool2", "pool", "conv2", {"sizeX": 3, "stride": 2}),
    ("local3", "local", "pool2", {"filters": 32, "padding": 1, "filterSize": 3, "initW": 0.04}),
    ("local4", "local", "local3", {"filters": 32, "padding": 1, "filterSize": 3, "initW": 0.04}),
    ("fc10", "fc", "local4", {"outputs": 10, "initW": 0.01}),
]
# layer-params-conv-local-{11,13}pct.cfg: every layer epsW=0.001, epsB=0.002, momW=momB=0.9;
# wc per layer; the 11pct file's [rnorm1] / [rnorm2] scale=0.001, pow=0.75.
EPS_W, EPS_B, MOMENTUM = 0.001, 0.002, 0.9
WC_11PCT = {"conv1": 0.0, "conv2": 0.0, "local3": 0.004, "local4": 0.004, "fc10": 0.01}
WC_13PCT = {"conv1": 0.0, "conv2": 0.0, "local3": 0.004, "local4": 0.004, "fc10": 0.004}
RNORM_SCALE, RNORM_POW = 0.001, 0.75


def net_11pct(**kwargs) -> CifarLocalNet:
    return CifarLocalNet(**kwargs)


def net_13pct(**kwargs) -> CifarLocalNet:
    return CifarLocalNet(lrn=False, local3_filters=32, weight_decay=WC_13PCT, **kwargs)
