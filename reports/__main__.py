"""python -m reports RUN_DIR [RUN_DIR ...] [--out DIR] [--formats md,tex,csv,html]
                   [--plot METRIC:AXIS ...] [--pareto METRIC_X:METRIC_Y ...] [--no-plots]

Merges every complete run at or below each RUN_DIR (single runs and multirun trees) into
one table and one set of plots. Reads stored results only: no torch, no models.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from reports.load import ReportError, load_runs
from reports.plots import parse_spec
from reports.run_report import write_report
from reports.tables import CI_STYLES, FORMATS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reports",
        description="Tables (Markdown, LaTeX, CSV, HTML) and plots from stored diffbench runs.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="a run directory, or a directory (e.g. multirun/...) holding runs")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: RUN_DIR/report for one input, "
                             "./diffbench-report for several)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated table formats out of {','.join(FORMATS)} (default: all)")
    parser.add_argument("--plot", action="extend", nargs="+", default=None, metavar="METRIC:AXIS",
                        help="plot METRIC against sweep axis AXIS (repeatable)")
    parser.add_argument("--pareto", action="extend", nargs="+", default=None, metavar="METRIC_X:METRIC_Y",
                        help="Pareto plot of METRIC_Y against METRIC_X, e.g. clip_score:fid (repeatable)")
    parser.add_argument("--no-plots", action="store_true", help="write tables only")
    parser.add_argument("--ci-style", choices=CI_STYLES, default="auto",
                        help="auto: 'v ± h' for symmetric intervals, 'v [lo, hi]' otherwise")
    parser.add_argument("--title", default="diffbench report")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
        unknown = sorted(set(formats) - set(FORMATS))
        if unknown:
            raise ReportError(f"--formats: unknown format(s) {unknown}; choose from {list(FORMATS)}")
        plots = None if args.plot is None else [parse_spec(s, "--plot") for s in args.plot]
        paretos = None if args.pareto is None else [parse_spec(s, "--pareto") for s in args.pareto]
        if plots is not None or paretos is not None:
            plots, paretos = plots or [], paretos or []  # told what to plot: nothing automatic
        frame, run_dirs = load_runs(args.run_dirs)
        out = args.out
        if out is None:
            out = Path(args.run_dirs[0]) / "report" if len(args.run_dirs) == 1 else Path("diffbench-report")
        if not args.quiet:
            print(f"{len(run_dirs)} run(s), {len(frame)} rows", file=sys.stderr)
        write_report(out, frame, formats=formats, plots=plots, paretos=paretos, title=args.title,
                     ci_style=args.ci_style, make_plots=not args.no_plots, quiet=args.quiet)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
