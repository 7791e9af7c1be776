"""Writing a prepared dataset: several processes, a progress bar, resumable, atomic.

The rows of each split are cut into chunks. Worker processes decode a chunk and write its rows in
place into the split's image file inside ``<dir>.partial``; the main process records which chunks
are done, together with the exact pixel sums of the training chunks, in ``progress.npz``
(replaced atomically every few seconds). A prepare that is killed resumes from the chunks recorded
there: a chunk that was being written is simply written again. When every chunk is done, the
statistics are derived from the sums, ``stats.json`` is written last, and the directory is renamed
to its final name, so that a killed prepare never leaves a directory that looks complete.

Each written row is also hashed, and the digests kept with the progress, so that copies across
splits are found once every row is written (:mod:`alexnet.data.duplicates`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from alexnet.data import duplicates, prepared
from alexnet.data.prepared import PixelSums
from alexnet.exits import DataError

PLAN_FILE = "plan.json"
PROGRESS_FILE = "progress.npz"
# What progress.npz holds; part of the fingerprint, so that an interrupted prepare of an older
# version starts over instead of resuming with records it lacks (2: the row digests).
PROGRESS_VERSION = 2


class RowReader(Protocol):
    """Produces the rows of one split; must be picklable (it is sent to worker processes)."""

    def read(self, start: int, stop: int, size: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Rows ``start:stop`` as uint8 (stop - start, size, size, 3), and the (row, message) of
        each row that could not be produced (left as zeros)."""
        ...

    def describe(self, row: int) -> str:
        """What row ``row`` comes from (a file path), for the list of skipped files."""
        ...


@dataclass
class Split:
    labels: np.ndarray  # int64, one per row
    reader: RowReader
    identity: Sequence[str]  # what each row is made from (paths): a changed source starts over
    origin: str = ""  # where the split came from, for stats.json ("test/", "held out of train/")


@dataclass
class Job:
    """Everything needed to write one prepared dataset at ``root``."""

    root: Path
    image_size: int
    classes: list[str]
    splits: dict[str, Split]
    source: dict[str, Any]
    class_names: list[str] | None = None

    def fingerprint(self, chunk_size: int) -> str:
        digest = hashlib.sha256()
        head = [prepared.FORMAT_VERSION, PROGRESS_VERSION, self.image_size, chunk_size,
                self.classes, self.source]
        digest.update(json.dumps(head, sort_keys=True, default=str).encode())
        for name, split in sorted(self.splits.items()):
            digest.update(name.encode())
            # os.fsencode: a file name that is not UTF-8 (bytes a Unicode name cannot hold)
            digest.update(b"\n".join(os.fsencode(i) for i in split.identity))
            digest.update(np.ascontiguousarray(split.labels, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def listing(self) -> dict[str, Any]:
        """What was read: the number of files and a digest of them and their labels, split by
        split. stats.json keeps it, so that preparing again after the source's files changed
        is refused rather than answered by the old dataset."""
        digest = hashlib.sha256()
        for name, split in sorted(self.splits.items()):
            digest.update(name.encode() + b"\0")
            digest.update(b"\n".join(os.fsencode(i) for i in split.identity))
            digest.update(np.ascontiguousarray(split.labels, dtype=np.int64).tobytes())
        return {"files": sum(len(s.labels) for s in self.splits.values()),
                "digest": digest.hexdigest()}


@dataclass
class Result:
    stats: dict[str, Any]
    images: int  # rows written by this call (not those recorded by an earlier, killed one)
    seconds: float
    workers: int
    resumed: bool = False
    skipped: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Target:
    """What a worker needs to write the chunks of one split."""

    reader: RowReader
    path: str
    offset: int  # byte offset of row 0 in the .npy file
    count: int
    size: int
    chunk_size: int
    statistics: bool


_TARGETS: dict[str, _Target] = {}
_FILES: dict[str, int] = {}


def _init_worker(targets: dict[str, _Target]) -> None:
    _TARGETS.clear()
    _TARGETS.update(targets)


def _write_rows(path: str, offset: int, data: memoryview) -> None:
    fd = _FILES.get(path)
    if fd is None:
        fd = _FILES[path] = os.open(path, os.O_WRONLY)
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _run_chunk(
    task: tuple[str, int],
) -> tuple[str, int, dict | None, list[tuple[int, str]], np.ndarray]:
    split, index = task
    target = _TARGETS[split]
    start = index * target.chunk_size
    stop = min(start + target.chunk_size, target.count)
    images, failures = target.reader.read(start, stop, target.size)
    if images.shape != (stop - start, target.size, target.size, 3) or images.dtype != np.uint8:
        raise RuntimeError(f"reader of {split} returned {images.shape} {images.dtype}")
    row_bytes = target.size * target.size * 3
    _write_rows(target.path, target.offset + start * row_bytes,
                memoryview(np.ascontiguousarray(images)).cast("B"))
    sums = None
    if target.statistics:
        failed = {row for row, _ in failures}
        chunk_sums = PixelSums(target.size)
        for row, image in enumerate(images, start):
            if row not in failed:
                chunk_sums.add(image)
        sums = chunk_sums.state()
    return split, index, sums, failures, duplicates.row_digests(images)


class _Progress:
    """Which chunks are written, the training sums, the failures and the row digests so far;
    saved atomically."""

    def __init__(self, work: Path, chunks: dict[str, int], rows: dict[str, int],
                 image_size: int) -> None:
        self.path = work / PROGRESS_FILE
        self.done = {split: np.zeros(n, dtype=bool) for split, n in chunks.items()}
        self.digests = {split: np.zeros(n, dtype=np.uint64) for split, n in rows.items()}
        self.sums = PixelSums(image_size)
        self.failures: list[dict[str, Any]] = []
        if self.path.is_file():
            with np.load(self.path) as saved:
                for split in self.done:
                    self.done[split][...] = saved[f"done_{split}"]
                    self.digests[split][...] = saved[f"digests_{split}"]
                self.sums = PixelSums.from_state(
                    {k: saved[k] for k in ("count", "sum_image", "sum_outer")}
                )
                self.failures = json.loads(str(saved["failures"]))

    def record(self, split: str, index: int, sums: dict | None,
               failures: list[dict[str, Any]], start: int, digests: np.ndarray) -> None:
        self.done[split][index] = True
        self.digests[split][start:start + len(digests)] = digests
        if sums is not None:
            self.sums.merge(PixelSums.from_state(sums))
        self.failures.extend(failures)

    def save(self) -> None:
        tmp = self.path.with_name("progress.tmp.npz")
        np.savez(
            tmp,
            **{f"done_{split}": done for split, done in self.done.items()},
            **{f"digests_{split}": digests for split, digests in self.digests.items()},
            **self.sums.state(),
            failures=np.array(json.dumps(self.failures)),
        )
        tmp.replace(self.path)


def _start(job: Job, work: Path, fingerprint: str, chunk_size: int) -> None:
    """Allocate the split files in a fresh ``work`` dir; ``plan.json`` last marks it usable."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name, split in job.splits.items():
        images = prepared.create_split(work, name, len(split.labels), job.image_size)
        del images
        np.save(prepared.labels_path(work, name), np.asarray(split.labels, dtype=np.int64))
    prepared.write_json_atomic(
        work / PLAN_FILE, {"fingerprint": fingerprint, "chunk_size": chunk_size}
    )


def _can_resume(work: Path, fingerprint: str) -> bool:
    try:
        plan = json.loads((work / PLAN_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return plan.get("fingerprint") == fingerprint


def write(
    job: Job,
    *,
    workers: int | None = None,
    chunk_size: int = 128,
    progress: bool | None = None,
    save_every_s: float = 5.0,
    on_chunk: Callable[[int], None] | None = None,
) -> Result:
    """Write ``job`` into ``job.root`` (through ``<root>.partial``), resuming an interrupted
    write of the same job. Returns the stats and what this call did.

    ``progress``: a progress bar on stderr (None: only when stderr is a terminal);
    ``save_every_s``: how often the progress is recorded; ``on_chunk``: called with the number of
    rows written so far after each chunk.
    """
    started = time.perf_counter()
    for name in prepared.REQUIRED_SPLITS:
        if name not in job.splits:
            raise DataError(f"{job.source.get('root', job.root)}: no {name} images")
    for name, split in job.splits.items():
        if name not in prepared.SPLITS:
            raise ValueError(f"unknown split {name!r}: expected one of {prepared.SPLITS}")
        if len(split.labels) == 0:
            raise DataError(f"{job.source.get('root', job.root)}: no {name} images")
    root = Path(job.root)
    work = prepared.partial_dir(root)
    fingerprint = job.fingerprint(chunk_size)
    resumed = work.exists() and _can_resume(work, fingerprint)
    if not resumed:
        _start(job, work, fingerprint, chunk_size)
    elif prepared.is_prepared(work):  # killed between writing stats.json and the rename
        _publish(work, root)
        return Result(stats=prepared.load_stats(root), images=0, workers=0, resumed=True,
                      seconds=time.perf_counter() - started)
    chunks = {name: -(-len(s.labels) // chunk_size) for name, s in job.splits.items()}
    state = _Progress(work, chunks, {name: len(s.labels) for name, s in job.splits.items()},
                      job.image_size)
    todo = [(name, i) for name, n in chunks.items() for i in range(n) if not state.done[name][i]]
    targets = {
        name: _Target(
            reader=split.reader,
            path=str(prepared.images_path(work, name)),
            offset=int(np.load(prepared.images_path(work, name), mmap_mode="r").offset),
            count=len(split.labels),
            size=job.image_size,
            chunk_size=chunk_size,
            statistics=name == "train",
        )
        for name, split in job.splits.items()
    }
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    rows = _run(job, todo, targets, state, workers,
                progress=sys.stderr.isatty() if progress is None else progress,
                save_every_s=save_every_s, on_chunk=on_chunk)
    skipped = sorted(state.failures, key=lambda f: (f["split"], f["row"]))
    stats = _complete(job, work, state, skipped)
    _publish(work, root)
    return Result(stats=stats, images=rows, seconds=time.perf_counter() - started,
                  workers=workers, resumed=resumed, skipped=skipped)


def _run(job: Job, todo: list[tuple[str, int]], targets: dict[str, _Target], state: _Progress,
         workers: int, *, progress: bool, save_every_s: float,
         on_chunk: Callable[[int], None] | None) -> int:
    """Write the chunks in ``todo`` with ``workers`` processes, recording each one done."""

    def rows_in(split: str, index: int) -> int:
        target = targets[split]
        return min(target.chunk_size, target.count - index * target.chunk_size)

    rows_done, last_save = 0, time.monotonic()
    bar = tqdm(total=sum(rows_in(*task) for task in todo), desc=f"prepare {job.root.name}",
               unit="img", smoothing=0.05, disable=not progress)
    pool = multiprocessing.Pool(workers, _init_worker, (targets,)) if workers > 1 else None
    try:
        if pool is None:
            _init_worker(targets)
            results = map(_run_chunk, todo)
        else:
            results = pool.imap_unordered(_run_chunk, todo)
        for split, index, sums, failures, digests in results:
            reader = job.splits[split].reader
            state.record(split, index, sums, [
                {"split": split, "row": row, "path": reader.describe(row), "error": message}
                for row, message in failures
            ], index * targets[split].chunk_size, digests)
            rows_done += rows_in(split, index)
            bar.update(rows_in(split, index))
            if time.monotonic() - last_save >= save_every_s:
                state.save()
                last_save = time.monotonic()
            if on_chunk is not None:
                on_chunk(rows_done)
    finally:
        # Whatever stopped the loop, everything recorded is on disk: the next run resumes here.
        state.save()
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        for fd in _FILES.values():
            os.close(fd)
        _FILES.clear()
        _TARGETS.clear()
    return rows_done


def _publish(work: Path, root: Path) -> None:
    prepared.publish(work, root)
    for name in (PLAN_FILE, PROGRESS_FILE):  # bookkeeping only: harmless if a kill leaves them
        (root / name).unlink(missing_ok=True)


def _complete(job: Job, work: Path, state: _Progress, skipped: list[dict]) -> dict[str, Any]:
    for name in job.splits:
        rows = [f["row"] for f in skipped if f["split"] == name]
        if rows:
            labels = np.load(prepared.labels_path(work, name))
            labels[rows] = -1
            np.save(prepared.labels_path(work, name), labels)
        if not np.any(np.load(prepared.labels_path(work, name)) >= 0):
            raise DataError(
                f"{job.source.get('root', job.root)}: none of the {name} images could be "
                f"decoded (first: {skipped[0]['path']}: {skipped[0]['error']})"
            )
    for name in job.splits:  # the rows must be on disk before stats.json says they are
        fd = os.open(prepared.images_path(work, name), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return prepared.complete(
        work,
        classes=job.classes,
        image_size=job.image_size,
        sums=state.sums,
        source={**job.source, "listing": job.listing()},
        skipped=[{k: f[k] for k in ("split", "path", "error")} for f in skipped],
        class_names=job.class_names,
        origins={name: split.origin for name, split in job.splits.items() if split.origin},
        duplicates=duplicates.find(
            state.digests,
            failed={name: {f["row"] for f in skipped if f["split"] == name} for name in job.splits},
            describe={name: split.reader.describe for name, split in job.splits.items()},
        ),
    )
