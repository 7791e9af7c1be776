"""The paper's figures from runs or a checkpoint, each into a directory of its own.

    python src/figures.py fig1 SWEEP_DIR_OR_RUNS...   # Fig. 1: training error against epochs
    python src/figures.py fig3 CKPT                   # Fig. 3: conv1's kernels, colour scores
    python src/figures.py fig4 CKPT [--images 0,7]    # Fig. 4: nearest training images in fc7
    python src/figures.py curves SWEEP_DIR            # a study's error per epoch, each arm's gap

Each writes its PNG, inputs.json (the exact inputs: files with their sha256, indices, options)
and measurements.json into --out (default logs/figures/<time>/). A mistake gives one
``error: ...`` line, exit status 2, and writes nothing.
"""

import argparse
import sys
from datetime import datetime
from pathlib import Path

from alexnet import exits
from alexnet.analysis.curves_figure import (
    CURVE_METRICS,
    CURVES_FILE,
    curves_record,
    plot_curves,
    study_curves,
)
from alexnet.analysis.fig1_figure import FIG1_FILE, fig1_curves, fig1_record, plot_fig1
from alexnet.analysis.figure_dir import check_out, file_record, write_figure_dir
from alexnet.exits import DataError, UserError
from alexnet.names import VAL_TOP1
from alexnet.provenance import REPO_ROOT


def _indices(text: str) -> list[int]:
    try:
        return [int(i) for i in text.split(",") if i.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,7,42, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="figure", required=True)
    fig1 = sub.add_parser("fig1", help="training error against epochs (Fig. 1)")
    fig1.add_argument("runs", nargs="+", type=Path,
                      help="a study's sweep directory, or run directories / summary.json files")
    fig3 = sub.add_parser("fig3", help="conv1's kernels and their colour specificity (Fig. 3)")
    fig3.add_argument("checkpoint", type=Path)
    fig3.add_argument("--zoom", type=int, default=4, help="pixels per kernel weight (default 4)")
    fig3.add_argument("--scaling", choices=("per_kernel", "global"), default="per_kernel",
                      help="per_kernel: each kernel standardised, as the authors' shownet.py")
    fig4 = sub.add_parser("fig4", help="nearest training images in fc7 space (Fig. 4)")
    fig4.add_argument("checkpoint", type=Path)
    fig4.add_argument("--images", type=_indices, default=None,
                      help="validation image indices, e.g. 0,7,42 (default: 5 spread evenly)")
    fig4.add_argument("--neighbours", type=int, default=6, help="neighbours per image (6)")
    fig4.add_argument("--max-train", type=int, default=None,
                      help="search only the first N training images (default: all)")
    fig4.add_argument("--prepared-dir", default=None,
                      help="read this prepared dataset instead of the checkpoint's")
    fig4.add_argument("--tile", type=int, default=128, help="pixels per image shown (128)")
    curves = sub.add_parser("curves", help="a study's error per epoch and each ablation's gap")
    curves.add_argument("study", type=Path, help="a study's sweep directory")
    curves.add_argument("--metric", default=VAL_TOP1,
                        help=f"one of {', '.join(CURVE_METRICS)} (default {VAL_TOP1})")
    for command in (fig1, fig3, fig4, curves):
        command.add_argument("--out", type=Path, default=None,
                             help="output directory (default: logs/figures/<time>)")
    return parser


def make(args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """(PNGs by file name, inputs, measurements) of the figure asked for."""
    if args.figure == "fig1":
        data = fig1_curves(args.runs)
        inputs, measured = fig1_record(data)
        inputs["given"] = [str(p) for p in args.runs]
        return {FIG1_FILE: plot_fig1(data)}, inputs, measured
    if args.figure == "curves":
        data = study_curves(args.study, args.metric)
        inputs, measured = curves_record(data)
        return {CURVES_FILE: plot_curves(data)}, inputs, measured
    # torch and Lightning only for the figures of a checkpoint: Fig. 1 and --help without them
    from alexnet.analysis import network_figures as figures

    loaded = figures.load_network(args.checkpoint)
    inputs = {"figure": args.figure, "checkpoint": file_record(args.checkpoint)}
    if args.figure == "fig3":
        if args.zoom < 1:
            raise UserError(f"--zoom must be at least 1, got {args.zoom}")
        fig = figures.fig3(loaded.net, zoom=args.zoom, scaling=args.scaling)
        inputs.update(zoom=args.zoom, scaling=args.scaling, layout=fig.layout,
                      columns=fig.columns)
        measured = {"colour_specificity": {"columns": fig.column_scores,
                                           "kernels": fig.kernel_scores}}
        return {figures.FIG3_FILE: fig.image}, inputs, measured
    if args.tile < 8:
        raise UserError(f"--tile must be at least 8 pixels, got {args.tile}")
    fig = figures.fig4(loaded, args.images, args.neighbours, args.max_train, args.prepared_dir,
                       tile=args.tile)
    inputs.update(prepared_dir=fig.prepared_dir, val_images=fig.queries,
                  neighbours=args.neighbours, train_images_searched=fig.train_searched,
                  features="fc7 after its ReLU, eval mode, centre crop", distance="euclidean",
                  tile=fig.tile)
    measured = {"neighbours": fig.neighbours, "distances": fig.distances,
                "query_labels": fig.query_labels, "neighbour_labels": fig.neighbour_labels,
                "same_class_fraction": fig.same_class, **fig.extra}
    return {figures.FIG4_FILE: fig.image}, inputs, measured


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = args.out or REPO_ROOT / "logs" / "figures" / datetime.now().strftime(
        "%Y-%m-%d_%H-%M-%S-%f")
    try:
        check_out(out)
        pngs, inputs, measured = make(args)
        written = write_figure_dir(out, pngs, inputs, measured)
    except (UserError, DataError) as err:  # RecordError, StudyError, ClaimsError too
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return exits.USER_ERROR
    print(f"wrote {', '.join(p.name for p in written)} in {out}")
    return exits.COMPLETED


if __name__ == "__main__":
    sys.exit(main())
