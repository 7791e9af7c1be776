"""ILSVRC-2012 as the user has it (the paper's data, Sec. 2; nothing is downloaded):
``train/<wnid>/*.JPEG``, and ``val/`` either in class folders or flat
(``ILSVRC2012_val_00000001.JPEG`` ...) with the ground truth from ``LOC_val_solution.csv``
(Kaggle's copy) or from the devkit (``ILSVRC2012_devkit_t12/`` or its ``.tar.gz``). The Kaggle
tree ``ILSVRC/Data/CLS-LOC/{train,val}`` is found below the root as well. Its test labels were
never published: val is what the paper reports (Table 2), and runs measure test/* on it.

Every mistake raises DataError naming the path and what was expected.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.data.sources import (
    FolderWalk,
    Listing,
    check_root,
    class_tree,
    loose_images,
    same_classes,
    subdirs,
)
from alexnet.exits import DataError, one_line

WNID = re.compile(r"n\d{8}")
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")
LOC_SOLUTION = "LOC_val_solution.csv"
LOC_SYNSETS = "LOC_synset_mapping.txt"
DEVKIT = "ILSVRC2012_devkit_t12"
DEVKIT_GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "data/meta.mat"


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
    reader = csv.reader(_text(path).splitlines())
    header = next(reader, None)
    if not header or header[:2] != ["ImageId", "PredictionString"]:
        raise DataError(f"{path}: expected the header ImageId,PredictionString, got {header}")
    for line, row in enumerate(reader, start=2):
        tokens = row[1].split() if len(row) >= 2 else []
        if not tokens or not WNID.fullmatch(tokens[0]):
            raise DataError(f"{path} line {line}: expected 'ImageId,wnid x y x y ...'")
        truth[row[0]] = tokens[0]
    return truth


def _text(path: Path | str, data: bytes | None = None) -> str:
    """A text file's contents (``data`` where read already); DataError naming it otherwise."""
    try:
        return (Path(path).read_bytes() if data is None else data).decode()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (replace it with the file of a fresh "
                        f"copy)") from None


def _devkit_files(root: Path, base: Path) -> dict[str, Any] | None:
    """The devkit's ground truth and meta.mat (bytes), from its folder or its archive, and the
    paths that name them in messages."""
    for folder in (root, base):
        for devkit in (folder / DEVKIT, folder):
            if (devkit / DEVKIT_GROUND_TRUTH).is_file() and (devkit / DEVKIT_META).is_file():
                return {
                    "truth_path": str(devkit / DEVKIT_GROUND_TRUTH),
                    "meta_path": str(devkit / DEVKIT_META),
                    "truth": (devkit / DEVKIT_GROUND_TRUTH).read_bytes(),
                    "meta": (devkit / DEVKIT_META).read_bytes(),
                }
        archive = folder / f"{DEVKIT}.tar.gz"
        if archive.is_file():
            try:
                with tarfile.open(archive) as tar:
                    members = {Path(m.name).as_posix(): m for m in tar.getmembers()}
                    return {
                        "truth_path": f"{archive}: {DEVKIT}/{DEVKIT_GROUND_TRUTH}",
                        "meta_path": f"{archive}: {DEVKIT}/{DEVKIT_META}",
                        "truth": tar.extractfile(members[f"{DEVKIT}/{DEVKIT_GROUND_TRUTH}"]).read(),
                        "meta": tar.extractfile(members[f"{DEVKIT}/{DEVKIT_META}"]).read(),
                    }
            except (tarfile.TarError, KeyError, OSError) as err:
                raise DataError(
                    f"{archive} is not the ILSVRC-2012 devkit ({DEVKIT}/{DEVKIT_GROUND_TRUTH} "
                    f"and {DEVKIT}/{DEVKIT_META} expected): {err}"
                ) from None
    return None


def read_devkit(truth: bytes, meta: bytes, truth_path: str,
                meta_path: str) -> tuple[list[str], dict[str, str]]:
    """The devkit's validation ground truth as wnids (entry i is the class of
    ILSVRC2012_val_{i+1:08d}.JPEG), and the classes' names. ``meta.mat`` maps the
    ILSVRC2012_IDs to wnids; the paths name the two files in messages."""
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
            f"{meta_path} is not the devkit's synset table ({one_line(err)})"
        ) from None
    wnids = []
    for line, text in enumerate(_text(truth_path, truth).split(), start=1):
        if not text.isdigit() or int(text) not in ids:
            raise DataError(f"{truth_path} line {line}: unknown class id {text[:20]}")
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
        origin = devkit["truth_path"]
        wnids, names = read_devkit(devkit["truth"], devkit["meta"], devkit["truth_path"],
                                   devkit["meta_path"])
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
        for number, line in enumerate(_text(path).splitlines(), start=1):
            wnid, _, words = line.partition(" ")
            if not WNID.fullmatch(wnid) or not words.strip():
                raise DataError(f"{path} line {number}: expected 'wnid words, ...' (replace it "
                                f"with the file of a fresh copy)")
            names[wnid] = words.strip()
        if missing := [c for c in classes if c not in names]:
            raise DataError(f"{path} names {len(classes) - len(missing)} of the {len(classes)} "
                            f"classes of train/ (first missing: {missing[0]}): replace it with "
                            f"the file of a fresh copy")
    return [names.get(c, c) for c in classes] if names else None


def find_imagenet(root: str | os.PathLike | None) -> Listing:
    root = check_root(root, "imagenet")
    base = _imagenet_base(root)
    train_dir = base / "train"
    walk = FolderWalk()
    classes, train_files, train_labels = class_tree(train_dir, walk)
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
    loose = loose_images(val_dir)
    description: dict[str, Any] = {"kind": "imagenet", "root": str(root)}
    names: dict[str, str] = {}
    if subdirs(val_dir):
        if loose:
            raise DataError(
                f"{val_dir} holds both class folders and {len(loose)} loose images "
                f"(e.g. {Path(loose[0]).name}): expected one or the other"
            )
        val_classes, val_files, val_labels = class_tree(val_dir, walk)
        same_classes(train_dir, classes, val_dir, val_classes)
        description["layout"] = "train/<wnid>/ and val/<wnid>/"
    elif loose:
        val_files = loose
        val_labels, origin, names = _val_ground_truth(root, base, val_dir, loose, classes)
        description |= {"layout": "train/<wnid>/ and flat val/", "val_labels": origin}
    else:
        raise DataError(f"{val_dir} holds no images: expected val/<wnid>/*.JPEG or val/*.JPEG")
    walk.check_links()
    return Listing(
        classes=classes,
        files={"train": train_files, "val": val_files},
        labels={"train": train_labels, "val": val_labels},
        description=description,
        class_names=_synset_names(root, base, classes, names),
        # ILSVRC-2012's test labels were never published: its val is what the paper reports.
        origins={"train": "train/", "val": "val/ (ILSVRC-2012 has no public test labels)"},
    )
