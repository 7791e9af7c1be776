"""The fast path: switches that change how fast a step runs, not what it computes (beyond float
rounding, or bf16's stated tolerance).

Where each switch lives:

- ``model.lrn_impl`` (``conf/model/alexnet.yaml``): ``fast``, the LRN with a closed-form
  backward (``alexnet.models.lrn``), or ``torch``'s ``F.local_response_norm``.
- ``speed.channels_last`` and ``speed.compile`` (``conf/train.yaml``): applied by the
  LightningModule (``ImageClassifier``) to its network; :func:`speed_options` reads them.
- ``trainer.precision`` (``conf/trainer/default.yaml``): ``${auto_precision:${.accelerator}}``
  picks bf16 autocast where a GPU runs the step and float32 elsewhere; ``trainer.benchmark``:
  cuDNN's autotuner (GPU only).
- The data side needs no switch: the preset (centring, PCA colour shift) runs on the batch's
  device after the transfer (``PreparedDataModule.on_after_batch_transfer``), so on a GPU the
  augmentation runs there; ``data.pin_memory`` pins the loader's batches when a GPU is present,
  and the workers persist between epochs whenever ``data.num_workers`` > 0.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

# Values of speed.compile: off, or one of torch.compile's modes.
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune")


def auto_precision(accelerator: str = "auto") -> str:
    """Lightning's ``precision`` for ``accelerator``: ``bf16-mixed`` when the step runs on a CUDA
    GPU that has bfloat16 (Ampere and later), ``32-true`` otherwise. On CPUs float32 stays the
    default: bf16 there changes the numerics of the committed CPU studies, and on CPUs without
    native bf16 (no AMX or avx512_bf16) it is slower, not faster (README, "Speed")."""
    if str(accelerator) not in ("auto", "gpu", "cuda"):
        return "32-true"
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def register_resolvers() -> None:
    """``${auto_precision:ACCELERATOR}`` in the trainer configs."""
    if not OmegaConf.has_resolver("auto_precision"):
        OmegaConf.register_new_resolver("auto_precision", auto_precision)


register_resolvers()


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


__all__ = ["COMPILE_MODES", "auto_precision", "check_compile", "speed_options", "to_layout"]
