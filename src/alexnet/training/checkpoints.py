"""Checkpoint files: written whole or not at all, read without running code, found again.

- :class:`AtomicCheckpointIO`: a checkpoint is written into a hidden file beside its target,
  synced and renamed over it, so no partial file is ever taken for a good one.
- :func:`read_checkpoint`: ``torch.load(weights_only=True)``; a file that would need unpickling
  arbitrary objects, a truncated one or a foreign one is refused with one line
  (:class:`CheckpointRefused`).
- Resuming: :func:`find_last_checkpoint` (``ckpt_path=last``), :func:`find_requeued_checkpoint`
  (a requeued SLURM job), :func:`config_differences` (what a resumed run may not change) and
  :func:`resume_command`.
"""

from __future__ import annotations

import os
import pickle
import re
import shlex
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from alexnet.data import registry
from alexnet.exits import UserError
from alexnet.training.module import CLASSES_KEY, CONFIG_KEY

LAST = "last.ckpt"  # the run's whole state, for ckpt_path=last


def find_last_checkpoint(log_dir: str | os.PathLike, task_name: str,
                         own_dir: str | os.PathLike) -> Path | None:
    """``ckpt_path=last``: this run directory's own ``last.ckpt`` (a study's fixed directories),
    else the newest ``last.ckpt`` of the task's runs under ``log_dir``."""
    own = Path(own_dir) / "checkpoints" / LAST
    if own.is_file():
        return own
    found = list((Path(log_dir) / task_name).glob(f"*/*/checkpoints/{LAST}"))
    found += list((Path(log_dir) / task_name).glob(f"*/*/*/checkpoints/{LAST}"))
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def slurm_job_id() -> str | None:
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


def find_requeued_checkpoint(log_dir: str | os.PathLike, task_name: str) -> Path | None:
    """A requeued SLURM job (SLURM_RESTART_COUNT >= 1): the newest ``last.ckpt`` written by an
    earlier run of the same job, as its summary.json records, else None."""
    import json

    job = slurm_job_id()
    if not job or int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return None
    found = []
    for summary in (Path(log_dir) / task_name).glob("**/summary.json"):
        try:
            record = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        last = summary.parent / "checkpoints" / LAST
        if record.get("slurm_job_id") == job and last.is_file():
            found.append(last)
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


class CheckpointRefused(Exception):
    """A checkpoint that cannot be used: one line says why."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, so a file
    from elsewhere cannot run code. CheckpointRefused with the reason otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointRefused(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointRefused(f"{path} is not a checkpoint file")
    try:
        with warnings.catch_warnings():  # a file of random bytes "uses pickle protocol 201"
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a file that is not a checkpoint fails in any way:
        # the weights-only unpickler raises IndexError, KeyError, UnicodeDecodeError ... on bytes
        # that are not a pickle, zipfile and OSError on a cut archive
        if "Unsupported global" in str(err):  # a real pickle that names code to call
            raise CheckpointRefused(
                f"refused {path}: it needs unpickling arbitrary Python objects, which could run "
                "code; only checkpoints of tensors and plain containers are loaded"
            ) from None
        # A cut or damaged archive says where it broke; bytes that are no pickle at all say
        # nothing useful (IndexError: pop from empty list).
        reason = (_first_line(err).split(". ")[0]
                  if isinstance(err, RuntimeError | OSError | EOFError | zipfile.BadZipFile)
                  and not isinstance(err, pickle.UnpicklingError)
                  else "not a file torch.save wrote")
    raise CheckpointRefused(f"{path} is not a readable checkpoint ({reason})")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def resume_command(ckpt: str | os.PathLike, overrides: list[str]) -> str:
    """The command that resumes a run: its own overrides, and the checkpoint."""
    kept = [o for o in overrides if not o.startswith(("ckpt_path=", "+ckpt_path="))]
    args = " ".join(shlex.quote(o) for o in [*kept, f"ckpt_path={hydra_value(str(ckpt))}"])
    return f"python src/train.py {args}"


def hydra_value(text: str) -> str:
    """``text`` as a value of a Hydra override: as it is where Hydra's grammar reads it so, else
    double-quoted (a path with ``=``, ``,`` or a space), its quotes escaped and the backslashes
    before a quote or the end doubled (Hydra reads a backslash elsewhere as itself)."""
    if re.fullmatch(r"[\w./~+@%-]+", text):
        return text
    escaped = re.sub(r'(\\+)(?="|$)', lambda m: m.group(1) * 2, text).replace('"', '\\"')
    return f'"{escaped}"'


def weights_mismatch(err: RuntimeError) -> str:
    """``load_state_dict``'s error in one short line: its first problem (a missing, unexpected or
    misshapen tensor), shapes shortened, and how many more there are. The whole list of an
    AlexNet's tensors runs to kilobytes."""
    problems = [" ".join(line.split()) for line in str(err).splitlines()[1:] if line.strip()]
    if not problems:
        return " ".join(str(err).split())[:200]
    first = problems[0].replace("torch.Size(", "").replace("])", "]")
    first = first.replace("copying a param with shape", "the checkpoint's").replace(
        "from checkpoint, the shape in current model is", "against the network's").rstrip(". ")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return (first if len(first) <= 200 else first[:197] + "...") + more


def config_differences(before: dict[str, Any], now: dict[str, Any],
                       sections: tuple[str, ...] = ("model", "data", "optimizer", "scheduler"),
                       ignore: tuple[str, ...] = ()) -> list[str]:
    """Keys of ``sections`` whose values differ: what a resumed run may not change (the data's
    loader settings, and the keys in ``ignore``, excepted). A key added to conf/ since the
    checkpoint was written is no difference at the value that does what its absence did."""
    from alexnet.run_record import comparable, flatten_config

    free = ("data.num_workers", "data.pin_memory", "data.eval_batch_size", "data.prepared_dir",
            "data.ten_crop", *ignore)
    a = {k: v for k, v in comparable(flatten_config({s: before.get(s) for s in sections})).items()
         if not k.startswith(free)}
    b = {k: v for k, v in comparable(flatten_config({s: now.get(s) for s in sections})).items()
         if not k.startswith(free)}
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all: into a hidden file beside the target, synced, then
    renamed over it. (Lightning's own writer stages the file in the system's temporary directory
    and moves it, which is a copy, not a rename, when that is another file system.) A full disk
    leaves the previous checkpoint as it was, and no partial file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """Load a checkpoint written by ``src/train.py``, with ``weights_only=True`` (a file from
    elsewhere cannot run code); UserError for anything else, one line saying why."""
    path = Path(path)
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointRefused as err:
        message = str(err)
        if message.startswith("checkpoint not found"):
            message = message.replace("checkpoint", what, 1)
        raise UserError(message) from None
    if not isinstance(checkpoint, dict) or not checkpoint.get(CONFIG_KEY):
        raise UserError(f"{path} is not a checkpoint written by src/train.py (no {CONFIG_KEY})")
    config, weights = checkpoint[CONFIG_KEY], checkpoint.get("state_dict")
    if not isinstance(config, dict) or not all(
            isinstance(config.get(section), dict) for section in ("model", "data")):
        raise UserError(f"{path} is not a checkpoint written by src/train.py (its {CONFIG_KEY} "
                        f"is not a configuration with a model and data)")
    if not isinstance(weights, dict) or not all(
            isinstance(v, torch.Tensor) for v in weights.values()):
        raise UserError(f"{path} is not a checkpoint written by src/train.py (its state_dict is "
                        f"not a mapping of tensors)")
    # A run that diverged can leave NaN weights behind: measured, they would give chance-level
    # error recorded as a completed evaluation (or a blank figure).
    bad = next((k for k, v in weights.items()
                if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise UserError(f"{path} holds non-finite weights ({bad}): the run it comes from "
                        f"diverged; evaluate or resume from an earlier checkpoint")
    return checkpoint


def dataset_config(train_cfg: DictConfig, prepared_dir: str | None = None) -> DictConfig:
    """The data config of a checkpoint's training configuration, reading ``prepared_dir``
    instead of its own dataset when given (the built-in data's generator settings dropped)."""
    data_cfg = train_cfg.data
    if prepared_dir:
        data_cfg.prepared_dir = prepared_dir
        if registry.is_built_in(data_cfg):
            data_cfg._target_ = "alexnet.data.datamodule.PreparedDataModule"
            for key in ("num_classes", "train_per_class", "val_per_class", "test_per_class",
                        "seed"):
                data_cfg.pop(key, None)
    return data_cfg


def trained_classes(checkpoint: dict[str, Any]) -> list[str] | None:
    """The class names a checkpoint's network was trained on, in label order (None in
    checkpoints written before they were kept)."""
    names = checkpoint.get(CLASSES_KEY)
    return None if names is None else [str(name) for name in names]


def check_classes(trained: list[str] | None, classes: list[str], dataset: str | os.PathLike,
                  path: str | os.PathLike) -> None:
    """UserError when ``dataset``'s classes are not, label by label, those a checkpoint's network
    was ``trained`` on (:func:`trained_classes`): with as many classes under other names (or in
    another order) the weights load and its error measures nothing."""
    if trained is None or list(trained) == list(classes):
        return
    if len(trained) != len(classes):
        raise UserError(f"{dataset} has {len(classes)} classes, but {path} was trained on "
                        f"{len(trained)}: give the dataset it was trained on")
    label = next(i for i, (a, b) in enumerate(zip(trained, classes, strict=True)) if a != b)
    raise UserError(f"{dataset} has other classes than {path} was trained on (label {label} is "
                    f"{classes[label]!r} there, {trained[label]!r} in training): give the "
                    "dataset it was trained on")
