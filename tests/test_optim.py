"""PaperSGD against the update of Sec. 5, and against torch.optim.SGD; its fused one-pass update
against the four-pass one. The parameter groups it is given are tests/test_param_groups.py."""

import functools
import io

import pytest
import torch

from alexnet.training.optim import (
    PaperSGD,
    build_optimizer,
    paper_sgd,
)

GRADS = [
    torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64),
    torch.tensor([1.5, 0.25, -0.5], dtype=torch.float64),
    torch.tensor([-2.0, 1.0, 0.75], dtype=torch.float64),
    torch.tensor([0.1, -0.3, 1.2], dtype=torch.float64),
    torch.tensor([0.0, 2.0, -1.0], dtype=torch.float64),
]
W0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def run(optimizer_cls, lrs: list[float], **kwargs) -> torch.Tensor:
    """Apply the fixed GRADS with the learning rate lrs[t] at step t; return the weights."""
    w = torch.nn.Parameter(W0.clone())
    opt = optimizer_cls([w], lr=lrs[0], **kwargs)
    for grad, lr in zip(GRADS[: len(lrs)], lrs, strict=True):
        opt.param_groups[0]["lr"] = lr
        w.grad = grad.clone()
        opt.step()
    return w.detach()


def by_hand(lrs: list[float], momentum: float = 0.9, wd: float = 5e-4) -> torch.Tensor:
    # Sec. 5: v <- 0.9 v - 0.0005 eps w - eps g ; w <- w + v
    w, v = W0.clone(), torch.zeros_like(W0)
    for g, eps in zip(GRADS, lrs, strict=True):
        v = momentum * v - wd * eps * w - eps * g
        w = w + v
    return w


CONSTANT = [0.01] * 5
DROP = [0.01, 0.01, 0.01, 0.001, 0.001]  # lr / 10 after three steps


def test_first_step_by_hand() -> None:
    # v0 = 0: w1 = w0 - lr * (g + wd * w0).
    want = W0 - 0.01 * (GRADS[0] + 5e-4 * W0)
    torch.testing.assert_close(run(PaperSGD, [0.01], momentum=0.9), want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("lrs", [CONSTANT, DROP])
def test_matches_formula(lrs: list[float]) -> None:
    torch.testing.assert_close(run(PaperSGD, lrs), by_hand(lrs), rtol=1e-13, atol=1e-15)


def test_torch_sgd_same_at_constant_lr_but_not_after_a_change() -> None:
    torch_kwargs = {"momentum": 0.9, "weight_decay": 5e-4}
    # At a constant lr the velocity is -lr times torch's buffer, so the weights agree.
    torch.testing.assert_close(
        run(PaperSGD, CONSTANT), run(torch.optim.SGD, CONSTANT, **torch_kwargs), rtol=1e-13,
        atol=1e-15,
    )  # fmt: skip
    # After lr / 10 torch rescales the momentum accumulated at the old lr; the paper does not.
    paper, torch_sgd = run(PaperSGD, DROP), run(torch.optim.SGD, DROP, **torch_kwargs)
    assert (paper - torch_sgd).abs().max() > 1e-3
    # torch's result is what the paper's formula gives if v is rescaled by lr_new / lr_old.
    w, v = W0.clone(), torch.zeros_like(W0)
    for t, (g, eps) in enumerate(zip(GRADS, DROP, strict=True)):
        if t > 0 and eps != DROP[t - 1]:
            v = v * eps / DROP[t - 1]
        v = 0.9 * v - 5e-4 * eps * w - eps * g
        w = w + v
    torch.testing.assert_close(torch_sgd, w, rtol=1e-13, atol=1e-15)


def test_param_groups_and_missing_grads() -> None:
    a = torch.nn.Parameter(W0.clone())
    b = torch.nn.Parameter(W0.clone())
    frozen = torch.nn.Parameter(W0.clone())
    opt = PaperSGD(
        [{"params": [a]}, {"params": [b], "lr": 0.1, "weight_decay": 0.0}, {"params": [frozen]}],
        lr=0.01,
    )
    a.grad, b.grad = GRADS[0].clone(), GRADS[0].clone()
    opt.step()
    torch.testing.assert_close(a.detach(), W0 - 0.01 * (GRADS[0] + 5e-4 * W0))
    torch.testing.assert_close(b.detach(), W0 - 0.1 * GRADS[0])
    assert torch.equal(frozen.detach(), W0)  # grad None: untouched, no state
    assert frozen not in opt.state


def test_closure_returns_loss() -> None:
    w = torch.nn.Parameter(W0.clone())
    opt = PaperSGD([w], lr=0.1)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx((W0**2).sum().item())
    assert opt.step() is None


def test_step_lr_scheduler() -> None:
    w = torch.nn.Parameter(W0.clone())
    opt = PaperSGD([w], lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.1)
    for g in GRADS:
        w.grad = g.clone()
        opt.step()
        sched.step()
    torch.testing.assert_close(w.detach(), by_hand(DROP), rtol=1e-13, atol=1e-15)


def test_state_dict_round_trip() -> None:
    w = torch.nn.Parameter(W0.clone())
    opt = PaperSGD([w], lr=0.01)
    for g in GRADS[:2]:
        w.grad = g.clone()
        opt.step()
    # Through bytes, as a checkpoint would be: load_state_dict may otherwise alias the tensors.
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)

    w2 = torch.nn.Parameter(w.detach().clone())
    opt2 = PaperSGD([w2], lr=0.5, momentum=0.5)
    opt2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == 0.01 and opt2.param_groups[0]["momentum"] == 0.9
    torch.testing.assert_close(opt2.state[w2]["velocity"], opt.state[w]["velocity"])
    for g in GRADS[2:]:
        w.grad, w2.grad = g.clone(), g.clone()
        opt.step()
        opt2.step()
    torch.testing.assert_close(w2.detach(), w.detach(), rtol=0, atol=0)
    torch.testing.assert_close(w.detach(), by_hand(CONSTANT), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -0.1}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"weight_decay": -1e-4}, "weight_decay"),
    ],
)
def test_invalid_hyperparameters(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PaperSGD([torch.nn.Parameter(W0.clone())], **kwargs)


# -- the fused update: one pass, the same update to float32 rounding ------------------------------
@pytest.mark.parametrize("lrs", [CONSTANT, DROP])
def test_fused_float32_matches_the_formula(lrs: list[float]) -> None:
    w = torch.nn.Parameter(W0.float().clone())
    opt = PaperSGD([w], lr=lrs[0], fused=True)
    for grad, lr in zip(GRADS, lrs, strict=True):
        opt.param_groups[0]["lr"] = lr
        w.grad = grad.float().clone()
        opt.step()
    torch.testing.assert_close(w.detach().double(), by_hand(lrs), rtol=2e-6, atol=1e-7)


def _cifar_net_steps(fused: bool, steps: int = 8) -> tuple[dict, dict]:
    """A real net's groups (per-layer decay, biases at twice the rate), 8 steps with an lr drop."""
    from alexnet.models.cifar_local import CifarLocalNet

    torch.manual_seed(0)
    net = CifarLocalNet(lrn=False, local3_filters=32)
    opt = build_optimizer(functools.partial(paper_sgd, lr=0.01, fused=fused), net)
    generator = torch.Generator().manual_seed(1)
    for step in range(steps):
        if step == 4:
            for group in opt.param_groups:
                group["lr"] /= 10
        for p in net.parameters():
            p.grad = torch.randn(p.shape, generator=generator)
        opt.step()
    params = [p for group in opt.param_groups for p in group["params"]]
    return ({k: v.clone() for k, v in net.state_dict().items()},
            {i: opt.velocity(p) for i, p in enumerate(params)})


def test_fused_and_four_pass_updates_agree_to_float32_rounding() -> None:
    fused_weights, fused_velocity = _cifar_net_steps(fused=True)
    loop_weights, loop_velocity = _cifar_net_steps(fused=False)
    assert fused_weights.keys() == loop_weights.keys()
    for name in loop_weights:
        torch.testing.assert_close(fused_weights[name], loop_weights[name], rtol=1e-5, atol=1e-6)
    assert fused_velocity.keys() == loop_velocity.keys()
    for index in loop_velocity:
        torch.testing.assert_close(fused_velocity[index], loop_velocity[index], rtol=1e-5,
                                   atol=1e-7)
    # Not identical: the fused kernel rounds the sum once, the four passes four times.
    assert any(not torch.equal(fused_weights[n], loop_weights[n]) for n in loop_weights)


def test_fused_falls_back_where_the_kernel_does_not_apply() -> None:
    # float64 tensors and a zero learning rate take the four passes (and still step).
    w64 = torch.nn.Parameter(W0.clone())
    opt = PaperSGD([w64], lr=0.01, fused=True)
    w64.grad = GRADS[0].clone()
    opt.step()
    torch.testing.assert_close(w64.detach(), W0 - 0.01 * (GRADS[0] + 5e-4 * W0), rtol=0,
                               atol=1e-15)
    w32 = torch.nn.Parameter(torch.ones(3))
    opt = PaperSGD([w32], lr=0.0, fused=True)
    w32.grad = torch.ones(3)
    opt.step()
    assert torch.equal(w32.detach(), torch.ones(3))


def test_fused_and_four_pass_checkpoints_load_into_each_other() -> None:
    """A checkpoint of either form resumes in the other: the velocity carries over."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    grads = [torch.randn(5) for _ in range(6)]
    for first, second in ((True, False), (False, True)):
        a = torch.nn.Parameter(w.detach().clone())
        opt = PaperSGD([a], lr=0.01, fused=first)
        for g in grads[:3]:
            a.grad = g.clone()
            opt.step()
        saved = opt.state_dict()
        assert set(saved["state"][0]) == ({"buffer", "buffer_lr"} if first else {"velocity"})
        b = torch.nn.Parameter(a.detach().clone())
        other = PaperSGD([b], lr=0.001, fused=second)  # resumed after a drop of the rate
        other.load_state_dict(saved)
        other.param_groups[0]["lr"] = 0.001
        ref = torch.nn.Parameter(a.detach().clone())  # the four passes from the same velocity
        ref_opt = PaperSGD([ref], lr=0.001, fused=False)
        ref_opt.state[ref]["velocity"] = opt.velocity(a)
        for g in grads[3:]:
            b.grad, ref.grad = g.clone(), g.clone()
            other.step()
            ref_opt.step()
        torch.testing.assert_close(b.detach(), ref.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(other.velocity(b), ref_opt.velocity(ref), rtol=1e-5, atol=1e-8)
