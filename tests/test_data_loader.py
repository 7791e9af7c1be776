"""The loader over the prepared format, and the data module's checks and messages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    class_colour,
    compose_config,
    errors_by_hand,
    train_keeping_the_run,
    write_image,
)
from PIL import Image

from alexnet.data import preparation as preparing
from alexnet.data import prepared, synthetic, writer
from alexnet.data.datamodule import PreparedDataModule, SyntheticDataModule
from alexnet.data.loader import PreparedImages, SharedBatches, release
from alexnet.exits import DataError

SIZE, CROP = 16, 10


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "prepared"
    synthetic.generate(root, num_classes=3, train_per_class=4, val_per_class=2,
                       image_size=SIZE, workers=1, progress=False)
    return root


def check_patches(root: Path, split: str, batch: tuple, crop: int) -> None:
    """Every patch is the region its geometry names of a prepared image of its label, mirrored
    if the geometry says so."""
    images, labels, geometry = batch
    source, all_labels = prepared.open_split(root, split)
    for image, label, (top, left, mirrored) in zip(images, labels, geometry.tolist(),
                                                   strict=True):
        regions = source[all_labels == label.item(), top : top + crop, left : left + crop]
        if mirrored:
            regions = regions[:, :, ::-1]
        assert (regions == image.numpy()).all(axis=(1, 2, 3)).any()


def test_random_patches_and_reflections(tiny: Path) -> None:
    dataset = PreparedImages(tiny, "train", crop_size=CROP, crop="random", flip=True)
    assert len(dataset) == 12
    torch.manual_seed(0)
    images, labels, geometry = dataset.__getitems__([7, 2, 11, 0])
    assert images.shape == (4, CROP, CROP, 3) and images.dtype == torch.uint8
    _, all_labels = prepared.open_split(tiny, "train")
    assert labels.tolist() == all_labels[[0, 2, 7, 11]].tolist()  # read in sorted order
    source, _ = prepared.open_split(tiny, "train")
    for k, row in enumerate([0, 2, 7, 11]):
        top, left, mirrored = geometry[k].tolist()
        patch = source[row, top : top + CROP, left : left + CROP]
        assert np.array_equal(images[k].numpy(), patch[:, ::-1] if mirrored else patch)
    draws = dataset.geometry(1000)
    assert draws[:, :2].min() == 0 and draws[:, :2].max() == SIZE - CROP
    assert 0.4 < draws[:, 2].float().mean() < 0.6


def test_centre_and_whole_images(tiny: Path) -> None:
    source, _ = prepared.open_split(tiny, "val")
    centre = PreparedImages(tiny, "val", crop_size=CROP)
    images, _, geometry = centre.__getitems__([0, 1])
    assert geometry.tolist() == [[3, 3, 0], [3, 3, 0]]
    assert np.array_equal(images[1].numpy(), source[1, 3:13, 3:13])
    whole = PreparedImages(tiny, "val", crop_size=CROP, crop="none")
    images, _, geometry = whole.__getitems__([1])
    assert np.array_equal(images[0].numpy(), source[1]) and geometry.tolist() == [[0, 0, 0]]


def test_ablation_switches_turn_off_crops_and_reflections(tiny: Path) -> None:
    data = PreparedDataModule(str(tiny), image_size=SIZE, crop_size=CROP, crop=False,
                              flip=False, num_workers=0, batch_size=4)
    data.setup("fit")
    geometry = data.train_set.geometry(200)
    assert (geometry == torch.tensor([3, 3, 0])).all()
    on = PreparedDataModule(str(tiny), image_size=SIZE, crop_size=CROP, num_workers=0)
    on.setup("fit")
    assert on.train_preset.pca_jitter and not on.eval_preset.pca_jitter
    assert on.train_set.crop == "random" and on.train_set.flip


def test_loader_workers_deliver_the_patches(tiny: Path) -> None:
    data = PreparedDataModule(str(tiny), image_size=SIZE, crop_size=CROP, batch_size=4,
                              num_workers=2, pin_memory=False)
    data.setup("fit")
    batches = list(data.train_dataloader())
    assert len(batches) == 3 and all(len(b[1]) == 4 for b in batches)
    for batch in batches:
        check_patches(tiny, "train", batch, CROP)
        x = data.train_preset(batch[0], batch[2])
        assert x.shape == (4, 3, CROP, CROP) and x.dtype == torch.float32
    labels = np.sort(np.concatenate([b[1] for b in batches]))
    assert labels.tolist() == sorted(prepared.open_split(tiny, "train")[1].tolist())


def test_released_batches_are_reused_and_kept_ones_are_not(tiny: Path) -> None:
    shared = SharedBatches(keep=2)
    first, second = shared.new((2, 3)), shared.new((2, 3))
    assert first.untyped_storage().data_ptr() != second.untyped_storage().data_ptr()
    release(first)
    third = shared.new((2, 3))
    assert third.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
    fourth = shared.new((2, 3))  # second and third are still in use: a new buffer
    assert fourth.untyped_storage().data_ptr() not in {
        second.untyped_storage().data_ptr(), third.untyped_storage().data_ptr()}
    release(torch.zeros(2, 3, dtype=torch.uint8))  # not a shared batch: nothing happens
    once = SharedBatches(keep=0)  # evaluation loaders: shared memory, but not kept
    used = once.new((2, 3))
    release(used)
    assert once.new((2, 3)).untyped_storage().data_ptr() != used.untyped_storage().data_ptr()
    # Through real workers, over several epochs: released batches are reused, kept ones never
    # overwritten.
    data = PreparedDataModule(str(tiny), image_size=SIZE, crop_size=CROP, batch_size=2,
                              num_workers=2, pin_memory=False)
    data.setup("fit")
    loader, kept = data.train_dataloader(), []
    for epoch in range(3):
        for batch in loader:
            check_patches(tiny, "train", batch, CROP)
            if epoch == 1:
                kept.append((batch, batch[0].clone()))
            else:
                data.network_input(batch, data.train_preset)
    for batch, copy in kept:
        assert torch.equal(batch[0], copy)


def test_missing_prepared_dataset_names_the_command(tmp_path: Path) -> None:
    target = tmp_path / "prepared" / "imagenet-s256"
    data = PreparedDataModule(str(target), source="imagenet")
    with pytest.raises(DataError) as err:
        data.prepare_data()
    assert str(err.value) == (
        f"prepared dataset not found: {target} does not exist; to prepare it: python "
        f"src/prepare.py data=imagenet data.root=/path/to/ILSVRC2012 data.prepared_dir={target}"
    )
    data = PreparedDataModule(str(target), source="imagefolder", root="/my/photos",
                              image_size=64, crop_size=56)
    with pytest.raises(DataError, match="python src/prepare.py data=imagefolder "
                                        "data.root=/my/photos data.image_size=64 "):
        data.prepare_data()


def test_prepared_dataset_of_another_kind_size_or_version(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tiny} holds 16x16 images but the configuration "
                                        f"expects 32x32.*data.image_size=16"):
        PreparedDataModule(str(tiny), image_size=32, crop_size=CROP).prepare_data()
    with pytest.raises(DataError, match="holds 'synthetic' data, not data.source=imagenet"):
        PreparedDataModule(str(tiny), source="imagenet", image_size=SIZE,
                           crop_size=CROP).prepare_data()
    old = tmp_path / "old"
    old.mkdir()
    stats = json.loads((tiny / "stats.json").read_text()) | {"format_version": 1}
    (old / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(DataError, match=r"version 1; this version reads .* version 3: prepare it "
                                        r"again; to prepare it: .* force=true"):
        PreparedDataModule(str(old), source="cifar10", image_size=SIZE,
                           crop_size=CROP).prepare_data()
    with pytest.raises(ValueError, match="data.crop_size must be between 1 and"):
        PreparedDataModule(str(tiny), image_size=SIZE, crop_size=SIZE + 1)


def test_prepared_from_another_root(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for label in range(2):
            write_image(tmp_path / "src" / split / f"c{label}" / "0.png", class_colour(label),
                        fmt="PNG")
    writer.write(preparing.plan("imagefolder", tmp_path / "src", tmp_path / "out", 16),
                 workers=1, progress=False)
    same = PreparedDataModule(str(tmp_path / "out"), source="imagefolder",
                              root=str(tmp_path / "src"), image_size=16, crop_size=8)
    assert same.num_classes == 2
    with pytest.raises(DataError, match=f"was prepared from {tmp_path / 'src'}, not data.root="):
        PreparedDataModule(str(tmp_path / "out"), source="imagefolder", root=str(tmp_path),
                           image_size=16, crop_size=8).prepare_data()


def test_training_on_a_prepared_image_folder_with_the_ten_crop_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for label in range(3):
            for i in range(count):
                pixels = rng.integers(0, 255, (90, 100, 3), dtype=np.uint8)
                pixels[..., label] = 255  # each class has its own dominant colour
                folder = tmp_path / "src" / split / f"class{label}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    out = tmp_path / "prepared"
    writer.write(preparing.plan("imagefolder", tmp_path / "src", out, 80), workers=1,
                 progress=False)
    cfg = compose_config("train", [
        "data=imagefolder", f"data.prepared_dir={out}", f"data.root={tmp_path / 'src'}",
        "data.image_size=80", "data.crop_size=67", "data.batch_size=4", "data.num_workers=2",
        "data.ten_crop=true", "trainer.fast_dev_run=true", "trainer.accelerator=cpu",
        "~callbacks.progress_bar", "trainer.enable_progress_bar=false",
    ], tmp_path / "run", tmp_path / "data")
    summary, run = train_keeping_the_run(cfg)
    final = summary["final"]
    assert summary["num_classes"] == 3
    for name in ("test10/top1_err", "test10/top5_err", "val/top1_err", "train/loss"):
        assert math.isfinite(final[name]), name
    # The ten-patch test is the trained network's, the softmax averaged over the patches of each
    # image of the one test batch (three classes: top-5 holds every label).
    top1, top5 = errors_by_hand(run.net, run.datamodule, "test", 4)
    assert final["test10/top1_err"] == pytest.approx(top1) and top5 == 0.0
    assert final["test10/top5_err"] == 0.0
    assert "test/top1_err" not in final  # the centre patch alone is not the test


def test_the_built_in_dataset_is_drawn_again_when_its_format_is_old(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    data = SyntheticDataModule(str(root), num_classes=2, train_per_class=2, val_per_class=1,
                               image_size=SIZE, crop_size=CROP, num_workers=0)
    data.prepare_data()
    first = (root / "train_images.npy").read_bytes()
    stats = json.loads((root / "stats.json").read_text()) | {"format_version": 1}
    (root / "stats.json").write_text(json.dumps(stats))
    data.prepare_data()
    assert prepared.load_stats(root, SIZE)["format_version"] == prepared.FORMAT_VERSION
    assert (root / "train_images.npy").read_bytes() == first  # the same images, redrawn


@pytest.mark.parametrize("damage", ["stats_cut", "images_cut", "labels_missing", "mean_random"])
def test_the_built_in_dataset_is_drawn_again_when_damaged(damage: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """It is a cache the project made: a damaged copy is drawn again, with one note naming the
    damage, not refused as a user's prepared dataset would be."""
    root = tmp_path / "synthetic"
    data = SyntheticDataModule(str(root), num_classes=2, train_per_class=2, val_per_class=1,
                               image_size=SIZE, crop_size=CROP, num_workers=0)
    data.prepare_data()
    first = {p.name: p.read_bytes() for p in root.iterdir()}
    file = {"stats_cut": "stats.json", "images_cut": "train_images.npy",
            "labels_missing": "val_labels.npy", "mean_random": "mean_image.npy"}[damage]
    if damage == "labels_missing":
        (root / file).unlink()
    elif damage == "mean_random":
        (root / file).write_bytes(np.random.default_rng(0).bytes(len(first[file])))
    else:
        (root / file).write_bytes(first[file][:len(first[file]) // 2])
    capsys.readouterr()
    data.prepare_data()
    (note,) = capsys.readouterr().err.strip().splitlines()
    assert note.startswith("note: the built-in data are damaged (") and str(root / file) in note
    assert note.endswith("); drawing them again")
    assert {p.name: p.read_bytes() for p in root.iterdir()} == first  # the same data, redrawn
    data.prepare_data()
    assert capsys.readouterr().err == ""  # whole again: read, not drawn
