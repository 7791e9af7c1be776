"""Images that an evaluation split shares with the splits before it, found by their pixels.

Each row the writer produces is hashed (64-bit BLAKE2b of its decoded pixels): a val or test image
that decodes to exactly a training image (a copy of one file in two splits under another name), or
a test image to a val image, is listed under ``duplicates`` in stats.json and named by
``src/prepare.py``, since an error measured on it measures memory, not generalisation. A warning,
not an error: real datasets hold a few such copies. Near-copies (re-encoded, resized) are not
looked for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

# Which split is compared with which: an evaluation split against what trained or selected.
COMPARED = (("val", "train"), ("test", "train"), ("test", "val"))


def row_digests(images: np.ndarray) -> np.ndarray:
    """A 64-bit digest of each row's pixels (uint64): equal rows, equal digests."""
    return np.array([int.from_bytes(hashlib.blake2b(np.ascontiguousarray(image).tobytes(),
                                                    digest_size=8).digest(), "little")
                     for image in images], dtype=np.uint64)


def find(digests: dict[str, np.ndarray], failed: dict[str, set[int]],
         describe: dict[str, Callable[[int], str]]) -> list[dict]:
    """The rows of val and test whose digest is a row's of train (or, for test, of val), each
    listed once, against the first split of :data:`COMPARED` that holds it:
    ``{split, path, same_as: {split, path}}``. Rows in ``failed`` (not decoded) take no part."""
    found, seen = [], set()
    for split, other in COMPARED:
        if split not in digests or other not in digests:
            continue
        usable = np.ones(len(digests[other]), dtype=bool)
        usable[sorted(failed.get(other, ()))] = False
        rows = np.flatnonzero(usable)
        order = np.argsort(digests[other][rows], kind="stable")
        known = digests[other][rows][order]
        if not len(known):
            continue
        at = np.searchsorted(known, digests[split]).clip(max=len(known) - 1)
        for row in np.flatnonzero(known[at] == digests[split]).tolist():
            if row in failed.get(split, ()) or (split, row) in seen:
                continue
            seen.add((split, row))
            found.append({"split": split, "path": describe[split](row),
                          "same_as": {"split": other,
                                      "path": describe[other](int(rows[order[at[row]]]))}})
    return found
