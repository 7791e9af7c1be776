"""Finding the images and labels in the user's own copy of a dataset (nothing is downloaded).

Layouts understood:

- ``imagenet`` (ILSVRC-2012): ``train/<wnid>/*.JPEG``, and ``val/`` either in class folders or flat
  (``ILSVRC2012_val_00000001.JPEG`` ...) with the ground truth from ``LOC_val_solution.csv``
  (Kaggle's copy) or from the devkit (``ILSVRC2012_devkit_t12/`` or its ``.tar.gz``). The
  Kaggle tree ``ILSVRC/Data/CLS-LOC/{train,val}`` is found below the root as well.
- ``imagefolder``: ``train/<class>/*`` with ``val/<class>/*`` and/or ``test/<class>/*``
  (Imagenette, CIFAR-10's image copies, an ImageNet subset, the user's own classes), or just
  ``<class>/*``. What a tree lacks is held out of its training images, a fixed fraction of every
  class: val when there is no val/, and a test split too when there is neither val/ nor test/.
  A train/ + val/ tree has no test split (as ILSVRC-2012): runs then measure test/* on val.

Every mistake raises DataError naming the path and what was expected.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.data.images import IMAGE_EXTENSIONS, is_image_file
from alexnet.data.registry import SOURCES
from alexnet.exits import DataError

WNID = re.compile(r"n\d{8}")
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")
VAL_DIRS = ("val", "validation", "valid")
TEST_DIRS = ("test",)
LOC_SOLUTION = "LOC_val_solution.csv"
LOC_SYNSETS = "LOC_synset_mapping.txt"
DEVKIT = "ILSVRC2012_devkit_t12"
DEVKIT_GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "data/meta.mat"
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


def check_root(root: str | os.PathLike | None, source: str) -> Path:
    if root is None or str(root) == "":
        raise DataError(
            f"data.root is not set: pass data.root=PATH, the folder of your {source} copy"
        )
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"data.root={path} does not exist")
    if not path.is_dir():
        raise DataError(f"data.root={path} is not a directory")
    return path.resolve()


def _subdirs(folder: Path) -> list[os.DirEntry]:
    return sorted(
        (e for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")),
        key=lambda e: e.name,
    )


def _image_files(folder: Path) -> list[str]:
    """Image files below ``folder`` (recursively, as torchvision's ImageFolder), sorted."""
    found = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(parent, n) for n in names if is_image_file(n)]
    return sorted(found)


def _loose_images(folder: Path) -> list[str]:
    return sorted(e.path for e in os.scandir(folder) if e.is_file() and is_image_file(e.name))


def class_tree(folder: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(classes, files, labels) of a ``<class>/<images>`` folder."""
    classes = [e.name for e in _subdirs(folder)]
    if not classes:
        raise DataError(f"{folder} has no class folders: expected {folder}/<class>/<images>")
    files, labels = [], []
    for label, name in enumerate(classes):
        images = _image_files(folder / name)
        if not images:
            raise DataError(
                f"class folder {folder / name} is empty: expected image files "
                f"({', '.join(IMAGE_EXTENSIONS)})"
            )
        files += images
        labels += [label] * len(images)
    return classes, files, np.asarray(labels, dtype=np.int64)


def _same_classes(train_dir: Path, train: list[str], val_dir: Path, val: list[str],
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


# -- ImageNet -------------------------------------------------------------------------------------


def _imagenet_base(root: Path) -> Path:
    for base in (root, root / "ILSVRC" / "Data" / "CLS-LOC", root / "Data" / "CLS-LOC"):
        if (base / "train").is_dir():
            return base
    archives = [p.name for p in root.glob("ILSVRC2012_img_*.tar")]
    hint = f" (found {', '.join(archives)}: extract them first)" if archives else ""
    raise DataError(
        f"unknown layout in data.root={root}: expected ILSVRC-2012 as train/<wnid>/*.JPEG and "
        f"val/ (or Kaggle's ILSVRC/Data/CLS-LOC/train and val){hint}"
    )


def _find_upwards(name: str, base: Path, root: Path) -> Path | None:
    """``name`` in ``base`` or one of its parents up to ``root``."""
    for folder in (base, *base.parents):
        if (folder / name).is_file():
            return folder / name
        if folder == root:
            break
    return None


def read_loc_solution(path: Path) -> dict[str, str]:
    """Kaggle's ``LOC_val_solution.csv``: ImageId -> wnid (the class of its first box)."""
    truth = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or header[:2] != ["ImageId", "PredictionString"]:
            raise DataError(f"{path}: expected the header ImageId,PredictionString, got {header}")
        for line, row in enumerate(reader, start=2):
            tokens = row[1].split() if len(row) >= 2 else []
            if not tokens or not WNID.fullmatch(tokens[0]):
                raise DataError(f"{path} line {line}: expected 'ImageId,wnid x y x y ...'")
            truth[row[0]] = tokens[0]
    return truth


def _devkit_files(root: Path, base: Path) -> dict[str, bytes] | None:
    """The devkit's ground truth and meta.mat, from its folder or its archive."""
    for folder in (root, base):
        for devkit in (folder / DEVKIT, folder):
            if (devkit / DEVKIT_GROUND_TRUTH).is_file() and (devkit / DEVKIT_META).is_file():
                return {
                    "path": str(devkit).encode(),
                    "truth": (devkit / DEVKIT_GROUND_TRUTH).read_bytes(),
                    "meta": (devkit / DEVKIT_META).read_bytes(),
                }
        archive = folder / f"{DEVKIT}.tar.gz"
        if archive.is_file():
            try:
                with tarfile.open(archive) as tar:
                    members = {Path(m.name).as_posix(): m for m in tar.getmembers()}
                    return {
                        "path": str(archive).encode(),
                        "truth": tar.extractfile(members[f"{DEVKIT}/{DEVKIT_GROUND_TRUTH}"]).read(),
                        "meta": tar.extractfile(members[f"{DEVKIT}/{DEVKIT_META}"]).read(),
                    }
            except (tarfile.TarError, KeyError, OSError) as err:
                raise DataError(
                    f"{archive} is not the ILSVRC-2012 devkit ({DEVKIT}/{DEVKIT_GROUND_TRUTH} "
                    f"and {DEVKIT}/{DEVKIT_META} expected): {err}"
                ) from None
    return None


def read_devkit(truth: bytes, meta: bytes, source: str) -> tuple[list[str], dict[str, str]]:
    """The devkit's validation ground truth as wnids (entry i is the class of
    ILSVRC2012_val_{i+1:08d}.JPEG), and the classes' names. ``meta.mat`` maps the
    ILSVRC2012_IDs to wnids."""
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy is a dependency
        raise DataError("reading the devkit's meta.mat needs scipy: pip install scipy") from None
    try:
        synsets = loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
        leaves = [
            (int(i), str(w), str(words))
            for i, w, words, children in zip(
                synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["words"],
                synsets["num_children"], strict=True,
            )
            if int(children) == 0
        ]
        ids = {i: w for i, w, _ in leaves}
    except Exception as err:  # scipy raises several kinds for a file that is not a .mat
        raise DataError(
            f"{source}: {DEVKIT_META} is not the devkit's synset table ({err})"
        ) from None
    wnids = []
    for line, text in enumerate(truth.decode().split(), start=1):
        if not text.isdigit() or int(text) not in ids:
            raise DataError(f"{source}: {DEVKIT_GROUND_TRUTH} line {line}: unknown class id {text}")
        wnids.append(ids[int(text)])
    return wnids, {w: words for _, w, words in leaves}


def _val_ground_truth(
    root: Path, base: Path, val_dir: Path, files: list[str], classes: list[str]
) -> tuple[np.ndarray, str, dict[str, str]]:
    """Labels of a flat val/ from LOC_val_solution.csv or the devkit, where they came from, and
    the class names the devkit gives."""
    stems = [Path(f).stem for f in files]
    solution = _find_upwards(LOC_SOLUTION, base, root)
    names: dict[str, str] = {}
    if solution is not None:
        truth, origin = read_loc_solution(solution), str(solution)
    else:
        devkit = _devkit_files(root, base)
        if devkit is None:
            raise DataError(
                f"{val_dir} holds {len(files)} images without class folders, and no ground truth "
                f"was found: expected {LOC_SOLUTION} or the devkit ({DEVKIT}/ or "
                f"{DEVKIT}.tar.gz) in {root}"
            )
        origin = devkit["path"].decode()
        wnids, names = read_devkit(devkit["truth"], devkit["meta"], origin)
        truth = {f"ILSVRC2012_val_{i:08d}": w for i, w in enumerate(wnids, start=1)}
        if any(not VAL_NAME.fullmatch(s) for s in stems):
            bad = next(s for s in stems if not VAL_NAME.fullmatch(s))
            raise DataError(
                f"{val_dir}/{bad}: the devkit's ground truth needs the original names "
                f"ILSVRC2012_val_NNNNNNNN.JPEG"
            )
    unlabelled = [s for s in stems if s not in truth]
    if unlabelled:
        raise DataError(
            f"the ground truth {origin} does not match {val_dir}: {len(unlabelled)} of its "
            f"{len(files)} images have no entry (first: {unlabelled[0]})"
        )
    if len(truth) != len(stems):
        missing = sorted(set(truth) - set(stems))
        raise DataError(
            f"the ground truth {origin} does not match {val_dir}: it lists {len(truth)} images, "
            f"the folder holds {len(stems)} (first missing: {missing[0]}.JPEG)"
        )
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({truth[s] for s in stems} - set(index))
    if unknown:
        raise DataError(
            f"the ground truth {origin} names classes that train/ does not have: "
            f"{', '.join(unknown[:5])}"
        )
    return np.asarray([index[truth[s]] for s in stems], dtype=np.int64), origin, names


def _synset_names(root: Path, base: Path, classes: list[str],
                  names: dict[str, str]) -> list[str] | None:
    """Human-readable class names from Kaggle's LOC_synset_mapping.txt or the devkit."""
    path = _find_upwards(LOC_SYNSETS, base, root)
    if path is not None:
        for line in path.read_text().splitlines():
            wnid, _, words = line.partition(" ")
            names[wnid] = words.strip()
    return [names.get(c, c) for c in classes] if names else None


def find_imagenet(root: str | os.PathLike | None) -> Listing:
    root = check_root(root, SOURCES["imagenet"].title)
    base = _imagenet_base(root)
    train_dir = base / "train"
    classes, train_files, train_labels = class_tree(train_dir)
    not_wnids = [c for c in classes if not WNID.fullmatch(c)]
    if not_wnids:
        raise DataError(
            f"{train_dir} holds folders that are not WordNet ids ({', '.join(not_wnids[:3])}); "
            f"ILSVRC-2012's train/ has one folder per wnid (n01440764, ...): for other class "
            f"names use data=imagefolder"
        )
    val_dir = base / "val"
    if not val_dir.is_dir():
        raise DataError(f"no validation images: {val_dir} does not exist")
    loose = _loose_images(val_dir)
    description: dict[str, Any] = {"kind": "imagenet", "root": str(root)}
    names: dict[str, str] = {}
    if _subdirs(val_dir):
        if loose:
            raise DataError(
                f"{val_dir} holds both class folders and {len(loose)} loose images "
                f"(e.g. {Path(loose[0]).name}): expected one or the other"
            )
        val_classes, val_files, val_labels = class_tree(val_dir)
        _same_classes(train_dir, classes, val_dir, val_classes)
        description["layout"] = "train/<wnid>/ and val/<wnid>/"
    elif loose:
        val_files = loose
        val_labels, origin, names = _val_ground_truth(root, base, val_dir, loose, classes)
        description |= {"layout": "train/<wnid>/ and flat val/", "val_labels": origin}
    else:
        raise DataError(f"{val_dir} holds no images: expected val/<wnid>/*.JPEG or val/*.JPEG")
    return Listing(
        classes=classes,
        files={"train": train_files, "val": val_files},
        labels={"train": train_labels, "val": val_labels},
        description=description,
        class_names=_synset_names(root, base, classes, names),
        # ILSVRC-2012's test labels were never published: its val is what the paper reports.
        origins={"train": "train/", "val": "val/ (ILSVRC-2012 has no public test labels)"},
    )


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


def find_imagefolder(root: str | os.PathLike | None, val_fraction: float | None = 0.1,
                     test_fraction: float | None = 0.1) -> Listing:
    """The splits of an image-folder tree: train/ with val/ and/or test/ where it has them; what
    it lacks held out of train (val, and a test split only when there is neither)."""
    root = check_root(root, SOURCES["imagefolder"].title)
    description: dict[str, Any] = {"kind": "imagefolder", "root": str(root)}
    train_dir = root / "train"
    val_dir = next((root / d for d in VAL_DIRS if (root / d).is_dir()), None)
    test_dir = next((root / d for d in TEST_DIRS if (root / d).is_dir()), None)
    if (val_dir or test_dir) and not train_dir.is_dir():
        raise DataError(f"{root} has {(val_dir or test_dir).name}/ but no train/: expected "
                        f"train/<class>/ beside it")
    if train_dir.is_dir() and (val_dir or test_dir):
        classes, train_files, train_labels = class_tree(train_dir)
        files, labels = {}, {}
        origins = {"train": "train/"}
        for split, folder in (("val", val_dir), ("test", test_dir)):
            if folder is None:
                continue
            if not _subdirs(folder) and _loose_images(folder):
                raise DataError(
                    f"{folder} holds images without class folders: expected {folder}/<class>/ "
                    f"(for ILSVRC-2012's flat val/ use data=imagenet)"
                )
            split_classes, files[split], labels[split] = class_tree(folder)
            _same_classes(train_dir, classes, folder, split_classes, split)
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
        return Listing(
            classes=classes,
            files={"train": train_files, **files},
            labels={"train": train_labels, **labels},
            description=description,
            origins=origins,
        )
    tree = train_dir if train_dir.is_dir() else root
    if not _subdirs(tree):
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
    classes, files, labels = class_tree(tree)
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
    return Listing(classes=classes, files=listing_files, labels=listing_labels,
                   description=description, origins=origins)
