"""Where a result came from: the repository (``REPO_ROOT``, the one place that says where it is)
and the commit its code ran at. ``summary.json`` (a run) and a figure's ``inputs.json`` record
it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

# The directory above src/: the repository the code runs from (its conf/, ablations/, logs/).
REPO_ROOT = Path(__file__).resolve().parents[2]


def git_state(cwd: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The commit the code ran at, and whether the tree had uncommitted changes."""
    cwd = cwd or REPO_ROOT
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}
