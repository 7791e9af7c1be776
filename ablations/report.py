"""The ablation study's report: measured deltas beside the paper's claims.

    python ablations/report.py SWEEP_DIR            # e.g. logs/study/cpu
    python ablations/report.py SWEEP_DIR --wandb    # and log report, Fig. 1 and tables to wandb

Reads every run's summary.json below SWEEP_DIR (and the paper's numbers from
ablations/claims.yaml) and writes SWEEP_DIR/report.md and SWEEP_DIR/report.png. Runs whose
settings differ in more than the ablation and the seed are refused; missing, failed or
interrupted runs are listed in the report. With --wandb the report, the Fig. 1 plot and the
study's tables also go to one wandb run, offline (in SWEEP_DIR/wandb, for `wandb sync`) unless
--wandb-online.
"""

import argparse
import sys
from pathlib import Path

from alexnet import exits
from alexnet.analysis.ablation_report import write_report
from alexnet.exits import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the study's sweep directory")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the report, Fig. 1 and the tables as a wandb run")
    parser.add_argument("--wandb-online", action="store_true",
                        help="with --wandb: send it now instead of writing it offline")
    parser.add_argument("--wandb-dir", type=Path, default=None,
                        help="with --wandb: where the run is written (default: SWEEP_DIR)")
    args = parser.parse_args(argv)
    try:
        md, png, study = write_report(args.sweep_dir)
    except UserError as err:  # RecordError, StudyError, ClaimsError
        print(f"error: {err}", file=sys.stderr)
        return exits.USER_ERROR
    print(f"{len(study.runs)} runs; wrote {md} and {png}")
    if args.wandb or args.wandb_online:
        from alexnet.analysis.wandb_study import log_study

        run_dir = log_study(args.sweep_dir, png, online=args.wandb_online,
                            wandb_dir=args.wandb_dir)
        print(f"wandb run: {run_dir}" + ("" if args.wandb_online else
                                         f" (upload it with: wandb sync {run_dir})"))
    if study.missing:
        print(f"warning: {len(study.missing)} expected runs are missing, failed or interrupted "
              f"(listed in {md.name})", file=sys.stderr)
    return exits.COMPLETED


if __name__ == "__main__":
    sys.exit(main())
