"""Throughput of the training input pipeline against torchvision's ImageFolder + PIL pipeline.

    python src/benchmark_data.py [--workers 2] [--batch-size 128] [--seconds 15]

Both pipelines read the same real JPEGs (by default the 1000 ImageNet images in
``../shared/data/imagenet-sample``, or ``--images DIR``) with the same number of loader workers,
and both deliver training-ready batches of random 227 x 227 patches:

- baseline: ImageFolder + PIL, Resize(256), CenterCrop(256), RandomCrop(227), RandomHorizontalFlip,
  ToTensor, the default collate;
- ours: the images prepared once by ``src/prepare.py`` (the prepare is timed too), then
  ``PreparedDataModule``'s training loader, and the preset (float, mean image, PCA colour shift)
  run on the CPU in the main process: everything a CPU does for a batch when there is no GPU.
  ``ours, loader only`` is the part that stays on the CPU when a GPU runs the preset.

The images are read from the page cache (the benchmark reads them once before timing), so the
figures are the pipelines' CPU cost, not the disk's.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import torch

from alexnet import exits
from alexnet.benchmarks.arguments import non_negative_int, positive_float, positive_int
from alexnet.benchmarks.hardware import cpu_model
from alexnet.benchmarks.input_pipeline import (
    build_image_folder,
    measure,
    torchvision_loader,
)
from alexnet.data import preparation, writer
from alexnet.data.datamodule import PreparedDataModule
from alexnet.exits import DataError, UserError
from alexnet.resolvers import register_resolvers

register_resolvers()  # before Hydra composes the config

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(exits.USER_ERROR)


def users_paths(text: str, tree: Path, images: Path) -> str:
    """``text`` with each image named by the user's file, not by its copy in the work tree."""
    text = re.sub(re.escape(str(tree)) + r"/[^/]+/[^/]+/", f"{images}/", text)
    return text.replace(str(tree), str(images))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=SAMPLE, help="a folder of JPEGs")
    parser.add_argument("--count", type=positive_int, default=None,
                        help="use the first N images")
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="loader workers, both pipelines")
    parser.add_argument("--prepare-workers", type=positive_int, default=None,
                        help="prepare processes (default: one per core)")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--seconds", type=positive_float, default=15.0,
                        help="timed seconds per pipeline")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    args = parser.parse_args()
    if not args.images.is_dir():
        fail(f"{args.images} does not exist: pass --images DIR of JPEGs")

    work = args.keep or Path(tempfile.mkdtemp(prefix="alexnet-bench-"))
    try:
        tree, prepared_dir = work / "images", work / "prepared"
        shutil.rmtree(tree, ignore_errors=True)
        shutil.rmtree(prepared_dir, ignore_errors=True)
        try:
            count = build_image_folder(args.images, tree, args.count)
        except UserError as err:
            fail(str(err))
        for path in tree.rglob("*"):  # into the page cache, for both pipelines alike
            if path.is_file():
                path.read_bytes()
        print(f"{count} JPEGs from {args.images}; {os.cpu_count()} CPUs: {cpu_model()}; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")

        try:
            job = preparation.plan("imagefolder", tree, prepared_dir, 256)
            result = writer.write(job, workers=args.prepare_workers, progress=False)
        except DataError as err:  # none of the images decodes, one class only: nothing to time
            fail(users_paths(" ".join(str(err).split()), tree, args.images))
        prepare_rate = result.images / result.seconds
        print(f"prepare: {result.images} images (train and val) in {result.seconds:.1f} s = "
              f"{prepare_rate:.0f} images/s with {result.workers} processes")
        # What the prepare skipped as undecodable, the baseline would stop on: both pipelines
        # read the images that decode, and each skipped file is named.
        skipped = {Path(f["path"]).name: f["error"] for f in result.skipped}
        for name, error in sorted(skipped.items()):
            print(f"skipped {args.images / name}, which cannot be decoded: "
                  f"{users_paths(error, tree, args.images)}")
            for copy in tree.glob(f"*/*/{name}"):
                copy.unlink()
                if not any(copy.parent.iterdir()):  # a class left without images
                    copy.parent.rmdir()

        baseline = torchvision_loader(tree / "train", args.batch_size, args.workers)
        load = os.getloadavg()
        base_rate, base_cpu = base = measure(baseline, lambda b: len(b[1]), args.seconds)

        data = PreparedDataModule(str(prepared_dir), source="imagefolder",
                                  batch_size=args.batch_size, num_workers=args.workers,
                                  pin_memory=False)
        data.setup("fit")
        loader = data.train_dataloader()
        preset = data.train_preset
        loader_rate = measure(loader, lambda b: len(b[1]), args.seconds)
        ours_rate = measure(
            loader, lambda b: len(data.network_input(b, preset)[1]), args.seconds)
        rows = [
            ("torchvision ImageFolder + PIL", base),
            ("ours, CPU only (loader + preset on CPU)", ours_rate),
            ("ours, loader only (a GPU runs the preset)", loader_rate),
        ]
        if torch.cuda.is_available():
            def on_gpu(batch: tuple) -> int:
                images, labels, geometry = batch
                on_device = (images.cuda(), labels.cuda(), geometry)
                x, _ = data.network_input(on_device, preset, sent=images)
                torch.cuda.synchronize()
                return len(x)

            rows.append(("ours, preset on the GPU", measure(loader, on_gpu, args.seconds)))
        print(f"\ntraining input pipeline, batch {args.batch_size}, {args.workers} workers, "
              f"{args.seconds:g} s each (load average before: {load[0]:.2f}):")
        print(f"  {'':<42} {'images/s':>9} {'speed-up':>8} {'CPU ms/image':>13} {'less CPU':>9}")
        for name, (rate, cpu) in rows:
            print(f"  {name:<42} {rate:9.0f} {rate / base_rate:7.1f}x {cpu:13.3f} "
                  f"{base_cpu / cpu:8.1f}x")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
