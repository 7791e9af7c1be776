"""Preparing a dataset once from the user's files (what ``src/prepare.py`` runs): find the images,
check the layout, then write the prepared format (``writer``)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from alexnet.data import cifar10, imagenet, prepared, registry, sources, writer
from alexnet.data.images import IMAGE_EXTENSIONS, ImageFiles
from alexnet.exits import DataError


def plan(
    source: str,
    root: str | os.PathLike | None,
    prepared_dir: str | os.PathLike,
    image_size: int,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    expected_classes: int | None = None,
    test_folder_required: bool = False,
) -> writer.Job:
    """Find and check the source's files; the job that writes them to ``prepared_dir``.
    ``expected_classes`` and ``test_folder_required`` (an image-folder tree, e.g.
    data=cifar10_folder): DataError for a tree of another number of classes, or without test/."""
    if source not in registry.SOURCES:
        raise DataError(f"data.source must be one of {list(registry.SOURCES)}, got {source!r}")
    if source == "cifar10":
        if image_size != cifar10.IMAGE_SIZE:
            raise DataError(
                f"CIFAR-10 images are {cifar10.IMAGE_SIZE}x{cifar10.IMAGE_SIZE} and stay so: "
                f"set data.image_size={cifar10.IMAGE_SIZE}, got {image_size}"
            )
        found = cifar10.find_cifar10(root, 0.1 if val_fraction is None else val_fraction)
        splits = {
            name: writer.Split(labels=found["labels"][name], reader=found["readers"][name],
                               identity=found["identity"][name], origin=found["origins"][name])
            for name in prepared.SPLITS
        }
        return writer.Job(root=Path(prepared_dir), image_size=image_size,
                          classes=found["classes"], splits=splits, source=found["description"])
    if image_size < 8:
        raise DataError(f"data.image_size must be at least 8, got {image_size}")
    listing = (
        imagenet.find_imagenet(root) if source == "imagenet"
        else sources.find_imagefolder(root, val_fraction, test_fraction)
    )
    sources.check_expected_layout(root, len(listing.classes), (listing.origins or {}).get("test"),
                                  expected_classes, test_folder_required)
    splits = {
        name: writer.Split(labels=listing.labels[name], reader=ImageFiles(listing.files[name]),
                           identity=listing.files[name],
                           origin=(listing.origins or {}).get(name, ""))
        for name in prepared.SPLITS if name in listing.files
    }
    return writer.Job(root=Path(prepared_dir), image_size=image_size, classes=listing.classes,
                      splits=splits, source=listing.description,
                      class_names=listing.class_names)


def existing(
    prepared_dir: str | os.PathLike, source: str, root: str | os.PathLike | None,
    image_size: int, force: bool, fractions: dict[str, float | None] | None = None,
) -> dict[str, Any] | None:
    """The stats of ``prepared_dir`` if it already holds this source at this size (nothing to
    do); None if it must be written. DataError if it holds something else and ``force`` is off,
    rather than replacing a dataset that took hours to prepare."""
    prepared_dir = Path(prepared_dir)
    prepared.check_replaceable(prepared_dir)  # before hours of work that it would refuse after
    wanted = str(sources.check_root(root, source))
    if force or not prepared.is_prepared(prepared_dir):
        return None
    stats = prepared.read_stats(prepared_dir)
    made_from = stats.get("source", {})
    # The held-out fractions it was made with, where they applied (a tree's own val/ has none).
    other = {k: made_from[k] for k, v in (fractions or {}).items()
             if k in made_from and v is not None and float(v) != float(made_from[k])}
    if (
        prepared.is_current(stats) and stats.get("image_size") == image_size
        and made_from.get("kind") == source and made_from.get("root") == wanted and not other
    ):
        _check_listing(made_from.get("listing"), plan(source, root, prepared_dir, image_size,
                                                      **(fractions or {})), prepared_dir)
        return stats
    what = (
        f"an older format (version {stats.get('format_version')})"
        if not prepared.is_current(stats)
        else f"{made_from.get('kind')} from {made_from.get('root')} at "
             f"{stats.get('image_size')}x{stats.get('image_size')}"
             + "".join(f" with {k}={v:g}" for k, v in other.items())
    )
    raise DataError(
        f"data.prepared_dir={prepared_dir} already holds {what}: pass force=true to replace it, "
        f"or choose another data.prepared_dir"
    )


def _check_listing(made_from: dict[str, Any] | None, job: writer.Job,
                   prepared_dir: Path) -> None:
    """DataError when the source's files are no longer those ``prepared_dir`` was made from
    (images added, removed or moved between classes); datasets prepared before the listing was
    kept are not checked."""
    listing = job.listing()  # a digest over every file's name: once
    if made_from is None or made_from.get("digest") == listing["digest"]:
        return
    now = listing["files"]
    change = (f"{made_from.get('files')} files then, {now} now" if made_from.get("files") != now
              else f"{now} files then and now, not the same ones or not in the same classes")
    raise DataError(f"data.prepared_dir={prepared_dir} was made from other files of data.root "
                    f"({change}): pass force=true to prepare it again, or choose another "
                    "data.prepared_dir")


def describe(result: writer.Result, source: str) -> str:
    """One paragraph for the terminal: what was written, how fast."""
    stats = result.stats
    counts = ", ".join(f"{split} {c['total']}" for split, c in stats["counts"].items())
    root = stats["source"].get("root", "")
    lines = [f"prepared {source} from {root}: {counts} images at "
             f"{stats['image_size']}x{stats['image_size']}, {stats['num_classes']} classes"]
    if result.images:
        rate = result.images / result.seconds if result.seconds > 0 else float("nan")
        lines.append(
            f"{result.images} images in {result.seconds:.1f} s: {rate:.0f} images/s with "
            f"{result.workers} processes" + (" (resumed)" if result.resumed else "")
        )
    if not_read := stats["source"].get("not_read"):  # named, as the skipped files below
        kinds = ", ".join(f"{kind} {n}" for kind, n in not_read["kinds"].items())
        lines.append(f"note: left out {not_read['count']} files or folders of {root} that "
                     f"are not images in a class folder in a format read here "
                     f"({', '.join(IMAGE_EXTENSIONS)}): {kinds} (source.not_read in "
                     f"stats.json), e.g. {not_read['first']}")
    if stats["skipped"]:
        lines.append(f"{len(stats['skipped'])} files could not be decoded and were skipped "
                     f"(listed under 'skipped' in stats.json), e.g. {stats['skipped'][0]['path']}")
    duplicates = stats.get("duplicates") or []
    if duplicates:
        pairs = Counter(f"{d['split']} as {d['same_as']['split']}" for d in duplicates)
        first = duplicates[0]
        lines.append(
            f"warning: {len(duplicates)} "
            + ("image decodes" if len(duplicates) == 1 else "images decode")
            + " to exactly an image of another split ("
            + ", ".join(f"{n} {pair}" for pair, n in sorted(pairs.items()))
            + f"; listed under 'duplicates' in stats.json), e.g. {first['path']} = "
            f"{first['same_as']['path']}: an error measured on them measures memory")
    return "\n".join(lines)
