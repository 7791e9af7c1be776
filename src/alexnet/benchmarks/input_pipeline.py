"""The input pipeline measured: what ``src/benchmark_data.py`` times, the training loader
against torchvision's ImageFolder + PIL over the same JPEGs, and the tree both read."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from alexnet.benchmarks import hardware
from alexnet.data import preparation, writer
from alexnet.data.datamodule import PreparedDataModule
from alexnet.data.images import is_image_file
from alexnet.exits import DataError, UserError

Rows = list[tuple[str, tuple[float, float]]]  # (pipeline, (images/s, CPU ms per image))


def build_image_folder(images: Path, out: Path, count: int | None) -> int:
    """train/<class>/ of links to the JPEGs and val/<class>/ of copies of them (the class is the
    name's part before the first underscore, as in the sample's ``<wnid>_<label>.JPEG``). Copies,
    since preparation refuses one file reached from two splits through links."""
    files = sorted(p for p in images.iterdir() if is_image_file(p.name))[:count]
    if not files:
        deeper = sum(1 for p in images.rglob("*") if is_image_file(p.name))
        raise UserError(f"no images in {images}" + (
            f" itself ({deeper} in its subfolders): it reads one flat folder of images named "
            "<class>_<name>, as ../shared/data/imagenet-sample" if deeper else ""))
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


def users_paths(text: str, tree: Path, images: Path) -> str:
    """``text`` with each image named by the user's file, not by its copy in the work tree."""
    text = re.sub(re.escape(str(tree)) + r"/[^/]+/[^/]+/", f"{images}/", text)
    return text.replace(str(tree), str(images))


def compare(images: Path, work: Path, *, count: int | None, workers: int,
            prepare_workers: int | None, batch_size: int, seconds: float,
            say: Callable[[str], None] = print) -> Rows:
    """Both pipelines over the JPEGs of ``images`` (copied into ``work``), each timed for
    ``seconds``: torchvision's first, the row every ratio is against. ``say`` gets what is found
    on the way (the prepare's rate, each image skipped as undecodable). Raises UserError."""
    tree, prepared_dir = work / "images", work / "prepared"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.rmtree(prepared_dir, ignore_errors=True)
    found = build_image_folder(images, tree, count)
    for path in tree.rglob("*"):  # into the page cache, for both pipelines alike
        if path.is_file():
            path.read_bytes()
    say(f"{found} JPEGs from {images}; {os.cpu_count()} CPUs: {hardware.cpu_model()}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    try:
        job = preparation.plan("imagefolder", tree, prepared_dir, 256)
        result = writer.write(job, workers=prepare_workers, progress=False)
    except DataError as err:  # none of the images decodes, one class only: nothing to time
        raise UserError(users_paths(" ".join(str(err).split()), tree, images)) from None
    say(f"prepare: {result.images} images (train and val) in {result.seconds:.1f} s = "
        f"{result.images / result.seconds:.0f} images/s with {result.workers} processes")
    # What the prepare skipped as undecodable, the baseline would stop on: both pipelines read
    # the images that decode, and each skipped file is named.
    skipped = {Path(f["path"]).name: f["error"] for f in result.skipped}
    for name, error in sorted(skipped.items()):
        say(f"skipped {images / name}, which cannot be decoded: "
            f"{users_paths(error, tree, images)}")
        for copy in tree.glob(f"*/*/{name}"):
            copy.unlink()
            if not any(copy.parent.iterdir()):  # a class left without images
                copy.parent.rmdir()

    baseline = measure(torchvision_loader(tree / "train", batch_size, workers),
                       lambda b: len(b[1]), seconds)
    data = PreparedDataModule(str(prepared_dir), source="imagefolder", batch_size=batch_size,
                              num_workers=workers, pin_memory=False)
    data.setup("fit")
    loader, preset = data.train_dataloader(), data.train_preset
    loader_only = measure(loader, lambda b: len(b[1]), seconds)
    on_cpu = measure(loader, lambda b: len(data.network_input(b, preset)[1]), seconds)
    rows = [("torchvision ImageFolder + PIL", baseline),
            ("ours, CPU only (loader + preset on CPU)", on_cpu),
            ("ours, loader only (a GPU runs the preset)", loader_only)]
    if torch.cuda.is_available():
        def on_gpu(batch: tuple) -> int:
            images, labels, geometry = batch
            x, _ = data.network_input((images.cuda(), labels.cuda(), geometry), preset,
                                      sent=images)
            torch.cuda.synchronize()
            return len(x)

        rows.append(("ours, preset on the GPU", measure(loader, on_gpu, seconds)))
    return rows
