"""report.md (table + plots) for one run, written by the bench runner at the end of a run,
and the same report for any set of stored runs (`python -m reports`)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from bench.atomic import atomic_write_text
from reports.load import normalise
from reports.plots import write_plots
from reports.tables import FORMATS, build_pivot, to_markdown, write_tables

PLOT_DIR = "plots"


def write_report(out_dir: Path, frame: pd.DataFrame, *, formats: Sequence[str] = FORMATS,
                 plots: Sequence[tuple[str, str]] | None = None,
                 paretos: Sequence[tuple[str, str]] | None = None,
                 title: str = "diffbench report", ci_style: str = "auto",
                 make_plots: bool = True, quiet: bool = False) -> Path:
    """Tables in `formats` (table.md, .tex, .csv, .html), plots under plots/, and report.md
    tying them together, all in `out_dir`. Prints the table unless quiet. Returns report.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = normalise(frame)
    pivot = build_pivot(frame, ci_style)
    tables = write_tables(pivot, out_dir, formats, title=title) if formats else []
    pngs = write_plots(frame, out_dir / PLOT_DIR, plots, paretos) if make_plots else []
    table_md = to_markdown(pivot)
    lines = [f"# {title}", ""]
    for label, column in (("Runs", "run_id"), ("Suites", "suite")):
        values = sorted({v for v in frame[column] if v})
        if values:
            lines.append(f"{label}: {', '.join(values)}  ")
    lines += [f"Rows: {len(frame)}", "", "## Results", ""]
    lines.append(table_md if pivot.rows else "No result rows.\n")
    if tables:
        lines += ["Tables: " + ", ".join(f"[{p.name}]({p.name})" for p in tables), ""]
    if pngs:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({PLOT_DIR}/{p.name})\n" for p in pngs]
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines).rstrip("\n") + "\n")
    if not quiet:
        print(table_md if pivot.rows else "No result rows.", file=sys.stdout)
        print(f"report: {report}" + (f" ({len(pngs)} plot(s) in {out_dir / PLOT_DIR})" if pngs else ""))
    return report


def write_run_report(run_dir: Path, frame: pd.DataFrame, *, quiet: bool = False,
                     plots: Sequence[tuple[str, str]] | None = None,
                     paretos: Sequence[tuple[str, str]] | None = None) -> Path:
    """The end-of-run report: report.md and plots/*.png in the run directory, table to the
    terminal. Suites may name the plots they want (metric:axis, and x:y Pareto pairs);
    otherwise the automatic set (each metric vs each varying axis, FID vs CLIP score,
    or an overview when nothing varies)."""
    frame = normalise(frame)
    run_ids = sorted({v for v in frame["run_id"] if v})
    title = f"diffbench run {run_ids[0]}" if len(run_ids) == 1 else "diffbench run"
    return write_report(Path(run_dir), frame, formats=(), plots=plots, paretos=paretos,
                        title=title, quiet=quiet)
