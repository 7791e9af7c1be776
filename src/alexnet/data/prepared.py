"""The prepared-dataset format: every source (built-in synthetic data, ImageNet, CIFAR-10, any
image folder) is converted once into this layout, and training reads only this layout.

A prepared dataset is a directory::

    stats.json          format version, image size, classes, counts, mean RGB, RGB PCA, skips
    mean_image.npy      float32 (S, S, 3), the mean training image (Sec. 2)
    train_images.npy    uint8 (N, S, S, 3), one S x S RGB image per row, opened as a memory map
    train_labels.npy    int64 (N,); -1 marks the row of a source file that could not be decoded
    val_images.npy      ...
    val_labels.npy
    test_images.npy     ... (where the source has a test split of its own, or one was held out)
    test_labels.npy

The three splits have three jobs: ``train`` trains; ``val`` selects (the best checkpoint, the
plateau schedule, early stopping); ``test`` is measured once at the end and never selects.
stats.json's ``splits`` says where each came from; a dataset without a test split (ILSVRC-2012,
whose val the paper reports, Table 2) has none, and runs then measure ``test/*`` on val and say so.

Why uint8 memory maps: decoding JPEGs costs milliseconds per image, which a 2-core machine cannot
afford at thousands of images per second; reading a 256 x 256 x 3 row from the page cache costs
microseconds, random access is free, and a random crop reads only the rows it needs. The price is
disk space (192 KiB per image at 256 x 256, 235 GiB for ILSVRC-2012's training set).

A directory is only ever complete: writers fill ``<dir>.partial`` and rename it at the end, so an
interrupted write never leaves a directory that looks prepared.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.exits import DataError, NotReadable

FORMAT_NAME = "alexnet-prepared"
# 2: labels of -1 mark undecodable source files; per-class counts by name.
# 3: a test split where the source has one (a train/ + test/ tree no longer loses its test/),
#    and stats.json's ``splits``: where each split came from.
FORMAT_VERSION = 3
STATS_FILE = "stats.json"
MEAN_IMAGE_FILE = "mean_image.npy"
SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "val")  # test is optional: without it, test/* is measured on val


def images_path(root: Path, split: str) -> Path:
    return Path(root) / f"{split}_images.npy"


def labels_path(root: Path, split: str) -> Path:
    return Path(root) / f"{split}_labels.npy"


def partial_dir(root: Path) -> Path:
    root = Path(root)
    return root.with_name(root.name + ".partial")


def is_prepared(root: str | os.PathLike) -> bool:
    return (Path(root) / STATS_FILE).is_file()


def read_stats(root: str | os.PathLike) -> dict[str, Any]:
    """Read ``stats.json`` of any version; DataError if there is none or it is unreadable."""
    root = Path(root)
    path = root / STATS_FILE
    if not root.exists():
        raise DataError(f"prepared dataset not found: {root} does not exist")
    if not path.is_file():
        raise DataError(f"{root} is not a prepared dataset: {STATS_FILE} is missing")
    try:
        stats = json.loads(path.read_text())
    except PermissionError:
        raise NotReadable(path) from None
    except (OSError, ValueError) as err:  # ValueError: not JSON, or not text at all
        raise DataError(f"{path} is unreadable: {' '.join(str(err).split())}") from None
    if not isinstance(stats, dict):
        raise DataError(f"{path} is unreadable: a JSON object was expected")
    return stats


def is_current(stats: dict[str, Any]) -> bool:
    return stats.get("format") == FORMAT_NAME and stats.get("format_version") == FORMAT_VERSION


def test_split(stats: dict[str, Any]) -> str:
    """The split that ``test/*`` is measured on: ``test`` where the dataset has one, else ``val``
    (which then also selects)."""
    return "test" if "test" in stats.get("counts", {}) else "val"


def load_stats(root: str | os.PathLike, image_size: int | None = None) -> dict[str, Any]:
    """Read and check ``stats.json``; raise DataError naming the path and what was expected."""
    root = Path(root)
    stats = read_stats(root)
    if "format" not in stats:  # another JSON file by that name
        raise DataError(f"{root / STATS_FILE} is not the stats.json of a prepared dataset "
                        "(no format)")
    if not is_current(stats):
        raise DataError(
            f"{root} was prepared in format {stats.get('format')!r} version "
            f"{stats.get('format_version')!r}; this version reads {FORMAT_NAME!r} version "
            f"{FORMAT_VERSION}: prepare it again"
        )
    if image_size is not None and stats["image_size"] != image_size:
        raise DataError(
            f"{root} holds {stats['image_size']}x{stats['image_size']} images but the "
            f"configuration expects {image_size}x{image_size}: prepare it again or set "
            f"data.image_size={stats['image_size']}"
        )
    return stats


def check_arrays(root: str | os.PathLike, stats: dict[str, Any]) -> None:
    """Every split that ``stats.json`` counts is on disk whole: its image file as long as its
    header's shape says, as many labels as rows, as many usable rows as counted. Cheap (file
    sizes and headers), so that a copy cut short stops a run before its first epoch, not in it;
    the mean image likewise."""
    root = Path(root)
    size = stats.get("image_size")
    classes = stats.get("classes") or []
    if stats.get("num_classes") != len(classes):
        raise DataError(f"{root / STATS_FILE} says num_classes {stats.get('num_classes')!r} but "
                        f"lists {len(classes)} classes")
    mean = root / MEAN_IMAGE_FILE
    try:
        shape = np.load(mean, mmap_mode="r").shape
    except PermissionError:
        raise NotReadable(mean) from None
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{mean} is cut short or damaged ({' '.join(str(err).split())})") from None
    if shape != (size, size, 3):
        raise DataError(f"{mean}: shape {shape}, but stats.json says {size}x{size} images")
    for split, counted in (stats.get("counts") or {}).items():
        images, labels = open_split(root, split)
        if images.shape[1:] != (size, size, 3) or labels.ndim != 1:
            raise DataError(f"{images_path(root, split)}: shape {images.shape} with "
                            f"{labels.shape} labels, but stats.json says {size}x{size} images")
        if int((labels >= 0).sum()) != int(counted.get("total", -1)):
            raise DataError(f"{labels_path(root, split)}: {int((labels >= 0).sum())} usable "
                            f"rows, but stats.json counts {counted.get('total')}")
        # Labels are -1 (no image) or a class; and as many of each class as stats.json counts:
        # one out of range would stop training with a traceback, one moved would mislabel.
        outside = (~((labels >= -1) & (labels < len(classes))) if labels.dtype.kind in "iu"
                   else np.ones_like(labels, dtype=bool))  # not whole numbers at all
        if outside.any():
            first = labels[outside].ravel()[0].item()
            raise DataError(f"{labels_path(root, split)} holds label {first!r}, but stats.json "
                            f"has {len(classes)} classes")
        if count_labels(labels, classes).get("per_class") != counted.get("per_class"):
            raise DataError(f"{labels_path(root, split)}: its labels count other numbers of "
                            "each class than stats.json does")


def open_split(root: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images, labels) of one split; the images are a read-only memory map. Rows whose
    label is -1 hold no image (their source file could not be decoded)."""
    ipath, lpath = images_path(Path(root), split), labels_path(Path(root), split)
    for path in (ipath, lpath):
        if not path.is_file():
            raise DataError(f"prepared dataset {root} has no {split} split: {path} is missing")
    arrays = []
    for path, mmap_mode in ((ipath, "r"), (lpath, None)):
        try:
            arrays.append(np.load(path, mmap_mode=mmap_mode))
        except PermissionError:
            raise NotReadable(path) from None
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{path}: the {split} split is cut short or damaged "
                            f"({' '.join(str(err).split())})") from None
    images, labels = arrays
    if labels.ndim != 1:
        raise DataError(f"{lpath} has shape {labels.shape}; expected (N,) labels")
    if images.ndim != 4 or images.shape[3] != 3 or len(images) != len(labels):
        raise DataError(
            f"{ipath} has shape {images.shape} with {len(labels)} labels; expected (N, S, S, 3)"
        )
    return images, labels


def create_split(root: Path, split: str, count: int, image_size: int) -> np.ndarray:
    """Allocate the image file of one split (sparse until written) and return it as a writable
    memory map."""
    return np.lib.format.open_memmap(
        images_path(root, split), mode="w+", dtype=np.uint8,
        shape=(count, image_size, image_size, 3),
    )


class PixelSums:
    """Exact integer sums over training images, from which the mean image and the RGB covariance
    follow. Integer sums do not depend on the order in which images are added, so a prepare that
    was interrupted and resumed, or ran with another number of processes, gives identical
    statistics."""

    def __init__(self, image_size: int) -> None:
        self.count = 0
        self.sum_image = np.zeros((image_size, image_size, 3), dtype=np.uint64)
        self.sum_outer = np.zeros((3, 3), dtype=np.int64)

    def add(self, image: np.ndarray) -> None:
        """Add one uint8 (S, S, 3) image."""
        np.add(self.sum_image, image, out=self.sum_image, casting="unsafe")
        pixels = image.reshape(-1, 3).astype(np.float64)
        # Exact: every partial sum is an integer below 2**53 (65536 pixels x 255**2 per image).
        self.sum_outer += (pixels.T @ pixels).astype(np.int64)
        self.count += 1

    def merge(self, other: PixelSums) -> None:
        self.sum_image += other.sum_image
        self.sum_outer += other.sum_outer
        self.count += other.count

    def state(self) -> dict[str, np.ndarray]:
        return {"count": np.int64(self.count), "sum_image": self.sum_image,
                "sum_outer": self.sum_outer}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> PixelSums:
        sums = cls(state["sum_image"].shape[0])
        sums.count = int(state["count"])
        sums.sum_image[...] = state["sum_image"]
        sums.sum_outer[...] = state["sum_outer"]
        return sums

    def statistics(self) -> dict[str, Any]:
        """Mean image, mean RGB and the RGB covariance's eigen-decomposition over all pixels.

        The PCA is on the 0-255 pixel scale that training adds the colour jitter on (Sec. 4.1:
        the scale of lambda depends on the pixel scale used for the PCA: keep them consistent).
        """
        if self.count == 0:
            raise DataError("cannot compute statistics of an empty training split")
        size = self.sum_image.shape[0]
        mean_image = self.sum_image.astype(np.float64) / self.count
        pixel_count = self.count * size * size
        mean_rgb = self.sum_image.reshape(-1, 3).sum(axis=0, dtype=np.float64) / pixel_count
        covariance = self.sum_outer.astype(np.float64) / pixel_count - np.outer(
            mean_rgb, mean_rgb
        )
        eigval, eigvec = np.linalg.eigh(covariance)
        order = np.argsort(eigval)[::-1]  # largest component first
        eigval, eigvec = eigval[order], eigvec[:, order]
        # An eigenvector's sign is arbitrary; fix it (largest entry positive) so that the same
        # pixels always give the same stats.json.
        eigvec = eigvec * np.sign(eigvec[np.argmax(np.abs(eigvec), axis=0), range(3)])
        return {
            "mean_image": mean_image.astype(np.float32),
            "mean_rgb": mean_rgb.tolist(),
            "rgb_covariance": covariance.tolist(),
            "pca_eigval": np.clip(eigval, 0.0, None).tolist(),
            "pca_eigvec": eigvec.tolist(),  # columns are the eigenvectors p1, p2, p3
        }


def pixel_statistics(images: np.ndarray, labels: np.ndarray | None = None) -> dict[str, Any]:
    """:meth:`PixelSums.statistics` of the rows of ``images`` whose label is not -1."""
    sums = PixelSums(images.shape[1])
    for i in range(len(images)):
        if labels is None or labels[i] >= 0:
            sums.add(np.asarray(images[i]))
    return sums.statistics()


def count_labels(labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    per_class = np.bincount(labels[labels >= 0], minlength=len(classes))
    return {
        "total": int(per_class.sum()),
        "per_class": {name: int(n) for name, n in zip(classes, per_class, strict=True)},
    }


_NUMBER_LIST = re.compile(r"\[\s+(-?[\d.e+-]+(?:,\s+-?[\d.e+-]+)*)\s+\]")


def dumps(data: Any) -> str:
    """Indented JSON with lists of numbers on one line (an RGB triple, a covariance row)."""
    text = json.dumps(data, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(data) + "\n")
    tmp.replace(path)


def complete(
    work_dir: Path,
    *,
    classes: Sequence[str],
    image_size: int,
    sums: PixelSums,
    source: dict[str, Any],
    skipped: Iterable[dict[str, Any]] = (),
    class_names: Sequence[str] | None = None,
    origins: dict[str, str] | None = None,
    duplicates: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Write the mean image and ``stats.json`` into a fully written ``work_dir``; returns the
    stats. ``stats.json`` comes last: its presence is what makes a directory complete.
    ``duplicates``: the val and test images that decode to exactly an image of an earlier split
    (writer.py)."""
    counts = {}
    for split in SPLITS:
        if labels_path(work_dir, split).is_file():
            counts[split] = count_labels(np.load(labels_path(work_dir, split)), classes)
    pixel = sums.statistics()
    np.save(work_dir / MEAN_IMAGE_FILE, pixel.pop("mean_image"))
    stats = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "image_size": int(image_size),
        "num_classes": len(classes),
        "classes": list(classes),
        **({"class_names": list(class_names)} if class_names else {}),
        "counts": counts,
        # Where each split came from (a folder, held out of train, drawn), for the run records.
        "splits": {split: (origins or {}).get(split, split) for split in counts},
        **pixel,
        "pixel_scale": "0-255",
        "mean_image_file": MEAN_IMAGE_FILE,
        "source": source,
        "skipped": list(skipped),
        "duplicates": list(duplicates),
    }
    write_json_atomic(work_dir / STATS_FILE, stats)
    return stats


# The files a prepared dataset's folder holds (and a write's bookkeeping, which a kill can leave).
_OWN_FILE = re.compile(r"(stats\.json|mean_image\.npy|(train|val|test)_(images|labels)\.npy"
                       r"|plan\.json|progress\.npz)")


def check_replaceable(root: str | os.PathLike) -> None:
    """DataError unless ``root`` is absent, an empty folder, or a prepared dataset (of any
    version, damaged or not): a prepared_dir that names a file, or a folder of other things (the
    images themselves, the user's own files), is never replaced."""
    root = Path(root)
    if not root.exists():
        return
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder: choose a new or empty folder for "
                        "data.prepared_dir (nothing was changed)")
    if (root / STATS_FILE).exists():
        return
    other = sorted(p.name for p in root.iterdir() if not _OWN_FILE.fullmatch(p.name))
    if other:
        more = f" and {len(other) - 1} more" if len(other) > 1 else ""
        raise DataError(f"{root} is not a prepared dataset (it holds {other[0]!r}{more}): "
                        "choose a new or empty folder for data.prepared_dir (nothing was changed)")


def publish(work_dir: Path, root: Path) -> None:
    """Move a complete ``work_dir`` to ``root`` by renaming, replacing what was there (only ever
    a prepared dataset: :func:`check_replaceable`)."""
    check_replaceable(root)
    if root.exists():
        old = root.with_name(f"{root.name}.old-{os.getpid()}")
        root.replace(old)
        work_dir.replace(root)
        shutil.rmtree(old)
    else:
        work_dir.replace(root)
