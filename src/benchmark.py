"""Training speed: the fast path beside a plain PyTorch loop and with every switch off.

    python src/benchmark.py [--tiny] [--json FILE] [--full-runs] [hydra overrides ...]

The overrides are src/train.py's (the default run is experiment=demo: batch 32, 115 x 115 crops;
``data.image_size=256 data.crop_size=227`` gives the paper's shapes). Prints a table and writes
JSON (every field present, null where it does not apply) with, for the device the run would use:
model-only images/s of a plain fp32 PyTorch loop over stock torch.nn modules (``baseline``), of
the fast path in the same bare loop (``fast``) and through the Lightning module (``lightning``);
training FLOPs per image, FLOP/s and MFU against a matrix-multiply peak measured in the same run;
peak memory; the LRN alone; end-to-end images/s of src/train.py's own assembly (prepared data,
augmentation, Trainer) with the fast path on and with every switch off (``--full-runs``: the whole
configured runs, wall time included); and the operators that take a fast step's time.
Ratios measured side by side compare across machines; absolute figures do not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from hydra.errors import HydraException

from alexnet import exits
from alexnet.benchmarks.arguments import positive_int
from alexnet.benchmarks.run_config import checked_run_config
from alexnet.exits import UserError
from alexnet.provenance import REPO_ROOT
from alexnet.resolvers import register_resolvers

register_resolvers()  # before Hydra composes the config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="src/train.py's Hydra overrides")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a few seconds, for tests")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "logs" / "benchmark.json",
                        help="output file (default: logs/benchmark.json)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="steps per timed round")
    parser.add_argument("--rounds", type=positive_int, default=None,
                        help="timed rounds per runner")
    parser.add_argument("--epochs", type=positive_int, default=2,
                        help="end-to-end epochs (last timed)")
    parser.add_argument("--full-runs", action="store_true",
                        help="end to end: the whole configured runs (wall time of each)")
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the end-to-end runs")
    parser.add_argument("--lrn-batch", type=positive_int, default=None,
                        help="batch of the LRN-alone test (default 64; --tiny 2)")
    parser.add_argument("--local-batch", type=positive_int, default=None,
                        help="batch of the locally-connected-alone test (default 128; --tiny 4)")
    parser.add_argument("--matmul-n", type=positive_int, default=None,
                        help="size of the peak matmul")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch's CPU threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.json.is_dir() or any(parent.is_file() for parent in args.json.parents):
        print(f"error: --json {args.json} cannot be written (a folder is there, or a file above "
              "it): give the path of a JSON file", file=sys.stderr)
        sys.exit(exits.USER_ERROR)
    work = Path(tempfile.mkdtemp(prefix="alexnet-speed-"))  # the runs' files, removed after
    try:
        cfg = checked_run_config(args, work)  # the values, before Lightning's seconds of import
        import torch

        from alexnet.benchmarks.speed_comparison import measure, print_table

        if args.threads:
            torch.set_num_threads(args.threads)
        result = measure(args, cfg, work)
    except (UserError, ValueError, HydraException) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(exits.USER_ERROR)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
