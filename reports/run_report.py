"""report.md and report.html (section tables + plots + grids) for one run, written by the bench runner at the end of a run,
and the same report for any set of stored runs (`python -m reports`)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from bench.atomic import atomic_write_text
from reports.grids import DEFAULT_K, GRID_DIR, write_grids
from reports.load import normalise
from reports.plots import write_plots
from reports.uncertainty import ci_footnotes
from reports.tables import FORMATS, build_pivot, write_tables
from reports.html import read_manifests, write_html_report
from reports.sections import sections_markdown, terminal_text, write_section_tables
from reports.table_spec import TableSpec, build_spec_table, render, report_sections

PLOT_DIR = "plots"


def write_report(out_dir: Path, frame: pd.DataFrame, *, formats: Sequence[str] = FORMATS,
                 plots: Sequence[tuple[str, str]] | None = None,
                 paretos: Sequence[tuple[str, str]] | None = None,
                 title: str = "diffbench report", ci_style: str = "auto",
                 make_plots: bool = True, quiet: bool = False,
                 grid_runs: Sequence[Path] = (), grid_k: int = DEFAULT_K,
                 manifests: Mapping[str, Mapping[str, Any]] | None = None,
                 spec: TableSpec | None = None, spec_format: str | None = None) -> Path:
    """The section tables in `formats` (table.md, .tex, .html: one table per section; table.csv:
    every metric, numbers), plots under plots/, report.md and a self-contained report.html
    (with each run's provenance from `manifests`; default: read from `grid_runs`), all in
    `out_dir`. Prints the sections to the terminal unless quiet; with a table `spec`, prints
    that table (in spec_format, else the spec's) instead and writes it as table_<name>.<ext>.
    Returns report.md."""
    out_dir = Path(out_dir)
    frame = normalise(frame)
    pivot = build_pivot(frame, ci_style)
    sections = report_sections(frame, ci_style)   # task-named tables for image-to-image / LoRA rows, then the rest
    spec_table = build_spec_table(frame, spec) if spec is not None else None   # a bad spec: nothing written
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = write_tables(pivot, out_dir, [f for f in formats if f == "csv"], title=title) if formats else []
    tables += write_section_tables(sections, out_dir, [f for f in formats if f != "csv"], title=title)
    tables.sort(key=lambda p: FORMATS.index(p.suffix[1:]))
    pngs = write_plots(frame, out_dir / PLOT_DIR, plots, paretos) if make_plots else []
    grids = write_grids(grid_runs, out_dir, grid_k, manifests) if make_plots and grid_runs else []  # from stored samples
    table_md = sections_markdown(sections)
    lines = [f"# {title}", ""]
    for label, column in (("Runs", "run_id"), ("Suites", "suite")):
        values = sorted({v for v in frame[column] if v})
        if values:
            lines.append(f"{label}: {', '.join(values)}  ")
    lines += [f"Rows: {len(frame)}", ""]
    spec_text = ""
    if spec_table is not None:
        fmt = spec_format or spec.format
        spec_text = render(spec_table, fmt, spec.title)
        spec_path = out_dir / f"table_{spec.name}.{fmt}"
        atomic_write_text(spec_path, spec_text)
        tables.append(spec_path)
        lines += [f"## {spec.title or spec.name}", "", render(spec_table, "md"), ""]
    lines.append(table_md if sections else "No result rows.\n")
    notes = ci_footnotes(frame)
    if notes:   # which uncertainty each "±" is (bootstrap, spread over subsets, none)
        lines += ["Intervals:", "", *[f"- {note}" for note in notes], ""]
    if tables:
        lines += ["Tables: " + ", ".join(f"[{p.name}]({p.name})" for p in tables), ""]
    if pngs:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({PLOT_DIR}/{p.name})\n" for p in pngs]
    if grids:
        lines += ["## Samples", ""]
        lines += [f"![{p.stem}]({GRID_DIR}/{p.name})\n" for p in grids]
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines).rstrip("\n") + "\n")
    summary = [line.rstrip() for line in lines[2:] if line.startswith(("Runs:", "Suites:", "Rows:"))]
    page = write_html_report(out_dir, title, summary, sections,
                             [(spec.title or spec.name, spec_table)] if spec_table is not None else [],
                             read_manifests(grid_runs) if manifests is None else manifests,
                             interval_notes=notes)   # the same "Intervals" notes as report.md
    if quiet:   # --quiet: nothing on the terminal (issue 28: it still printed the table)
        pass
    elif spec_text:   # the table asked for, alone on stdout (ready to paste); where the files went on stderr
        print(spec_text, end="", file=sys.stdout)
        print(f"report: {report}, {page.name}", file=sys.stderr)
    else:
        print(terminal_text(sections) if sections else "No result rows.", file=sys.stdout)
        print(f"report: {report}, {page.name}" + (f" ({len(pngs)} plot(s) in {out_dir / PLOT_DIR})" if pngs else ""))
    return report


def write_run_report(run_dir: Path, frame: pd.DataFrame, *, quiet: bool = False,
                     plots: Sequence[tuple[str, str]] | None = None,
                     paretos: Sequence[tuple[str, str]] | None = None,
                     manifest: Mapping[str, Any] | None = None) -> Path:
    """The end-of-run report: report.md and plots/*.png in the run directory, table to the
    terminal. Suites may name the plots they want (metric:axis, and x:y Pareto pairs);
    otherwise the automatic set (each metric vs each varying axis, FID vs CLIP score,
    or an overview when nothing varies)."""
    frame = normalise(frame)
    run_ids = sorted({v for v in frame["run_id"] if v})
    title = f"diffbench run {run_ids[0]}" if len(run_ids) == 1 else "diffbench run"
    if manifest is not None:   # the runner's, with weights and checkpoints, before manifest.json says complete
        on_disk = read_manifests([Path(run_dir)])
        manifest = {**next(iter(on_disk.values()), {}), **manifest}
        manifests = {str(manifest.get("run_id") or run_dir): manifest}
    else:
        manifests = None
    return write_report(Path(run_dir), frame, formats=(), plots=plots, paretos=paretos,
                        title=title, quiet=quiet, grid_runs=[Path(run_dir)], manifests=manifests)
