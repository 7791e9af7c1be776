"""The datasets, in one place: each source of the user's files, what it is called in messages, its
image size, an example of its root, and which held-out fractions apply to it. The data modules,
``src/prepare.py``, the error messages and the report read this table; ``conf/data/*.yaml`` are the
configurations of the same sources (the tests check that they agree).

The built-in data is no source of the user's files: its data configs have no ``source`` key and
build :class:`~alexnet.data.datamodule.SyntheticDataModule`, which draws it (:func:`is_built_in`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Source:
    """A kind of dataset the user brings (``data.source``)."""

    name: str               # data.source, and the data config that reads it
    title: str              # what messages call it
    image_size: int         # the prepared images' size by default (data.image_size)
    root_example: str       # what data.root looks like, for the commands the messages print
    fractions: tuple[str, ...]  # the held-out fractions that apply (data.val_fraction, ...)


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("imagenet", "ILSVRC-2012", 256, "/path/to/ILSVRC2012", ()),
    Source("imagefolder", "image folder", 256, "/path/to/images",
           ("val_fraction", "test_fraction")),
    Source("cifar10", "CIFAR-10", 32, "/path/to/cifar-10-batches-py", ("val_fraction",)),
)}
BUILT_IN = "built-in synthetic data"


def source(name: str) -> Source:
    """The source called ``name``; ValueError naming the known ones otherwise."""
    if name not in SOURCES:
        raise ValueError(f"data.source must be one of {list(SOURCES)}, got {name!r}")
    return SOURCES[name]


def is_built_in(data_cfg: Mapping[str, Any]) -> bool:
    """Whether a data config (or its resolved dict in summary.json) is the built-in data."""
    return not data_cfg.get("source") and str(data_cfg.get("_target_", "")).endswith(
        "SyntheticDataModule")


__all__ = ["BUILT_IN", "SOURCES", "Source", "is_built_in", "source"]
