"""A figure's directory: its PNGs, ``inputs.json`` (what it was made from, exactly: files with
their sha256, options, the commit) and ``measurements.json`` (what it measured)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.exits import UserError
from alexnet.provenance import git_state


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """A file as an input: its absolute path, size and sha256."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def check_out(out: str | os.PathLike) -> Path:
    """``out`` as a figure's directory may be: new, or an empty directory (checked before the
    figure is made, and again when it is written); UserError, one line, otherwise."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: name a new or empty directory")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty: choose another --out")
    return out


def write_figure_dir(out: str | os.PathLike, pngs: dict[str, Any], inputs: dict[str, Any],
                     measurements: dict[str, Any]) -> list[Path]:
    """Write the PNGs (uint8 arrays or matplotlib figures), ``inputs.json`` (what they were made
    from, exactly) and ``measurements.json`` into ``out``, a directory of their own."""
    from PIL import Image

    out = check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, picture in pngs.items():
        path = out / name
        if isinstance(picture, np.ndarray):
            Image.fromarray(picture).save(path)
        else:
            picture.savefig(path, dpi=120)
        written.append(path)
    record = {**inputs, "argv": sys.argv, "git": git_state(),
              "torch": _torch_version()}
    for name, data in (("inputs.json", record), ("measurements.json", measurements)):
        (out / name).write_text(json.dumps(data, indent=2, default=str) + "\n")
        written.append(out / name)
    return written


def _torch_version() -> str | None:
    """torch's version: with its build's suffix (+cu130) where torch is loaded, else from its
    package metadata (Fig. 1 is drawn without importing torch)."""
    if "torch" in sys.modules:
        return sys.modules["torch"].__version__
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None
