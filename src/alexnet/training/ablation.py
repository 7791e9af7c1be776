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
