"""Each ablation changes exactly what it declares, in the config and in the built modules, runs,
combines with the others, and refuses contradictions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import (
    ABLATIONS,
    TINY,
    compose_config,
    compose_train,
    errors_by_hand,
    n_params,
    train_keeping_the_run,
)
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from alexnet.claims import load_claims
from alexnet.models import LocalResponseNorm
from alexnet.training.ablation import applied_ablations

CLAIMS = load_claims()  # the claims only: claims.yaml's `headline` is not one
# Overrides a baseline needs before an ablation changes anything (no_ten_crop: experiment=paper,
# the only one with the 10-patch test), from the claim the ablation tests.
BASELINES = {claim["ablation"]: claim.get("baseline", []) for claim in CLAIMS.values()}
# The LRN conventions of the authors' code and of Caffe: variants, not claims (claim: null).
LRN_VARIANTS = ("lrn_authors", "lrn_caffe")


def _flat(cfg: DictConfig) -> dict[str, object]:
    flat: dict[str, object] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablation_changes_exactly_what_it_declares(name: str, tmp_path: Path) -> None:
    baseline = BASELINES.get(name, [])
    base = _flat(compose_train(tmp_path, *baseline))
    ablated_cfg = compose_train(tmp_path, *baseline, f"+ablation={name}")
    ablated = _flat(ablated_cfg)
    declared = set(ablated_cfg.ablations[name].changes)
    changed = {
        key for key in base.keys() | ablated.keys()
        if not key.startswith("ablations.") and base.get(key) != ablated.get(key)
    }
    assert changed == declared


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablation_names_a_claim_of_the_paper(name: str, tmp_path: Path) -> None:
    entry = compose_train(tmp_path, f"+ablation={name}").ablations[name]
    if entry.claim is None:  # an implementation variant, not a claim of the paper
        assert name in LRN_VARIANTS
    else:
        assert entry.claim in CLAIMS
        assert CLAIMS[entry.claim]["ablation"] == name


def _net(tmp_path: Path, *overrides: str) -> nn.Module:
    cfg = compose_train(tmp_path, *overrides)
    return instantiate(cfg.model, num_classes=10)


def _types(net: nn.Module) -> list[str]:
    return [type(m).__name__ for m in net.modules()]


def test_modules_no_lrn(tmp_path: Path) -> None:
    base, ablated = _net(tmp_path), _net(tmp_path, "+ablation=no_lrn")
    assert sum(isinstance(m, LocalResponseNorm) for m in base.modules()) == 2
    assert not any(isinstance(m, LocalResponseNorm) for m in ablated.modules())
    assert [n for n, _ in base.named_parameters()] == [n for n, _ in ablated.named_parameters()]


def test_modules_tanh(tmp_path: Path) -> None:
    base, ablated = _net(tmp_path), _net(tmp_path, "+ablation=tanh")
    assert _types(base).count("ReLU") == 7 and "Tanh" not in _types(base)
    assert _types(ablated).count("Tanh") == 7 and "ReLU" not in _types(ablated)


def test_modules_plain_pool(tmp_path: Path) -> None:
    pools = [m for m in _net(tmp_path, "+ablation=plain_pool").modules()
             if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.kernel_size == 2 and p.stride == 2 for p in pools)
    base_pools = [m for m in _net(tmp_path).modules() if isinstance(m, nn.MaxPool2d)]
    assert all(p.kernel_size == 3 and p.stride == 2 for p in base_pools)


def test_modules_no_dropout(tmp_path: Path) -> None:
    drops = [m for m in _net(tmp_path, "+ablation=no_dropout").modules()
             if isinstance(m, nn.Dropout)]
    assert all(d.p == 0.0 for d in drops)
    assert [d.p for d in _net(tmp_path).modules() if isinstance(d, nn.Dropout)] == [0.5, 0.5]


def test_modules_one_gpu(tmp_path: Path) -> None:
    net = _net(tmp_path, "+ablation=one_gpu")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [48, 128, 192, 192, 256]
    assert all(c.groups == 1 for c in convs)


def test_modules_no_middle_conv(tmp_path: Path) -> None:
    base, net = _net(tmp_path), _net(tmp_path, "+ablation=no_middle_conv")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4
    base_shapes = {n: p.shape for n, p in base.named_parameters()}
    shapes = {n: p.shape for n, p in net.named_parameters()}
    assert set(base_shapes) - set(shapes) == {"conv4.weight", "conv4.bias"}
    assert all(base_shapes[n] == s for n, s in shapes.items())  # nothing else changes shape


@pytest.mark.parametrize(
    ("name", "convention", "k"), [("lrn_authors", "authors", 2.0), ("lrn_caffe", "caffe", 1.0)]
)
def test_modules_lrn_variants(name: str, convention: str, k: float, tmp_path: Path) -> None:
    norms = [m for m in _net(tmp_path, f"+ablation={name}").modules()
             if isinstance(m, LocalResponseNorm)]
    assert len(norms) == 2
    assert all(n.convention == convention for n in norms)
    assert all(n.k == k and n.effective_alpha == pytest.approx(1e-4 / 5) for n in norms)
    base = [m for m in _net(tmp_path).modules() if isinstance(m, LocalResponseNorm)]
    assert all(n.k == 2.0 and n.effective_alpha == 1e-4 for n in base)


def test_optimizer_no_weight_decay(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "+ablation=no_weight_decay")
    optimizer = instantiate(cfg.optimizer)([torch.zeros(1, requires_grad=True)])
    assert optimizer.param_groups[0]["weight_decay"] == 0.0


def test_data_switches(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, "+ablation=[no_pca_jitter,no_crop_flip]")
    assert (cfg.data.pca_jitter, cfg.data.crop, cfg.data.flip) == (False, False, False)


@pytest.mark.parametrize(
    "ablation",
    [*ABLATIONS, "[no_lrn,tanh]", "[one_gpu,plain_pool]", "[no_middle_conv,no_dropout]"],
)
def test_ablation_trains(ablation: str, tmp_path: Path, data_dir: Path) -> None:
    cfg = compose_config(
        "train", [*TINY, "trainer.fast_dev_run=true", "test=false", f"+ablation={ablation}"],
        tmp_path, data_dir,
    )
    summary, run = train_keeping_the_run(cfg)
    names = ablation.strip("[]").split(",")
    assert [a["name"] for a in summary["ablations"]] == names
    # The ablated network is the one configured, and the logged errors are its own on the one
    # validation batch.
    assert summary["num_params"] == n_params(instantiate(cfg.model, num_classes=10))
    top1, top5 = errors_by_hand(run.net, run.datamodule, "val", cfg.data.batch_size)
    final = summary["final"]
    assert (final["val/top1_err"], final["val/top5_err"]) == pytest.approx((top1, top5))


@pytest.mark.parametrize(
    "pair",
    [("no_lrn", "lrn_authors"), ("lrn_caffe", "no_lrn"), ("lrn_authors", "lrn_caffe")],
)
def test_contradictory_ablations_are_refused(pair: tuple[str, str], tmp_path: Path) -> None:
    cfg = compose_train(tmp_path, f"+ablation=[{pair[0]},{pair[1]}]")
    with pytest.raises(ValueError, match="contradict"):
        applied_ablations(cfg)


