"""Finding images and labels in the user's layouts, and one clear error for each bad input."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    CONF,
    WNIDS,
    cifar_batch,
    class_colour,
    make_imagenet,
    write_cifar10,
    write_devkit,
    write_image,
    write_loc_solution,
)

from alexnet.data import cifar10, imagenet, sources, writer
from alexnet.data import preparation as preparing
from alexnet.data.prepared import open_split
from alexnet.exits import DataError


def labels_of(listing: sources.Listing, split: str) -> list[str]:
    return [listing.classes[y] for y in listing.labels[split]]


# -- ImageNet layouts ---------------------------------------------------------------------------


def test_imagenet_val_in_class_folders(tmp_path: Path) -> None:
    truth = make_imagenet(tmp_path)
    listing = imagenet.find_imagenet(tmp_path)
    assert listing.classes == WNIDS
    assert len(listing.files["train"]) == 6
    assert labels_of(listing, "train") == [Path(f).parent.name for f in listing.files["train"]]
    assert sorted(labels_of(listing, "val")) == sorted(truth)
    assert labels_of(listing, "val") == [Path(f).parent.name for f in listing.files["val"]]
    assert listing.description["kind"] == "imagenet"
    assert listing.description["root"] == str(tmp_path.resolve())


@pytest.mark.parametrize("base", [".", "ILSVRC/Data/CLS-LOC"])
def test_imagenet_flat_val_with_loc_solution(tmp_path: Path, base: str) -> None:
    truth = make_imagenet(tmp_path / base, val="flat")
    write_loc_solution(tmp_path / "LOC_val_solution.csv", truth)
    (tmp_path / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} name {i}, other name\n" for i, w in enumerate(WNIDS)))
    listing = imagenet.find_imagenet(tmp_path)
    assert [Path(f).name for f in listing.files["val"]] == [
        f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, 7)]
    assert labels_of(listing, "val") == truth
    assert listing.class_names == [f"name {i}, other name" for i in range(3)]
    assert listing.description["val_labels"].endswith("LOC_val_solution.csv")


@pytest.mark.parametrize("packed", [False, True])
def test_imagenet_flat_val_with_devkit(tmp_path: Path, packed: bool) -> None:
    root = tmp_path / "ILSVRC2012"
    truth = make_imagenet(root, val="flat")
    write_devkit(tmp_path / "kit" / "ILSVRC2012_devkit_t12", truth)
    if packed:
        with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
            tar.add(tmp_path / "kit" / "ILSVRC2012_devkit_t12", "ILSVRC2012_devkit_t12")
    else:
        (tmp_path / "kit" / "ILSVRC2012_devkit_t12").rename(root / "ILSVRC2012_devkit_t12")
    listing = imagenet.find_imagenet(root)
    assert labels_of(listing, "val") == truth
    assert listing.class_names == [f"words of {w}" for w in WNIDS]


# -- image folders --------------------------------------------------------------------------------


@pytest.mark.parametrize("val_name", ["val", "validation"])
def test_imagefolder_train_and_val(tmp_path: Path, val_name: str) -> None:
    for split, count in (("train", 3), (val_name, 1)):
        for label, name in enumerate(["cat", "dog's toy"]):  # user's names, with an apostrophe
            for i in range(count):
                write_image(tmp_path / split / name / f"{i}.png", class_colour(label), fmt="PNG")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    listing = sources.find_imagefolder(tmp_path)
    assert listing.classes == ["cat", "dog's toy"]
    assert len(listing.files["train"]) == 6 and len(listing.files["val"]) == 2
    assert labels_of(listing, "val") == ["cat", "dog's toy"]
    # What is not read is named, not dropped without a word (the prepare prints it)
    assert listing.description["not_read"] == {"count": 1, "kinds": {".txt": 1},
                                               "first": "train/cat/notes.txt"}


def test_what_the_tree_holds_beside_its_images_is_named(tmp_path: Path) -> None:
    """Files in formats not read (GIF), images beside the class folders, a file where a class
    folder would be and a folder beside the splits are left out, each counted by kind; a tree
    with two validation folders is refused (one would be read, the other left out)."""
    tree = tmp_path / "tree"
    for label, name in enumerate(["cat", "dog"]):
        for i in range(3):
            write_image(tree / "train" / name / f"{i}.png", class_colour(label), fmt="PNG")
        write_image(tree / "train" / name / "moving.gif", class_colour(label), fmt="GIF")
    write_image(tree / "train" / "stray.png", class_colour(0), fmt="PNG")
    (tree / "train" / "bird").write_text("a file named like a class\n")
    (tree / "extra").mkdir()
    listing = sources.find_imagefolder(tree)
    assert sum(len(files) for files in listing.files.values()) == 6
    assert listing.description["not_read"] == {
        "count": 5, "kinds": {".gif": 2, ".png": 1, "folder": 1, "no extension": 1},
        "first": "extra"}
    job = preparing.plan("imagefolder", tree, tmp_path / "prepared", 16, 0.1, 0.1)
    note = preparing.describe(writer.write(job, workers=1, progress=False), "imagefolder")
    assert (f"note: left out 5 files or folders of {tree} that are not images in a class "
            "folder in a format read here (.jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, "
            ".webp): .gif 2, .png 1, folder 1, no extension 1 (source.not_read in stats.json), "
            "e.g. extra") in note.splitlines()
    for name in ("val", "validation"):
        write_image(tree / name / "cat" / "0.png", class_colour(0), fmt="PNG")
        write_image(tree / name / "dog" / "0.png", class_colour(1), fmt="PNG")
    with pytest.raises(DataError, match=r"has val/ and validation/: keep one validation folder$"):
        sources.find_imagefolder(tree)


def test_imagefolder_holds_out_a_fraction_of_every_class(tmp_path: Path) -> None:
    for label, name in enumerate(["a", "b", "c"]):
        for i in range(10):
            write_image(tmp_path / name / f"{i}.jpg", class_colour(label))
    first = sources.find_imagefolder(tmp_path, val_fraction=0.2, test_fraction=0.0)
    again = sources.find_imagefolder(tmp_path, val_fraction=0.2, test_fraction=0.0)
    assert first.files == again.files  # the same images every time
    assert np.bincount(first.labels["val"]).tolist() == [2, 2, 2]
    assert np.bincount(first.labels["train"]).tolist() == [8, 8, 8]
    assert "test" not in first.files  # test_fraction=0: no test split, test/* on val
    assert not set(first.files["train"]) & set(first.files["val"])


def test_a_tree_of_classes_alone_gives_three_disjoint_splits(tmp_path: Path) -> None:
    for label, name in enumerate(["a", "b", "c"]):
        for i in range(10):
            write_image(tmp_path / "train" / name / f"{i}.jpg", class_colour(label))
    listing = sources.find_imagefolder(tmp_path, val_fraction=0.2, test_fraction=0.1)
    counts = {s: np.bincount(listing.labels[s]).tolist() for s in ("train", "val", "test")}
    assert counts == {"train": [7, 7, 7], "val": [2, 2, 2], "test": [1, 1, 1]}
    files = [set(listing.files[s]) for s in ("train", "val", "test")]
    assert sum(map(len, files)) == 30 and len(set.union(*files)) == 30  # each image once
    # The val split does not depend on whether a test split is held out too.
    without = sources.find_imagefolder(tmp_path, val_fraction=0.2, test_fraction=0.0)
    assert without.files["val"] == listing.files["val"]
    assert listing.origins["test"].startswith("held out of train/")


@pytest.mark.parametrize("with_val", [False, True])
def test_imagefolder_test_folder_is_the_test_split(tmp_path: Path, with_val: bool) -> None:
    folders = [("train", 10), ("test", 3)] + ([("val", 2)] if with_val else [])
    for split, count in folders:
        for label, name in enumerate(["cat", "dog"]):
            for i in range(count):
                write_image(tmp_path / split / name / f"{i}.jpg", class_colour(label))
    listing = sources.find_imagefolder(tmp_path, val_fraction=0.2)
    assert [Path(f).parts[-3] for f in listing.files["test"]] == ["test"] * 6
    assert labels_of(listing, "test") == ["cat"] * 3 + ["dog"] * 3
    assert listing.origins["test"] == "test/"
    if with_val:  # train/, val/ and test/: each folder is its split, nothing held out
        assert len(listing.files["train"]) == 20 and len(listing.files["val"]) == 4
        assert listing.origins["val"] == "val/"
    else:  # train/ and test/: val held out of train/ (0.2 of each class), test/ kept whole
        assert len(listing.files["train"]) == 16 and len(listing.files["val"]) == 4
        assert {Path(f).parts[-3] for f in listing.files["val"]} == {"train"}
        assert listing.origins["val"].startswith("held out of train/")
    assert not set(listing.files["train"]) & set(listing.files["val"])


def test_imagefolder_without_test_split_says_so(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("val", 1)):
        for label, name in enumerate(["cat", "dog"]):
            for i in range(count):
                write_image(tmp_path / split / name / f"{i}.jpg", class_colour(label))
    listing = sources.find_imagefolder(tmp_path)
    assert "test" not in listing.files  # train/ + val/ (as ILSVRC-2012): no test split


def test_test_folder_with_other_classes_or_without_train(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "cat" / "0.jpg")
    write_image(tmp_path / "train" / "cat" / "1.jpg")
    write_image(tmp_path / "test" / "dog" / "0.jpg")
    with pytest.raises(DataError, match="train and test must have the same classes"):
        sources.find_imagefolder(tmp_path)
    only_test = tmp_path / "only"
    write_image(only_test / "test" / "dog" / "0.jpg")
    with pytest.raises(DataError, match="has test/ but no train/"):
        sources.find_imagefolder(only_test)


# -- CIFAR-10 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("packed", ["folder", "archive_in_root", "archive_as_root"])
def test_cifar10_reader(tmp_path: Path, packed: str) -> None:
    folder = tmp_path / "src" / "cifar-10-batches-py"
    batches = write_cifar10(folder)
    root = tmp_path / "src"
    if packed != "folder":
        root = tmp_path / "packed"
        root.mkdir()
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(folder, "cifar-10-batches-py")
        if packed == "archive_as_root":
            root = root / "cifar-10-python.tar.gz"
    job = preparing.plan("cifar10", root, tmp_path / "out", 32, val_fraction=0.2)
    stats = writer.write(job, workers=1, progress=False).stats
    assert stats["classes"][:3] == ["airplane", "automobile", "bird"]
    counts = {s: c["total"] for s, c in stats["counts"].items()}
    all_labels = np.concatenate([batches[n][b"labels"] for n in cifar10.BATCHES["train"]])
    held, _ = sources.hold_out(all_labels, 0.2)  # val: 0.2 of every class of data_batch_1-5
    assert counts == {"train": 30 - held.sum(), "val": held.sum(), "test": 6}
    assert stats["splits"] == {"train": "data_batch_1-5",
                               "val": "held out of data_batch_1-5 (0.2 of each class)",
                               "test": "test_batch"}
    images, labels = open_split(tmp_path / "out", "train")
    assert labels.tolist() == all_labels[~held].tolist()
    rows = np.concatenate([batches[n][b"data"] for n in cifar10.BATCHES["train"]])[~held]
    row = rows[2]
    # Pixel (y, x) of image 2 is (R, G, B) = row[y*32+x], row[1024+y*32+x], row[2048+y*32+x].
    assert images[2, 5, 7].tolist() == [row[5 * 32 + 7], row[1024 + 5 * 32 + 7],
                                        row[2048 + 5 * 32 + 7]]
    val_images, val_labels = open_split(tmp_path / "out", "val")
    assert val_labels.tolist() == all_labels[held].tolist()
    test_images, test_labels = open_split(tmp_path / "out", "test")
    assert test_labels.tolist() == batches["test_batch"][b"labels"]
    assert test_images.shape == (6, 32, 32, 3)


# -- bad input: one clear error naming the path and what was expected ----------------------------


def test_missing_and_unset_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"data.root={tmp_path / 'nope'} does not exist"):
        imagenet.find_imagenet(tmp_path / "nope")
    with pytest.raises(DataError, match="data.root is not set"):
        sources.find_imagefolder(None)
    with pytest.raises(DataError, match="does not exist"):
        cifar10.find_cifar10(tmp_path / "nope")


def test_unknown_layouts(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match=r"unknown layout .* expected ILSVRC-2012 as train/<wnid>"):
        imagenet.find_imagenet(tmp_path)
    with pytest.raises(DataError, match=r"unknown layout .* expected train/<class>/"):
        sources.find_imagefolder(tmp_path)
    with pytest.raises(DataError, match=r"unknown layout .* CIFAR-10's python batches"):
        cifar10.find_cifar10(tmp_path)
    (tmp_path / "ILSVRC2012_img_train.tar").write_bytes(b"")
    with pytest.raises(DataError, match="extract them first"):
        imagenet.find_imagenet(tmp_path)


def test_imagenet_needs_wnid_folders(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "cats" / "a.jpg")
    write_image(tmp_path / "val" / "cats" / "a.jpg")
    with pytest.raises(DataError, match="not WordNet ids .*use data=imagefolder"):
        imagenet.find_imagenet(tmp_path)


def test_train_and_val_with_different_classes(tmp_path: Path) -> None:
    make_imagenet(tmp_path)
    write_image(tmp_path / "val" / "n09999999" / "extra.JPEG")
    with pytest.raises(DataError, match="same classes.*only in val: n09999999"):
        imagenet.find_imagenet(tmp_path)
    with pytest.raises(DataError, match="same classes"):
        sources.find_imagefolder(tmp_path)


def test_empty_class_folder(tmp_path: Path) -> None:
    make_imagenet(tmp_path)
    (tmp_path / "train" / "n01443537" / "n01443537_0.JPEG").unlink()
    (tmp_path / "train" / "n01443537" / "n01443537_1.JPEG").unlink()
    empty = tmp_path / "train" / "n01443537"
    with pytest.raises(DataError, match=f"class folder {empty} is empty"):
        imagenet.find_imagenet(tmp_path)


def test_ground_truth_that_does_not_match_the_images(tmp_path: Path) -> None:
    truth = make_imagenet(tmp_path, val="flat")
    csv_path = tmp_path / "LOC_val_solution.csv"
    write_loc_solution(csv_path, truth[:-1])  # the last image has no entry
    with pytest.raises(DataError, match=r"does not match .*1 of its 6 images have no entry "
                                        r"\(first: ILSVRC2012_val_00000006\)"):
        imagenet.find_imagenet(tmp_path)
    write_loc_solution(csv_path, [*truth, WNIDS[0]])  # an entry without an image
    with pytest.raises(DataError, match="lists 7 images, the folder holds 6"):
        imagenet.find_imagenet(tmp_path)
    write_loc_solution(csv_path, [*truth[:-1], "n09999999"])
    with pytest.raises(DataError, match="names classes that train/ does not have: n09999999"):
        imagenet.find_imagenet(tmp_path)
    csv_path.write_text("id,label\nx,y\n")
    with pytest.raises(DataError, match="expected the header ImageId,PredictionString"):
        imagenet.find_imagenet(tmp_path)
    csv_path.unlink()
    with pytest.raises(DataError, match="no ground truth was found: expected LOC_val_solution"):
        imagenet.find_imagenet(tmp_path)


def test_devkit_ground_truth_that_does_not_match(tmp_path: Path) -> None:
    truth = make_imagenet(tmp_path, val="flat")
    write_devkit(tmp_path / "ILSVRC2012_devkit_t12", truth[:4])
    with pytest.raises(DataError, match="does not match .*2 of its 6 images have no entry"):
        imagenet.find_imagenet(tmp_path)
    (tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG").rename(tmp_path / "val" / "renamed.JPEG")
    with pytest.raises(DataError, match="needs the original names"):
        imagenet.find_imagenet(tmp_path)


def test_mixed_or_flat_val_where_folders_are_expected(tmp_path: Path) -> None:
    make_imagenet(tmp_path, val="flat")
    with pytest.raises(DataError, match="images without class folders.*use data=imagenet"):
        sources.find_imagefolder(tmp_path)
    write_image(tmp_path / "val" / WNIDS[0] / "x.JPEG")
    with pytest.raises(DataError, match="both class folders and 6 loose images"):
        imagenet.find_imagenet(tmp_path)


def test_cifar10_bad_files(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    with pytest.raises(DataError, match="CIFAR-10 images are 32x32 .*data.image_size=32"):
        preparing.plan("cifar10", tmp_path, tmp_path / "out", 256)
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3 is not a CIFAR-10 python batch"):
        cifar10.find_cifar10(tmp_path)
    bad = cifar_batch(4, 0)
    bad[b"data"] = bad[b"data"][:, :100]
    (folder / "data_batch_3").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match=r"data_batch_3: data of shape \(4, 100\)"):
        cifar10.find_cifar10(tmp_path)


def test_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.source must be one of"):
        preparing.plan("mnist", tmp_path, tmp_path / "out", 32)


def test_read_loc_solution_takes_the_first_box_class(tmp_path: Path) -> None:
    path = tmp_path / "LOC_val_solution.csv"
    path.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01751748 1 2 3 4 \n")
    assert imagenet.read_loc_solution(path) == {"ILSVRC2012_val_00000001": "n01751748"}


def test_the_registry_and_the_data_configs_agree() -> None:
    """One table of sources (alexnet.data.registry): every data config names one of them or is
    the built-in data, the config named after a source has its image size, and the held-out
    fractions a config offers are the ones that apply to its source."""
    import yaml

    from alexnet.data import registry

    def load(name: str) -> dict:
        data = yaml.safe_load((CONF / "data" / f"{name}.yaml").read_text())
        for parent in data.pop("defaults", []):
            if isinstance(parent, str) and parent != "_self_":
                data = {**load(parent), **data}
        return data

    names = sorted(p.stem for p in (CONF / "data").glob("*.yaml")
                   if not p.stem.startswith("_"))  # _base: what they share, no option
    for name in names:
        data = load(name)
        if registry.is_built_in(data):
            continue
        source = registry.source(data["source"])
        assert {k for k in ("val_fraction", "test_fraction") if k in data} == set(
            source.fractions), name
        if name == source.name:
            assert data["image_size"] == source.image_size, name
    assert set(registry.SOURCES) <= set(names)
