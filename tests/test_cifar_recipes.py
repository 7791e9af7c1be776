"""The paper's four-layer CIFAR-10 nets as they are trained: their per-layer learning rates and
weight decays against cuda-convnet's layer-params files, its update rule, the model configs, the
ablations on these nets, and the cifar10_11pct / cifar10_13pct recipes and their schedule."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml
from cuda_convnet_files import EPS_B, EPS_W, MOMENTUM, WC_11PCT, WC_13PCT, net_11pct, net_13pct
from helpers import CONF, compose_config, compose_train, n_params, run_entry_point
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn
from torch.nn import functional as F

from alexnet.jobs.train import train
from alexnet.models import CifarLocalNet, LocalResponseNorm
from alexnet.models.cifar_local import LAYERS
from alexnet.training.optim import paper_sgd

# --- per-layer learning rates and weight decays (the layer-params files) -------------------------


@pytest.mark.parametrize(("make", "wc"), [(net_11pct, WC_11PCT), (net_13pct, WC_13PCT)])
def test_param_groups_are_the_layer_params_files(make, wc) -> None:
    net = make()
    groups = net.param_groups()
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())  # each exactly once
    by_name = {g["name"]: g for g in groups}
    for layer in LAYERS:
        weight, bias = by_name[f"{layer}.weight"], by_name[f"{layer}.bias"]
        assert weight["params"] == [getattr(net, layer).weight]
        assert bias["params"] == [getattr(net, layer).bias]
        assert EPS_W * weight["lr_mult"] == pytest.approx(EPS_W)
        assert EPS_W * bias["lr_mult"] == pytest.approx(EPS_B)
        assert (weight["weight_decay"], bias["weight_decay"]) == (wc[layer], 0.0)

    # Through the optimizer builder, at the recipes' optimizer.lr = epsW.
    optimizer = paper_sgd(net, lr=EPS_W, momentum=MOMENTUM, weight_decay=5e-4)
    built = {g["name"]: g for g in optimizer.param_groups}
    for layer in LAYERS:
        assert built[f"{layer}.weight"]["lr"] == pytest.approx(EPS_W)
        assert built[f"{layer}.bias"]["lr"] == pytest.approx(EPS_B)
        assert built[f"{layer}.weight"]["weight_decay"] == wc[layer]
        assert built[f"{layer}.bias"]["weight_decay"] == 0.0
    # optimizer.weight_decay = 0 (+ablation=no_weight_decay) switches every layer's decay off.
    off = paper_sgd(net, lr=EPS_W, momentum=MOMENTUM, weight_decay=0.0)
    assert all(g["weight_decay"] == 0.0 for g in off.param_groups)


def test_updates_are_cuda_convnets() -> None:
    """Two steps of the built optimizer against weights.cuh's Weights::update, written out:
    inc = mom * inc + (eps / batch) * (minus the summed gradient) - wc * eps * w; w += inc."""
    torch.manual_seed(0)
    net = net_11pct(crop_size=6).double()
    optimizer = paper_sgd(net, lr=EPS_W, momentum=MOMENTUM, weight_decay=5e-4)
    eps = {"weight": EPS_W, "bias": EPS_B}
    x, y = torch.randn(4, 3, 6, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    expected = {name: p.detach().clone() for name, p in net.named_parameters()}
    inc = {name: torch.zeros_like(p) for name, p in expected.items()}
    for _ in range(2):
        optimizer.zero_grad()
        loss = F.cross_entropy(net(x), y, reduction="sum")  # cuda-convnet sums over the batch
        (loss / len(x)).backward()  # the mean, as the training module's loss
        for name, p in net.named_parameters():
            layer, kind = name.split(".")
            wc = WC_11PCT[layer] if kind == "weight" else 0.0
            grad_sum = p.grad * len(x)
            inc[name] = (MOMENTUM * inc[name] - eps[kind] / len(x) * grad_sum
                         - wc * eps[kind] * expected[name])
            expected[name] = expected[name] + inc[name]
        optimizer.step()
        for name, p in net.named_parameters():
            torch.testing.assert_close(p.detach(), expected[name])


# --- configs and recipes --------------------------------------------------------------------------


def test_model_configs_build_the_files_nets(tmp_path: Path) -> None:
    for name, make in (("cifar_11pct", net_11pct), ("cifar_13pct", net_13pct)):
        cfg = compose_train(tmp_path, "experiment=none", "data=cifar10", f"model={name}")
        net = instantiate(cfg.model, num_classes=10)
        reference = make()
        assert type(net) is CifarLocalNet
        assert n_params(net) == n_params(reference)
        assert [type(m) for m in net.modules()] == [type(m) for m in reference.modules()]
        assert net.weight_decay == reference.weight_decay and net.bias_lr_mult == 2.0
        norms = [m for m in net.modules() if isinstance(m, LocalResponseNorm)]
        assert all((m.k, m.effective_alpha) == (1.0, pytest.approx(1e-3 / 9)) for m in norms)


def test_no_lrn_and_tanh_ablations_on_the_11pct_net(tmp_path: Path) -> None:
    base = compose_train(tmp_path, "experiment=cifar10_11pct")
    no_lrn = compose_train(tmp_path, "experiment=cifar10_11pct", "+ablation=no_lrn")
    assert no_lrn.model.lrn is False and base.model.lrn is True
    net = instantiate(no_lrn.model, num_classes=10)
    assert not any(isinstance(m, LocalResponseNorm) for m in net.modules())
    # Only the normalisation goes: local3 keeps the 11pct file's 64 filters.
    assert net.local3.out_channels == 64 and n_params(net) == 2_112_970
    tanh = instantiate(compose_train(tmp_path, "experiment=cifar10_11pct", "+ablation=tanh").model,
                       num_classes=10)
    assert sum(isinstance(m, nn.Tanh) for m in tanh.modules()) == 4


def _model_switches(ablation: str) -> set[str]:
    declared = yaml.safe_load((CONF / "ablation" / f"{ablation}.yaml").read_text())
    return {key.split(".", 1)[1] for entry in declared["ablations"].values()
            for key in entry["changes"] if key.startswith("model.")}


ABLATION_FILES = sorted(p.stem for p in (CONF / "ablation").glob("*.yaml"))


@pytest.mark.parametrize("ablation", ABLATION_FILES)
def test_every_ablation_builds_or_names_the_missing_switch(ablation: str, tmp_path: Path) -> None:
    """An ablation of a switch the CIFAR-10 nets do not have (AlexNet's columns, pooling, dropout,
    middle conv) stops at instantiation with the switch's name; the others build."""
    accepted = set(inspect.signature(CifarLocalNet).parameters)
    missing = _model_switches(ablation) - accepted
    cfg = compose_train(tmp_path, "experiment=cifar10_11pct", f"+ablation={ablation}")
    if missing:
        with pytest.raises((InstantiationException, TypeError)) as err:
            instantiate(cfg.model, num_classes=10)
        assert any(key in str(err.value) for key in missing)
    else:
        assert isinstance(instantiate(cfg.model, num_classes=10), CifarLocalNet)


def test_an_alexnet_only_ablation_is_a_one_line_error(tmp_path: Path, data_dir: Path) -> None:
    result = run_entry_point(
        "train.py", ["experiment=cifar_11pct_synthetic", "+ablation=one_gpu",
                     "data.train_per_class=2", "data.val_per_class=1"], tmp_path, data_dir)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr and "columns" in result.stderr
    assert not list((tmp_path / "logs").rglob("summary.json"))


def test_the_recipes_are_the_layer_params_files(tmp_path: Path) -> None:
    for name, model in (("cifar10_11pct", "cifar_11pct"), ("cifar10_13pct", "cifar_13pct")):
        cfg = compose_train(tmp_path, f"experiment={name}")
        assert cfg.model._target_ == "alexnet.models.CifarLocalNet"
        assert cfg.data._target_.endswith("PreparedDataModule") and cfg.data.source == "cifar10"
        assert (cfg.data.image_size, cfg.data.crop_size, cfg.data.batch_size) == (32, 24, 128)
        assert cfg.data.crop and cfg.data.flip and not cfg.data.pca_jitter
        assert cfg.data.mean == "image" and cfg.data.scale == 1.0
        assert cfg.optimizer._target_ == "alexnet.training.optim.paper_sgd"
        assert (cfg.optimizer.lr, cfg.optimizer.momentum) == (EPS_W, MOMENTUM)
        assert cfg.optimizer.weight_decay > 0  # 0 would switch the files' wc off
        assert cfg.scheduler._target_ == "torch.optim.lr_scheduler.MultiStepLR"
        assert (list(cfg.scheduler.milestones), cfg.scheduler.gamma) == ([500, 510], 0.1)
        assert cfg.trainer.max_epochs == 520
        assert model in cfg.tags
    assert dict(compose_train(tmp_path, "experiment=cifar10_13pct").model.weight_decay) == WC_13PCT
    assert dict(compose_train(tmp_path, "experiment=cifar10_11pct").model.weight_decay) == WC_11PCT


def test_the_schedule_lowers_the_rates_as_the_file(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "experiment=cifar10_11pct")
    optimizer = instantiate(cfg.optimizer)(net_11pct(crop_size=6))
    scheduler = instantiate(cfg.scheduler)(optimizer)
    rates = []
    for _ in range(cfg.trainer.max_epochs):
        rates.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        optimizer.step()
        scheduler.step()
    for epoch, factor in ((0, 1.0), (499, 1.0), (500, 0.1), (509, 0.1), (510, 0.01), (519, 0.01)):
        assert rates[epoch]["conv1.weight"] == pytest.approx(EPS_W * factor)
        assert rates[epoch]["fc10.bias"] == pytest.approx(EPS_B * factor)


def test_the_11pct_net_trains_on_small_builtin_images(tmp_path: Path, data_dir: Path) -> None:
    cfg = compose_config(
        "train",
        ["experiment=cifar_11pct_synthetic", "data.train_per_class=2", "data.val_per_class=1",
         "data.batch_size=4", "data.num_workers=0", "trainer.fast_dev_run=true",
         "~callbacks.progress_bar", "trainer.enable_progress_bar=false"],
        tmp_path, data_dir,
    )
    summary = train(cfg)
    assert summary["config"]["model"]["_target_"] == "alexnet.models.CifarLocalNet"
    assert (summary["config"]["data"]["image_size"], summary["config"]["data"]["crop_size"]) == (
        32, 24,
    )  # fmt: skip
    assert summary["num_params"] == 2_112_970

