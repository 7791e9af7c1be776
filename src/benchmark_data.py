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
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from alexnet import exits
from alexnet.benchmarks.arguments import non_negative_int, positive_float, positive_int
from alexnet.exits import UserError
from alexnet.provenance import REPO_ROOT
from alexnet.resolvers import register_resolvers

register_resolvers()  # before Hydra composes the config

SAMPLE = REPO_ROOT.parent / "shared" / "data" / "imagenet-sample"


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(exits.USER_ERROR)


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
    if args.images.is_file():
        fail(f"{args.images} is a file: pass --images DIR, a folder of JPEGs")
    if not args.images.is_dir():
        fail(f"{args.images} does not exist: pass --images DIR of JPEGs")

    from alexnet.benchmarks.input_pipeline import compare  # torch and Lightning: once checked

    work = args.keep or Path(tempfile.mkdtemp(prefix="alexnet-bench-"))
    try:
        load = os.getloadavg()
        rows = compare(args.images, work, count=args.count, workers=args.workers,
                       prepare_workers=args.prepare_workers, batch_size=args.batch_size,
                       seconds=args.seconds)
    except UserError as err:
        fail(str(err))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    (base_rate, base_cpu) = rows[0][1]
    print(f"\ntraining input pipeline, batch {args.batch_size}, {args.workers} workers, "
          f"{args.seconds:g} s each (load average before: {load[0]:.2f}):")
    print(f"  {'':<42} {'images/s':>9} {'speed-up':>8} {'CPU ms/image':>13} {'less CPU':>9}")
    for name, (rate, cpu) in rows:
        print(f"  {name:<42} {rate:9.0f} {rate / base_rate:7.1f}x {cpu:13.3f} "
              f"{base_cpu / cpu:8.1f}x")


if __name__ == "__main__":
    main()
