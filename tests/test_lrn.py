"""Local response normalisation: each convention against a direct, loop-based transcription of its
source's formula (the paper's Sec. 3.3, the authors' cuda-convnet2, Caffe's LRN layer)."""

from collections.abc import Callable

import pytest
import torch
from torch import nn

from alexnet.models import LRN_CONVENTIONS, LRN_IMPLS, LocalResponseNorm


def reference_lrn(
    a: torch.Tensor, n: int, alpha: float, beta: float, k: float, groups: int = 1
) -> torch.Tensor:
    """The paper's text, Sec. 3.3: b^i = a^i / (k + alpha * sum_{j=max(lo, i-n/2)}^{min(hi, i+n/2)}
    (a^j)^2)^beta.

    lo/hi are the first/last channel of i's group (0 and N-1 for a single group). ``alpha`` is the
    coefficient of the sum as printed in the paper (no division by n here).
    """
    channels = a.shape[1]
    per_group = channels // groups
    outputs = []
    for i in range(channels):
        lo = (i // per_group) * per_group
        hi = lo + per_group - 1
        total = torch.zeros_like(a[:, i])
        for j in range(max(lo, i - n // 2), min(hi, i + n // 2) + 1):
            total = total + a[:, j] ** 2
        outputs.append(a[:, i] / (k + alpha * total) ** beta)
    return torch.stack(outputs, dim=1)


def cuda_convnet2_reference(
    a: torch.Tensor, size: int, scale: float, pow_: float, min_div: float
) -> torch.Tensor:
    """The authors' cuda-convnet2, cross-map response normalisation ([rnorm] layers).

    ``layer.py`` (NormLayerParser.add_params): ``scale /= size`` for cross-map normalisation.
    ``cudaconv3/src/conv_util.cu``: for filter j the window starts at ``-size/2 + j`` (C integer
    division, truncating towards zero) and holds ``size`` maps clipped to [0, numFilters); the
    denominator is ``minDiv + addScale * sum`` and the output ``imgs * denom^(-powScale)``.
    """
    add_scale = scale / size
    num_filters = a.shape[1]
    outputs = []
    for j in range(num_filters):
        start = j - size // 2  # -size/2 + j with C's truncating division (size > 0)
        end = min(num_filters, start + size)
        start = max(0, start)
        total = torch.zeros_like(a[:, j])
        for i in range(start, end):
            total = total + a[:, i] * a[:, i]
        outputs.append(a[:, j] * (min_div + add_scale * total) ** -pow_)
    return torch.stack(outputs, dim=1)


def caffe_reference(
    a: torch.Tensor, local_size: int, alpha: float, beta: float, k: float
) -> torch.Tensor:
    """Caffe's LRN layer, ACROSS_CHANNELS (``src/caffe/layers/lrn_layer.cpp``,
    CrossChannelForward_cpu): squares zero-padded by ``pre_pad = (size - 1) / 2`` maps on each
    side, ``scale_0 = k + alpha / size * sum`` of the first window, then the window slides one map
    at a time (add the entering square, subtract the leaving one); ``top = bottom * scale^-beta``.
    """
    channels = a.shape[1]
    pre_pad = (local_size - 1) // 2
    alpha_over_size = alpha / local_size
    # padded_square: channels + size - 1 maps, zero but for the squares at pre_pad .. (built by
    # concatenation rather than Caffe's in-place copy, so that autograd can follow it).
    def zeros(maps: int) -> torch.Tensor:
        return torch.zeros(a.shape[0], maps, *a.shape[2:], dtype=a.dtype)

    padded = torch.cat([zeros(pre_pad), a * a, zeros(local_size - 1 - pre_pad)], dim=1)
    scale = [k + alpha_over_size * padded[:, :local_size].sum(dim=1)]
    for c in range(1, channels):
        scale.append(
            scale[-1] + alpha_over_size * (padded[:, c + local_size - 1] - padded[:, c - 1])
        )
    return a * torch.stack(scale, dim=1) ** -beta


def per_group(fn: Callable[[torch.Tensor], torch.Tensor], groups: int) -> Callable:
    """Apply ``fn`` to each block of channels on its own (the two-column net's normalisation)."""
    return lambda a: torch.cat([fn(block) for block in a.chunk(groups, dim=1)], dim=1)


def source_reference(
    convention: str, size: int, alpha: float, beta: float, k: float, groups: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The convention's source formula, fed the same four numbers as the module."""
    if convention == "paper":
        return lambda a: reference_lrn(a, size, alpha, beta, k, groups)
    if convention == "authors":
        return per_group(lambda a: cuda_convnet2_reference(a, size, alpha, beta, k), groups)
    assert convention == "caffe"
    return per_group(lambda a: caffe_reference(a, size, alpha, beta, k), groups)


def _values_and_grads(fn, x: torch.Tensor, upstream: torch.Tensor):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    (y * upstream).sum().backward()
    return y.detach(), x.grad


CASES = [
    # shape, size, alpha, beta, k, groups
    ((2, 7, 3, 4), 5, 1e-4, 0.75, 2.0, 1),  # the paper's numbers
    ((2, 7, 3, 4), 5, 0.3, 0.75, 2.0, 1),  # strong normalisation, nonlinear regime
    ((1, 3, 2, 2), 5, 0.2, 0.75, 1.0, 1),  # N < n: every window is clamped
    ((2, 1, 3, 3), 3, 0.5, 0.5, 1.0, 1),  # a single channel
    ((2, 8, 2, 3), 3, 0.2, 0.75, 2.0, 1),  # even N, n = 3
    ((2, 6, 5), 5, 0.4, 1.0, 1.5, 1),  # (B, C, L) input
    ((2, 8, 2, 2), 5, 0.3, 0.75, 2.0, 2),  # two columns, normalised separately
    ((1, 12, 2, 2), 3, 0.3, 0.75, 1.0, 3),
]


def _input(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    # Activities of tens, like post-ReLU conv1 outputs on 0-255 pixels, so that alpha * sum is
    # not negligible against k.
    x = 10.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
    return x, torch.randn(shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("convention", LRN_CONVENTIONS)
@pytest.mark.parametrize(("shape", "size", "alpha", "beta", "k", "groups"), CASES)
def test_matches_source_formula(shape, size, alpha, beta, k, groups, convention) -> None:
    x, upstream = _input(shape)
    module = LocalResponseNorm(size, alpha, beta, k, convention=convention, groups=groups)
    per_term = alpha if convention == "paper" else alpha / size
    assert module.effective_alpha == pytest.approx(per_term)

    got, got_grad = _values_and_grads(module, x, upstream)
    want, want_grad = _values_and_grads(
        source_reference(convention, size, alpha, beta, k, groups), x, upstream
    )
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("convention", "source_k"), [("paper", 2.0), ("authors", 2.0), ("caffe", 1.0)]
)
def test_default_k_is_the_sources(convention: str, source_k: float) -> None:
    # The paper's k = 2; cuda-convnet2's ImageNet layer params [rnorm1] minDiv=2; Caffe's
    # LRNParameter k defaults to 1, as cuda-convnet v1's denominator 1 + addScale * sum.
    x, upstream = _input((2, 9, 3, 3))
    module = LocalResponseNorm(5, 1e-4, 0.75, convention=convention)
    assert module.k == source_k
    got, got_grad = _values_and_grads(module, x, upstream)
    want, want_grad = _values_and_grads(
        source_reference(convention, 5, 1e-4, 0.75, source_k, 1), x, upstream
    )
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-12)


def test_default_k_per_convention() -> None:
    paper = LocalResponseNorm()
    assert (paper.size, paper.alpha, paper.beta, paper.k) == (5, 1e-4, 0.75, 2.0)
    assert paper.effective_alpha == 1e-4
    authors = LocalResponseNorm(convention="authors")
    assert authors.k == 2.0
    assert authors.effective_alpha == pytest.approx(1e-4 / 5)
    caffe = LocalResponseNorm(convention="caffe")
    assert caffe.k == 1.0
    assert caffe.effective_alpha == pytest.approx(1e-4 / 5)
    for convention in LRN_CONVENTIONS:
        assert LocalResponseNorm(k=3.0, convention=convention).k == 3.0
    assert "convention='paper'" in repr(paper) and "k=2.0" in repr(paper)
    assert "convention='authors'" in repr(authors)


def test_torch_module_equivalences() -> None:
    x = 30.0 * torch.randn(2, 16, 4, 4, dtype=torch.float64)
    exact = {"rtol": 0.0, "atol": 0.0}
    # The paper's layer in torch's convention needs alpha * n.
    paper = LocalResponseNorm()(x)
    torch.testing.assert_close(nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)(x), paper)
    # The authors' and Caffe's layers are torch's own convention with k = 2 and k = 1: bit for
    # bit with impl="torch", to rounding with the fast implementation.
    for impl, tolerance in (("torch", exact), ("fast", {})):
        authors = LocalResponseNorm(5, 1e-4, 0.75, convention="authors", impl=impl)(x)
        torch.testing.assert_close(
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2)(x), authors, **tolerance
        )
        caffe = LocalResponseNorm(5, 1e-4, 0.75, convention="caffe", impl=impl)(x)
        torch.testing.assert_close(
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1)(x), caffe, **tolerance
        )

    # The authors' code with the paper's numbers is five times weaker than the printed formula:
    # the sum's share of the denominator, (a / b)^(1/beta) - k, shrinks by exactly n.
    assert not torch.allclose(authors, paper)
    mask = x.abs() > 1.0
    paper_share = (x / paper)[mask] ** (1 / 0.75) - 2
    authors_share = (x / authors)[mask] ** (1 / 0.75) - 2
    torch.testing.assert_close(paper_share / authors_share, torch.full_like(paper_share, 5.0))


def test_groups_keep_columns_independent() -> None:
    lrn = LocalResponseNorm(5, 0.5, groups=2)
    x = torch.randn(1, 8, 2, 2)
    y = lrn(x)
    x2 = x.clone()
    x2[:, 4:] += 5.0
    y2 = lrn(x2)
    torch.testing.assert_close(y[:, :4], y2[:, :4], rtol=0, atol=0)
    assert not torch.allclose(y[:, 4:], y2[:, 4:])
    with pytest.raises(ValueError, match="divisible"):
        lrn(torch.randn(1, 7, 2, 2))


def test_old_convention_name_points_to_the_new_ones() -> None:
    with pytest.raises(ValueError, match=r"\('paper', 'authors', 'caffe'\)") as info:
        LocalResponseNorm(convention="cuda_convnet")
    message = str(info.value)
    assert "'cuda_convnet' was renamed" in message
    assert "'authors'" in message and "'caffe'" in message


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match=r"\('paper', 'authors', 'caffe'\), got 'torch'$"):
        LocalResponseNorm(convention="torch")
    for size in (0, 4):
        with pytest.raises(ValueError, match="odd"):
            LocalResponseNorm(size=size)
    with pytest.raises(ValueError, match="alpha"):
        LocalResponseNorm(alpha=-1.0)
    with pytest.raises(ValueError, match="groups"):
        LocalResponseNorm(groups=0)


# -- the two implementations (impl="fast", the default, and impl="torch") -----------------------


@pytest.mark.parametrize("impl", LRN_IMPLS)
@pytest.mark.parametrize(("shape", "size", "alpha", "beta", "k", "groups"), CASES)
def test_each_impl_matches_the_paper_formula(shape, size, alpha, beta, k, groups, impl) -> None:
    x, upstream = _input(shape)
    module = LocalResponseNorm(size, alpha, beta, k, groups=groups, impl=impl)
    got, got_grad = _values_and_grads(module, x, upstream)
    want, want_grad = _values_and_grads(
        lambda a: reference_lrn(a, size, alpha, beta, k, groups), x, upstream
    )
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("size", "beta", "groups"), [(5, 0.75, 1), (5, 0.75, 2), (3, 0.6, 3)])
def test_fast_gradcheck(size: int, beta: float, groups: int) -> None:
    # The closed-form backward against finite differences of the forward, in float64.
    gen = torch.Generator().manual_seed(1)
    x = 5.0 * torch.randn(2, 6, 3, 2, dtype=torch.float64, generator=gen)
    module = LocalResponseNorm(size, 0.05, beta, 1.5, groups=groups, impl="fast")
    assert torch.autograd.gradcheck(module, (x.requires_grad_(),), eps=1e-6, atol=1e-7)


def test_fast_channels_last_and_float32() -> None:
    """At AlexNet's LRN1 (two columns of 48 maps, post-ReLU activities of tens), float32, in both
    memory layouts: equal to torch's kernel (in float64) to 1e-5."""
    gen = torch.Generator().manual_seed(2)
    x = (20.0 * torch.randn(3, 96, 9, 9, generator=gen)).relu()
    upstream = torch.randn(3, 96, 9, 9, generator=gen)
    want, want_grad = _values_and_grads(
        LocalResponseNorm(groups=2, impl="torch"), x.double(), upstream.double())
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout)
        got, got_grad = _values_and_grads(LocalResponseNorm(groups=2), xl, upstream)
        assert got.is_contiguous(memory_format=layout)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_grad.double(), want_grad, rtol=1e-5, atol=1e-5)


def test_fast_bfloat16_computes_in_float32() -> None:
    # Under autocast the LRN sees bf16 activities: the sum of squares and the power are taken in
    # float32 and the result rounded once to bf16 (relative error <= 2^-8).
    x = (20.0 * torch.randn(2, 16, 5, 5, generator=torch.Generator().manual_seed(3))).relu()
    want = reference_lrn(x.bfloat16().double(), 5, 1e-4, 0.75, 2.0)
    got = LocalResponseNorm()(x.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), want, rtol=2**-8, atol=1e-6)


def test_invalid_impl() -> None:
    with pytest.raises(ValueError, match=r"lrn impl must be one of \('fast', 'torch'\)"):
        LocalResponseNorm(impl="cudnn")
