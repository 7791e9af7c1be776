"""The CIFAR-10 nets: the locally connected layer against a loop, the paper's four-layer nets
against cuda-convnet's conv-local layer files (tests/cuda_convnet_files.py), and cuda-convnet's 18%
net under its own name. Their learning parameters, configs and recipes: test_cifar_recipes.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cuda_convnet_files import (
    LAYERS_11PCT,
    LAYERS_13PCT,
    RNORM_POW,
    RNORM_SCALE,
    WC_11PCT,
    net_11pct,
    net_13pct,
)
from helpers import compose_config, n_params
from torch import Tensor, nn
from torch.nn import functional as F

from alexnet.jobs.train import train
from alexnet.models import (
    Cifar18pct,
    CifarLocalNet,
    LocallyConnected2d,
    LocalResponseNorm,
    cifar18pct_feature_sizes,
    cifar_local_sizes,
)
from alexnet.models.cifar_local import INIT_STD, LAYERS


def output_shapes(model: nn.Module, x: Tensor, names: list[str]) -> tuple[Tensor, dict]:
    """The model's output and the output shape of each named submodule."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape))
        )
        for name in names
    ]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return out, shapes


# --- LocallyConnected2d against a loop -----------------------------------------------------------


def local_loop(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
               padding: tuple[int, int]) -> Tensor:
    """cuda-convnet's ``type=local`` written out: at output position (i, j), the filter bank
    weight[i, j] (O, C, kh, kw) applied to the zero-padded window starting at (i*sh, j*sw)."""
    oh, ow, _, _, kh, kw = weight.shape
    sh, sw = stride
    padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    out = torch.zeros(x.shape[0], weight.shape[2], oh, ow, dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            window = padded[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            value = (window[:, None] * weight[i, j][None]).sum(dim=(2, 3, 4))
            out[:, :, i, j] = value + (0 if bias is None else bias[:, i, j])
    return out


LOCAL_CASES = [
    # (in_channels, out_channels, in_size, kernel, stride, padding, bias)
    (4, 5, 6, 3, 1, 1, True),         # the CIFAR nets' local3 / local4 geometry
    (3, 2, (7, 5), (3, 2), 2, 0, True),
    (2, 3, 5, 2, (2, 1), (1, 0), False),
    (1, 1, 4, 4, 1, 0, True),         # one position: a fully connected layer
]


@pytest.mark.parametrize(("cin", "cout", "size", "kernel", "stride", "padding", "bias"),
                         LOCAL_CASES)
def test_locally_connected_matches_the_loop(cin, cout, size, kernel, stride, padding,
                                            bias) -> None:
    torch.manual_seed(0)
    layer = LocallyConnected2d(cin, cout, size, kernel, stride, padding, bias).double()
    with torch.no_grad():  # bias draws of their own, so that a bias mix-up shows
        if layer.bias is not None:
            layer.bias.normal_()
    h, w = layer.in_size
    x = torch.randn(3, cin, h, w, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    ref_x = x.detach().clone().requires_grad_(True)
    ref_w = layer.weight.detach().clone().requires_grad_(True)
    ref_b = None if layer.bias is None else layer.bias.detach().clone().requires_grad_(True)
    ref = local_loop(ref_x, ref_w, ref_b, layer.stride, layer.padding)
    assert out.shape == ref.shape == (3, cout, *layer.out_size)
    torch.testing.assert_close(out, ref)

    upstream = torch.randn_like(out)
    out.backward(upstream)
    ref.backward(upstream)
    torch.testing.assert_close(x.grad, ref_x.grad)
    torch.testing.assert_close(layer.weight.grad, ref_w.grad)
    if layer.bias is not None:
        torch.testing.assert_close(layer.bias.grad, ref_b.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bf16"])
def test_locally_connected_as_the_runs_use_it_matches_unfold(dtype: torch.dtype) -> None:
    """As a CIFAR-10 run feeds it (a channels-last batch; under bf16 autocast with the AMX CPUs'
    automatic precision), the layer computes what F.unfold and einsum compute over the same
    parameters (the formulation it replaced, the benchmark's baseline): the same outputs and
    weight gradients, and the input's gradient to the rounding of its dtype (its kh*kw terms
    are summed in another order)."""
    from alexnet.benchmarks.baselines import UnfoldLocallyConnected2d

    torch.manual_seed(0)
    layer = LocallyConnected2d(8, 6, 6, 3, padding=1)
    stock = UnfoldLocallyConnected2d(layer)
    x = torch.randn(5, 8, 6, 6).to(dtype).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(5, 6, 6, 6)
    results = []
    for module in (stock, layer):
        a = x.detach().requires_grad_(True)
        layer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = module(a)
        out.float().backward(upstream)
        results.append((out.float(), a.grad.float(), layer.weight.grad, layer.bias.grad))
    (want, want_x, want_w, want_b), (got, got_x, got_w, got_b) = results
    tight = {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(got, want, **tight)
    torch.testing.assert_close(got_w, want_w, **tight)
    torch.testing.assert_close(got_b, want_b, **tight)
    # bf16 keeps 8 bits of mantissa: a sum of 9 terms rounded in another order
    rounding = tight if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(got_x, want_x, **rounding)


def test_locally_connected_weights_are_unshared() -> None:
    torch.manual_seed(0)
    layer = LocallyConnected2d(3, 4, 6, 3, padding=1).double()
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    # Every position holding the same filter bank and bias is a convolution.
    with torch.no_grad():
        layer.weight.copy_(conv.weight.expand_as(layer.weight))
        layer.bias.copy_(conv.bias[:, None, None].expand_as(layer.bias))
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), conv(x))
    # Changing one position's filters changes that position's outputs and nothing else.
    before = layer(x)
    with torch.no_grad():
        layer.weight[2, 4].add_(1.0)
    changed = (layer(x) - before).abs().sum(dim=(0, 1)) > 0
    assert changed[2, 4] and changed.sum() == 1


def test_locally_connected_parameters_and_errors() -> None:
    layer = LocallyConnected2d(64, 32, 6, 3, padding=1)
    # One (32, 64, 3, 3) bank and 32 biases for each of the 6 x 6 positions.
    assert tuple(layer.weight.shape) == (6, 6, 32, 64, 3, 3)
    assert tuple(layer.bias.shape) == (32, 6, 6)
    assert n_params(layer) == 36 * (32 * 64 * 9 + 32)
    bound = 1 / (64 * 9) ** 0.5  # PyTorch's convolution default for the same fan-in
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    with pytest.raises(ValueError, match=r"expected input \(B, 64, 6, 6\)"):
        layer(torch.zeros(1, 64, 7, 7))
    with pytest.raises(ValueError, match="does not fit"):
        LocallyConnected2d(1, 1, 2, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        LocallyConnected2d(1, 1, 4, 0)


# --- the conv-local nets against cuda-convnet's layer files --------------------------------------


def cmrnorm_reference(a: Tensor, size: int, scale: float, pow_: float) -> Tensor:
    """cuda-convnet v1's cross-map response normalisation (type=cmrnorm): layer.py divides scale
    by size; conv_util.cu (kFCNorm) sums the squares of maps -size/2 + f .. that + size - 1,
    clipped to the layer, and outputs a * (1 + addScale * sum)^(-pow)."""
    add_scale = scale / size
    maps = a.shape[1]
    out = []
    for f in range(maps):
        start = f - size // 2
        total = sum(a[:, j] ** 2 for j in range(max(0, start), min(maps, start + size)))
        out.append(a[:, f] * (1 + add_scale * total) ** -pow_)
    return torch.stack(out, dim=1)


def pool_reference(a: Tensor, size: int, stride: int) -> Tensor:
    """cuda-convnet's max pooling with start=0, outputsX=0: ceil((in - size) / stride) + 1
    outputs per side (layer.py, PoolLayerParser), each the max of its window clipped to the
    input."""
    n = a.shape[-1]
    outs = -(-(n - size) // stride) + 1
    rows = []
    for i in range(outs):
        cols = []
        for j in range(outs):
            rows_in = slice(i * stride, min(n, i * stride + size))
            cols_in = slice(j * stride, min(n, j * stride + size))
            window = a[..., rows_in, cols_in]
            cols.append(window.amax(dim=(-2, -1)))
        rows.append(torch.stack(cols, dim=-1))
    return torch.stack(rows, dim=-2)


def cfg_forward(net: CifarLocalNet, chain: list, x: Tensor) -> Tensor:
    """Run ``net``'s own layers in the order and wiring of a layer file: each section reads the
    section its ``inputs`` names; ``neuron=relu`` on conv and local layers; norms computed from
    the cmrnorm formula, not from the net's LRN module."""
    acts = {"data": x}
    for name, kind, source, settings in chain:
        a = acts[source]
        if kind == "conv":
            acts[name] = F.relu(getattr(net, name)(a))
        elif kind == "local":
            acts[name] = F.relu(getattr(net, name)(a))
        elif kind == "pool":
            acts[name] = pool_reference(a, settings["sizeX"], settings["stride"])
        elif kind == "cmrnorm":
            acts[name] = cmrnorm_reference(a, settings["size"], RNORM_SCALE, RNORM_POW)
        elif kind == "fc":
            acts[name] = net.fc10(a.flatten(1))
    return acts[chain[-1][0]]


@pytest.mark.parametrize(("make", "chain"), [(net_11pct, LAYERS_11PCT), (net_13pct, LAYERS_13PCT)])
def test_layer_order_is_the_files(make, chain) -> None:
    torch.manual_seed(0)
    net = make(init="default").double().eval()
    # Inputs large enough for the normalisation to matter (the files' raw 0-255 pixels).
    x = 60 * torch.randn(2, 3, 24, 24, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), cfg_forward(net, chain, x))
        # and the normalisation does matter here: without it the outputs differ
        if any(kind == "cmrnorm" for _, kind, _, _ in chain):
            plain = [(n, k, s.replace("rnorm1", "pool1").replace("rnorm2", "conv2"), c)
                     for n, k, s, c in chain if k != "cmrnorm"]
            assert not torch.allclose(net(x), cfg_forward(net, plain, x))


def test_shapes_at_24_and_32() -> None:
    names = ["conv1", "pool1", "norm1", "conv2", "norm2", "pool2", "local3", "local4"]
    out, shapes = output_shapes(net_11pct().eval(), torch.randn(2, 3, 24, 24), names)
    assert out.shape == (2, 10)
    # cuda-convnet's pooling: outputsX = ceil((24 - 3) / 2) + 1 = 12, then ceil(9 / 2) + 1 = 6.
    assert [shapes[n][2] for n in names] == [24, 12, 12, 12, 12, 6, 6, 6]
    assert [shapes[n][1] for n in names] == [64, 64, 64, 64, 64, 64, 64, 32]
    assert cifar_local_sizes(24) == [24, 12, 12, 6, 6, 6]
    assert cifar_local_sizes(32) == [32, 16, 16, 8, 8, 8]
    assert cifar_local_sizes(6)[-1] == 1
    with torch.no_grad():
        assert net_13pct(crop_size=32, num_classes=7)(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match=">= 6"):
        CifarLocalNet(crop_size=5)


def test_parameter_counts_are_the_files() -> None:
    # At 24 x 24 every local layer has 6 x 6 = 36 positions, each with its own filters and biases.
    conv1 = 64 * 3 * 5 * 5 + 64          # 4,864 (sharedBiases=1: one bias per filter)
    conv2 = 64 * 64 * 5 * 5 + 64         # 102,464
    fc10 = 32 * 6 * 6 * 10 + 10          # 11,530
    # 11pct: local3 64 filters on 64 maps, local4 32 filters on local3's 64 maps.
    local3_11 = 36 * (64 * 64 * 3 * 3) + 36 * 64   # 1,327,104 + 2,304 = 1,329,408
    local4_11 = 36 * (32 * 64 * 3 * 3) + 36 * 32   # 663,552 + 1,152 = 664,704
    # 13pct: local3 32 filters on 64 maps, local4 32 filters on local3's 32 maps.
    local3_13 = 36 * (32 * 64 * 3 * 3) + 36 * 32   # 664,704
    local4_13 = 36 * (32 * 32 * 3 * 3) + 36 * 32   # 331,776 + 1,152 = 332,928
    assert conv1 + conv2 + local3_11 + local4_11 + fc10 == 2_112_970
    assert conv1 + conv2 + local3_13 + local4_13 + fc10 == 1_116_490

    for net, local3, local4 in ((net_11pct(), local3_11, local4_11),
                                (net_13pct(), local3_13, local4_13)):
        per_layer = {name: n_params(getattr(net, name)) for name in LAYERS}
        assert per_layer == {"conv1": conv1, "conv2": conv2, "local3": local3,
                             "local4": local4, "fc10": fc10}
        assert n_params(net) == sum(per_layer.values())  # the norms and pools have none
    assert n_params(net_11pct()) == 2_112_970
    assert n_params(net_13pct()) == 1_116_490
    # lrn switches the norms alone: the same parameters either way.
    assert n_params(CifarLocalNet(lrn=False)) == 2_112_970


def test_normalisation_is_cuda_convnets_cmrnorm() -> None:
    net = net_11pct()
    for norm in (net.norm1, net.norm2):
        assert isinstance(norm, LocalResponseNorm)
        # 1 + (scale / size) * sum: k = 1 and alpha / n, whatever the convention's name.
        assert (norm.size, norm.k, norm.beta) == (9, 1.0, RNORM_POW)
        assert norm.effective_alpha == pytest.approx(RNORM_SCALE / 9)
    torch.manual_seed(0)
    a = 30 * torch.randn(2, 64, 5, 5, dtype=torch.float64).relu()
    torch.testing.assert_close(net.norm1(a), cmrnorm_reference(a, 9, RNORM_SCALE, RNORM_POW))
    assert not any(isinstance(m, LocalResponseNorm) for m in net_13pct().modules())


def test_initialisation_is_the_files_initw() -> None:
    torch.manual_seed(0)
    net = net_11pct()
    for name in LAYERS:
        layer = getattr(net, name)
        assert torch.all(layer.bias == 0)
        assert layer.weight.mean().abs() < 0.1 * INIT_STD[name]
        assert layer.weight.std().item() == pytest.approx(INIT_STD[name], rel=0.05)
    assert INIT_STD == {name: settings["initW"] for name, _, _, settings in LAYERS_11PCT
                        if "initW" in settings}
    default = net_11pct(init="default")
    assert default.conv1.weight.std().item() > 10 * INIT_STD["conv1"]
    assert default.local3.bias.abs().sum() > 0


def test_activation_switch() -> None:
    tanh = net_11pct(activation="tanh")
    assert sum(isinstance(m, nn.Tanh) for m in tanh.modules()) == 4  # conv1, conv2, local3, 4
    assert not any(isinstance(m, nn.ReLU) for m in tanh.modules())
    assert sum(isinstance(m, nn.ReLU) for m in net_11pct().modules()) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, ">= 2"),
        ({"activation": "sigmoid"}, r"\('relu', 'tanh'\)"),
        ({"lrn_convention": "x"}, "lrn convention must be one of"),
        ({"init": "paper"}, r"\('cuda_convnet', 'default'\)"),
        ({"weight_decay": {"conv1": 0.0}}, "weight_decay must give each of"),
        ({"weight_decay": {**WC_11PCT, "fc10": -1.0}}, ">= 0"),
        ({"local3_filters": 0}, ">= 1"),
    ],
)
def test_invalid_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CifarLocalNet(**kwargs)



# --- cuda-convnet's 18% net, under its own name ---------------------------------------------------


def test_cifar18pct_forward_and_sizes() -> None:
    torch.manual_seed(0)
    names = ["conv1", "pool1", "conv2", "pool2", "conv3", "pool3"]
    out, shapes = output_shapes(Cifar18pct().eval(), torch.randn(2, 3, 32, 32), names)
    assert out.shape == (2, 10)
    assert [shapes[n][2] for n in names] == cifar18pct_feature_sizes(32) == [32, 16, 16, 8, 8, 4]
    assert [shapes[n][1] for n in names] == [32, 32, 32, 32, 64, 64]


def test_cifar18pct_parameter_count() -> None:
    # layers-18pct.cfg: conv1 32*3*5*5 + 32 = 2,432; conv2 32*32*5*5 + 32 = 25,632;
    # conv3 64*32*5*5 + 64 = 51,264; fc10 (64*4*4)*10 + 10 = 10,250. Total 89,578.
    assert n_params(Cifar18pct()) == 89_578
    assert Cifar18pct().fc.in_features == 1024


def test_cifar18pct_switches() -> None:
    tanh = Cifar18pct(activation="tanh")
    assert sum(isinstance(m, nn.Tanh) for m in tanh.modules()) == 3
    assert not any(isinstance(m, nn.ReLU) for m in tanh.modules())
    assert not any(isinstance(m, LocalResponseNorm) for m in Cifar18pct(lrn=False).modules())
    norm = Cifar18pct().norm1
    # Cross-map in place of the file's same-map rnorm: k = 1 with alpha / n (cuda-convnet's).
    assert (norm.size, norm.alpha, norm.k, norm.convention) == (5, 1e-3, 1.0, "caffe")
    assert norm.effective_alpha == pytest.approx(1e-3 / 5)
    paper_lrn = Cifar18pct(lrn_convention="paper", lrn_size=3, lrn_alpha=1e-4)
    assert (paper_lrn.norm2.size, paper_lrn.norm2.k, paper_lrn.norm2.effective_alpha) == (
        3, 2.0, 1e-4,
    )  # fmt: skip
    torch.manual_seed(0)
    paper = Cifar18pct(init="paper")
    for layer in (paper.conv1, paper.conv2, paper.conv3, paper.fc):
        assert torch.all(layer.bias == 0.0)
    assert abs(paper.conv3.weight.std().item() - 0.01) < 0.001
    assert abs(Cifar18pct(init="default").conv1.weight.std().item() - 0.01) > 0.01
    with torch.no_grad():
        assert Cifar18pct(crop_size=24, num_classes=5)(torch.randn(2, 3, 24, 24)).shape == (2, 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, ">= 2"),
        ({"activation": "sigmoid"}, r"\('relu', 'tanh'\)"),
        ({"lrn_convention": "x"}, "lrn convention must be one of"),
        ({"init": "paper2"}, r"\('default', 'paper'\)"),
        ({"crop_size": 11}, ">= 12"),
    ],
)
def test_cifar18pct_invalid_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Cifar18pct(**kwargs)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_cifar18pct_on_small_builtin_images(activation: str, tmp_path: Path,
                                            data_dir: Path) -> None:
    cfg = compose_config(
        "train",
        ["experiment=cifar18pct_synthetic", f"model.activation={activation}",
         "data.train_per_class=2", "data.val_per_class=1", "data.batch_size=4",
         "data.num_workers=0", "trainer.fast_dev_run=true", "~callbacks.progress_bar",
         "trainer.enable_progress_bar=false"],
        tmp_path, data_dir,
    )
    summary = train(cfg)
    assert summary["config"]["model"]["_target_"] == "alexnet.models.Cifar18pct"
    assert summary["config"]["data"]["image_size"] == 32
    assert summary["num_params"] == 89_578
