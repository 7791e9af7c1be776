"""The fast path: switches that change how fast a step runs, not what it computes (beyond float
rounding, or bf16's stated tolerance).

Where each switch lives:

- ``model.lrn_impl`` (``conf/model/alexnet.yaml``): ``fast``, the LRN with a closed-form
  backward (``alexnet.models.lrn``), or ``torch``'s ``F.local_response_norm``.
- ``speed.channels_last`` and ``speed.compile`` (``conf/train.yaml``): applied by the
  LightningModule (``ImageClassifier``) to its network; :func:`speed_options` reads them.
- ``trainer.precision`` (``conf/trainer/default.yaml``): ``${auto_precision:${.accelerator}}``
  picks bf16 autocast where a GPU, or a CPU with AMX, runs the step and float32 elsewhere;
  ``trainer.benchmark``: cuDNN's autotuner (GPU only).
- The data side needs no switch: the preset (centring, PCA colour shift) runs on the batch's
  device after the transfer (``PreparedDataModule.on_after_batch_transfer``), so on a GPU the
  augmentation runs there; ``data.pin_memory`` pins the loader's batches when a GPU is present,
  and the workers persist between epochs whenever ``data.num_workers`` > 0.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

# Values of speed.compile: off, or one of torch.compile's modes.
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune")


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo: native bf16 matrix units


@functools.cache  # the config resolver asks on every resolution
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo; empty elsewhere). ``ALEXNET_CPU_FLAGS``
    (space-separated) stands in for them: the tests set it empty, so that their expected values,
    float32 ones, hold on a CPU with AMX too."""
    if "ALEXNET_CPU_FLAGS" in os.environ:
        return frozenset(os.environ["ALEXNET_CPU_FLAGS"].split())
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def precision_choice(accelerator: str = "auto") -> tuple[str, str]:
    """Lightning's ``precision`` for ``accelerator``, and why.

    ``bf16-mixed`` where the step runs on a CUDA GPU with bfloat16 (Ampere and later), or on a
    CPU with native bf16 matrix units (AMX: ``amx_bf16`` and ``avx512_bf16``, Sapphire Rapids and
    later), where a step of the paper net at 227 ran 1.2x to 1.3x its float32 speed
    (docs/speed.md); ``32-true`` elsewhere: with avx512_bf16 alone (an AMD EPYC) bf16 ran 1.18x,
    too little for bf16's rounding, and without either it is emulated (0.59x)."""
    gpu = str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if gpu:
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", "a CUDA GPU with bfloat16"
        return "32-true", "a CUDA GPU without bfloat16"
    if str(accelerator) not in ("auto", "cpu"):
        return "32-true", f"accelerator {accelerator}"
    missing = [f for f in CPU_BF16_FLAGS if f not in cpu_flags()]
    if not missing:
        return "bf16-mixed", "a CPU with AMX (amx_bf16, avx512_bf16)"
    return "32-true", f"a CPU without native bf16 (no {', '.join(missing)})"


def precision_record(cfg: DictConfig) -> dict[str, str]:
    """summary.json's ``precision``: what the run used, and why (the automatic choice's reason,
    or that the configuration set it)."""
    used = str(OmegaConf.select(cfg, "trainer.precision"))
    chosen, why = precision_choice(str(OmegaConf.select(cfg, "trainer.accelerator") or "auto"))
    return {"precision": used, "why": why if used == chosen else "set by the configuration"}


def auto_precision(accelerator: str = "auto") -> str:
    """``${auto_precision:ACCELERATOR}``: :func:`precision_choice`'s precision."""
    return precision_choice(accelerator)[0]


def check_compile(value: Any) -> str | None:
    """``speed.compile`` as torch.compile's mode, or None for off; ValueError otherwise."""
    if value is None or value is False:
        return None
    if value is True:
        return "default"
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise ValueError(
        f"speed.compile must be true, false or one of {list(COMPILE_MODES)}, got {value!r}")


def speed_options(cfg: DictConfig | dict | None) -> dict[str, Any]:
    """The LightningModule's keyword arguments from a config's ``speed`` block (absent keys take
    the defaults); ValueError for a bad value."""
    speed = dict(cfg.get("speed") or {}) if cfg is not None else {}
    unknown = set(speed) - {"channels_last", "compile"}
    if unknown:
        raise ValueError(f"unknown speed switch(es): {sorted(unknown)}; "
                         "known: channels_last, compile")
    channels_last = speed.get("channels_last", True)
    if not isinstance(channels_last, bool):
        raise ValueError(f"speed.channels_last must be true or false, got {channels_last!r}")
    return {"channels_last": channels_last, "compile": check_compile(speed.get("compile"))}


def to_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-d batch in the network's memory layout: NHWC with ``channels_last``, else NCHW."""
    if x.dim() != 4:
        return x
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


__all__ = ["COMPILE_MODES", "auto_precision", "check_compile", "cpu_flags", "precision_choice",
           "precision_record", "speed_options", "to_layout"]
