"""python -m reports RUN_DIR [RUN_DIR ...] [table=PRESET|SPEC.yaml] [format=markdown|latex|csv|html]
                   [--out DIR] [--formats md,tex,csv,html]
                   [--plot METRIC:AXIS ...] [--pareto METRIC_X:METRIC_Y ...] [--no-plots]

Merges every complete run at or below each RUN_DIR (single runs and multirun trees) into
one sectioned report (a task-named table for super-resolution, inpainting and lora_sweep rows;
generation quality, text alignment, reconstruction, speed for the rest), plots,
report.md and a self-contained report.html. `table=` picks one table by a spec (a preset
from reports/presets/, or your own YAML file; schema in reports/table_spec.py) and prints
only it, in `format=` (default: the spec's). Reads stored results only: no torch, no models.
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path
from typing import Sequence

from bench.atomic import describe_io_error
from reports.load import ReportError, load_runs
from reports.plots import parse_spec
from reports.run_report import write_report
from reports.table_spec import format_extension, load_spec, preset_names
from reports.tables import CI_STYLES, FORMATS

DEFAULT_OUT = Path("outputs") / "diffbench-report"   # several runs: under outputs/ (git-ignored), not ./
KEY_VALUE_OPTIONS = ("table", "format")   # Hydra-style key=value words among the RUN_DIRs


def split_key_values(words: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """RUN_DIRs and the key=value options (table=..., format=...). A word is an option only when
    its key is one of KEY_VALUE_OPTIONS and no such path exists."""
    paths, options = [], {}
    for word in words:
        key, sep, value = word.partition("=")
        if sep and key in KEY_VALUE_OPTIONS and not Path(word).exists():
            if not value:
                raise ReportError(f"{word}: give a value, e.g. table=ldm_autoencoder (presets: {preset_names()})")
            options[key] = value
        else:
            paths.append(word)
    if not paths:
        raise ReportError("no run directory given; pass at least one RUN_DIR before table=/format=")
    return paths, options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reports",
        description="Tables (Markdown, LaTeX, CSV, HTML) and plots from stored diffbench runs.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="a run directory, or a directory (e.g. multirun/...) holding runs; also "
                             f"table=SPEC (a preset: {', '.join(preset_names())}; or a YAML file) and "
                             "format=markdown|latex|csv|html")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: RUN_DIR/report for one input, "
                             "outputs/diffbench-report for several: under outputs/, which git ignores)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated table formats out of {','.join(FORMATS)} (default: all)")
    parser.add_argument("--plot", action="extend", nargs="+", default=None, metavar="METRIC:AXIS",
                        help="plot METRIC against sweep axis AXIS (repeatable)")
    parser.add_argument("--pareto", action="extend", nargs="+", default=None, metavar="METRIC_X:METRIC_Y",
                        help="Pareto plot of METRIC_Y against METRIC_X, e.g. clip_score:fid (repeatable)")
    parser.add_argument("--no-plots", action="store_true", help="write tables only (no plots, no sample grids)")
    parser.add_argument("--grid-k", type=int, default=16, metavar="K",
                        help="samples per grid (grids/<pipeline>[__<point>].png, from the stored samples)")
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
        if args.grid_k < 1:
            raise ReportError(f"--grid-k must be >= 1, got {args.grid_k}")
        plots = None if args.plot is None else [parse_spec(s, "--plot") for s in args.plot]
        paretos = None if args.pareto is None else [parse_spec(s, "--pareto") for s in args.pareto]
        if plots is not None or paretos is not None:
            plots, paretos = plots or [], paretos or []  # told what to plot: nothing automatic
        paths, options = split_key_values(args.run_dirs)
        spec = load_spec(options["table"]) if "table" in options else None
        spec_format = format_extension(options["format"], "format=") if "format" in options else None
        if spec_format and spec is None:
            raise ReportError("format= chooses the format of a table= table; give table=SPEC too "
                              "(the sectioned report is written in every --formats format)")
        args.run_dirs = paths
        frame, run_dirs = load_runs(args.run_dirs)
        out = args.out
        if out is None:
            out = Path(args.run_dirs[0]) / "report" if len(args.run_dirs) == 1 else DEFAULT_OUT
        if not args.quiet:
            print(f"{len(run_dirs)} run(s), {len(frame)} rows", file=sys.stderr)
        write_report(out, frame, formats=formats, plots=plots, paretos=paretos, title=args.title,
                     ci_style=args.ci_style, make_plots=not args.no_plots, quiet=args.quiet,
                     grid_runs=run_dirs, grid_k=args.grid_k, spec=spec, spec_format=spec_format)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, zipfile.BadZipFile) as err:   # a full disk, a damaged file: one line naming it (issue 29)
        print(f"error: {describe_io_error(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
