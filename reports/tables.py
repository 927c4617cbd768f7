"""Result rows -> pivot tables: rows are (pipeline, sweep point) or any chosen group-by,
columns are metrics, cells are "value ± half-width" of the stored confidence interval (or
"value [low, high]" when the interval is not symmetric), written as Markdown, LaTeX
(booktabs), CSV and HTML. A pivot may carry header labels, fixed decimals, a caption (the
settings every row shares), text columns (e.g. per-stage shares) and the best cell per
column in bold; reports.sections and reports.table_spec build such pivots.

Pure functions of the rows: same rows in, byte-identical files out (rows and columns are
sorted, numbers formatted by fixed rules, no timestamps or paths in the tables).
"""
from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from bench.atomic import atomic_write_text
from bench.results import param_columns
from reports.load import ReportError, normalise
from reports.metric_kinds import HIGHER, LOWER, metric_kind, metric_sort_key

FORMATS = ("md", "tex", "csv", "html")
CI_STYLES = ("auto", "pm", "interval", "none")


@dataclass(frozen=True)
class Cell:
    value: float
    ci_low: float
    ci_high: float
    n: float


@dataclass
class Pivot:
    index_columns: list[str]            # "pipeline" then the sweep parameters (+ suite/run_id if needed)
    metrics: list[str]
    units: dict[str, str]
    rows: list[tuple]                   # ordered row keys: values of index_columns
    cells: dict[tuple[tuple, str], Cell]
    n_by_row: dict[tuple, int] | None = None  # set when n is one number per row (shown as a column)
    n_in_cells: bool = False                  # n varies every which way: each cell shows its own
    notes: list[str] = field(default_factory=list)
    ci_style: str = "auto"
    labels: dict[str, str] = field(default_factory=dict)      # column -> header (default: its name)
    decimals: dict[str, int] = field(default_factory=dict)    # metric -> fixed decimals
    caption: str = ""                                         # e.g. the settings every row shares
    text_columns: dict[str, dict[tuple, str]] = field(default_factory=dict)  # header -> row -> text
    bold: set[tuple[tuple, str]] = field(default_factory=set)  # (row, metric) cells shown in bold
    column_order: list[str] | None = None  # index columns, metrics and text columns interleaved


def sort_key(value: Any) -> tuple:
    """Numbers numerically, then booleans, then text, missing last: a total, stable order."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (3, 0, "")
    if isinstance(value, bool):
        return (1, int(value), "")
    if isinstance(value, (int, float)):
        return (0, value, "")
    return (2, 0, str(value))


def build_pivot(frame: pd.DataFrame, ci_style: str = "auto", index: Sequence[str] | None = None,
                metrics: Sequence[str] | None = None) -> Pivot:
    """`index`: the row columns (default: suite when several, pipeline, every sweep parameter);
    `metrics`: the metric columns in order (default: every metric, quality first)."""
    if ci_style not in CI_STYLES:
        raise ReportError(f"ci style {ci_style!r} is not one of {list(CI_STYLES)}")
    frame = normalise(frame)
    if metrics is not None:
        frame = frame[frame["metric"].isin(list(metrics))]
    if index is None:
        index = ["pipeline", *param_columns(frame)]
        if frame["suite"].nunique() > 1:
            index.insert(0, "suite")
    index = list(index)
    if _duplicated(frame, index) and "run_id" not in index:
        index.append("run_id")  # the same point measured in several runs: keep each run's row
        dups = _duplicated(frame, index)
        if dups:
            raise ReportError(f"the same measurement appears more than once in one run: {dups[:3]}; "
                              "the results file is inconsistent, regenerate the run")
    cells: dict[tuple[tuple, str], Cell] = {}
    for rec in frame[[*index, "metric", "value", "ci_low", "ci_high", "n"]].itertuples(index=False):
        *key, metric, value, low, high, n = rec
        cells[(tuple(key), metric)] = Cell(value, low, high, n)
    rows = sorted({key for key, _ in cells}, key=lambda k: tuple(sort_key(v) for v in k))
    metrics = (sorted(set(frame["metric"]), key=metric_sort_key) if metrics is None
               else [m for m in metrics if m in set(frame["metric"])])
    units = {}
    for metric in metrics:
        found = sorted({u for u in frame.loc[frame["metric"] == metric, "unit"] if u})
        units[metric] = "/".join(found)
    pivot = Pivot(index, metrics, units, rows, cells, ci_style=ci_style)
    _describe_n(pivot)
    if ci_style != "none" and any(_finite(c.ci_low) and _finite(c.ci_high) for c in cells.values()):
        pivot.notes.append("± is half the stored confidence interval's width; [low, high] where it is asymmetric.")
    return pivot


def mark_best(pivot: Pivot) -> None:
    """Bold the best value of each metric column (by the metric's direction; ties all bold).
    Columns with no direction (stage share) or fewer than two values get none."""
    pivot.bold = set()
    for metric in pivot.metrics:
        direction = metric_kind(metric).direction
        values = {row: c.value for (row, m), c in pivot.cells.items() if m == metric and _finite(c.value)}
        if direction not in (LOWER, HIGHER) or len(set(values.values())) < 2:
            continue   # nothing to choose between
        best = min(values.values()) if direction == LOWER else max(values.values())
        pivot.bold |= {(row, metric) for row, v in values.items() if v == best}


def _duplicated(frame: pd.DataFrame, index: list[str]) -> list[tuple]:
    keys = frame[[*index, "metric"]].astype(str)
    dup = keys[keys.duplicated(keep=False)]
    return sorted({tuple(r) for r in dup.itertuples(index=False)})


def _describe_n(pivot: Pivot) -> None:
    """n goes where it is shortest: one note, a note per metric, a column, or in each cell."""
    ns = {k: int(c.n) for k, c in pivot.cells.items() if _finite(c.n)}
    if len(set(ns.values())) <= 1:
        if ns:
            pivot.notes.append(f"n = {next(iter(ns.values()))} for every value.")
        return
    per_metric: dict[str, set[int]] = {}
    per_row: dict[tuple, set[int]] = {}
    for (row, metric), n in ns.items():
        per_metric.setdefault(metric, set()).add(n)
        per_row.setdefault(row, set()).add(n)
    if all(len(v) == 1 for v in per_metric.values()):
        groups: dict[int, list[str]] = {}
        for metric in pivot.metrics:
            if metric in per_metric:
                groups.setdefault(next(iter(per_metric[metric])), []).append(metric)
        text = "; ".join(f"n = {n} ({', '.join(ms)})" for n, ms in sorted(groups.items()))
        pivot.notes.append(f"Sample sizes: {text}.")
    elif all(len(v) == 1 for v in per_row.values()):
        pivot.n_by_row = {row: next(iter(v)) for row, v in per_row.items()}
    else:
        pivot.n_in_cells = True
        pivot.notes.append("n differs within rows and columns: each value shows its own n.")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ---- number formatting ------------------------------------------------------------------

def decimals_for(metric: str, value: float, halfwidth: float | None) -> int | None:
    """Decimals to show: two significant digits of the CI half-width when there is one, else
    the metric's usual precision, else four significant digits. None: use scientific notation."""
    if halfwidth is not None and _finite(halfwidth) and halfwidth > 0:
        decimals = 1 - math.floor(math.log10(halfwidth))
    elif metric_kind(metric).decimals is not None:
        decimals = metric_kind(metric).decimals
    elif _finite(value) and value != 0:
        decimals = 3 - math.floor(math.log10(abs(value)))
    else:
        decimals = 2
    return None if decimals > 8 else max(decimals, 0)


def format_number(x: float, decimals: int | None) -> str:
    if not _finite(x):
        return "nan" if x != x else ("inf" if x > 0 else "-inf")
    text = f"{x:.3g}" if decimals is None else f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def _identity(text: str) -> str:
    return text


def _markdown_bold(text: str) -> str:
    return f"**{text}**"


@dataclass(frozen=True)
class Markup:
    pm: str = "±"
    missing: str = "–"
    escape: Callable[[str], str] = _identity
    bold: Callable[[str], str] = _identity


MARKDOWN = Markup(bold=_markdown_bold)
PLAIN = Markup()   # the terminal: no markup at all
LATEX = Markup(pm=r"$\pm$", missing="--", escape=lambda s: latex_escape(s), bold=lambda s: rf"\textbf{{{s}}}")


def _half_width(cell: Cell) -> float | None:
    if _finite(cell.ci_low) and _finite(cell.ci_high) and _finite(cell.value):
        return (cell.ci_high - cell.ci_low) / 2
    return None


def column_decimals(cells: Sequence[Cell], metric: str, use_ci: bool = True) -> int | None:
    """One precision per column (the finest any of its cells needs), so digits line up.
    Counts (NFE) that are all whole numbers get none. use_ci=False (intervals not shown): the
    metric's usual precision."""
    if cells and metric_kind(metric).group == "count" and all(
            _finite(c.value) and float(c.value).is_integer() for c in cells):
        return 0
    found = [decimals_for(metric, c.value, _half_width(c) if use_ci else None) for c in cells]
    found = [d for d in found if d is not None]
    return max(found) if found else None


def format_cell(cell: Cell | None, metric: str, ci_style: str = "auto", markup: Markup = MARKDOWN,
                show_n: bool = False, decimals: int | None = -1) -> str:
    """decimals=-1: chosen from this cell alone; None: scientific notation."""
    if cell is None:
        return markup.missing
    value, low, high = cell.value, cell.ci_low, cell.ci_high
    half = _half_width(cell)
    has_ci = half is not None
    if decimals == -1:
        decimals = decimals_for(metric, value, half)
    text = format_number(value, decimals)
    exact_count = has_ci and half == 0 and metric_kind(metric).group == "count"   # "4 ± 0" says nothing
    if has_ci and ci_style != "none" and not exact_count:
        below, above = value - low, high - value
        symmetric = abs(below - above) <= 0.05 * max(abs(below), abs(above)) + 1e-12
        if ci_style == "pm" or (ci_style == "auto" and symmetric):
            text += f" {markup.pm} {format_number(half, decimals)}"
        else:
            text += f" [{format_number(low, decimals)}, {format_number(high, decimals)}]"
    if show_n and _finite(cell.n):
        text += f" (n={int(cell.n)})"
    return text  # numbers and the markup's own tokens only: nothing to escape


def format_param(value: Any, markup: Markup = MARKDOWN) -> str:
    if value is None:
        return markup.missing
    if isinstance(value, float):
        return markup.escape(repr(value))
    return markup.escape(str(value))


def metric_header(pivot: Pivot, metric: str) -> str:
    if metric in pivot.labels:
        return pivot.labels[metric]
    unit = pivot.units.get(metric, "")
    return f"{metric} ({unit})" if unit else metric


def column_names(pivot: Pivot) -> list[str]:
    """Every shown column by name, in order: index columns, [n], metrics, text columns."""
    n = ["n"] if pivot.n_by_row is not None else []
    if pivot.column_order is not None:
        return [c for c in pivot.column_order if c != "n"] if not n else \
            [*[c for c in pivot.column_order if c in pivot.index_columns], *n,
             *[c for c in pivot.column_order if c not in pivot.index_columns and c != "n"]]
    return [*pivot.index_columns, *n, *pivot.metrics, *pivot.text_columns]


def text_flags(pivot: Pivot) -> list[bool]:
    """Per shown column: True for text (left-aligned: index columns, n, text columns)."""
    return [c not in pivot.metrics for c in column_names(pivot)]


def n_leading_text(pivot: Pivot) -> int:
    """How many leading columns are text (left-aligned): the index columns and n."""
    return len(pivot.index_columns) + (pivot.n_by_row is not None)


# ---- the four formats ---------------------------------------------------------------------

def header_of(pivot: Pivot, column: str) -> str:
    if column in pivot.metrics:
        return metric_header(pivot, column)
    return pivot.labels.get(column, column)


def display_frame(pivot: Pivot, markup: Markup = MARKDOWN) -> pd.DataFrame:
    """The table as strings: index columns, optional n column, one column per metric, text columns."""
    columns = column_names(pivot)
    headers = [markup.escape(header_of(pivot, c)) for c in columns]
    decimals = {m: pivot.decimals[m] if m in pivot.decimals else
                column_decimals([c for (_, cm), c in pivot.cells.items() if cm == m], m, pivot.ci_style != "none")
                for m in pivot.metrics}
    position = {c: i for i, c in enumerate(pivot.index_columns)}
    records = []
    for row in pivot.rows:
        record = []
        for column in columns:
            if column in position:
                record.append(format_param(row[position[column]], markup))
            elif column == "n" and pivot.n_by_row is not None:
                record.append(str(pivot.n_by_row[row]))
            elif column in pivot.text_columns:
                text = pivot.text_columns[column].get(row)
                record.append(markup.escape(text) if text else markup.missing)
            else:
                text = format_cell(pivot.cells.get((row, column)), column, pivot.ci_style, markup,
                                   pivot.n_in_cells, decimals[column])
                record.append(markup.bold(text) if (row, column) in pivot.bold else text)
        records.append(record)
    return pd.DataFrame(records, columns=headers, dtype=object)


def to_markdown(pivot: Pivot, markup: Markup = MARKDOWN) -> str:
    table = display_frame(pivot, markup)
    text = text_flags(pivot)
    headers = [str(c) for c in table.columns]
    body = [[str(v) for v in rec] for rec in table.itertuples(index=False)]
    cells = [[h.replace("|", r"\|") for h in headers]] + [[v.replace("|", r"\|") for v in r] for r in body]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    widths = [max(w, 3) for w in widths]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) if text[i] else v.rjust(w)
                                 for i, (v, w) in enumerate(zip(values, widths))) + " |"

    rule = "| " + " | ".join("-" * w if text[i] else "-" * (w - 1) + ":"
                             for i, w in enumerate(widths)) + " |"
    lines = [line(cells[0]), rule, *(line(r) for r in cells[1:])]
    return framed(pivot, lines)


def framed(pivot: Pivot, lines: list[str]) -> str:
    """A text table's lines with the pivot's caption above and its notes below."""
    if pivot.caption:
        lines = [pivot.caption, "", *lines]
    if pivot.notes:
        lines += ["", *(f"- {note}" for note in pivot.notes)]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    replace = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
               "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
               "^": r"\textasciicircum{}", "–": "--", "±": r"$\pm$"}
    return "".join(replace.get(ch, ch) for ch in text)


def to_latex(pivot: Pivot) -> str:
    """A booktabs tabular (\\toprule/\\midrule/\\bottomrule) via pandas' Styler."""
    table = display_frame(pivot, LATEX)
    column_format = "".join("l" if t else "r" for t in text_flags(pivot))
    body = table.style.hide(axis="index").to_latex(hrules=True, column_format=column_format)
    caption = f"% {pivot.caption}\n" if pivot.caption else ""
    notes = "".join(f"% {note}\n" for note in pivot.notes)
    return caption + body + notes


def to_csv(pivot: Pivot) -> str:
    """Numbers, not strings: for each metric its value, ci_low, ci_high and n (full precision)."""
    records = []
    for row in pivot.rows:
        record: dict[str, Any] = dict(zip(pivot.index_columns, row))
        for metric in pivot.metrics:
            cell = pivot.cells.get((row, metric))
            record[metric] = None if cell is None else cell.value
            record[f"{metric}_ci_low"] = None if cell is None else cell.ci_low
            record[f"{metric}_ci_high"] = None if cell is None else cell.ci_high
            record[f"{metric}_n"] = None if cell is None or not _finite(cell.n) else int(cell.n)
        records.append(record)
    columns = list(pivot.index_columns)
    for metric in pivot.metrics:
        columns += [metric, f"{metric}_ci_low", f"{metric}_ci_high", f"{metric}_n"]
    buffer = io.StringIO()
    pd.DataFrame(records, columns=columns, dtype=object).to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def html_table(pivot: Pivot, table_class: str = "results") -> str:
    """A <table> whose cells carry their raw number (data-v) for sorting, best cells in <b>."""
    frame = display_frame(pivot, PLAIN)
    columns = column_names(pivot)
    is_text = text_flags(pivot)
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in frame.columns)
    body = []
    for row, texts in zip(pivot.rows, frame.itertuples(index=False)):
        cells = []
        for i, (column, text) in enumerate(zip(columns, texts)):
            cell = pivot.cells.get((row, column)) if column in pivot.metrics else None
            raw = f' data-v="{cell.value!r}"' if cell is not None and _finite(cell.value) else ""
            shown = html.escape(str(text))
            if (row, column) in pivot.bold:
                shown = f"<b>{shown}</b>"
            align = "" if is_text[i] else ' class="num"'
            cells.append(f"<td{align}{raw}>{shown}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="{table_class}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(body) + "\n</tbody>\n</table>")


def to_html(pivot: Pivot, title: str = "diffbench results") -> str:
    table = html_table(pivot)
    caption = f"<p>{html.escape(pivot.caption)}</p>\n" if pivot.caption else ""
    notes = caption + "".join(f"<p>{html.escape(note)}</p>\n" for note in pivot.notes)
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n</head>\n<body>\n{table}\n{notes}</body>\n</html>\n")


RENDERERS = {"md": to_markdown, "tex": to_latex, "csv": to_csv, "html": to_html}


def write_tables(pivot: Pivot, out_dir: Path, formats: Sequence[str] = FORMATS,
                 stem: str = "table", title: str = "diffbench results") -> list[Path]:
    unknown = [f for f in formats if f not in RENDERERS]
    if unknown:
        raise ReportError(f"unknown table format(s) {unknown}; choose from {list(FORMATS)}")
    written = []
    for fmt in formats:
        path = Path(out_dir) / f"{stem}.{fmt}"
        atomic_write_text(path, to_html(pivot, title) if fmt == "html" else RENDERERS[fmt](pivot))
        written.append(path)
    return written
