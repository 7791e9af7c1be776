"""Preparing a dataset: decoding awkward files, the statistics, resuming, atomicity, the command."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, class_colour, make_imagenet, write_image
from PIL import Image

from alexnet.data import preparation as preparing
from alexnet.data import prepared, writer
from alexnet.data.images import DecodeError, load_image
from alexnet.data.loader import PreparedImages
from alexnet.exits import DataError


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def awkward_folder(root: Path) -> dict[str, Path]:
    """An image folder with every kind of file ILSVRC-2012 and users' folders hold."""
    folder = root / "train" / "things"
    paths = {
        "rgb": write_image(folder / "rgb.JPEG", (200, 30, 40), size=(48, 32)),
        "gray": folder / "gray.JPEG",
        "cmyk": folder / "cmyk.JPEG",
        "png": folder / "png_named.JPEG",
        "palette": folder / "palette.png",
        "grey16": folder / "grey16.png",
        "corrupt": folder / "corrupt.JPEG",
        "truncated": folder / "truncated.JPEG",
        "empty": folder / "empty.jpg",
    }
    Image.new("L", (32, 48), 90).save(paths["gray"], format="JPEG")
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(paths["cmyk"], format="JPEG")  # red
    Image.new("RGB", (40, 40), (10, 20, 250)).save(paths["png"], format="PNG")
    Image.new("RGB", (40, 40), (0, 128, 64)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        paths["palette"], format="PNG")
    # 16-bit grey (a scanner's or a microscope's PNG): 40000 of 65535 is 156 of 255, not clipped
    Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)).save(paths["grey16"], format="PNG")
    paths["corrupt"].write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG" * 10)
    good = (root / "tmp.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        good, format="JPEG")
    paths["truncated"].write_bytes(good.read_bytes()[:300])
    good.unlink()
    paths["empty"].write_bytes(b"")
    for i, colour in enumerate([(0, 0, 0), (255, 255, 255)]):
        write_image(root / "val" / "things" / f"{i}.jpg", colour)
    return paths


def test_awkward_files_are_converted_or_skipped(tmp_path: Path) -> None:
    awkward_folder(tmp_path / "src")
    job = preparing.plan("imagefolder", tmp_path / "src", tmp_path / "out", 16)
    result = writer.write(job, workers=1, chunk_size=3, progress=False)
    stats = prepared.load_stats(tmp_path / "out", 16)
    skipped = {Path(s["path"]).name: s for s in stats["skipped"]}
    assert set(skipped) == {"corrupt.JPEG", "truncated.JPEG", "empty.jpg"}
    assert all(s["split"] == "train" and s["error"] for s in skipped.values())
    assert result.skipped and stats["counts"]["train"]["total"] == 6
    images, labels = prepared.open_split(tmp_path / "out", "train")
    files = job.splits["train"].identity
    rows = {Path(f).name: i for i, f in enumerate(files)}
    for name in skipped:
        assert labels[rows[name]] == -1  # a row without an image, never read
    gray = images[rows["gray.JPEG"]].astype(int)
    assert np.abs(gray - 90).max() <= 2 and (gray[..., 0] == gray[..., 2]).all()
    assert np.abs(images[rows["cmyk.JPEG"]].astype(int) - [255, 0, 0]).max() <= 3
    assert np.abs(images[rows["png_named.JPEG"]].astype(int) - [10, 20, 250]).max() == 0
    assert np.abs(images[rows["rgb.JPEG"]].astype(int) - [200, 30, 40]).max() <= 6
    assert np.abs(images[rows["palette.png"]].astype(int) - [0, 128, 64]).max() == 0
    assert (images[rows["grey16.png"]] == 40000 >> 8).all()
    dataset = PreparedImages(tmp_path / "out", "train", crop_size=16, crop="none")
    assert len(dataset) == 6
    batch, _, _ = dataset.__getitems__(list(range(6)))
    assert (batch.reshape(6, -1).max(dim=1).values > 0).all()  # no empty rows
    # The statistics leave the skipped rows out.
    direct = prepared.pixel_statistics(images, labels)
    assert stats["mean_rgb"] == pytest.approx(direct["mean_rgb"], abs=1e-9)


def test_a_floating_point_image_is_skipped_and_says_why(tmp_path: Path) -> None:
    """A 32-bit float TIFF (values 0-1) became black through Pillow's conversion, which clips
    at 0-255: its range is unknown, so it is skipped (and named) like an undecodable file."""
    from PIL import Image

    from alexnet.data.images import DecodeError, load_image

    Image.fromarray(np.full((20, 30), 0.5, dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DecodeError, match=r"^a 32-bit floating-point image, whose range \(0-1\? "
                                          r"0-255\?\) is not known: convert it to 8 bits first$"):
        load_image(tmp_path / "f.tif", 16)


def test_load_image_takes_the_central_square(tmp_path: Path) -> None:
    wide = np.zeros((30, 90, 3), dtype=np.uint8)
    wide[:, :30] = (255, 0, 0)
    wide[:, 30:60] = (0, 255, 0)
    wide[:, 60:] = (0, 0, 255)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(wide.transpose(1, 0, 2).copy()).save(tmp_path / "tall.png")
    for name in ("wide.png", "tall.png"):
        image = load_image(tmp_path / name, 12)
        assert image.shape == (12, 12, 3)
        assert (image[1:-1, 1:-1] == (0, 255, 0)).all()  # only the middle third survives
    with pytest.raises(DecodeError, match="No such file"):
        load_image(tmp_path / "missing.png", 12)


def test_stats_recover_a_known_colour_covariance(tmp_path: Path) -> None:
    """Images whose colours have a known covariance: stats.json must give its eigenvectors."""
    angle = 0.6
    c, s = np.cos(angle), np.sin(angle)
    eigvec = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
        [[1, 0, 0], [0, c, -s], [0, s, c]])
    eigval = np.array([1600.0, 400.0, 100.0])
    mean = np.array([120.0, 110.0, 100.0])
    # The 8 corners of the cube {-1, 1}^3 have zero mean and identity covariance; each is one
    # image of a constant colour, which resizing leaves unchanged.
    corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
    colours = np.round(mean + corners * np.sqrt(eigval) @ eigvec.T).astype(int)
    for i, colour in enumerate(colours):
        write_image(tmp_path / "src" / "train" / "c" / f"{i}.png", tuple(colour), fmt="PNG")
    write_image(tmp_path / "src" / "val" / "c" / "0.png", (0, 0, 0), fmt="PNG")
    stats = writer.write(preparing.plan("imagefolder", tmp_path / "src", tmp_path / "out", 8),
                         workers=1, progress=False).stats
    got_vec, got_val = np.array(stats["pca_eigvec"]), np.array(stats["pca_eigval"])
    # The pixels' covariance exactly (the colours are whole numbers) ...
    exact_val, exact_vec = np.linalg.eigh(np.cov(colours.T, bias=True))
    assert got_val == pytest.approx(exact_val[::-1], rel=1e-9)
    assert np.abs(np.sum(got_vec * exact_vec[:, ::-1], axis=0)) == pytest.approx(np.ones(3))
    # ... which is the designed one up to rounding the colours to whole numbers.
    assert np.abs(np.sum(got_vec * eigvec, axis=0)) == pytest.approx(np.ones(3), abs=1e-3)
    assert got_val == pytest.approx(eigval, rel=0.06)
    assert np.array(stats["rgb_covariance"]) == pytest.approx(np.cov(colours.T, bias=True))
    assert stats["mean_rgb"] == pytest.approx(colours.mean(axis=0))
    mean_image = np.load(tmp_path / "out" / stats["mean_image_file"])
    assert mean_image.shape == (8, 8, 3) and mean_image.dtype == np.float32
    assert mean_image.mean(axis=(0, 1)) == pytest.approx(stats["mean_rgb"], abs=1e-3)
    text = (tmp_path / "out" / "stats.json").read_text()
    assert '"pca_eigval": [' in text  # readable: numbers on one line
    assert stats["counts"] == {"train": {"total": 8, "per_class": {"c": 8}},
                               "val": {"total": 1, "per_class": {"c": 1}}}


def small_job(src: Path, out: Path) -> writer.Job:
    if not src.exists():
        make_imagenet(src, per_class=6)
        write_image(src / "train" / "n01440764" / "broken.JPEG").write_bytes(b"broken")
    return preparing.plan("imagenet", src, out, 16)


def _killed_prepare(src: Path, out: Path, after: int) -> None:
    def crash(rows: int) -> None:
        if rows >= after:
            os._exit(9)  # like SIGKILL: no cleanup, no exception handlers

    writer.write(small_job(src, out), workers=1, chunk_size=4, progress=False, save_every_s=0,
                 on_chunk=crash)


def test_killed_and_resumed_prepare_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    src = tmp_path / "src"
    whole = writer.write(small_job(src, tmp_path / "whole"), workers=1, chunk_size=4,
                         progress=False)
    assert whole.images == 37 and not whole.resumed

    out = tmp_path / "resumed"
    child = multiprocessing.get_context("fork").Process(target=_killed_prepare,
                                                        args=(src, out, 12))
    child.start()
    child.join(60)
    assert child.exitcode == 9
    # Killed: nothing looks prepared.
    assert not out.exists() and prepared.partial_dir(out).is_dir()
    assert not prepared.is_prepared(prepared.partial_dir(out))
    with pytest.raises(DataError, match="does not exist"):
        prepared.load_stats(out)

    resumed = writer.write(small_job(src, out), workers=1, chunk_size=4, progress=False)
    assert resumed.resumed and resumed.images == 37 - 12
    assert not prepared.partial_dir(out).exists()
    assert files_of(out) == files_of(tmp_path / "whole")
    assert len(resumed.stats["skipped"]) == 1


def test_a_stale_partial_dir_of_another_job_is_discarded(tmp_path: Path) -> None:
    src = tmp_path / "src"
    small_job(src, tmp_path / "a")
    partial = prepared.partial_dir(tmp_path / "out")
    partial.mkdir()
    (partial / "plan.json").write_text(json.dumps({"fingerprint": "another job"}))
    (partial / "train_images.npy").write_bytes(b"junk")
    result = writer.write(small_job(src, tmp_path / "out"), workers=1, progress=False)
    assert not result.resumed and result.images == 37
    assert prepared.load_stats(tmp_path / "out", 16)["counts"]["train"]["total"] == 18


def test_several_processes_write_the_same_dataset(tmp_path: Path) -> None:
    src = tmp_path / "src"
    one = writer.write(small_job(src, tmp_path / "one"), workers=1, chunk_size=4,
                       progress=False)
    two = writer.write(small_job(src, tmp_path / "two"), workers=2, chunk_size=4,
                       progress=False)
    assert two.workers == 2 and one.workers == 1
    assert files_of(tmp_path / "one") == files_of(tmp_path / "two")
    images, labels = prepared.open_split(tmp_path / "two", "val")
    assert labels.tolist() == small_job(src, tmp_path / "x").splits["val"].labels.tolist()
    for image, label in zip(images, labels, strict=True):  # each class has its own colour
        assert np.abs(image.mean(axis=(0, 1)) - class_colour(label)).max() < 8


def test_existing_prepared_dataset(tmp_path: Path) -> None:
    src = tmp_path / "src"
    writer.write(small_job(src, tmp_path / "out"), workers=1, progress=False)
    found = preparing.existing(tmp_path / "out", "imagenet", src, 16, force=False)
    assert found is not None and found["counts"]["val"]["total"] == 18
    assert preparing.existing(tmp_path / "out", "imagenet", src, 16, force=True) is None
    assert preparing.existing(tmp_path / "none", "imagenet", src, 16, force=False) is None
    with pytest.raises(DataError, match=r"already holds imagenet from .* at 16x16: pass force"):
        preparing.existing(tmp_path / "out", "imagenet", src, 32, force=False)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    stats["format_version"] = 1
    (tmp_path / "out" / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(DataError, match=r"older format \(version 1\)"):
        preparing.existing(tmp_path / "out", "imagenet", src, 16, force=False)


def test_preparing_again_after_the_files_changed_is_refused(tmp_path: Path) -> None:
    """The same command after images were added, removed or moved between classes would answer
    "already prepared" with the old images: refused, saying what changed; force=true prepares."""
    src = tmp_path / "src"
    writer.write(small_job(src, tmp_path / "out"), workers=1, progress=False)
    assert preparing.existing(tmp_path / "out", "imagenet", src, 16, force=False) is not None
    train = src / "train" / "n01440764"
    write_image(train / "added.JPEG")
    with pytest.raises(DataError) as added:
        preparing.existing(tmp_path / "out", "imagenet", src, 16, force=False)
    assert str(added.value) == (
        f"data.prepared_dir={tmp_path / 'out'} was made from other files of data.root (37 files "
        "then, 38 now): pass force=true to prepare it again, or choose another "
        "data.prepared_dir")
    moved = next(p for p in sorted(train.glob("*.JPEG"))
                 if p.name not in ("added.JPEG", "broken.JPEG"))
    moved.rename(src / "train" / "n01443537" / moved.name)  # the same count, another class
    (train / "added.JPEG").unlink()
    with pytest.raises(DataError, match=r"\(37 files then and now, not the same ones or not in "
                                        r"the same classes\)"):
        preparing.existing(tmp_path / "out", "imagenet", src, 16, force=False)
    assert preparing.existing(tmp_path / "out", "imagenet", src, 16, force=True) is None


def run_prepare(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / "prepare.py"), f"paths.data_dir={tmp_path / 'data'}",
         f"paths.log_dir={tmp_path / 'logs'}", "progress=false", *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )


def test_prepare_command(tmp_path: Path) -> None:
    src = tmp_path / "my images"  # a path with a space, as users' paths have
    make_imagenet(src, per_class=2)
    result = run_prepare(["data=imagenet", f"data.root='{src}'", "data.image_size=16"], tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "data" / "prepared" / "imagenet-s16"
    assert "train 6, val 6 images at 16x16" in result.stdout and "images/s" in result.stdout
    assert prepared.load_stats(out, 16)["source"]["root"] == str(src.resolve())

    missing = run_prepare(["data=imagefolder", f"data.root={tmp_path / 'nope'}"], tmp_path)
    assert missing.returncode == 2
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert lines[0].endswith(f"data.root={tmp_path / 'nope'} does not exist")


def test_copies_across_splits_are_listed_and_named(tmp_path: Path) -> None:
    """A val or test image that decodes to exactly an image of train (or a test image to one of
    val) is listed under ``duplicates``, once, with the image it copies; copies within a split
    and files that cannot be decoded are not."""
    rng = np.random.default_rng(5)
    src = tmp_path / "src"

    def noise(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
        return path

    def copy(original: Path, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(original.read_bytes())

    for split, count in (("train", 3), ("val", 2), ("test", 2)):
        for name in ("cat", "dog"):
            for i in range(count):
                noise(src / split / name / f"{i}.png")
    copy(src / "train/cat/1.png", src / "val/cat/v.png")  # val copies train
    copy(src / "train/cat/1.png", src / "test/dog/t.png")  # test copies train (another class)
    copy(src / "val/dog/0.png", src / "test/dog/u.png")  # test copies val
    copy(src / "train/dog/0.png", src / "train/dog/again.png")  # within train: not listed
    for split in ("train", "test"):  # undecodable in both: zeros, not copies
        (src / split / "cat" / "broken.png").write_bytes(b"not an image")
    result = writer.write(preparing.plan("imagefolder", src, tmp_path / "out", 16), workers=1,
                          chunk_size=2, progress=False)
    found = sorted((d["split"], Path(d["path"]).relative_to(src).as_posix(),
                    d["same_as"]["split"], Path(d["same_as"]["path"]).relative_to(src).as_posix())
                   for d in result.stats["duplicates"])
    assert found == [("test", "test/dog/t.png", "train", "train/cat/1.png"),
                     ("test", "test/dog/u.png", "val", "val/dog/0.png"),
                     ("val", "val/cat/v.png", "train", "train/cat/1.png")]
    assert prepared.load_stats(tmp_path / "out")["duplicates"] == result.stats["duplicates"]
    text = preparing.describe(result, "imagefolder")
    assert "warning: 3 images decode to exactly an image of another split (1 test as train, " \
           "1 test as val, 1 val as train" in text
    assert "test/dog/t.png" in text or "test/dog/u.png" in text or "val/cat/v.png" in text

    # A tree without copies says nothing, and records an empty list (not a missing key).
    for path in (src / "val/cat/v.png", src / "test/dog/t.png", src / "test/dog/u.png"):
        path.unlink()
    clean = writer.write(preparing.plan("imagefolder", src, tmp_path / "clean", 16), workers=1,
                         progress=False)
    assert clean.stats["duplicates"] == []
    assert "warning" not in preparing.describe(clean, "imagefolder")


def test_a_file_name_that_is_not_utf8_is_prepared(tmp_path: Path) -> None:
    """A name of bytes no Unicode string holds (Latin-1 from an old archive) is an image like
    any other: read, counted and fingerprinted (os.fsencode), not a traceback."""
    import os

    awkward_folder(tmp_path / "src")
    folder = tmp_path / "src" / "train" / "things"
    name = os.fsdecode(b"caf\xe9.jpg")  # \xe9 alone is not UTF-8: a surrogate escape
    write_image(folder / name, (30, 200, 90))
    job = preparing.plan("imagefolder", tmp_path / "src", tmp_path / "out", 16)
    writer.write(job, workers=1, chunk_size=3, progress=False)
    images, _ = prepared.open_split(tmp_path / "out", "train")
    row = [Path(f).name for f in job.splits["train"].identity].index(name)
    assert np.abs(images[row].astype(int) - [30, 200, 90]).max() <= 6
    assert prepared.load_stats(tmp_path / "out", 16)["counts"]["train"]["total"] == 7
