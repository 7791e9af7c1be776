"""The prepared-dataset format: every source (built-in synthetic data, ImageNet, CIFAR-10, any
image folder) is converted once into this layout, and training reads only this layout.

A prepared dataset is a directory::

    stats.json          format version, image size, classes, counts, mean RGB, RGB PCA, skips
    mean_image.npy      float32 (S, S, 3), the mean training image (Sec. 2)
    train_images.npy    uint8 (N, S, S, 3), one S x S RGB image per row, opened as a memory map
    train_labels.npy    int64 (N,)
    val_images.npy      ...
    val_labels.npy

Why uint8 memory maps: decoding JPEGs costs milliseconds per image, which a 2-core machine cannot
afford at thousands of images per second; reading a 256 x 256 x 3 row from the page cache costs
microseconds, and random access is free. The price is disk space (196 KiB per image at 256 x 256).

A directory is only ever complete: writers fill ``<dir>.partial`` and rename it at the end, so an
interrupted write never leaves a directory that looks prepared.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "alexnet-prepared"
FORMAT_VERSION = 1
STATS_FILE = "stats.json"
MEAN_IMAGE_FILE = "mean_image.npy"
SPLITS = ("train", "val")


class DataError(ValueError):
    """A dataset on disk is missing, incomplete or not what the configuration expects."""


def images_path(root: Path, split: str) -> Path:
    return Path(root) / f"{split}_images.npy"


def labels_path(root: Path, split: str) -> Path:
    return Path(root) / f"{split}_labels.npy"


def partial_dir(root: Path) -> Path:
    root = Path(root)
    return root.with_name(root.name + ".partial")


def is_prepared(root: str | os.PathLike) -> bool:
    return (Path(root) / STATS_FILE).is_file()


def load_stats(root: str | os.PathLike, image_size: int | None = None) -> dict[str, Any]:
    """Read and check ``stats.json``; raise DataError naming the path and what was expected."""
    root = Path(root)
    path = root / STATS_FILE
    if not root.exists():
        raise DataError(f"prepared dataset not found: {root} does not exist")
    if not path.is_file():
        raise DataError(f"{root} is not a prepared dataset: {STATS_FILE} is missing")
    try:
        stats = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is unreadable: {err}") from None
    if stats.get("format") != FORMAT_NAME or stats.get("format_version") != FORMAT_VERSION:
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


def open_split(root: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images, labels) of one split; the images are a read-only memory map."""
    ipath, lpath = images_path(Path(root), split), labels_path(Path(root), split)
    for path in (ipath, lpath):
        if not path.is_file():
            raise DataError(f"prepared dataset {root} has no {split} split: {path} is missing")
    images = np.load(ipath, mmap_mode="r")
    labels = np.load(lpath)
    if images.ndim != 4 or images.shape[3] != 3 or len(images) != len(labels):
        raise DataError(
            f"{ipath} has shape {images.shape} with {len(labels)} labels; expected (N, S, S, 3)"
        )
    return images, labels


def create_split(root: Path, split: str, count: int, image_size: int) -> np.ndarray:
    """Allocate the image file of one split and return it as a writable memory map."""
    return np.lib.format.open_memmap(
        images_path(root, split), mode="w+", dtype=np.uint8,
        shape=(count, image_size, image_size, 3),
    )


def pixel_statistics(images: np.ndarray, chunk: int = 256) -> dict[str, Any]:
    """Mean image, mean RGB and the RGB covariance's eigen-decomposition over all pixels.

    The PCA is on the 0-255 pixel scale that training adds the colour jitter on (Sec. 4.1: "the
    scale of lambda depends on the pixel scale used for the PCA: keep them consistent").
    Accumulated in float64 chunk by chunk so that it never loads the whole split.
    """
    n = len(images)
    if n == 0:
        raise DataError("cannot compute statistics of an empty training split")
    sum_image = np.zeros(images.shape[1:], dtype=np.float64)
    sum_outer = np.zeros((3, 3), dtype=np.float64)
    for start in range(0, n, chunk):
        block = np.asarray(images[start : start + chunk], dtype=np.float64)
        sum_image += block.sum(axis=0)
        pixels = block.reshape(-1, 3)
        sum_outer += pixels.T @ pixels
    pixel_count = n * images.shape[1] * images.shape[2]
    mean_image = sum_image / n
    mean_rgb = mean_image.reshape(-1, 3).mean(axis=0)
    covariance = sum_outer / pixel_count - np.outer(mean_rgb, mean_rgb)
    eigval, eigvec = np.linalg.eigh(covariance)
    order = np.argsort(eigval)[::-1]  # largest component first
    eigval, eigvec = eigval[order], eigvec[:, order]
    return {
        "mean_image": mean_image.astype(np.float32),
        "mean_rgb": mean_rgb.tolist(),
        "rgb_covariance": covariance.tolist(),
        "pca_eigval": np.clip(eigval, 0.0, None).tolist(),
        "pca_eigvec": eigvec.tolist(),  # columns are the eigenvectors p1, p2, p3
    }


def finalize(
    work_dir: Path,
    root: Path,
    *,
    classes: Sequence[str],
    image_size: int,
    source: dict[str, Any],
    skipped: Iterable[dict[str, str]] = (),
) -> dict[str, Any]:
    """Compute the statistics of a fully written ``work_dir``, write stats.json, then move it to
    ``root`` in one rename. Returns the stats."""
    counts: dict[str, Any] = {}
    for split in SPLITS:
        if not images_path(work_dir, split).is_file():
            continue
        labels = np.load(labels_path(work_dir, split))
        per_class = np.bincount(labels, minlength=len(classes))
        counts[split] = {"total": int(len(labels)), "per_class": per_class.tolist()}
    train_images, _ = open_split(work_dir, "train")
    pixel = pixel_statistics(train_images)
    np.save(work_dir / MEAN_IMAGE_FILE, pixel.pop("mean_image"))
    stats = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "image_size": int(image_size),
        "num_classes": len(classes),
        "classes": list(classes),
        "counts": counts,
        **pixel,
        "pixel_scale": "0-255",
        "mean_image_file": MEAN_IMAGE_FILE,
        "source": source,
        "skipped": list(skipped),
    }
    tmp = work_dir / (STATS_FILE + ".tmp")
    tmp.write_text(json.dumps(stats, indent=2) + "\n")
    tmp.replace(work_dir / STATS_FILE)
    if root.exists():
        shutil.rmtree(root)
    work_dir.replace(root)
    return stats
