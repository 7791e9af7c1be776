"""The ablation study's report: measured deltas beside the paper's claims.

    python ablations/report.py SWEEP_DIR      # e.g. logs/study/cpu

Reads every run's summary.json below SWEEP_DIR (and the paper's numbers from
ablations/claims.yaml) and writes SWEEP_DIR/report.md and SWEEP_DIR/report.png. Runs whose
settings differ in more than the ablation and the seed are refused; missing, failed or
interrupted runs are listed in the report.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alexnet.report import write_report  # noqa: E402
from alexnet.study import StudyError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the study's sweep directory")
    args = parser.parse_args(argv)
    try:
        md, png, study = write_report(args.sweep_dir)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(study.runs)} runs; wrote {md} and {png}")
    if study.missing:
        print(f"warning: {len(study.missing)} expected runs are missing, failed or interrupted "
              f"(listed in {md.name})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
