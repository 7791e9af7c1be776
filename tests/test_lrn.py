"""Local response normalisation against a direct, loop-based transcription of Sec. 3.3."""

import pytest
import torch
from torch import nn

from alexnet.models import LRN_CONVENTIONS, LocalResponseNorm


def reference_lrn(
    a: torch.Tensor, n: int, alpha: float, beta: float, k: float, groups: int = 1
) -> torch.Tensor:
    """b^i = a^i / (k + alpha * sum_{j=max(lo, i-n/2)}^{min(hi, i+n/2)} (a^j)^2)^beta.

    lo/hi are the first/last channel of i's group (0 and N-1 for a single group). ``alpha`` is the
    coefficient of the sum as written in the paper (no division by n here).
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


@pytest.mark.parametrize("convention", LRN_CONVENTIONS)
@pytest.mark.parametrize(("shape", "size", "alpha", "beta", "k", "groups"), CASES)
def test_matches_loop_reference(shape, size, alpha, beta, k, groups, convention) -> None:
    gen = torch.Generator().manual_seed(0)
    # Activities of tens, like post-ReLU conv1 outputs on 0-255 pixels, so that alpha * sum is
    # not negligible against k.
    x = 10.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
    upstream = torch.randn(shape, generator=gen, dtype=torch.float64)
    module = LocalResponseNorm(size, alpha, beta, k, convention=convention, groups=groups)
    per_term = alpha if convention == "paper" else alpha / size
    assert module.effective_alpha == pytest.approx(per_term)

    got, got_grad = _values_and_grads(module, x, upstream)
    want, want_grad = _values_and_grads(
        lambda t: reference_lrn(t, size, per_term, beta, k, groups), x, upstream
    )
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-12)


def test_default_k_per_convention() -> None:
    paper = LocalResponseNorm()
    assert (paper.size, paper.alpha, paper.beta, paper.k) == (5, 1e-4, 0.75, 2.0)
    assert paper.effective_alpha == 1e-4
    caffe = LocalResponseNorm(convention="cuda_convnet")
    assert caffe.k == 1.0
    assert caffe.effective_alpha == pytest.approx(1e-4 / 5)
    assert LocalResponseNorm(k=3.0, convention="cuda_convnet").k == 3.0
    assert "convention='paper'" in repr(paper) and "k=2.0" in repr(paper)


def test_torch_module_equivalences() -> None:
    x = 30.0 * torch.randn(2, 16, 4, 4, dtype=torch.float64)
    paper = LocalResponseNorm()(x)
    # The paper's layer in torch's convention needs alpha * n.
    torch.testing.assert_close(nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)(x), paper)
    # cuda-convnet/Caffe's convention is torch's own.
    cuda = LocalResponseNorm(5, 1e-4, 0.75, convention="cuda_convnet")(x)
    torch.testing.assert_close(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1)(x), cuda)

    # Passing the paper's alpha to torch is five times weaker: the sum's share of the
    # denominator, (a / b)^(1/beta) - k, shrinks by exactly n.
    weak = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2)(x)
    assert not torch.allclose(weak, paper)
    mask = x.abs() > 1.0
    paper_share = (x / paper)[mask] ** (1 / 0.75) - 2
    weak_share = (x / weak)[mask] ** (1 / 0.75) - 2
    torch.testing.assert_close(paper_share / weak_share, torch.full_like(paper_share, 5.0))


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


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match=r"\('paper', 'cuda_convnet'\)"):
        LocalResponseNorm(convention="caffe")
    for size in (0, 4):
        with pytest.raises(ValueError, match="odd"):
            LocalResponseNorm(size=size)
    with pytest.raises(ValueError, match="alpha"):
        LocalResponseNorm(alpha=-1.0)
    with pytest.raises(ValueError, match="groups"):
        LocalResponseNorm(groups=0)
