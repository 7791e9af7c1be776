"""Ablations: small config files in ``conf/ablation/`` that each switch off or replace one
component of the paper's recipe, and record which claim of the paper they test.

Each file sets, besides its overrides, an entry under ``ablations``::

    ablations:
      no_lrn:
        claim: lrn            # key of the claim in ablations/claims.yaml (null: no paper claim)
        component: lrn        # two ablations of one component contradict each other
        changes: [model.lrn]  # every config key the ablation changes, and nothing else
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def applied_ablations(cfg: DictConfig) -> list[dict[str, Any]]:
    """The ablations a configuration applies, in the order given; ValueError on a contradiction."""
    node = cfg.get("ablations")
    entries = OmegaConf.to_container(node, resolve=True) if node else {}
    by_component: dict[str, str] = {}
    applied = []
    for name, entry in entries.items():
        component = entry.get("component") or name
        if component in by_component:
            raise ValueError(
                f"ablations {by_component[component]!r} and {name!r} both change the "
                f"{component} component and contradict each other: apply one of them"
            )
        by_component[component] = name
        applied.append({"name": name, **entry})
    return applied


def check_ablation_values(cfg: DictConfig, ablations: list[dict[str, Any]],
                          conf_dir: Path) -> None:
    """Each applied ablation's ``changes`` still hold the values its file sets: an override after
    it (``+ablation=no_lrn model.lrn=true``) would otherwise run the recipe recorded as the
    ablation's arm. ValueError naming both; an ablation from a config directory of the user's
    (no file under ``conf_dir``) is not compared."""
    for ablation in ablations:
        path = conf_dir / "ablation" / f"{ablation['name']}.yaml"
        if not path.is_file():
            continue
        own = OmegaConf.load(path)
        for key in ablation.get("changes") or []:
            wanted, got = OmegaConf.select(own, key), OmegaConf.select(cfg, key)
            if wanted is not None and got != wanted:
                raise ValueError(
                    f"+ablation={ablation['name']} sets {key}={_shown(wanted)}, but the "
                    f"configuration has {key}={_shown(got)} (an override after it): drop one "
                    "of them")


def _shown(value: Any) -> str:
    """A value as an override spells it (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else str(value)

