"""The claims table (ablations/claims.yaml) and the comparison of a paper run with the paper."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from helpers import CONF, compose_config

from alexnet.claims import load_claims, load_headline, paper_comparison

CLAIM_KEYS = {"section", "technique", "ablation", "dataset", "claim", "delta_top1", "delta_top5"}


def test_claims_are_the_entries_that_name_an_ablation() -> None:
    claims = load_claims()
    assert "headline" not in claims
    assert {"bias_one", "ten_patch", "lrn", "two_columns"} <= set(claims)
    for key, entry in claims.items():
        assert CLAIM_KEYS <= set(entry), key
        for delta in ("delta_top1", "delta_top5"):
            assert entry[delta] is None or entry[delta] > 0, key
        # Each claim's ablation exists and names the claim back.
        ablation = CONF / "ablation" / f"{entry['ablation']}.yaml"
        assert ablation.is_file(), key
        assert f"claim: {key}\n" in ablation.read_text(), key


def test_the_new_claims() -> None:
    claims = load_claims()
    bias = claims["bias_one"]
    assert bias["ablation"] == "no_bias_one" and bias["section"] == "5"
    assert bias["delta_top1"] is None and bias["delta_top5"] is None  # the paper gives no number
    ten = claims["ten_patch"]
    assert ten["ablation"] == "no_ten_crop"
    assert (ten["delta_top1"], ten["delta_top5"]) == (1.5, 1.3)
    assert ten["baseline"] == ["experiment=paper"]


def test_headline_numbers() -> None:
    headline = load_headline()
    table1, table2 = headline["ilsvrc2010_test"], headline["ilsvrc2012_val"]
    assert table1["ten_patch"] == {"top1": 37.5, "top5": 17.0}
    assert table1["one_patch"] == {"top1": 39.0, "top5": 18.3}
    assert table2["ten_patch"] == {"top1": 40.7, "top5": 18.2}
    assert "Table 1" in table1["section"] and "Table 2" in table2["section"]
    # The 10-patch claim's deltas are the headline's difference.
    ten = load_claims()["ten_patch"]
    for k in ("top1", "top5"):
        gain = table1["one_patch"][k] - table1["ten_patch"][k]
        assert ten[f"delta_{k}"] == pytest.approx(gain)


def test_claims_from_another_file(tmp_path: Path) -> None:
    path = tmp_path / "claims.yaml"
    path.write_text("a: {ablation: x, claim: c}\nheadline: {d: {ten_patch: {top1: 1}}}\n")
    assert load_claims(path) == {"a": {"ablation": "x", "claim": "c"}}
    assert load_headline(path) == {"d": {"ten_patch": {"top1": 1}}}


def test_no_ten_crop_needs_the_ten_patch_baseline(tmp_path: Path) -> None:
    default = compose_config("train", ["+ablation=no_ten_crop"], tmp_path, tmp_path)
    paper = compose_config("train", ["experiment=paper", "+ablation=no_ten_crop"], tmp_path,
                           tmp_path)
    assert not default.data.ten_crop and not paper.data.ten_crop
    assert compose_config("train", ["experiment=paper"], tmp_path, tmp_path).data.ten_crop


# -- a finished run beside the paper -----------------------------------------------------------
def _paper_run(**changes: Any) -> dict[str, Any]:
    """A hand-made summary.json of experiment=paper on ImageNet: the 10-patch test ran."""
    summary = {
        "task": "train",
        "status": "completed",
        "num_classes": 1000,
        "ablations": [],
        "config": {
            "data": {"_target_": "alexnet.data.datamodule.PreparedDataModule",
                     "source": "imagenet", "ten_crop": True},
            "model": {"_target_": "alexnet.models.AlexNet"},
        },
        "final": {"val/top1_err": 0.44, "val/top5_err": 0.21,
                  "test10/top1_err": 0.412, "test10/top5_err": 0.189},
        "history": [
            {"epoch": 0, "val/top1_err": 0.90, "val/top5_err": 0.75},
            {"epoch": 1, "val/top1_err": 0.428, "val/top5_err": 0.203},  # the best checkpoint
            {"epoch": 2, "val/top1_err": 0.44, "val/top5_err": 0.21},
        ],
    }
    for key, value in changes.items():
        summary[key] = value
    return summary


def test_paper_run_is_set_beside_the_paper() -> None:
    text = paper_comparison(_paper_run())
    assert text is not None
    lines = text.splitlines()
    ten = next(line for line in lines if "10 patches" in line)
    assert "41.2 / 18.9" in ten and "40.7 / 18.2" in ten and "Table 2" in ten
    centre = next(line for line in lines if "centre patch" in line)
    assert "42.8 / 20.3" in centre and "39.0 / 18.3" in centre and "epoch 1" in centre
    gain = next(line for line in lines if "gain" in line)
    assert " 1.6 /  1.4" in gain and " 1.5 /  1.3" in gain
    assert "ablations" not in text


def test_centre_patch_test_and_ablations() -> None:
    summary = _paper_run(ablations=[{"name": "no_ten_crop", "claim": "ten_patch"}])
    summary["final"] = {"test/top1_err": 0.43, "test/top5_err": 0.2}
    text = paper_comparison(summary)
    assert text is not None and "10 patches" not in text and "gain" not in text
    assert "43.0 / 20.0" in text and "39.0 / 18.3" in text and "test/*" in text
    assert "no_ten_crop" in text


def test_eval_of_a_paper_checkpoint() -> None:
    run = _paper_run(task="eval", history=[])
    run["train_config"], run["config"] = run["config"], {"task_name": "eval"}
    text = paper_comparison(run)
    assert text is not None and "41.2 / 18.9" in text and "centre patch" not in text


@pytest.mark.parametrize(
    "change",
    [
        {"num_classes": 10},                                         # an ImageNet subset
        {"status": "interrupted"},
        {"final": {"val/top1_err": 0.4, "val/top5_err": 0.2}},       # test=false: nothing tested
        {"data": {"_target_": "alexnet.data.datamodule.SyntheticDataModule"}},
        {"data": {"source": "imagefolder"}},
        {"model": {"_target_": "alexnet.models.CifarLocalNet"}},
    ],
)
def test_other_runs_are_not_compared(change: dict[str, Any]) -> None:
    summary = copy.deepcopy(_paper_run())
    for key, value in change.items():
        if key in ("data", "model"):
            summary["config"][key] = value
        else:
            summary[key] = value
    assert paper_comparison(summary) is None
