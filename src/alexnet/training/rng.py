"""Random states a checkpoint keeps, and the per-step seeds that make a resumed run equal to an
uninterrupted one (docs/long-runs.md)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def mix_seed(seed: int, step: int) -> int:
    """One 63-bit seed per (seed, step): the random numbers of step ``step``."""
    return (int(seed) * 6_364_136_223_846_793_005 + int(step) * 1_442_695_040_888_963_407
            + 0x9E3779B97F4A7C15) % (2**63 - 1)


def rng_states() -> dict[str, Any]:
    """Python's, numpy's and torch's (CPU and every CUDA device) random states, as tensors and
    plain containers (a checkpoint must load with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        cuda = states["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)
