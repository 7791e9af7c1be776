"""The ILSVRC-2012 layouts built from real ImageNet JPEGs (``../shared/data/imagenet-sample``, one
image per class, ``<wnid>_<label>.JPEG``); skipped where the sample is absent, as in a user's
clone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import SAMPLE, write_devkit, write_loc_solution
from PIL import Image

from alexnet.data import preparation as preparing
from alexnet.data import prepared, writer

SIZE = 48

pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"{SAMPLE} is absent")


@pytest.fixture(scope="module")
def jpegs() -> list[Path]:
    """Eight real JPEGs of eight classes, two of them grayscale."""
    files = sorted(SAMPLE.glob("*.JPEG"))
    gray = [f for f in files[:200] if Image.open(f).mode == "L"][:2]
    colour = [f for f in files[::125] if f not in gray][: 8 - len(gray)]
    return sorted(gray + colour)


def wnid(path: Path) -> str:
    return path.name.split("_")[0]


def build(root: Path, jpegs: list[Path], val: str) -> list[str]:
    """train/<wnid>/ of the JPEGs, and val/ (class folders or flat) of the same JPEGs renamed
    ILSVRC2012_val_NNNNNNNN.JPEG in reverse order; returns the val wnids in file order."""
    truth = []
    for path in jpegs:
        (root / "train" / wnid(path)).mkdir(parents=True)
        shutil.copy(path, root / "train" / wnid(path) / path.name)
    for number, path in enumerate(reversed(jpegs), start=1):
        folder = root / "val" / (wnid(path) if val == "folders" else "")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"ILSVRC2012_val_{number:08d}.JPEG")
        truth.append(wnid(path))
    return truth


def test_the_ilsvrc_layouts_give_the_same_dataset(tmp_path: Path, jpegs: list[Path]) -> None:
    outputs = {}
    for layout in ("folders", "loc", "devkit"):
        root = tmp_path / layout
        truth = build(root, jpegs, "folders" if layout == "folders" else "flat")
        if layout == "loc":
            write_loc_solution(root / "LOC_val_solution.csv", truth)
        elif layout == "devkit":
            write_devkit(root / "ILSVRC2012_devkit_t12", truth, sorted(map(wnid, jpegs)))
        job = preparing.plan("imagenet", root, tmp_path / f"out-{layout}", SIZE)
        stats = writer.write(job, workers=2, chunk_size=3, progress=False).stats
        assert stats["classes"] == sorted(map(wnid, jpegs)) and not stats["skipped"]
        outputs[layout] = prepared.open_split(tmp_path / f"out-{layout}", "val")
        train_images, train_labels = prepared.open_split(tmp_path / f"out-{layout}", "train")
        # Each val image is a train image under another name: same pixels, same label.
        for image, label in zip(*outputs[layout], strict=True):
            row = int(np.flatnonzero(train_labels == label)[0])
            assert np.array_equal(image, train_images[row])
    for layout in ("loc", "devkit"):
        assert np.array_equal(outputs[layout][0], outputs["folders"][0][::-1])


def test_real_jpegs_decode_as_the_paper_says(tmp_path: Path, jpegs: list[Path]) -> None:
    build(tmp_path / "src", jpegs, "folders")
    job = preparing.plan("imagenet", tmp_path / "src", tmp_path / "out", SIZE)
    writer.write(job, workers=1, progress=False)
    images, _ = prepared.open_split(tmp_path / "out", "train")
    for image, path in zip(images, job.splits["train"].identity, strict=True):
        with Image.open(path) as original:
            # The paper's steps done plainly on the fully decoded image: the central square
            # (what stays after the shorter side is scaled to SIZE and the centre cut out),
            # scaled to SIZE x SIZE.
            width, height = original.size
            side = min(width, height)
            box = ((width - side) / 2, (height - side) / 2, (width + side) / 2,
                   (height + side) / 2)
            reference = np.asarray(original.convert("RGB").resize(
                (SIZE, SIZE), Image.Resampling.BILINEAR, box=box), dtype=float)
            gray = original.mode == "L"
        # Decoding at a reduced scale first (JPEG's draft mode) changes little.
        assert np.abs(image - reference).mean() < 6, path
        if gray:
            assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    stats = prepared.load_stats(tmp_path / "out", SIZE)
    assert 60 < min(stats["mean_rgb"]) and max(stats["mean_rgb"]) < 200
    assert stats["pca_eigval"][0] > stats["pca_eigval"][1] > stats["pca_eigval"][2] > 0
