"""The input pipeline measured: what ``src/benchmark_data.py`` times, the training loader
against torchvision's ImageFolder + PIL over the same JPEGs, and the tree both read."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from alexnet.data.images import is_image_file
from alexnet.exits import UserError


def build_image_folder(images: Path, out: Path, count: int | None) -> int:
    """train/<class>/ of links to the JPEGs and val/<class>/ of copies of them (the class is the
    name's part before the first underscore, as in the sample's ``<wnid>_<label>.JPEG``). Copies,
    since preparation refuses one file reached from two splits through links."""
    files = sorted(p for p in images.iterdir() if is_image_file(p.name))[:count]
    if not files:
        raise UserError(f"no images in {images}")
    for split in ("train", "val"):
        for path in files:
            folder = out / split / path.name.split("_")[0]
            folder.mkdir(parents=True, exist_ok=True)
            if split == "train":
                (folder / path.name).symlink_to(path.resolve())
            else:
                shutil.copyfile(path, folder / path.name)
    return len(files)


def cpu_seconds() -> float:
    """CPU time used so far by this process and its live child processes (the loader workers).
    Unlike images/s, CPU time per image hardly depends on what else the machine is running."""
    total = time.process_time()
    try:
        children = Path(f"/proc/self/task/{os.getpid()}/children").read_text().split()
        tick = os.sysconf("SC_CLK_TCK")
        for pid in children:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    except (OSError, ValueError):  # not Linux: this process only
        pass
    return total


def measure(batches: Iterable, step: Callable, seconds: float,
            warmup: int = 2) -> tuple[float, float]:
    """(images per second, CPU milliseconds per image) over at least ``seconds`` of batches,
    after ``warmup`` batches (worker start-up excluded); cycles through epochs as needed."""
    images, started, cpu = 0, None, 0.0
    while True:
        for index, batch in enumerate(batches):
            count = step(batch)
            if started is None:
                if index + 1 >= warmup:
                    started, cpu = time.perf_counter(), cpu_seconds()
                continue
            images += count
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                return images / elapsed, (cpu_seconds() - cpu) / images * 1000


def torchvision_loader(folder: Path, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(256), transforms.RandomCrop(227),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(),
    ])
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                       num_workers=workers, drop_last=True,
                                       persistent_workers=workers > 0)
