"""PaperSGD against the update of Sec. 5, and against torch.optim.SGD; the parameter groups
(weight decay on weights only, the bias learning rate, a network's own groups) and the schedulers
over them."""

import functools
import io
from pathlib import Path

import pytest
import torch
from helpers import compose_config
from hydra.utils import instantiate

from alexnet.training.optim import (
    PaperSGD,
    ReduceLROnPlateau,
    build_optimizer,
    paper_sgd,
    param_groups,
    torch_sgd,
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


# -- parameter groups: weight decay on weights only, the bias learning rate ----------------------

class TinyNet(torch.nn.Module):
    """One weight matrix and one bias, with known values, in float64 so that a decay term of
    lr * wd * w stands far above rounding."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2, dtype=torch.float64)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.25, 1.5, -1.0]]))
            self.fc.bias.copy_(torch.tensor([1.0, -0.5]))


WEIGHT_GRAD = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]], dtype=torch.float64)
BIAS_GRAD = torch.tensor([0.3, -0.7], dtype=torch.float64)


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual.detach(), expected, rtol=0, atol=1e-14)


def one_step(factory, net: torch.nn.Module | None = None) -> tuple[torch.nn.Module, dict]:
    """One update of TinyNet with fixed gradients; returns the net and its values before."""
    net = net or TinyNet()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    optimizer = build_optimizer(factory, net)
    net.fc.weight.grad, net.fc.bias.grad = WEIGHT_GRAD.clone(), BIAS_GRAD.clone()
    optimizer.step()
    return net, before


@pytest.mark.parametrize("builder", [paper_sgd, torch_sgd])
def test_biases_do_not_decay_by_default(builder) -> None:
    lr, wd = 0.01, 5e-4
    net, w0 = one_step(functools.partial(builder, lr=lr, weight_decay=wd))
    # First step, v0 = 0: w1 = w0 - lr (g + wd w0) for weights, b1 = b0 - lr g for biases.
    close(net.fc.weight.detach(),
                               w0["fc.weight"] - lr * (WEIGHT_GRAD + wd * w0["fc.weight"]))
    close(net.fc.bias.detach(), w0["fc.bias"] - lr * BIAS_GRAD)


@pytest.mark.parametrize("builder", [paper_sgd, torch_sgd])
def test_decay_biases_true_decays_them_too(builder) -> None:
    lr, wd = 0.01, 0.05  # a large decay, so that the difference is far above rounding
    net, w0 = one_step(functools.partial(builder, lr=lr, weight_decay=wd, decay_biases=True))
    close(net.fc.bias.detach(),
                               w0["fc.bias"] - lr * (BIAS_GRAD + wd * w0["fc.bias"]))
    close(net.fc.weight.detach(),
                               w0["fc.weight"] - lr * (WEIGHT_GRAD + wd * w0["fc.weight"]))


@pytest.mark.parametrize("builder", [paper_sgd, torch_sgd])
def test_bias_lr_mult_doubles_the_bias_step(builder) -> None:
    lr = 0.01
    one, w0 = one_step(functools.partial(builder, lr=lr))
    two, _ = one_step(functools.partial(builder, lr=lr, bias_lr_mult=2.0))
    step_one = one.fc.bias.detach() - w0["fc.bias"]
    step_two = two.fc.bias.detach() - w0["fc.bias"]
    close(step_two, 2 * step_one)
    close(step_two, -2 * lr * BIAS_GRAD)
    close(two.fc.weight, one.fc.weight)  # the weights' step is unchanged


def test_groups_layout_and_what_a_bias_is() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.Linear(4, 2))
    groups = param_groups(net, lr=0.01, weight_decay=5e-4, bias_lr_mult=2.0)
    assert [g["name"] for g in groups] == ["weights", "biases"]
    # Every parameter of one dimension counts as a bias: the norm layer's scale too.
    assert [tuple(p.shape) for p in groups[0]["params"]] == [(4, 3, 3, 3), (2, 4)]
    assert [tuple(p.shape) for p in groups[1]["params"]] == [(4,), (4,), (4,), (2,)]
    assert (groups[0]["lr"], groups[0]["weight_decay"]) == (0.01, 5e-4)
    assert (groups[1]["lr"], groups[1]["weight_decay"]) == (0.02, 0.0)
    # Both groups exist even when one is empty, so that the layout never changes.
    only_biases = param_groups([torch.zeros(3, requires_grad=True)], lr=0.01, weight_decay=5e-4)
    assert [len(g["params"]) for g in only_biases] == [0, 1]
    named = param_groups(net.named_parameters(), lr=0.01, weight_decay=5e-4)
    assert [len(g["params"]) for g in named] == [2, 4]
    with pytest.raises(ValueError, match="bias_lr_mult"):
        param_groups(net, lr=0.01, weight_decay=5e-4, bias_lr_mult=-1.0)


class LayerParamsNet(TinyNet):
    """A network with explicit per-layer settings, as from a cuda-convnet layer-params file."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(2, 2, dtype=torch.float64)

    def param_groups(self) -> list[dict]:
        return [
            {"params": [self.fc.weight], "lr_mult": 1.0, "weight_decay": 0.004},
            {"params": [self.fc.bias], "lr_mult": 2.0, "weight_decay": 0.0},
            {"params": list(self.head.parameters()), "name": "head"},
        ]


def test_a_networks_own_param_groups_are_used_as_given() -> None:
    lr, wd = 0.01, 5e-4
    net = LayerParamsNet()
    groups = param_groups(net, lr=lr, weight_decay=wd, decay_biases=True, bias_lr_mult=3.0)
    # decay_biases and bias_lr_mult do not apply: the network's settings do.
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [
        (0.01, 0.004), (0.02, 0.0), (0.01, wd)]
    assert groups[2]["name"] == "head"
    net, w0 = one_step(functools.partial(paper_sgd, lr=lr, weight_decay=wd), net)
    close(net.fc.weight.detach(),
                               w0["fc.weight"] - lr * (WEIGHT_GRAD + 0.004 * w0["fc.weight"]))
    close(net.fc.bias.detach(), w0["fc.bias"] - 2 * lr * BIAS_GRAD)


def test_a_networks_param_groups_must_hold_every_parameter_once() -> None:
    net = LayerParamsNet()
    net.param_groups = lambda: [{"params": [net.fc.weight, net.fc.bias]}]
    with pytest.raises(ValueError, match="leaves out head.weight, head.bias"):
        param_groups(net, lr=0.01, weight_decay=5e-4)
    net.param_groups = lambda: [{"params": list(net.parameters())}, {"params": [net.fc.bias]}]
    with pytest.raises(ValueError, match="in two of its param_groups"):
        param_groups(net, lr=0.01, weight_decay=5e-4)
    net.param_groups = lambda: [{"params": list(net.parameters()), "lr": 0.1}]
    with pytest.raises(ValueError, match="lr_mult"):
        param_groups(net, lr=0.01, weight_decay=5e-4)


@pytest.mark.parametrize("net", [TinyNet, LayerParamsNet])
def test_no_weight_decay_zeroes_every_group(net) -> None:
    """optimizer.weight_decay=0 (the no_weight_decay ablation) switches decay off everywhere,
    a network's own per-layer values included."""
    for builder in (paper_sgd, torch_sgd):
        optimizer = build_optimizer(
            functools.partial(builder, weight_decay=0.0, decay_biases=True), net())
        assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0] * len(
            optimizer.param_groups)


def test_a_plain_optimizer_class_gets_the_parameters() -> None:
    net = TinyNet()
    optimizer = build_optimizer(functools.partial(torch.optim.SGD, lr=0.1), net)
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["params"] == list(net.parameters())


def test_schedulers_divide_every_group_the_same_number_of_times() -> None:
    net = LayerParamsNet()
    optimizer = paper_sgd(net, lr=0.01)  # groups at 0.01, 0.02, 0.01
    plateau = ReduceLROnPlateau(optimizer, factor=0.1, patience=0, min_lr=0.01 / 1000)
    for _ in range(10):  # an error that never improves
        plateau.step(0.5)
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs == pytest.approx([1e-5, 2e-5, 1e-5])  # three divisions each, no more
    optimizer = paper_sgd(TinyNet(), lr=0.01, bias_lr_mult=2.0)
    step = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
    for _ in range(2):
        optimizer.step()
        step.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4, 2e-4])


@pytest.mark.parametrize("name", ["sgd_paper", "torch_sgd"])
def test_the_composed_configs_build_the_optimizer(name: str, tmp_path: Path) -> None:
    cfg = compose_config("train", ["experiment=none", f"optimizer={name}", "scheduler=plateau"],
                         tmp_path, tmp_path)
    assert cfg.optimizer.decay_biases is False and cfg.optimizer.bias_lr_mult == 1.0
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.optimizer.momentum) == (
        0.01, 5e-4, 0.9)
    net = TinyNet()
    optimizer = build_optimizer(instantiate(cfg.optimizer), net)
    assert type(optimizer) is (PaperSGD if name == "sgd_paper" else torch.optim.SGD)
    weights, biases = optimizer.param_groups
    assert weights["params"] == [net.fc.weight] and biases["params"] == [net.fc.bias]
    assert (weights["weight_decay"], biases["weight_decay"]) == (5e-4, 0.0)
    assert weights["lr"] == biases["lr"] == 0.01 and weights["momentum"] == 0.9
    scheduler = instantiate(cfg.scheduler)(optimizer)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert scheduler.min_lrs == pytest.approx([1e-5, 1e-5])
    # The switches, from the command line.
    cfg = compose_config("train", ["experiment=none", f"optimizer={name}",
                                   "optimizer.decay_biases=true", "optimizer.bias_lr_mult=2",
                                   "+ablation=no_weight_decay"], tmp_path, tmp_path)
    optimizer = build_optimizer(instantiate(cfg.optimizer), TinyNet())
    assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [
        (0.01, 0.0), (0.02, 0.0)]
    assert instantiate(cfg.scheduler)(optimizer).min_lrs == pytest.approx([1e-5, 2e-5])


def test_the_module_builds_the_optimizer_from_its_network(tmp_path: Path) -> None:
    from alexnet.training.module import ImageClassifier

    net = TinyNet()
    module = ImageClassifier(net, optimizer=functools.partial(paper_sgd, lr=0.01),
                             scheduler=functools.partial(ReduceLROnPlateau, min_lr=1e-5),
                             num_classes=2)
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"]
    assert [g["name"] for g in optimizer.param_groups] == ["weights", "biases"]
    assert configured["lr_scheduler"]["scheduler"].min_lrs == [1e-5, 1e-5]


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
