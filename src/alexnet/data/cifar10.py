"""CIFAR-10 from the user's copy of its python batches (``cifar-10-batches-py/``, or the
``cifar-10-python.tar.gz`` it comes in): ``data_batch_1`` ... ``data_batch_5`` are the training
split, ``test_batch`` the validation split. The images stay 32 x 32 (the paper's CIFAR-10
experiments, Sec. 3.1 and 3.3, use them at their own size)."""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.data.prepared import DataError
from alexnet.data.sources import check_root

IMAGE_SIZE = 32
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "val": ["test_batch"]}
META = "batches.meta"


def _get(batch: dict, key: str) -> Any:
    """The batches are pickled by Python 2: their keys may be bytes or str."""
    return batch[key] if key in batch else batch[key.encode()]


def _unpickle(data: bytes, name: str) -> dict:
    try:
        batch = pickle.loads(data, encoding="bytes")
    except Exception as err:  # a truncated or foreign file: pickle raises many kinds
        raise DataError(f"{name} is not a CIFAR-10 python batch ({err})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{name} is not a CIFAR-10 python batch (a dict was expected)")
    return batch


def _locate(root: Path) -> tuple[str, Path]:
    """('dir', folder) or ('tar', archive) holding the batches."""
    for folder in (root, root / FOLDER):
        if all((folder / b).is_file() for b in (*BATCHES["train"], *BATCHES["val"])):
            return "dir", folder
    for archive in (root / ARCHIVE, root):
        if archive.is_file() and tarfile.is_tarfile(archive):
            return "tar", archive
    raise DataError(
        f"unknown layout in data.root={root}: expected CIFAR-10's python batches "
        f"({FOLDER}/data_batch_1..5, test_batch, {META}) or {ARCHIVE}"
    )


def _read_files(kind: str, where: Path, names: list[str]) -> dict[str, bytes]:
    if kind == "dir":
        return {n: (where / n).read_bytes() for n in names if (where / n).is_file()}
    found = {}
    with tarfile.open(where) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if name in names and member.isfile():
                found[name] = tar.extractfile(member).read()
    missing = [n for n in names if n not in found and n != META]
    if missing:
        raise DataError(f"{where} does not hold CIFAR-10's {', '.join(missing)}")
    return found


def read_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (uint8 (N, 32, 32, 3) RGB images, int64 labels)."""
    batch = _unpickle(data, name)
    try:
        rows = np.asarray(_get(batch, "data"), dtype=np.uint8)
        labels = np.asarray(_get(batch, "labels"), dtype=np.int64)
    except KeyError as err:
        raise DataError(f"{name} is not a CIFAR-10 python batch (no {err} entry)") from None
    if rows.ndim != 2 or rows.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE or len(rows) != len(labels):
        raise DataError(
            f"{name}: data of shape {rows.shape} with {len(labels)} labels; expected (N, 3072)"
        )
    # Each row is the red plane, then green, then blue, each 32 x 32 in row-major order.
    images = rows.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


@dataclass
class Cifar10Split:
    """The rows of one split (a writer.RowReader); the batches are read when first needed."""

    kind: str
    where: str
    names: list[str]
    _images: np.ndarray | None = None

    def _load(self) -> np.ndarray:
        if self._images is None:
            files = _read_files(self.kind, Path(self.where), self.names)
            self._images = np.concatenate([read_batch(files[n], n)[0] for n in self.names])
        return self._images

    def read(self, start: int, stop: int, size: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        return self._load()[start:stop], []

    def describe(self, row: int) -> str:
        return f"{self.where} row {row}"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}  # workers read the batches themselves


def find_cifar10(root: str | os.PathLike | None) -> dict[str, Any]:
    """Classes, per-split labels and readers of a CIFAR-10 copy."""
    root = check_root(root, "CIFAR-10")
    kind, where = _locate(root)
    files = _read_files(kind, where, [*BATCHES["train"], *BATCHES["val"], META])
    labels, splits = {}, {}
    for split, names in BATCHES.items():
        parts = [read_batch(files[n], n) for n in names]
        labels[split] = np.concatenate([y for _, y in parts])
        splits[split] = Cifar10Split(kind, str(where), names)
        splits[split]._images = np.concatenate([x for x, _ in parts])
    classes = [f"class_{i}" for i in range(10)]
    if META in files:
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in _get(_unpickle(files[META], META), "label_names")]
        if len(names) == 10:
            classes = names
    for split, y in labels.items():
        if y.min() < 0 or y.max() >= len(classes):
            raise DataError(f"{where}: {split} labels must be 0..9, found {y.min()}..{y.max()}")
    return {
        "classes": classes,
        "labels": labels,
        "readers": splits,
        # What the rows are made of, for resuming an interrupted prepare: names and contents.
        "identity": {
            s: [f"{n} {hashlib.sha256(files[n]).hexdigest()}" for n in names]
            for s, names in BATCHES.items()
        },
        "description": {"kind": "cifar10", "root": str(root), "layout": f"python batches ({kind})"},
    }
