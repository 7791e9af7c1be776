"""The paper's claims and headline numbers (``ablations/claims.yaml``), and a finished run of the
paper's recipe set beside them.

``claims.yaml`` holds two kinds of top-level entries: claims, which name the ablation that tests
them (an ``ablation`` key), and ``headline``, the paper's headline error rates (Sec. 6), which is
not a claim. Code that goes over the claims should use :func:`load_claims`, which leaves it out.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

from alexnet.exits import UserError
from alexnet.names import VAL_TOP1
from alexnet.provenance import REPO_ROOT

CLAIMS_FILE = REPO_ROOT / "ablations" / "claims.yaml"
HEADLINE_KEY = "headline"
IMAGENET_CLASSES = 1000
RESTORE = "restore it: git checkout -- ablations/claims.yaml"


class ClaimsError(UserError):
    """claims.yaml cannot be read, or holds no claim: one line naming the file."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping: plain YAML keeps the
    last silently, and an entry pasted twice would replace a claim's numbers without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {lines[key]} and "
                    f"{key_node.start_mark.line + 1})", key_node.start_mark)
            lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _read(path: str | os.PathLike | None) -> dict[str, Any]:
    """The file's mapping; ClaimsError, one line naming the file, if it is unreadable."""
    path = Path(path or CLAIMS_FILE)
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # safe: no Python objects
    except yaml.constructor.ConstructorError as err:
        raise ClaimsError(f"{path}: {err.problem}: {RESTORE}") from None
    except (OSError, ValueError, yaml.YAMLError) as err:  # ValueError: not text at all
        reason = " ".join(str(err).split())
        raise ClaimsError(f"{path} is not a readable claims file ({reason}): {RESTORE}") from None
    if not isinstance(data, dict):
        raise ClaimsError(f"{path} must hold a mapping of claims: {RESTORE}")
    return data


def load_claims(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The claims of ``claims.yaml`` by key: the entries that name an ablation. ClaimsError if
    the file is unreadable or holds none."""
    claims = {
        key: entry for key, entry in _read(path).items()
        if isinstance(entry, dict) and "ablation" in entry
    }
    if not claims:
        raise ClaimsError(f"{path or CLAIMS_FILE} holds no claims (no entry names an ablation): "
                         f"{RESTORE}")
    for key, entry in claims.items():
        if problem := _bad_field(key, entry):
            raise ClaimsError(f"{path or CLAIMS_FILE}: {problem}: {RESTORE}")
    return claims


# The fields the report reads as numbers.
NUMBERS = {"delta_top1", "delta_top5", "error_with", "error_without", "speedup"}


def _bad_field(key: str, entry: dict[str, Any]) -> str | None:
    """A claim's field of the wrong kind: an ablation that is not a name, a number that is not
    one (its dataset's numbers, ``cifar10:``, included)."""
    if not isinstance(entry["ablation"], str):
        return f"{key}.ablation must be an ablation's name, got {entry['ablation']!r}"
    fields = [(f"{key}.{name}", value) for name, value in entry.items()]
    fields += [(f"{key}.{name}.{inner}", value) for name, nested in entry.items()
               if isinstance(nested, dict) for inner, value in nested.items()]
    for name, value in fields:
        if name.rsplit(".", 1)[-1] in NUMBERS and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            return f"{name} must be a number or null, got {value!r}"
    return None


def load_headline(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The paper's headline error rates (%), by dataset: ``ilsvrc2010_test`` (Table 1, with
    ``ten_patch`` and ``one_patch`` figures) and ``ilsvrc2012_val`` (Table 2)."""
    return _read(path).get(HEADLINE_KEY) or {}


def _run_config(summary: dict[str, Any]) -> dict[str, Any]:
    # An eval run's own config holds no data or model: the training run's is under train_config.
    return summary.get("train_config") or summary.get("config") or {}


def is_paper_imagenet_run(summary: dict[str, Any]) -> bool:
    """Whether ``summary`` records a completed run of AlexNet on ILSVRC (1000 classes): the runs
    whose errors can be set beside the paper's."""
    cfg = _run_config(summary)
    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    return (
        summary.get("status") == "completed"
        and data.get("source") == "imagenet"
        and summary.get("num_classes") == IMAGENET_CLASSES
        and str(model.get("_target_", "")).endswith("AlexNet")
    )


def _errors(metrics: dict[str, Any], prefix: str) -> tuple[float, float] | None:
    """(top-1, top-5) error in % under ``prefix``/, or None unless both are finite numbers."""
    values = [metrics.get(f"{prefix}/top{k}_err") for k in (1, 5)]
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        return None
    return 100.0 * values[0], 100.0 * values[1]


def _one_patch(summary: dict[str, Any]) -> tuple[tuple[float, float], str] | None:
    """The run's centre-patch errors and where they come from: the test's when it used the centre
    patch, else (the 10-patch test ran) the validation of the epoch with the lowest val/top1_err,
    which is the checkpoint the test evaluated: the same weights and images, one patch."""
    found = _errors(summary.get("final") or {}, "test")
    if found is not None:
        return found, "test/*"
    rows = [r for r in summary.get("history") or [] if _errors(r, "val") is not None]
    if not rows or _errors(summary.get("final") or {}, "test10") is None:
        return None
    best = min(rows, key=lambda r: r[VAL_TOP1])
    return _errors(best, "val"), f"val/* of epoch {best.get('epoch')} (the checkpoint tested)"


def _pair(errors: tuple[float, float] | dict[str, float]) -> str:
    top1, top5 = (errors["top1"], errors["top5"]) if isinstance(errors, dict) else errors
    return f"{top1:4.1f} / {top5:4.1f}"


def paper_comparison(summary: dict[str, Any]) -> str | None:
    """A few lines setting a finished ImageNet run of the paper's net beside the paper's
    figures (top-1 / top-5 error, %), or None for any other run (another dataset, another
    network, an interrupted run, no test).

    The suite tests on ILSVRC-2012 val, so the 10-patch errors (``test10/*``) compare directly
    with Table 2 (one CNN: 40.7 / 18.2). The paper gives one-patch figures only for ILSVRC-2010
    test (Sec. 6 footnote: 39.0 / 18.3, against 37.5 / 17.0 with the 10 patches), so the
    centre-patch errors are set beside those, and the gain of the 10 patches beside theirs.
    """
    if not is_paper_imagenet_run(summary):
        return None
    headline = load_headline()
    val2012, test2010 = headline["ilsvrc2012_val"], headline["ilsvrc2010_test"]
    ten = _errors(summary.get("final") or {}, "test10")
    one = _one_patch(summary)
    if ten is None and one is None:
        return None
    lines = ["The paper's figures beside this run (top-1 / top-5 error, %, one CNN):"]
    if ten is not None:
        lines.append(
            f"  10 patches, ILSVRC-2012 val:   this run {_pair(ten)}   paper "
            f"{_pair(val2012['ten_patch'])} (Table 2)"
        )
    if one is not None:
        (errors, source) = one
        lines.append(
            f"  centre patch, ILSVRC-2012 val: this run {_pair(errors)}   paper "
            f"{_pair(test2010['one_patch'])} (ILSVRC-2010 test, Sec. 6 footnote); this run's "
            f"from {source}"
        )
    if ten is not None and one is not None:
        gain = (one[0][0] - ten[0], one[0][1] - ten[1])
        paper = test2010["one_patch"], test2010["ten_patch"]
        paper_gain = (paper[0]["top1"] - paper[1]["top1"], paper[0]["top5"] - paper[1]["top5"])
        lines.append(
            f"  gain of the 10 patches:        this run {_pair(gain)}   paper "
            f"{_pair(paper_gain)} (ILSVRC-2010 test, Table 1)"
        )
    ablations = [a.get("name") for a in summary.get("ablations") or []]
    if ablations:
        lines.append(f"  ablations applied: {', '.join(map(str, ablations))} "
                     "(the paper's figures are for its full recipe)")
    return "\n".join(lines)


__all__ = ["CLAIMS_FILE", "is_paper_imagenet_run", "load_claims", "load_headline",
           "paper_comparison"]
