"""One image, one split, through symbolic links (docs/data.md): a link loop, a class or file of one
split linked into another, two links to one file are each one line naming both paths; links to
folders and files outside the tree are followed; a link to nothing and a folder that cannot be
listed are named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import WNIDS, make_imagenet, write_image

from alexnet.data import imagenet, sources, writer
from alexnet.data import preparation as preparing
from alexnet.exits import DataError


def _two_class_tree(root: Path) -> None:
    for split, count in (("train", 3), ("test", 1)):
        for label, name in enumerate(["cat", "dog"]):
            for i in range(count):
                write_image(root / split / name / f"{i}.jpg", (30 * i, 60 * label, 90))


def _link(root: Path, link: str, target: str | Path) -> None:
    (root / link).symlink_to(target)


# (what the user's tree has, how it is made, the one-line answer)
LINK_MISTAKES = [
    ("a link loop", lambda r: _link(r, "train/cat/up", ".."),
     r"train/cat/up/cat is \S+/train/cat again \(a symbolic link\)"),
    ("a test class linked to a train class",
     lambda r: (shutil.rmtree(r / "test/cat"), _link(r, "test/cat", "../train/cat")),
     r"test/cat is \S+/train/cat again"),
    ("a test file linked to a train file",
     lambda r: _link(r, "test/dog/l.jpg", r / "train/dog/0.jpg"),
     r"test/dog/l.jpg links to \S+/train/dog/0.jpg, which is listed itself"),
    ("a file linked into another class", lambda r: _link(r, "train/cat/l.jpg", "../dog/1.jpg"),
     r"train/cat/l.jpg links to \S+/train/dog/1.jpg, which is listed itself"),
    ("two links to one outside file",
     lambda r: (write_image(r.parent / "elsewhere.jpg"),
                _link(r, "train/cat/a.jpg", r.parent / "elsewhere.jpg"),
                _link(r, "test/cat/b.jpg", r.parent / "elsewhere.jpg")),
     r"test/cat/b.jpg and \S+/train/cat/a.jpg link to the same file"),
]


@pytest.mark.parametrize("mistake", LINK_MISTAKES, ids=[m[0] for m in LINK_MISTAKES])
def test_an_image_reached_twice_through_links(tmp_path: Path, mistake) -> None:
    root = tmp_path / "tree"
    _two_class_tree(root)
    sources.find_imagefolder(root)  # the tree itself is fine
    _, make, answer = mistake
    make(root)
    with pytest.raises(DataError, match=answer):
        sources.find_imagefolder(root)


def test_links_to_folders_and_files_outside_the_tree_are_followed(tmp_path: Path) -> None:
    """A tree of links into storage elsewhere (a common way to make a subset) is listed as if
    the files were in it, each once."""
    store = tmp_path / "store"
    _two_class_tree(store)
    root = tmp_path / "tree"
    (root / "train").mkdir(parents=True)
    _link(root, "train/cat", store / "train/cat")  # a linked class folder
    (root / "train/dog").mkdir()
    for name in ("0.jpg", "1.jpg", "2.jpg"):  # linked files
        _link(root, f"train/dog/{name}", store / "train/dog" / name)
    _link(root, "test", store / "test")
    listing = sources.find_imagefolder(root, val_fraction=0.34)
    every = [f for split in ("train", "val", "test") for f in listing.files[split]]
    assert len(every) == len(set(every)) == 8
    assert sorted(Path(f).relative_to(root).as_posix() for f in every) == sorted(
        [f"train/{c}/{i}.jpg" for c in ("cat", "dog") for i in range(3)]
        + ["test/cat/0.jpg", "test/dog/0.jpg"])


def test_a_link_to_nothing_is_listed_and_then_named_as_unreadable(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    _two_class_tree(root)
    _link(root, "train/cat/gone.jpg", tmp_path / "deleted.jpg")
    listing = sources.find_imagefolder(root, val_fraction=0.2)
    every = [f for split in ("train", "val", "test") for f in listing.files[split]]
    assert str(root / "train/cat/gone.jpg") in every
    job = preparing.plan("imagefolder", root, tmp_path / "out", 16, val_fraction=0.2)
    stats = writer.write(job, workers=1, progress=False).stats
    assert [(s["path"], s["error"].split(":")[0]) for s in stats["skipped"]] == [
        (str(root / "train/cat/gone.jpg"), "FileNotFoundError")]


def test_an_imagenet_val_class_linked_to_its_train_class(tmp_path: Path) -> None:
    make_imagenet(tmp_path)
    val = tmp_path / "val" / WNIDS[0]
    shutil.rmtree(val)
    val.symlink_to(tmp_path / "train" / WNIDS[0])
    with pytest.raises(DataError, match=rf"val/{WNIDS[0]} is \S+/train/{WNIDS[0]} again"):
        imagenet.find_imagenet(tmp_path)


def test_a_folder_that_cannot_be_listed_is_named(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "tree"
    _two_class_tree(root)
    real_scandir = sources.os.scandir

    def scandir(path):  # as for a folder without read permission (tests may run as root)
        if str(path).endswith("train/dog"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(sources.os, "scandir", scandir)
    with pytest.raises(DataError, match=r"cannot list \S+/train/dog: Permission denied"):
        sources.find_imagefolder(root)
