"""The built-in dataset: procedurally drawn images, deterministic for a seed, no download.

Each class is a combination of an object *shape*, a *texture* and a *colour*; no single attribute
identifies a class, so the network has to learn all three. Every image draws its object at a random
position, scale and rotation over a cluttered background (a colour gradient, distractor blobs and
noise), under random illumination and a random colour cast, so that crops, flips and the PCA colour
jitter have real variation to act on (Sec. 4.1).

The images are written once in the prepared format (``alexnet.data.prepared``) and read by the same
loader as ImageNet.
"""

from __future__ import annotations

import colorsys
import itertools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.data import prepared, writer
from alexnet.exits import DataError

SHAPES = ("disc", "square", "triangle", "cross", "ring", "star", "diamond", "bar")
TEXTURES = ("solid", "stripes", "checker", "dots")
HUES = (0.0, 0.08, 0.16, 0.33, 0.5, 0.6, 0.72, 0.85)  # red, orange, yellow, green, cyan, blue, ...
MAX_CLASSES = len(SHAPES) * len(TEXTURES) * len(HUES)
CLASS_TABLE_SEED = 2012  # the class definitions never change with the data seed


def class_table(num_classes: int) -> list[tuple[str, str, float]]:
    """The (shape, texture, hue) of each class: distinct combinations in a fixed shuffled order."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"data.num_classes must be between 2 and {MAX_CLASSES}, got {num_classes}")
    combos = list(itertools.product(SHAPES, TEXTURES, HUES))
    order = np.random.default_rng(CLASS_TABLE_SEED).permutation(len(combos))
    return [combos[i] for i in order[:num_classes]]


def class_name(shape: str, texture: str, hue: float) -> str:
    return f"{shape}-{texture}-hue{int(round(hue * 360)):03d}"


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a shape in rotated, centred coordinates (u, v), in units of its radius."""
    r = np.hypot(u, v)
    if shape == "disc":
        return r < 1.0
    if shape == "square":
        return np.maximum(abs(u), abs(v)) < 0.8
    if shape == "triangle":
        return (v > -0.5) & (v < 1.0 - 1.7 * abs(u))
    if shape == "cross":
        return ((abs(u) < 0.3) & (abs(v) < 1.0)) | ((abs(v) < 0.3) & (abs(u) < 1.0))
    if shape == "ring":
        return (r < 1.0) & (r > 0.6)
    if shape == "star":
        theta = np.arctan2(v, u)
        return r < 0.55 + 0.45 * np.cos(5 * theta)
    if shape == "diamond":
        return abs(u) + abs(v) < 1.0
    if shape == "bar":
        return (abs(u) < 1.0) & (abs(v) < 0.35)
    raise ValueError(shape)


def _texture(texture: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """1 where the texture shows the class colour, a lower value where it shows a darker shade."""
    if texture == "solid":
        return np.ones_like(u)
    if texture == "stripes":
        return (np.sin(u * 2 * np.pi / period) > 0).astype(np.float64)
    if texture == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float64)
    if texture == "dots":
        du = (u / period) % 1.0 - 0.5
        dv = (v / period) % 1.0 - 0.5
        return (np.hypot(du, dv) > 0.3).astype(np.float64)
    raise ValueError(texture)


def _rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def draw_image(
    shape: str, texture: str, hue: float, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw one (size, size, 3) uint8 image of the given class."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size

    # Background: a random linear colour gradient ...
    c0, c1 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5) + 0.75) / 1.5
    image = c0 + (c1 - c0) * t[..., None]
    # ... cluttered with small distractor shapes of random kinds and colours.
    for _ in range(rng.integers(4, 10)):
        cx, cy, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.1)
        rot = rng.uniform(0, 2 * np.pi)
        # Only the distractor's bounding box is computed: most of the image cannot change.
        rows = slice(max(0, int((cy - radius) * size)), int((cy + radius) * size) + 1)
        cols = slice(max(0, int((cx - radius) * size)), int((cx + radius) * size) + 1)
        bx, by = x[rows, cols], y[rows, cols]
        u = (np.cos(rot) * (bx - cx) + np.sin(rot) * (by - cy)) / radius
        v = (-np.sin(rot) * (bx - cx) + np.cos(rot) * (by - cy)) / radius
        mask = _shape_mask(SHAPES[rng.integers(len(SHAPES))], u, v)
        image[rows, cols][mask] = rng.uniform(0, 1, 3)

    # The object: random position (kept inside the central crop), scale and rotation.
    radius = rng.uniform(0.16, 0.3)
    cx, cy = rng.uniform(0.32, 0.68, 2)
    rot = rng.uniform(0, 2 * np.pi)
    u = (np.cos(rot) * (x - cx) + np.sin(rot) * (y - cy)) / radius
    v = (-np.sin(rot) * (x - cx) + np.cos(rot) * (y - cy)) / radius
    mask = _shape_mask(shape, u, v)
    colour = _rgb(hue + rng.normal(0, 0.015), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
    shade = _texture(texture, u, v, period=rng.uniform(0.35, 0.5))
    object_pixels = colour * (0.35 + 0.65 * shade[..., None])
    image[mask] = object_pixels[mask]

    # Illumination: a brightness gradient across the image, then a global colour cast and noise.
    light_angle = rng.uniform(0, 2 * np.pi)
    gradient = np.cos(light_angle) * (x - 0.5) + np.sin(light_angle) * (y - 0.5)
    image *= (rng.uniform(0.7, 1.2) + rng.uniform(0.0, 0.6) * gradient)[..., None]
    image *= rng.uniform(0.85, 1.15, 3)
    image += rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


@dataclass
class SyntheticImages:
    """The rows of one split (a writer.RowReader). Every image has its own random stream, so the
    result does not depend on the number of worker processes or on interruptions, and changing
    the val size never changes the train images."""

    table: list[tuple[str, str, float]]
    labels: np.ndarray
    seed: int
    split_index: int

    def read(self, start: int, stop: int, size: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        images = np.empty((stop - start, size, size, 3), dtype=np.uint8)
        for row in range(start, stop):
            rng = np.random.default_rng((self.seed, self.split_index, row))
            images[row - start] = draw_image(*self.table[self.labels[row]], size, rng)
        return images, []

    def describe(self, row: int) -> str:
        return f"synthetic image {row}"


def generate(
    root: str | Path,
    *,
    num_classes: int = 10,
    train_per_class: int = 100,
    val_per_class: int = 20,
    test_per_class: int | None = None,
    image_size: int = 256,
    seed: int = 0,
    workers: int | None = None,
    progress: bool | None = None,
) -> dict:
    """Draw the dataset and write it to ``root`` in the prepared format; returns its stats. The
    test split is drawn like the others (``test_per_class``, by default ``val_per_class``), from
    its own streams: its size never changes the train or val images."""
    table = class_table(num_classes)
    test_per_class = val_per_class if test_per_class is None else test_per_class
    if train_per_class < 1 or val_per_class < 1 or test_per_class < 1:
        raise ValueError("data.train_per_class, data.val_per_class and data.test_per_class must "
                         "be at least 1")
    if image_size < 16:
        raise ValueError(f"data.image_size must be at least 16, got {image_size}")
    splits = {}
    for split_index, (split, per_class) in enumerate(
        zip(prepared.SPLITS, (train_per_class, val_per_class, test_per_class), strict=True)
    ):
        labels = np.tile(np.arange(num_classes, dtype=np.int64), per_class)
        np.random.default_rng([seed, split_index]).shuffle(labels)
        splits[split] = writer.Split(
            labels=labels,
            reader=SyntheticImages(table, labels, seed, split_index),
            identity=[f"synthetic seed {seed} {split} {len(labels)}"],
            origin=f"drawn ({per_class} per class)",
        )
    job = writer.Job(
        root=Path(root),
        image_size=image_size,
        classes=[class_name(*c) for c in table],
        splits=splits,
        source={
            "kind": "synthetic",
            "seed": seed,
            "train_per_class": train_per_class,
            "val_per_class": val_per_class,
            "test_per_class": test_per_class,
        },
    )
    workers = max(1, min(workers or os.cpu_count() or 1, 8))
    return writer.write(job, workers=workers, chunk_size=32, progress=progress).stats


def prepare(root: str | Path, **generation: Any) -> dict:
    """The stats of the built-in dataset at ``root``, drawn first if it is missing, was written
    by an older version of the format, or is damaged (it is a cache: drawn again, with a note).
    A folder that holds something else is refused, not drawn over."""
    prepared.check_replaceable(root)
    if prepared.is_prepared(root):
        try:
            if prepared.is_current(prepared.read_stats(root)):
                stats = prepared.load_stats(root)
                prepared.check_arrays(root, stats)
                return stats
        except DataError as err:
            print(f"note: the built-in data are damaged ({' '.join(str(err).split())}); "
                  "drawing them again", file=sys.stderr)
    return generate(root, **generation)
