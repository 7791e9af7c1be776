"""Finding the images and labels in the user's own copy of a dataset (nothing is downloaded): what
every source's listing is (:class:`Listing`), the checks and helpers they share, and the
``imagefolder`` layout. ILSVRC-2012's own layouts are in :mod:`alexnet.data.imagenet`, CIFAR-10's
python batches in :mod:`alexnet.data.cifar10`.

- ``imagefolder``: ``train/<class>/*`` with ``val/<class>/*`` and/or ``test/<class>/*``
  (Imagenette, CIFAR-10's image copies, an ImageNet subset, the user's own classes), or just
  ``<class>/*``. What a tree lacks is held out of its training images, a fixed fraction of every
  class: val when there is no val/, and a test split too when there is neither val/ nor test/.
  A train/ + val/ tree has no test split (as ILSVRC-2012): runs then measure test/* on val.

Trees are listed following symbolic links, each real folder and file once (:class:`FolderWalk`):
an image reached twice would sit in two classes or two splits.

Every mistake raises DataError naming the path and what was expected.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.data.images import IMAGE_EXTENSIONS, is_image_file
from alexnet.data.registry import SOURCES
from alexnet.exits import DataError

VAL_DIRS = ("val", "validation", "valid")
TEST_DIRS = ("test",)
HOLDOUT_SEED = 2012  # the held-out validation images never change between runs


@dataclass
class Listing:
    """What a source holds: its classes and, per split, the image files and their labels."""

    classes: list[str]
    files: dict[str, list[str]]
    labels: dict[str, np.ndarray]
    description: dict[str, Any]
    class_names: list[str] | None = None
    origins: dict[str, str] | None = None  # split -> where it came from ("test/", "held out ...")


ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".zip")


def check_root(root: str | os.PathLike | None, source: str) -> Path:
    """``data.root`` of the source called ``source`` (a row of the registry), resolved: DataError
    if it is unset, missing or not a folder (an archive said as such: extract it), except
    CIFAR-10's python archive, which is read where it lies."""
    title = SOURCES[source].title if source in SOURCES else source
    if root is None or str(root) == "":
        raise DataError(
            f"data.root is not set: pass data.root=PATH, the folder of your {title} copy"
        )
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"data.root={path} does not exist")
    if source == "cifar10" and path.is_file():
        return path.resolve()  # cifar-10-python.tar.gz itself: read where it lies
    if not path.is_dir():
        if path.name.lower().endswith(ARCHIVES):  # the prepared copy reads image files only
            extract = (f"unzip {path} -d DIR" if path.name.lower().endswith(".zip")
                       else f"mkdir DIR && tar -xf {path} -C DIR")
            raise DataError(f"data.root={path} is an archive, not a folder: extract it "
                            f"({extract}) and pass the folder it makes")
        raise DataError(f"data.root={path} is not a directory")
    return path.resolve()


def subdirs(folder: Path) -> list[os.DirEntry]:
    return sorted(
        (e for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")),
        key=lambda e: e.name,
    )


class FolderWalk:
    """Lists the image files below folders (recursively, as torchvision's ImageFolder, following
    symbolic links), each real folder and file once across every folder it is asked for. A folder
    reached a second time (a link loop such as ``cat/up -> ..``, two links to one folder, a
    ``test/`` linked to ``train/``) or a file linked from a second place would put the same images
    in two classes or two splits, or count them many times over: a DataError names both paths.
    Hard links are not followed up (``os.stat`` of every file would slow large trees)."""

    def __init__(self) -> None:
        self.folders: dict[str, str] = {}  # real path -> the path it was first listed under
        self.links: dict[str, str] = {}  # real path of a linked file -> the link
        self.not_read: list[str] = []  # files left out (not images this suite reads), named

    def images(self, folder: Path) -> list[str]:
        found: list[str] = []
        self._visit(str(folder), found)
        return sorted(found)

    def _visit(self, path: str, found: list[str]) -> None:
        real = os.path.realpath(path)
        if real in self.folders:
            raise DataError(
                f"{path} is {self.folders[real]} again (a symbolic link): its images would be "
                f"counted twice; remove the link, or copy the folder if it belongs in both places"
            )
        self.folders[real] = path
        try:
            with os.scandir(path) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:  # unreadable folder: named, not skipped with its images
            raise DataError(f"cannot list {path}: {err.strerror or err}") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()
            except OSError:  # a link that loops (ELOOP): named by _link below
                is_dir = is_file = False
            if is_dir:
                self._visit(entry.path, found)
            elif is_image_file(entry.name) and (is_file or entry.is_symlink()):
                # A link to nothing is listed too: the writer names it among the files
                # that could not be read, rather than it vanishing from the count.
                if entry.is_symlink():
                    self._link(entry.path)
                found.append(entry.path)
            elif is_file:
                self.not_read.append(entry.path)

    def left_out(self, paths: list[str]) -> None:
        """Files or folders beside the ones read (loose files beside the class folders, folders
        beside the splits): left out, and named as :meth:`not_read_record` says."""
        self.not_read += paths

    def not_read_record(self, root: Path) -> dict[str, Any] | None:
        """What was left out, for stats.json and the prepare's note: how many, by kind (the
        file's extension, ``folder``), and the first of them; None when nothing was."""
        if not self.not_read:
            return None
        kinds: dict[str, int] = {}
        for path in self.not_read:
            kind = "folder" if os.path.isdir(path) else (
                os.path.splitext(path)[1].lower() or "no extension")
            kinds[kind] = kinds.get(kind, 0) + 1
        return {"count": len(self.not_read), "kinds": dict(sorted(kinds.items())),
                "first": os.path.relpath(sorted(self.not_read)[0], root)}

    def _link(self, path: str) -> None:
        try:
            real = os.path.realpath(path, strict=True)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise DataError(f"{path} is a symbolic link loop (following it leads back to "
                                f"it): remove it, or point it at an image") from None
            # a link to nothing: listed, and named by the writer among the unreadable files
            real = os.path.realpath(path)
        first = self.links.setdefault(real, path)
        if first != path:
            raise DataError(f"{path} and {first} link to the same file ({real}): one image "
                            f"has one class and one split")

    def check_links(self) -> None:
        """After every folder is listed: no linked file may be a file listed in its own right."""
        for real, link in self.links.items():
            folder, name = os.path.split(real)
            if folder in self.folders and is_image_file(name) and not name.startswith("."):
                shown = os.path.join(self.folders[folder], name)
                raise DataError(f"{link} links to {shown}, which is listed itself: one image has "
                                f"one class and one split")


def loose_images(folder: Path) -> list[str]:
    return sorted(e.path for e in os.scandir(folder) if e.is_file() and is_image_file(e.name))


def class_tree(folder: Path, walk: FolderWalk) -> tuple[list[str], list[str], np.ndarray]:
    """(classes, files, labels) of a ``<class>/<images>`` folder; ``walk`` shared by the trees of
    one source, so that no image is listed twice across them (its ``check_links`` once they all
    are)."""
    classes = [e.name for e in subdirs(folder)]
    if not classes:
        raise DataError(f"{folder} has no class folders: expected {folder}/<class>/<images>")
    walk.left_out(sorted(e.path for e in os.scandir(folder)  # files beside the class folders
                         if not e.name.startswith(".") and not e.is_dir()))
    files, labels = [], []
    for label, name in enumerate(classes):
        images = walk.images(folder / name)
        if not images:
            raise DataError(
                f"class folder {folder / name} is empty: expected image files "
                f"({', '.join(IMAGE_EXTENSIONS)})"
            )
        files += images
        labels += [label] * len(images)
    return classes, files, np.asarray(labels, dtype=np.int64)


def same_classes(train_dir: Path, train: list[str], val_dir: Path, val: list[str],
                  split: str = "val") -> None:
    if train == val:
        return
    only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
    parts = [f"{len(train)} classes in {train_dir}, {len(val)} in {val_dir}"]
    if only_train:
        parts.append(f"only in train: {', '.join(only_train[:5])}" + (
            " ..." if len(only_train) > 5 else ""))
    if only_val:
        parts.append(f"only in {split}: {', '.join(only_val[:5])}" + (
            " ..." if len(only_val) > 5 else ""))
    raise DataError(f"train and {split} must have the same classes: " + "; ".join(parts))


# -- Image folders --------------------------------------------------------------------------------


def hold_out(labels: np.ndarray, fraction: float,
             then: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the rows held out: ``fraction`` of every class (at least one image of any
    class that has two), and after them ``then`` of every class (for a test split; at least one
    of any class that has three), drawn with a fixed seed. The first mask does not depend on
    ``then``."""
    rng = np.random.default_rng(HOLDOUT_SEED)
    first, second = np.zeros(len(labels), dtype=bool), np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        count = max(1, round(len(rows) * fraction)) if len(rows) > 1 else 0
        more = max(1, round(len(rows) * then)) if then and len(rows) > 2 else 0
        first[rows[:count]] = True
        second[rows[count:count + more]] = True
    return first, second


def _check_fraction(name: str, value: float | None, root: Path, why: str) -> float:
    if value is None or not 0 < value < 1:
        raise DataError(f"{root} {why}: set data.{name} between 0 and 1, got {value}")
    return float(value)


def check_expected_layout(where: str | os.PathLike, classes: int, test_origin: str | None,
                          expected_classes: int | None, test_folder_required: bool) -> None:
    """A tree (src/prepare.py) or its prepared copy (a run) that is not the layout its data config
    names (data=cifar10_folder: 10 classes, its test/ the test split): DataError. ``test_origin``:
    where the test split came from (``"test/"``, "held out of train/ ...", None)."""
    if test_folder_required and test_origin != "test/":
        raise DataError(f"{where} has no test split from a test/<class>/ folder "
                        "(data.test_folder_required=true): give the dataset's own tree")
    if expected_classes is not None and classes != expected_classes:
        raise DataError(f"{where} holds {classes} classes, not the {expected_classes} of "
                        "data.expected_classes: give the dataset's own tree")


def find_imagefolder(root: str | os.PathLike | None, val_fraction: float | None = 0.1,
                     test_fraction: float | None = 0.1) -> Listing:
    """The splits of an image-folder tree: train/ with val/ and/or test/ where it has them; what
    it lacks held out of train (val, and a test split only when there is neither)."""
    root = check_root(root, "imagefolder")
    description: dict[str, Any] = {"kind": "imagefolder", "root": str(root)}
    train_dir = root / "train"
    vals = [root / d for d in VAL_DIRS if (root / d).is_dir()]
    if len(vals) > 1:  # one would be read and the other left out
        raise DataError(f"{root} has {' and '.join(f'{v.name}/' for v in vals)}: keep one "
                        "validation folder")
    val_dir = vals[0] if vals else None
    test_dir = next((root / d for d in TEST_DIRS if (root / d).is_dir()), None)
    if (val_dir or test_dir) and not train_dir.is_dir():
        raise DataError(f"{root} has {(val_dir or test_dir).name}/ but no train/: expected "
                        f"train/<class>/ beside it")
    walk = FolderWalk()
    if train_dir.is_dir():  # beside the splits: what is not one of them is left out, named
        splits = {"train", *(d.name for d in (val_dir, test_dir) if d is not None)}
        walk.left_out(sorted(e.path for e in os.scandir(root)
                             if not e.name.startswith(".") and e.name not in splits))
    if train_dir.is_dir() and (val_dir or test_dir):
        classes, train_files, train_labels = class_tree(train_dir, walk)
        files, labels = {}, {}
        origins = {"train": "train/"}
        for split, folder in (("val", val_dir), ("test", test_dir)):
            if folder is None:
                continue
            if not subdirs(folder) and loose_images(folder):
                raise DataError(
                    f"{folder} holds images without class folders: expected {folder}/<class>/ "
                    f"(for ILSVRC-2012's flat val/ use data=imagenet)"
                )
            split_classes, files[split], labels[split] = class_tree(folder, walk)
            same_classes(train_dir, classes, folder, split_classes, split)
            origins[split] = f"{folder.name}/"
        layout = " and ".join(f"{origins[s]}<class>/" for s in ("train", "val", "test")
                              if s in origins)
        if val_dir is None:  # train/ + test/: val held out of train, test/ stays the test
            fraction = _check_fraction("val_fraction", val_fraction, root,
                                       "has no val/ folder to select on")
            held, _ = hold_out(train_labels, fraction)
            files["val"] = [f for f, h in zip(train_files, held, strict=True) if h]
            labels["val"] = train_labels[held]
            train_files = [f for f, h in zip(train_files, held, strict=True) if not h]
            train_labels = train_labels[~held]
            origins["val"] = f"held out of train/ ({fraction:g} of each class)"
            layout += f", {fraction:g} of train/ held out for val"
            description["val_fraction"] = fraction
        description["layout"] = layout
        walk.check_links()
        if not_read := walk.not_read_record(root):
            description["not_read"] = not_read
        return Listing(
            classes=classes,
            files={"train": train_files, **files},
            labels={"train": train_labels, **labels},
            description=description,
            origins=origins,
        )
    tree = train_dir if train_dir.is_dir() else root
    if not subdirs(tree):
        raise DataError(
            f"unknown layout in data.root={root}: expected train/<class>/ with val/<class>/ "
            f"and/or test/<class>/, or <class>/ folders of images"
        )
    fraction = _check_fraction("val_fraction", val_fraction, root,
                               f"has no val/ folder: part of {tree} is held out for validation")
    test_fraction = float(test_fraction or 0.0)
    if not 0 <= test_fraction < 1 or fraction + test_fraction >= 1:
        raise DataError(
            f"data.test_fraction must be between 0 and 1 - data.val_fraction ({1 - fraction:g}), "
            f"got {test_fraction}"
        )
    classes, files, labels = class_tree(tree, walk)
    walk.check_links()
    held, tested = hold_out(labels, fraction, test_fraction)
    kept = ~(held | tested)
    name = "train/" if tree == train_dir else "the tree"
    origins = {"train": name, "val": f"held out of {name} ({fraction:g} of each class)"}
    listing_files = {"train": [f for f, k in zip(files, kept, strict=True) if k],
                     "val": [f for f, h in zip(files, held, strict=True) if h]}
    listing_labels = {"train": labels[kept], "val": labels[held]}
    layout = f"{'train/' if tree == train_dir else ''}<class>/, {fraction:g} held out for val"
    if tested.any():
        listing_files["test"] = [f for f, t in zip(files, tested, strict=True) if t]
        listing_labels["test"] = labels[tested]
        origins["test"] = f"held out of {name} ({test_fraction:g} of each class)"
        layout += f" and {test_fraction:g} for test"
    description |= {"layout": layout, "val_fraction": fraction, "test_fraction": test_fraction}
    if not_read := walk.not_read_record(root):
        description["not_read"] = not_read
    return Listing(classes=classes, files=listing_files, labels=listing_labels,
                   description=description, origins=origins)
