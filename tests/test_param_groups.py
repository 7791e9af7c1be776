"""The optimizer's parameter groups (Sec. 5): weight decay on weights only, the bias learning rate,
a network's own groups used as given, every group divided the same number of times by the
schedulers, and the composed optimizer configs building them."""

import functools
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
