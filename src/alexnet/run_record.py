"""summary.json, the record every run writes and every tool reads back.

The lowest layer that knows the record's format, so that training (``skip_completed``, the
checkpoint's config check), the callbacks (a Fig. 1 run racing its siblings) and the analysis
(studies, reports, figures) read it one way:

- :func:`read_summary` and :func:`read_runs`: one record, or every record below a folder, each
  checked to be this suite's (:class:`RecordError`, one line naming the file, otherwise);
- :class:`Run`: one record read back: its arm, seed, errors, per-epoch history and per-image
  test results;
- :func:`pack_per_image` and :func:`unpack_per_image`: the per-image bits as the record keeps
  them;
- :func:`flatten_config` and :func:`comparable`: a recorded configuration as dotted keys, less
  the keys added since runs were recorded, so that two runs' settings compare;
- :func:`epochs_to_error`: Fig. 1's measure of a training-error curve, the epoch at which it
  reaches 25%, here because a run's race against its siblings and the report must agree on it.
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexnet.exits import NotReadable, UserError
from alexnet.names import arm_name

# The format of summary.json, which alexnet.training.summary writes and this module reads (here,
# so that reading a record imports no torch). A record without the key predates it: version 1.
SUMMARY_VERSION = 1


class RecordError(UserError):
    """A summary.json that cannot be read as this suite's record, or none where one was looked
    for: one line for the user, naming the file."""


class UnreadableRecord(RecordError):
    """A summary.json this user may not read: its permissions to fix, not its run to redo."""


class NewerRecord(RecordError):
    """A summary.json of a newer format than this code reads: the code to update, not the run
    to redo."""


@dataclass
class Run:
    """One run, as its summary.json describes it."""

    path: Path
    summary: dict[str, Any]

    @property
    def arm(self) -> str:
        return self.summary.get("arm") or arm_name(
            [a["name"] for a in self.summary.get("ablations") or []])

    @property
    def seed(self) -> int | None:
        return self.summary.get("seed")

    @property
    def lr(self) -> float | None:
        return (self.config.get("optimizer") or {}).get("lr")

    @property
    def chance_error(self) -> float:
        """The top-1 error before training, 1 - 1 / classes: where Fig. 1's curves start."""
        return 1.0 - 1.0 / max(2, int(self.summary.get("num_classes") or 2))

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    @property
    def config(self) -> dict[str, Any]:
        return self.summary.get("config") or {}

    def test_error(self, error: str) -> float | None:
        """The test error (``top1_err`` or ``top5_err``) as a fraction: the 10-patch test's when
        the run made it (Sec. 4.1), else the single centre patch's."""
        final = self.summary.get("final") or {}
        value = final.get(f"test10/{error}", final.get(f"test/{error}"))
        return None if value is None else float(value)

    def val_error(self, error: str) -> float | None:
        """The val error (``top1_err`` or ``top5_err``) at the run's last epoch, as a fraction."""
        value = (self.summary.get("final") or {}).get(f"val/{error}")
        return None if value is None else float(value)

    def test_per_image(self) -> np.ndarray | None:
        """Per test image, whether the run's top-1 guess was right (the 10-patch test's when the
        run made it, as :meth:`test_error`); None where the summary does not record it."""
        record = (self.summary.get("evaluation") or {}).get("top1_correct") or {}
        chosen = record.get("test10") or record.get("test")
        return None if chosen is None else unpack_per_image(chosen)

    def history(self, metric: str) -> list[tuple[int, float]]:
        """(epochs completed, value) of a per-epoch metric, in order."""
        rows = self.summary.get("history") or []
        return [(int(r["epoch"]) + 1, float(r[metric])) for r in rows
                if r.get(metric) is not None and math.isfinite(float(r[metric]))]


def read_runs(path: str | os.PathLike) -> list[Run]:
    """The training runs of every ``summary.json`` below a directory (or of one summary.json
    file), in path order, whatever their status; RecordError when there is none."""
    path = Path(path)
    if path.is_file() and path.name == "summary.json":
        paths = [path]
    elif path.is_dir():
        paths = summary_files(path)
    else:
        raise RecordError(f"{path} is a file, not a sweep directory or a summary.json"
                          if path.exists() else f"no such sweep directory: {path}")
    runs = []
    for file in paths:
        try:
            runs.append(Run(file, read_summary(file)))
        except (UnreadableRecord, NewerRecord):
            raise
        except RecordError as err:
            raise RecordError(f"{err}: run that run again, or remove its directory") from None
    for run in runs:  # never dropped unsaid: a record in a run's place would read as no run
        if (task := run.summary.get("task")) != "train":
            what = ("an evaluation's record (task eval, src/eval.py)" if task == "eval"
                    else f"a record of task {task!r}")
            raise RecordError(f"{run.path} is {what}, not a training run's"
                              + (f": move it out of {path}" if path.is_dir() else ""))
    if not runs:
        raise RecordError(f"no training run (summary.json) found below {path}")
    return runs


def summary_files(directory: Path) -> list[Path]:
    """Every ``summary.json`` below ``directory``, in path order, through symbolic links to
    folders too (a study gathered from runs kept elsewhere), each real folder once (a link loop
    ends there). A ``summary.json`` that is not a file is listed, for its reader to refuse."""
    found, seen = [], set()
    for folder, subfolders, files in os.walk(directory, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        if "summary.json" in files or "summary.json" in subfolders:
            found.append(Path(folder) / "summary.json")
    return sorted(found)


def read_summary(file: str | os.PathLike) -> dict[str, Any]:
    """One run's record as this suite writes it (a JSON object with its ``task``, and its
    ``config`` a mapping); RecordError naming the file and what is wrong with it otherwise."""
    try:
        summary = json.loads(Path(file).read_text())
    except PermissionError:
        raise UnreadableRecord(NotReadable(file)) from None
    except (OSError, ValueError) as err:  # ValueError: not JSON, or not text at all
        raise RecordError(f"{file} is not a readable summary.json "
                         f"({' '.join(str(err).split())})") from None
    if not isinstance(summary, dict) or "task" not in summary:  # another file by that name
        raise RecordError(f"{file} is not a summary.json written by this suite (no task)")
    if not isinstance(summary.get("config", {}), dict):
        raise RecordError(f"{file} is not a summary.json written by this suite (its config is "
                         f"not a mapping)")
    version = summary.get("summary_version", SUMMARY_VERSION)
    if _whole(version) and version > SUMMARY_VERSION:
        raise NewerRecord(f"{file} was written by a newer version of this suite (summary_version "
                          f"{version}; this code reads up to {SUMMARY_VERSION}): update this code "
                          "to read it")
    if problem := _damage(summary):
        raise RecordError(f"{file} is damaged: {problem}")
    return summary


def _damage(summary: dict[str, Any]) -> str | None:
    """What makes a record unusable that this suite never writes: a format version that is not
    one, metrics that are not mappings, an epoch row without its epoch number, a completed
    training run without its final metrics, an error rate that is not a fraction (a percentage,
    NaN, a string), a seed, number of classes or learning rate that is not a number of its kind
    (the configuration checks refuse those before a run starts: alexnet.jobs.config_checks).
    Losses may be anything: a diverged run's are NaN. A seed may be null: a run on a random seed
    (a study refuses it: it pairs by seed). A completed run may lack test errors (test=false):
    the report names it."""
    version = summary.get("summary_version", SUMMARY_VERSION)
    if not _whole(version) or version < 1:
        return f"its summary_version is {version!r}, not a version number"
    history = summary.get("history", [])
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        return "its history is not a list of epoch rows"
    for i, row in enumerate(history):
        if not _whole(row.get("epoch")) or row["epoch"] < 0:
            return (f"history epoch {i + 1}: " + (f"its epoch is {row['epoch']!r}, not a whole "
                                                   "number >= 0" if "epoch" in row else
                                                   "no epoch"))
    for key in ("final", "best"):
        if not isinstance(summary.get(key) or {}, dict):
            return f"its {key} metrics are not a mapping"
    if summary.get("task") == "train" and summary.get("status") == "completed" and not (
            isinstance(summary.get("final"), dict)):
        return "a completed run without its final metrics"
    if (seed := summary.get("seed")) is not None and not _whole(seed):
        return f"its seed is {seed!r}, not a whole number (or null)"
    if "num_classes" in summary and not (_whole(classes := summary["num_classes"])
                                         and classes >= 1):
        return f"its num_classes is {classes!r}, not a number of classes (a whole number >= 1)"
    optimizer = (summary.get("config") or {}).get("optimizer", {})
    if not isinstance(optimizer, dict):
        return f"its config.optimizer is {optimizer!r}, not a mapping"
    if "lr" in optimizer and not _number(lr := optimizer["lr"]):
        return f"its config.optimizer.lr is {lr!r}, not a learning rate (a finite number)"
    ablations = summary.get("ablations") or []
    if not isinstance(ablations, list) or not all(
            isinstance(a, dict) and isinstance(a.get("name"), str) for a in ablations):
        return "its ablations are not a list of named ablations"
    # The arm is its ablations' names (names.arm_name): a report pairs and prints it.
    arm, expected = summary.get("arm"), arm_name([a["name"] for a in ablations])
    if arm is not None and arm != expected:
        return f"its arm {arm!r} is not its ablations' ({expected!r})"
    rows = [("final", summary.get("final") or {}), ("best", summary.get("best") or {}),
            *((f"history epoch {i + 1}", row) for i, row in enumerate(history))]
    for where, metrics in rows:
        for name, value in metrics.items():
            if name.endswith("_err") and value is not None and not _fraction(value):
                return f"{where}: {name} is {value!r}, not an error rate in [0, 1]"
    return None


def _fraction(value: Any) -> bool:
    return _number(value) and 0.0 <= value <= 1.0


def _number(value: Any) -> bool:
    """A finite int or float (a bool is neither, here)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _whole(value: Any) -> bool:
    """An int as JSON holds one (a bool, 1.0 or "1" is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def pack_per_image(correct: Any) -> dict[str, Any]:
    """Per-image booleans (a run's test images, in order) as summary.json keeps them: their count
    and the bits, packed and base64-encoded (1.7 KB for CIFAR-10's 10,000 test images)."""
    flags = np.asarray(correct, dtype=bool).ravel()
    return {"n": int(flags.size), "bits": base64.b64encode(np.packbits(flags)).decode("ascii")}


def unpack_per_image(record: dict[str, Any]) -> np.ndarray:
    """The booleans :func:`pack_per_image` packed."""
    bits = np.frombuffer(base64.b64decode(record["bits"]), dtype=np.uint8)
    return np.unpackbits(bits, count=int(record["n"])).astype(bool)


def flatten_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested configuration (a summary's ``config``) as ``{"dotted.key": value}``."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten_config(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


# Keys conf/ gained after runs had been recorded, each with the value that does what its absence
# did. At that value a key is left out of every comparison of configurations, so a run recorded
# before the key existed equals one that holds it: a completed study is neither run again
# (skip_completed) nor refused as mixed when new runs join it.
ADDED_KEYS: dict[str, Any] = {
    "trainer.enable_checkpointing": True,
    "trainer.limit_test_batches": None,
    "model.fc_width": 4096,
}


# Keys that check the data rather than set the run (data=cifar10_folder's expected layout): a run
# that passes them computes what it did before they existed, so no comparison holds them.
DATA_CHECK_KEYS: tuple[str, ...] = ("data.expected_classes", "data.test_folder_required")


def comparable(flat: dict[str, Any]) -> dict[str, Any]:
    """A flattened configuration less the :data:`ADDED_KEYS` that hold their neutral value and
    the :data:`DATA_CHECK_KEYS`."""
    return {k: v for k, v in flat.items() if k not in DATA_CHECK_KEYS
            and (k not in ADDED_KEYS or v != ADDED_KEYS[k])}


def epochs_to_error(curve: list[tuple[int, float]], target: float = 0.25,
                    start: float | None = None) -> float | None:
    """The epoch at which a per-epoch training-error curve first reaches ``target`` (Fig. 1's
    25%), interpolated linearly between the epochs on either side; None if it never does.
    ``start`` is the error before training (chance), from which the first epoch is drawn."""
    previous = (0, start) if start is not None else None
    for epoch, value in curve:
        if value <= target:
            if previous is None or previous[1] is None or previous[1] <= value:
                return float(epoch)
            before, err_before = previous
            return before + (err_before - target) / (err_before - value) * (epoch - before)
        previous = (epoch, value)
    return None
