"""CIFAR-10 from the user's copy of its python batches (``cifar-10-batches-py/``, or the
``cifar-10-python.tar.gz`` it comes in): ``test_batch`` is the test split, and a fixed fraction of
every class of ``data_batch_1`` ... ``data_batch_5`` is held out of training as the val split that
selects (cuda-convnet's methodology held out ``data_batch_5`` the same way). The images stay
32 x 32 (the paper's CIFAR-10 experiments, Sec. 3.1 and 3.3, use them at their own size)."""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.data.sources import check_root, hold_out
from alexnet.exits import DataError

IMAGE_SIZE = 32
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
META = "batches.meta"
AGAIN = f"replace it with the file of a fresh copy of {ARCHIVE}"


def _get(batch: dict, key: str) -> Any:
    """The batches are pickled by Python 2: their keys may be bytes or str."""
    return batch[key] if key in batch else batch[key.encode()]


def _unpickle(data: bytes, name: str) -> dict:
    try:
        batch = pickle.loads(data, encoding="bytes")
    except Exception as err:  # a truncated or foreign file: pickle raises many kinds
        raise DataError(f"{name} is not a CIFAR-10 python batch ({err}): {AGAIN}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{name} is not a CIFAR-10 python batch (a dict was expected): {AGAIN}")
    return batch


def _locate(root: Path) -> tuple[str, Path]:
    """('dir', folder) or ('tar', archive) holding the batches; ``root`` may be the archive."""
    if root.is_file():
        if _is_tarfile(root):
            return "tar", root
        raise DataError(f"data.root={root} is not a readable tar.gz archive (empty, cut short, "
                        f"damaged or another file): download {ARCHIVE} again")
    for folder in (root, root / FOLDER):
        if all((folder / b).is_file() for b in (*BATCHES["train"], *BATCHES["test"])):
            return "dir", folder
    if (root / ARCHIVE).is_file() and _is_tarfile(root / ARCHIVE):
        return "tar", root / ARCHIVE
    if (root / ARCHIVE).is_file():
        raise DataError(f"{root / ARCHIVE} is not a readable tar.gz archive (empty, cut short or "
                        f"damaged): download {ARCHIVE} again")
    raise DataError(
        f"unknown layout in data.root={root}: expected CIFAR-10's python batches "
        f"({FOLDER}/data_batch_1..5, test_batch, {META}) or {ARCHIVE}"
    )


def _is_tarfile(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, zlib.error):  # a compressed stream cut short in its first block
        return False


def _read_files(kind: str, where: Path, names: list[str]) -> dict[str, bytes]:
    if kind == "dir":
        return {n: (where / n).read_bytes() for n in names if (where / n).is_file()}
    found = {}
    try:
        with tarfile.open(where) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if name in names and member.isfile():
                    found[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"{where} is cut short or damaged ({' '.join(str(err).split())}): "
                        f"download {ARCHIVE} again") from None
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
        raise DataError(f"{name} is not a CIFAR-10 python batch (no {err} entry): {AGAIN}"
                        ) from None
    if rows.ndim != 2 or rows.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE or len(rows) != len(labels):
        raise DataError(
            f"{name}: data of shape {rows.shape} with {len(labels)} labels; expected (N, 3072): "
            f"{AGAIN}"
        )
    # Each row is the red plane, then green, then blue, each 32 x 32 in row-major order.
    images = rows.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


@dataclass
class Cifar10Split:
    """The rows of one split (a writer.RowReader): ``rows`` of the concatenated batches ``names``
    (all of them when None); the batches are read when first needed."""

    kind: str
    where: str
    names: list[str]
    rows: list[int] | None = None
    _images: np.ndarray | None = None

    def _load(self) -> np.ndarray:
        if self._images is None:
            files = _read_files(self.kind, Path(self.where), self.names)
            self._images = np.concatenate([read_batch(files[n], n)[0] for n in self.names])
        return self._images

    def read(self, start: int, stop: int, size: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        if self.rows is None:
            return self._load()[start:stop], []
        return self._load()[self.rows[start:stop]], []

    def describe(self, row: int) -> str:
        source = row if self.rows is None else self.rows[row]
        return f"{self.where} row {source} of {'+'.join(self.names)}"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}  # workers read the batches themselves


def find_cifar10(root: str | os.PathLike | None, val_fraction: float | None = 0.1
                 ) -> dict[str, Any]:
    """Classes, per-split labels and readers of a CIFAR-10 copy: train and val from the five
    training batches (``val_fraction`` of every class held out), test from ``test_batch``."""
    root = check_root(root, "cifar10")
    if val_fraction is None or not 0 < val_fraction < 1:
        raise DataError(f"CIFAR-10's val split is held out of its training batches: set "
                        f"data.val_fraction between 0 and 1, got {val_fraction}")
    kind, where = _locate(root)
    files = _read_files(kind, where, [*BATCHES["train"], *BATCHES["test"], META])

    def named(name: str) -> str:  # what a message calls a batch: its path
        return str(where / name) if kind == "dir" else f"{name} in {where}"

    labels, splits, images = {}, {}, {}
    for split, names in BATCHES.items():
        parts = [read_batch(files[n], named(n)) for n in names]
        labels[split] = np.concatenate([y for _, y in parts])
        images[split] = np.concatenate([x for x, _ in parts])
    held, _ = hold_out(labels["train"], val_fraction)
    for split, source, rows in (("train", "train", np.flatnonzero(~held)),
                                ("val", "train", np.flatnonzero(held)),
                                ("test", "test", None)):
        splits[split] = Cifar10Split(kind, str(where), BATCHES[source],
                                     None if rows is None else rows.tolist())
        splits[split]._images = images[source]
    labels["val"], labels["train"] = labels["train"][held], labels["train"][~held]
    classes = [f"class_{i}" for i in range(10)]
    if META in files:
        try:
            names = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in _get(_unpickle(files[META], named(META)), "label_names")]
        except (KeyError, TypeError, UnicodeDecodeError):
            raise DataError(f"{named(META)} is not CIFAR-10's {META} (no label_names list): "
                            f"{AGAIN}") from None
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
            s: [f"{n} {hashlib.sha256(files[n]).hexdigest()}" for n in BATCHES[source]]
            + ([f"{len(labels[s])} rows held out at {val_fraction:g}"] if s != "test" else [])
            for s, source in (("train", "train"), ("val", "train"), ("test", "test"))
        },
        "origins": {"train": "data_batch_1-5",
                    "val": f"held out of data_batch_1-5 ({val_fraction:g} of each class)",
                    "test": "test_batch"},
        "description": {"kind": "cifar10", "root": str(root), "layout": f"python batches ({kind})",
                        "val_fraction": float(val_fraction)},
    }
