"""AlexNet (Sec. 3): shapes, parameter counts, switches, init, dropout, 224 geometry."""

import pytest
import torch
from helpers import n_params
from torch import nn

from alexnet.models import (
    FEATURE_LAYERS,
    AlexNet,
    LocalResponseNorm,
    feature_sizes,
)
from alexnet.models.alexnet import (
    CONV1_GEOMETRIES,
    DROPOUT_MODES,
    PaperDropout,
    conv1_far_padding,
)

# The smallest crop that still leaves a 1x1 map after pool5: fc6 then has 256 inputs instead of
# 9216, which makes real (non-meta) nets cheap to build when the crop is irrelevant to the test.
SMALL_CROP = 67


def meta(**kwargs) -> AlexNet:
    """A net without storage: enough for structure and parameter counts, and instant to build."""
    with torch.device("meta"):
        return AlexNet(**kwargs)


@pytest.fixture(scope="module")
def net() -> AlexNet:
    torch.manual_seed(0)
    return AlexNet(1000).eval()


def run_with_hooks(model: nn.Module, x: torch.Tensor, names) -> tuple[torch.Tensor, dict]:
    sizes: dict[str, tuple[int, ...]] = {}
    handles = [
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: sizes.__setitem__(name, tuple(out.shape))
        )
        for name in names
    ]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, sizes


# --- architecture -----------------------------------------------------------------------------


def test_parameter_counts() -> None:
    # Sec. 3.5 / Fig. 2 at 227: 60,965,224; one-GPU net (Sec. 3.2 footnote): 59,798,312.
    assert n_params(meta(num_classes=1000)) == 60_965_224
    assert n_params(meta(num_classes=1000, columns=1)) == 59_798_312
    assert meta(num_classes=1000).fc6.in_features == 256 * 6 * 6


def test_fc_width_sets_fc6_and_fc7_only() -> None:
    # The paper's 4096 by default; a narrower net differs in fc6, fc7 and fc8's inputs alone.
    paper, narrow = meta(num_classes=1000), meta(num_classes=1000, fc_width=256)
    assert paper.fc_width == 4096 and (paper.fc6.out_features, paper.fc7.out_features) == (4096,
                                                                                         4096)
    assert (narrow.fc6.out_features, narrow.fc7.in_features, narrow.fc7.out_features,
            narrow.fc8.in_features) == (256, 256, 256, 256)
    fc = {"fc6", "fc7", "fc8"}
    assert [(n, p.shape) for n, p in paper.named_parameters() if n.split(".")[0] not in fc] == \
        [(n, p.shape) for n, p in narrow.named_parameters() if n.split(".")[0] not in fc]
    assert n_params(narrow) == 60_965_224 - sum(
        p.numel() for n, p in paper.named_parameters() if n.split(".")[0] in fc) + (
        9216 * 256 + 256 + 256 * 256 + 256 + 256 * 1000 + 1000)


def test_feature_sizes_function() -> None:
    for pooling in ("overlapping", "plain"):
        assert feature_sizes(227, pooling) == [55, 27, 27, 13, 13, 13, 13, 6]
    assert len(FEATURE_LAYERS) == 8
    # The paper's nominal 224 gives 54 after conv1 with PyTorch's floor-mode sizes...
    assert feature_sizes(224)[0] == 54
    assert feature_sizes(224, conv1_geometry="floor") == [54, 26, 26, 12, 12, 12, 12, 5]
    # ...and 55 with cuda-convnet's 1 + ceil((224 - 11) / 4), as the authors computed it.
    for pooling in ("overlapping", "plain"):
        for size in (224, 227):
            assert feature_sizes(size, pooling, "cuda_convnet") == [55, 27, 27, 13, 13, 13, 13, 6]


@pytest.mark.parametrize("pooling", ["overlapping", "plain"])
def test_layer_output_sizes_by_hooks(pooling: str, net: AlexNet) -> None:
    model = net if pooling == "overlapping" else AlexNet(1000, pooling=pooling).eval()
    out, sizes = run_with_hooks(model, torch.randn(1, 3, 227, 227), FEATURE_LAYERS)
    assert out.shape == (1, 1000)
    spatial = {name: shape[2] for name, shape in sizes.items()}
    assert spatial == dict(zip(FEATURE_LAYERS, feature_sizes(227, pooling), strict=True))
    assert spatial == {
        "conv1": 55, "pool1": 27, "conv2": 27, "pool2": 13,
        "conv3": 13, "conv4": 13, "conv5": 13, "pool5": 6,
    }  # fmt: skip
    channels = {name: shape[1] for name, shape in sizes.items()}
    assert [channels[n] for n in ("conv1", "conv2", "conv3", "conv4", "conv5")] == [
        96, 256, 384, 384, 256,
    ]  # fmt: skip


# --- 224 as the authors computed it (Sec. 3.5; cuda-convnet's output size) --------------------


def test_conv1_far_padding() -> None:
    assert CONV1_GEOMETRIES == ("floor", "cuda_convnet")
    # cuda-convnet: 1 + ceil((in - 11) / 4) windows; the padding completes the last one.
    for size in range(11, 300):
        pad = conv1_far_padding(size, "cuda_convnet")
        windows = 1 + -(-(size - 11) // 4)
        assert 0 <= pad <= 3 and (size + pad - 11) // 4 + 1 == windows, size
        assert conv1_far_padding(size, "floor") == 0
    assert conv1_far_padding(224, "cuda_convnet") == 3
    assert conv1_far_padding(227, "cuda_convnet") == 0


def test_224_parameter_count_and_fc6_match_227() -> None:
    exact = meta(num_classes=1000, crop_size=224, conv1_geometry="cuda_convnet")
    assert exact.fc6.in_features == 256 * 6 * 6 == 9216
    assert n_params(exact) == n_params(meta(num_classes=1000)) == 60_965_224
    # Floor mode at 224 is a different, smaller net (fc6 sees 5x5 maps).
    assert meta(num_classes=1000, crop_size=224).fc6.in_features == 256 * 5 * 5


@pytest.mark.parametrize(
    ("geometry", "expected"),
    [
        ("cuda_convnet", [55, 27, 27, 13, 13, 13, 13, 6]),
        ("floor", [54, 26, 26, 12, 12, 12, 12, 5]),
    ],
)
def test_224_layer_output_sizes_by_hooks(geometry: str, expected: list[int]) -> None:
    model = AlexNet(10, crop_size=224, conv1_geometry=geometry, dropout=0.0).eval()
    out, sizes = run_with_hooks(model, torch.randn(1, 3, 224, 224), FEATURE_LAYERS)
    assert out.shape == (1, 10)
    assert [sizes[name][2:] for name in FEATURE_LAYERS] == [(n, n) for n in expected]
    assert feature_sizes(224, conv1_geometry=geometry) == expected


def test_224_pads_the_far_edge_only() -> None:
    torch.manual_seed(0)
    exact = AlexNet(10, crop_size=224, conv1_geometry="cuda_convnet").eval()
    seen: dict[str, torch.Tensor] = {}
    handle = exact.conv1.register_forward_hook(
        lambda _m, inputs, out: seen.update(input=inputs[0], output=out)
    )
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = exact(x)
        handle.remove()
        unpadded = exact.conv1(x)  # PyTorch's floor mode: 54x54, windows inside the image only
    # conv1 saw the image at its top-left corner and zeros in 3 extra rows and columns.
    assert seen["input"].shape[-2:] == (227, 227)
    torch.testing.assert_close(seen["input"][..., :224, :224], x, rtol=0, atol=0)
    assert not seen["input"][..., 224:, :].any() and not seen["input"][..., :, 224:].any()
    # The first 54 windows per axis (position 0 among them) are untouched by the padding; only
    # the last row and column of windows hang over the far edge.
    assert seen["output"].shape[-2:] == (55, 55)
    torch.testing.assert_close(seen["output"][..., :54, :54], unpadded, rtol=0, atol=0)
    # The whole net equals the 227 net on the input zero-padded explicitly, bottom and right.
    at_227 = AlexNet(10).eval()
    at_227.load_state_dict(exact.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(logits, at_227(nn.functional.pad(x, (0, 3, 0, 3))))


def test_cuda_convnet_geometry_at_227_is_the_floor_net() -> None:
    torch.manual_seed(0)
    floor = AlexNet(10, dropout=0.0).eval()
    ceil = AlexNet(10, dropout=0.0, conv1_geometry="cuda_convnet").eval()
    ceil.load_state_dict(floor.state_dict())
    x = torch.randn(1, 3, 227, 227)
    with torch.no_grad():
        torch.testing.assert_close(ceil(x), floor(x), rtol=0, atol=0)


def test_grouping_two_columns_and_one_gpu() -> None:
    two = meta(num_classes=1000)
    assert two.columns == 2
    assert [two.layers()[f"conv{i}"].groups for i in range(1, 6)] == [1, 2, 1, 2, 2]
    assert (two.norm1.groups, two.norm2.groups) == (2, 2)
    one = meta(num_classes=1000, columns=1)
    assert one.columns == 1
    assert [one.layers()[f"conv{i}"].groups for i in range(1, 6)] == [1, 1, 1, 1, 1]
    assert [one.layers()[f"conv{i}"].out_channels for i in range(1, 6)] == [48, 128, 192, 192, 256]
    assert one.norm1.groups == 1


@pytest.mark.parametrize(("layer", "size"), [("conv2", 27), ("conv4", 13), ("conv5", 13)])
def test_grouped_layers_see_only_their_column(layer: str, size: int, net: AlexNet) -> None:
    conv = getattr(net, layer)
    half_in, half_out = conv.in_channels // 2, conv.out_channels // 2
    x = torch.randn(1, conv.in_channels, size, size)
    x2 = x.clone()
    x2[:, half_in:] += torch.randn_like(x2[:, half_in:])
    with torch.no_grad():
        y, y2 = conv(x), conv(x2)
    torch.testing.assert_close(y[:, :half_out], y2[:, :half_out], rtol=0, atol=0)
    assert not torch.allclose(y[:, half_out:], y2[:, half_out:])


def test_conv3_sees_both_columns(net: AlexNet) -> None:
    x = torch.randn(1, 256, 13, 13)
    x2 = x.clone()
    x2[:, 128:] += 1.0
    with torch.no_grad():
        assert not torch.allclose(net.conv3(x)[:, :192], net.conv3(x2)[:, :192])


def test_lrn_normalises_each_column_separately(net: AlexNet) -> None:
    # Each GPU of Sec. 3.2 normalises only its own kernel maps.
    x = 50.0 * torch.rand(1, 96, 5, 5)
    x2 = x.clone()
    x2[:, 48:] *= 3.0
    torch.testing.assert_close(net.norm1(x)[:, :48], net.norm1(x2)[:, :48], rtol=0, atol=0)


def test_embed_and_conv_features(net: AlexNet) -> None:
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        emb = net.embed(x)
        assert net.conv_features(x).shape == (2, 256, 6, 6)
        logits = net(x)
    assert emb.shape == (2, 4096)
    assert (emb >= 0).all()  # post-ReLU fc7
    # The paper's dropout multiplies fc7's outputs by 1 - p at test time, before fc8 (Sec. 4.2).
    torch.testing.assert_close(net.fc8(0.5 * emb), logits)


# --- initialisation (Sec. 5) ------------------------------------------------------------------

PAPER_BIAS = {
    "conv1": 0.0, "conv2": 1.0, "conv3": 0.0, "conv4": 1.0,
    "conv5": 1.0, "fc6": 1.0, "fc7": 1.0, "fc8": 0.0,
}  # fmt: skip


def test_paper_init(net: AlexNet) -> None:
    for name, layer in net.layers().items():
        assert torch.all(layer.bias == PAPER_BIAS[name]), name
    w = net.fc6.weight  # 37.7 M samples: the std is pinned far tighter than 2%
    assert abs(w.std().item() - 0.01) < 0.0002
    assert abs(w.mean().item()) < 1e-4
    assert abs(net.conv1.weight.std().item() - 0.01) < 0.0005


# 0.1: Caffe's variant; 0.0: the no_bias_one ablation of Sec. 5's claim.
@pytest.mark.parametrize("bias", [0.1, 0.0])
def test_bias_init_variant_and_removed_conv(bias: float) -> None:
    model = AlexNet(10, bias_init=bias, crop_size=SMALL_CROP)
    for name, layer in model.layers().items():
        want = bias if PAPER_BIAS[name] == 1.0 else 0.0
        torch.testing.assert_close(layer.bias, torch.full_like(layer.bias, want))
    # conv5 keeps its "1" bias when conv4 is removed.
    no4 = AlexNet(10, remove_conv=4, crop_size=SMALL_CROP)
    assert torch.all(no4.conv5.bias == 1.0) and torch.all(no4.conv3.bias == 0.0)


def test_default_init_differs_from_paper() -> None:
    torch.manual_seed(0)
    model = AlexNet(10, init="default", crop_size=SMALL_CROP)
    # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std ~0.03 for conv1's fan-in 363.
    assert abs(model.conv1.weight.std().item() - 0.01) > 0.01
    assert not torch.all(model.conv2.bias == 1.0)
    assert not torch.all(model.conv1.bias == 0.0)


# --- switches ---------------------------------------------------------------------------------


def test_activation_switch() -> None:
    tanh = meta(activation="tanh")
    assert any(isinstance(m, nn.Tanh) for m in tanh.modules())
    assert not any(isinstance(m, nn.ReLU) for m in tanh.modules())
    relu = meta()
    assert sum(isinstance(m, nn.ReLU) for m in relu.modules()) == 7
    assert not any(isinstance(m, nn.Tanh) for m in relu.modules())


def test_lrn_switches() -> None:
    assert not any(isinstance(m, LocalResponseNorm) for m in meta(lrn=False).modules())
    paper = meta()
    assert (paper.norm1.k, paper.norm1.effective_alpha) == (2.0, 1e-4)
    assert (paper.norm1.size, paper.norm1.beta) == (5, 0.75)
    for convention, k in (("authors", 2.0), ("caffe", 1.0)):
        variant = meta(lrn_convention=convention)
        for norm in (variant.norm1, variant.norm2):
            assert (norm.convention, norm.k) == (convention, k)
            assert norm.effective_alpha == pytest.approx(1e-4 / 5)
    custom = meta(lrn_size=3, lrn_alpha=2e-4, lrn_beta=0.5, lrn_k=1.5)
    assert (custom.norm2.size, custom.norm2.alpha, custom.norm2.beta, custom.norm2.k) == (
        3, 2e-4, 0.5, 1.5,
    )  # fmt: skip


def test_pooling_switch() -> None:
    for pooling, kernel in (("overlapping", 3), ("plain", 2)):
        pools = [m for m in meta(pooling=pooling).modules() if isinstance(m, nn.MaxPool2d)]
        assert len(pools) == 3
        assert all(p.kernel_size == kernel and p.stride == 2 for p in pools)


def test_dropout_switch() -> None:
    x = torch.randn(2, 3, SMALL_CROP, SMALL_CROP)
    off = AlexNet(10, dropout=0.0, crop_size=SMALL_CROP)
    assert not any(isinstance(m, nn.Dropout) for m in off.modules())
    with torch.no_grad():
        torch.testing.assert_close(off.train()(x), off.eval()(x))
    on = AlexNet(10, dropout=0.5, crop_size=SMALL_CROP)
    assert [m.p for m in on.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    with torch.no_grad():
        assert not torch.allclose(on.train()(x), on.eval()(x))


# --- dropout (Sec. 4.2) -----------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_paper_dropout_training_drops_without_scaling(p: float) -> None:
    torch.manual_seed(0)
    x = torch.rand(200, 1000) + 0.5  # no zeros of its own, so every zero is a dropped unit
    y = PaperDropout(p).train()(x)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - p) < 0.01  # 200,000 units: std of the mean ~0.001
    torch.testing.assert_close(y[~dropped], x[~dropped], rtol=0, atol=0)  # kept: unchanged


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_paper_dropout_eval_scales_by_keep_probability(p: float) -> None:
    x = torch.randn(4, 4096)
    torch.testing.assert_close(PaperDropout(p).eval()(x), x * (1 - p), rtol=0, atol=0)


def test_paper_dropout_expectation_matches_eval() -> None:
    # Sec. 4.2: multiplying by 1 - p at test time is the expectation of the training output.
    torch.manual_seed(0)
    x = torch.randn(1, 256)
    drop = PaperDropout(0.5).train()
    mean = torch.stack([drop(x) for _ in range(4000)]).mean(0)
    # Each unit's mean of 4000 draws: std = |x| * 0.5 / sqrt(4000) < 0.008 * |x|.
    torch.testing.assert_close(mean, drop.eval()(x), rtol=0.05, atol=0.02)


def test_inverted_dropout_is_torchs() -> None:
    x = torch.randn(8, 4096)
    model = AlexNet(10, dropout_mode="inverted", crop_size=SMALL_CROP)
    for drop in (model.drop6, model.drop7):
        assert type(drop) is nn.Dropout and drop.p == 0.5
        torch.manual_seed(1)
        got = drop.train()(x)
        torch.manual_seed(1)
        torch.testing.assert_close(got, nn.Dropout(0.5).train()(x), rtol=0, atol=0)
        torch.testing.assert_close(drop.eval()(x), x, rtol=0, atol=0)


def test_dropout_mode_default_is_the_papers() -> None:
    assert DROPOUT_MODES == ("paper", "inverted")
    model = meta()
    assert model.dropout_mode == "paper"
    assert type(model.drop6) is PaperDropout and type(model.drop7) is PaperDropout
    assert (model.drop6.p, model.drop7.p) == (0.5, 0.5)
    # No dropout is no module, whatever the mode.
    off = meta(dropout=0.0, dropout_mode="paper")
    assert not any(isinstance(m, nn.Dropout) for m in off.modules())


@pytest.mark.parametrize("mode", DROPOUT_MODES)
def test_dropout_modes_agree_at_eval_in_expectation(mode: str) -> None:
    # The two modes compute the same function at test time up to where the 1 - p sits: the paper's
    # net at eval equals the inverted net at eval once fc7 and fc8 weights are scaled by 1 - p.
    torch.manual_seed(0)
    paper = AlexNet(10, crop_size=SMALL_CROP).eval()
    other = AlexNet(10, dropout_mode=mode, crop_size=SMALL_CROP).eval()
    other.load_state_dict(paper.state_dict())
    if mode == "inverted":
        with torch.no_grad():
            other.fc7.weight.mul_(0.5)
            other.fc8.weight.mul_(0.5)
    x = torch.randn(2, 3, SMALL_CROP, SMALL_CROP)
    with torch.no_grad():
        torch.testing.assert_close(other(x), paper(x))


@pytest.mark.parametrize("removed", [3, 4])
def test_remove_middle_conv(removed: int) -> None:
    model = AlexNet(7, remove_conv=removed).eval()
    assert getattr(model, f"conv{removed}") is None
    assert f"conv{removed}" not in model.layers()
    assert not any(k.startswith(f"conv{removed}.") for k in model.state_dict())
    if removed == 3:
        assert (model.conv4.in_channels, model.conv4.groups) == (256, 2)
    else:
        assert (model.conv5.in_channels, model.conv5.groups) == (384, 2)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 227, 227)).shape == (1, 7)
    assert n_params(meta(num_classes=1000, remove_conv=4)) == 60_965_224 - (384 * 192 * 9 + 384)


@pytest.mark.parametrize("crop", [195, 224, SMALL_CROP])
def test_other_crop_sizes(crop: int) -> None:
    model = AlexNet(10, crop_size=crop, dropout=0.0).eval()
    assert model.fc6.in_features == 256 * feature_sizes(crop)[-1] ** 2
    with torch.no_grad():
        assert model(torch.randn(1, 3, crop, crop)).shape == (1, 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, ">= 2"),
        ({"columns": 3}, r"\(1, 2\)"),
        ({"activation": "gelu"}, r"\('relu', 'tanh'\)"),
        ({"lrn_convention": "torch"}, r"\('paper', 'authors', 'caffe'\)"),
        ({"lrn_convention": "cuda_convnet"}, "'cuda_convnet' was renamed"),
        ({"pooling": "avg"}, r"\('overlapping', 'plain'\)"),
        ({"dropout": 1.0}, r"\[0, 1\)"),
        ({"dropout": -0.1}, r"\[0, 1\)"),
        ({"dropout_mode": "scaled"}, r"dropout_mode must be one of \('paper', 'inverted'\)"),
        ({"init": "xavier"}, r"\('paper', 'default', 'kaiming'\)"),
        ({"remove_conv": 5}, r"None or one of \(3, 4\)"),
        ({"remove_conv": 1}, r"None or one of \(3, 4\)"),
        ({"crop_size": 66}, ">= 67"),
        ({"crop_size": 38, "pooling": "plain"}, ">= 39"),
        ({"crop_size": 63, "conv1_geometry": "cuda_convnet"}, ">= 64"),
        ({"conv1_geometry": "ceil"}, r"conv1_geometry must be one of \('floor', 'cuda_convnet'\)"),
        ({"lrn_size": 4}, "odd"),
        ({"fc_width": 0}, "fc_width must be a whole number of at least 2 and even"),
        ({"fc_width": 255}, "fc_width must be a whole number of at least 2 and even"),
        ({"fc_width": 256.0}, "fc_width must be a whole number of at least 2 and even"),
        ({"fc_width": 0, "columns": 1}, r"fc_width must be a whole number of at least 1, got 0"),
    ],
)
def test_invalid_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        meta(**kwargs)


def test_smallest_plain_crop_works() -> None:
    assert feature_sizes(39, "plain")[-1] == 1
    assert meta(pooling="plain", crop_size=39).fc6.in_features == 256


def test_kaiming_init() -> None:
    torch.manual_seed(0)
    model = AlexNet(10, init="kaiming", crop_size=SMALL_CROP)
    for name, layer in model.layers().items():
        fan_in = layer.weight[0].numel()
        std = (2.0 / fan_in) ** 0.5  # He et al.: N(0, 2 / fan_in) for ReLU layers
        assert abs(layer.weight.std().item() - std) < 0.1 * std, name
        assert torch.all(layer.bias == 0.0), name
