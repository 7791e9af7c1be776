"""conf/ states each fact once: the data configs share conf/data/_base.yaml, the callbacks configs
conf/callbacks/_base.yaml, and an experiment holds only what differs from what it builds on. These
tests fail when a shared key is copied back into a file that inherits it, or when the shared base
stops reaching a config that should inherit it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import CONF, compose_config
from omegaconf import OmegaConf

DATA_OPTIONS = sorted(p.stem for p in (CONF / "data").glob("*.yaml") if not p.stem.startswith("_"))
CALLBACK_OPTIONS = sorted(
    p.stem for p in (CONF / "callbacks").glob("*.yaml") if not p.stem.startswith("_"))


def raw(group: str, name: str) -> dict[str, Any]:
    return yaml.safe_load((CONF / group / f"{name}.yaml").read_text()) or {}


def parents(group: str, name: str) -> list[str]:
    """The configs of the same group that ``name`` lists in its defaults, nearest last."""
    return [d for d in raw(group, name).get("defaults", []) if isinstance(d, str)
            and d != "_self_" and not d.startswith(("/", "override"))]


def inherited(group: str, name: str) -> dict[str, Any]:
    """What ``name``'s parents give it, before its own keys: a raw merge of the YAML files."""
    merged: dict[str, Any] = {}
    for parent in parents(group, name):
        merged = OmegaConf.to_container(OmegaConf.merge(merged, inherited(group, parent),
                                                         own(group, parent)))
    return merged


def own(group: str, name: str) -> dict[str, Any]:
    return {k: v for k, v in raw(group, name).items() if k != "defaults"}


def restated(mine: dict[str, Any], given: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys of ``mine`` that say again what ``given`` already says."""
    same = []
    for key, value in mine.items():
        if isinstance(value, dict) and isinstance(given.get(key), dict):
            same += restated(value, given[key], f"{prefix}{key}.")
        elif key in given and given[key] == value:
            same.append(f"{prefix}{key}")
    return same


def resolved(overrides: list[str], tmp_path: Path) -> dict[str, Any]:
    cfg = compose_config("train", overrides, tmp_path, tmp_path)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("name", DATA_OPTIONS)
def test_every_data_config_builds_on_the_base_and_restates_none_of_it(name: str,
                                                                       tmp_path: Path) -> None:
    chain, seen = [name], name
    while parents("data", seen):
        seen = parents("data", seen)[0]
        chain.append(seen)
    assert chain[-1] == "_base", f"data={name} does not reach conf/data/_base.yaml: {chain}"
    assert not restated(own("data", name), inherited("data", name)), name
    data = resolved(["experiment=none", f"data={name}"], tmp_path)["data"]
    missing = [k for k in raw("data", "_base") if data.get(k, "???") == "???"]
    assert not missing, f"data={name} lacks {missing}"


def test_the_base_data_config_holds_what_the_paper_gives(tmp_path: Path) -> None:
    """The shared values are the paper's (Sec. 2, 4.1, 5), and the four sources that build on it
    directly override only what is theirs."""
    base = raw("data", "_base")
    assert {k: base[k] for k in ("image_size", "crop_size", "batch_size", "mean", "crop", "flip",
                                 "pca_jitter", "pca_std", "pca_convention", "ten_crop", "scale")
            } == {"image_size": 256, "crop_size": 227, "batch_size": 128, "mean": "image",
                  "crop": True, "flip": True, "pca_jitter": True, "pca_std": 0.1,
                  "pca_convention": "authors", "ten_crop": False, "scale": 1.0}
    direct = [n for n in DATA_OPTIONS if parents("data", n) == ["_base"]]
    assert set(direct) == {"cifar10", "imagefolder", "imagenet", "synthetic"}
    shared = set(base) - {"_target_", "prepared_dir"}
    assert {n: sorted(shared & set(own("data", n))) for n in direct} == {
        "cifar10": ["crop_size", "image_size", "pca_jitter"],
        "imagefolder": [],
        "imagenet": ["eval_batch_size", "num_workers"],
        "synthetic": [],
    }


@pytest.mark.parametrize("name", ["sgd_paper", "torch_sgd"])
def test_both_optimizers_take_the_papers_hyper_parameters_from_one_base(name: str,
                                                                        tmp_path: Path) -> None:
    """The paper's lr, momentum and weight decay (Sec. 5) and the group settings are stated once,
    in conf/optimizer/_base.yaml; each optimizer names its builder and what only it has."""
    assert parents("optimizer", name) == ["_base"], name
    assert not restated(own("optimizer", name), inherited("optimizer", name)), name
    assert set(own("optimizer", name)) == {"sgd_paper": {"_target_", "fused"},
                                           "torch_sgd": {"_target_"}}[name]
    optimizer = resolved(["experiment=none", f"optimizer={name}"], tmp_path)["optimizer"]
    assert {k: optimizer[k] for k in ("lr", "momentum", "weight_decay", "decay_biases",
                                       "bias_lr_mult", "_partial_")} == {
        "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "decay_biases": False,
        "bias_lr_mult": 1.0, "_partial_": True}
    builder = {"sgd_paper": "paper_sgd", "torch_sgd": "torch_sgd"}[name]
    assert optimizer["_target_"] == f"alexnet.training.optim.{builder}"


@pytest.mark.parametrize("name", CALLBACK_OPTIONS)
def test_every_callbacks_config_builds_on_the_base(name: str, tmp_path: Path) -> None:
    if name == "none":
        return
    assert parents("callbacks", name) == ["_base"], name
    assert not restated(own("callbacks", name), inherited("callbacks", name)), name
    callbacks = resolved(["experiment=none", f"callbacks={name}"], tmp_path)["callbacks"]
    base = resolved(["experiment=none", "callbacks=_base"], tmp_path)["callbacks"]
    for key in ("learning_rate_monitor", "wandb_media"):
        assert callbacks[key] == base[key], (name, key)
    assert base["model_checkpoint"].items() <= callbacks["model_checkpoint"].items()


def test_default_and_study_callbacks_differ_in_the_checkpoint_and_the_progress_bar(
        tmp_path: Path) -> None:
    default = resolved(["experiment=none", "callbacks=default"], tmp_path)["callbacks"]
    study = resolved(["experiment=none", "callbacks=study"], tmp_path)["callbacks"]
    assert set(default) - set(study) == {"progress_bar"} and set(study) <= set(default)
    differ = {k for k in default["model_checkpoint"].keys() | study["model_checkpoint"].keys()
              if default["model_checkpoint"].get(k) != study["model_checkpoint"].get(k)}
    assert differ == {"monitor", "mode", "save_top_k", "save_weights_only"}


def differing(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return set().union(*(differing(a.get(k), b.get(k), f"{prefix}{k}.")
                             for k in a.keys() | b.keys()))
    return set() if a == b else {prefix.rstrip(".")}


def test_cifar10_13pct_is_cifar10_11pct_with_the_other_net(tmp_path: Path) -> None:
    eleven = resolved(["experiment=cifar10_11pct"], tmp_path)
    thirteen = resolved(["experiment=cifar10_13pct"], tmp_path)
    changed = differing(eleven, thirteen)
    assert changed and {k.split(".")[0] for k in changed} == {"model", "tags"}, changed
    assert (eleven["model"]["lrn"], thirteen["model"]["lrn"]) == (True, False)
    assert thirteen["tags"] == ["cifar10", "cifar_13pct"]
    assert parents("experiment", "cifar10_13pct") == ["cifar10_11pct"]


def test_paper_takes_its_data_from_data_imagenet(tmp_path: Path) -> None:
    """experiment=paper states only where its recipe departs from data=imagenet (the 10-patch
    test); the sizes, batch and augmentation it once restated are data=imagenet's, unchanged."""
    paper = resolved(["experiment=paper"], tmp_path)["data"]
    imagenet = resolved(["experiment=none", "data=imagenet"], tmp_path)["data"]
    assert differing(paper, imagenet) == {"ten_crop"} and paper["ten_crop"] is True
    for key, value in {"image_size": 256, "crop_size": 227, "batch_size": 128, "mean": "image",
                       "crop": True, "flip": True, "pca_jitter": True, "pca_std": 0.1}.items():
        assert paper[key] == value == imagenet[key], key
    assert set(raw("experiment", "paper")["data"]) == {"ten_crop"}


@pytest.mark.parametrize("name", ["study_fig1_cifar10", "study_fig1_cifar10_jpeg",
                                  "study_sec33_jpeg", "study_sec33_short_jpeg",
                                  "study_sec33_60ep_jpeg"])
def test_derived_studies_restate_nothing_of_what_they_build_on(name: str,
                                                               tmp_path: Path) -> None:
    """A study that changes its parent's data source states no data setting its parent gives:
    the composed data equal those of the parent with that source chosen on the command line."""
    (parent,) = parents("experiment", name)
    source = next(d["override /data"] for d in raw("experiment", name)["defaults"]
                  if isinstance(d, dict) and "override /data" in d)
    assert "data" not in raw("experiment", name)
    mine = resolved([f"experiment={name}"], tmp_path)
    theirs = resolved([f"experiment={parent}", f"data={source}"], tmp_path)
    assert mine["data"] == theirs["data"]
