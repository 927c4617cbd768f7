"""Result rows -> pivot tables: rows are (pipeline, sweep point) or any chosen group-by,
columns are metrics, cells are "value ± half-width" of a symmetric stored interval, or
"value [low, high]" for an asymmetric one and for every Wilson, bootstrap or min-max interval
(a "±" would misstate those), written as Markdown, LaTeX (booktabs), CSV and HTML. A pivot may
carry header labels, fixed decimals, a caption (the settings every row shares), text columns
(e.g. per-stage shares) and the best cell per column in bold; reports.sections and
reports.table_spec build such pivots.

What went into a mean is said in its cell: a row whose details say images were left out of
it (`excluded`: count, of, reason; e.g. exact reproductions with infinite PSNR) or counted at
a cap (`capped_images`, rows written before issue 28) reads "39.6 ± 2.1 (1 of 8 exact)", and
table.csv has the count. Rows carry a role (the `role` column a suite writes; else family
"reference" / "baseline"): references and baselines are never bold, are set in italics and
come first in their group; bold is chosen within a group of the settings that define the
comparison (`group_by`: mask set, data set, factor, ...), never across groups.

Pure functions of the rows: same rows in, byte-identical files out (rows and columns are
sorted, numbers formatted by fixed rules, no timestamps or paths in the tables).
"""
from __future__ import annotations

import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from bench.atomic import atomic_write_text
from bench.results import DETAILS_COLUMN, param_columns
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
    note: str = ""          # what went into the mean beyond n, e.g. "1 of 8 exact"
    of: int | None = None   # with a note: the images evaluated (n + those left out), the n the table states
    bracket: bool = False   # the interval is not a symmetric CI (Wilson, bootstrap, min-max): [low, high]


ROLES = ("baseline", "reference", "method")   # row order within a group: scale first, then the methods
ROLE_COLUMN = "role"
BOLD_NOTE = "Bold: the best method"
GROUP_WORDS = {"data": "data set", "mask": "mask", "mask_ratio": "mask ratio", "input_resolution": "input size"}
# Interval kinds shown as [low, hi] whatever their symmetry: "±" says "a symmetric CI" (issue 28)
_BRACKET_KINDS = ("wilson", "bootstrap", "percentile", "min-max", "min–max", "spread", "range", "quantile")


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
    roles: dict[tuple, str] = field(default_factory=dict)      # row -> reference | baseline (absent: method)
    group_by: list[str] = field(default_factory=list)          # index columns whose values make a comparison group
    rules: set[tuple] = field(default_factory=set)             # rows drawn with a rule above (a new group / block)


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
    details = frame[DETAILS_COLUMN] if DETAILS_COLUMN in frame.columns else pd.Series("", index=frame.index)
    roles = row_roles(frame)
    found_roles: dict[tuple, str] = {}
    for rec, text, role in zip(frame[[*index, "metric", "value", "ci_low", "ci_high", "n"]].itertuples(index=False),
                               details, roles):
        *key, metric, value, low, high, n = rec
        note, bracket, of = cell_details(text)
        cells[(tuple(key), metric)] = Cell(value, low, high, n, note, of, bracket)
        if role != "method":
            found_roles[tuple(key)] = role
    rows = sorted({key for key, _ in cells}, key=lambda k: tuple(sort_key(v) for v in k))
    metrics = (sorted(set(frame["metric"]), key=metric_sort_key) if metrics is None
               else [m for m in metrics if m in set(frame["metric"])])
    units = {}
    for metric in metrics:
        found = sorted({u for u in frame.loc[frame["metric"] == metric, "unit"] if u})
        units[metric] = "/".join(found)
    pivot = Pivot(index, metrics, units, rows, cells, ci_style=ci_style, roles=found_roles)
    _describe_n(pivot)
    finish_notes(pivot)
    return pivot


def row_roles(frame: pd.DataFrame) -> list[str]:
    """Each row's role: its `role` column where a suite wrote one, else from its family (the
    superres identity's family is "reference", the interpolations' and mean fill's "baseline")."""
    written = frame[ROLE_COLUMN] if ROLE_COLUMN in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    out = []
    for role, family in zip(written, frame["family"] if "family" in frame.columns else [""] * len(frame)):
        role = str(role) if isinstance(role, str) and role else ""
        out.append(role if role in ROLES else family if family in ("reference", "baseline") else "method")
    return out


def cell_details(text: Any) -> tuple[str, bool, int | None]:
    """(what went into the mean beyond n, whether the interval is shown as [low, high], the images
    evaluated where some were left out) from a row's details JSON."""
    try:
        details = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        details = {}
    if not isinstance(details, dict):
        return "", False, None
    note, of = "", None
    excluded = details.get("excluded")
    if isinstance(excluded, dict) and int(excluded.get("count") or 0) > 0:
        of = int(excluded.get("of") or 0)
        note = f"{int(excluded['count'])} of {of} {excluded.get('reason') or 'excluded'}"
    elif int(details.get("capped_images") or 0) > 0:   # rows written before issue 28: counted at the cap
        cap = details.get("psnr_cap_db")
        note = f"{int(details['capped_images'])} capped" + (f" at {format_number(float(cap), 0)} dB" if cap else "")
    kind = f"{details.get('ci_kind', '')} {details.get('ci_method', '')}".lower()
    return note, any(word in kind for word in _BRACKET_KINDS), of


def interval_notes(pivot: Pivot) -> list[str]:
    """What "±" and "[low, high]" mean, said only for the forms the table shows."""
    if pivot.ci_style == "none":
        return []
    shown = {_interval_form(c, m, pivot.ci_style) for (_, m), c in pivot.cells.items() if m in pivot.metrics}
    notes = []
    if "pm" in shown:
        notes.append("± is half the width of a symmetric interval (a 95% normal CI of the mean, or ± one std).")
    if "bracket" in shown:
        notes.append("[low, high]: an asymmetric interval (Wilson, bootstrap) or the min-max spread of timings.")
    return notes


def excluded_notes(pivot: Pivot) -> list[str]:
    notes = []
    cells = [c for (_, m), c in pivot.cells.items() if m in pivot.metrics and c.note]
    if any(c.note.endswith(" exact") for c in cells):
        notes.append("(k of N exact): k images reproduced their ground truth exactly (infinite PSNR) and are left "
                     "out of the mean, which is over the other N - k (its n); all N exact: ∞.")
    if any(" capped" in c.note for c in cells):
        notes.append("(k capped): k images had infinite PSNR and count at the cap in the mean (results written "
                     "before issue 28; rerun for the mean over finite values).")
    return notes


def row_role(pivot: Pivot, row: tuple) -> str:
    return pivot.roles.get(row, "method")


def apply_groups(pivot: Pivot, group_by: Sequence[str] = ()) -> None:
    """Order rows by their comparison group (the values of `group_by`), within it references,
    then baselines, then methods (stable: the order the rows had stays within a block); a rule
    above every row that starts a group or the methods' block. Then the notes this pivot needs."""
    pivot.group_by = [c for c in group_by if c in pivot.index_columns]
    rank = {role: i for i, role in enumerate(ROLES)}
    group_rank: dict[tuple, int] = {}
    for row in pivot.rows:   # groups in the order the rows (already sorted) first show them
        group_rank.setdefault(group_of(pivot, row), len(group_rank))
    if pivot.group_by:
        pivot.rows = sorted(pivot.rows, key=lambda r: (tuple(sort_key(v) for v in group_of(pivot, r)),
                                                       rank[row_role(pivot, r)]))
    else:
        pivot.rows = sorted(pivot.rows, key=lambda r: rank[row_role(pivot, r)])
    pivot.rules = set()
    for before, row in zip(pivot.rows, pivot.rows[1:]):
        if group_of(pivot, before) != group_of(pivot, row) or \
                (row_role(pivot, before) != "method") != (row_role(pivot, row) != "method"):
            pivot.rules.add(row)
    finish_notes(pivot)


def finish_notes(pivot: Pivot) -> None:
    """The notes that depend on what the table shows (intervals, exclusions, roles), after the
    pivot's own; said once."""
    notes = [*interval_notes(pivot), *excluded_notes(pivot)]
    if any(row_role(pivot, r) != "method" for r in pivot.rows):
        notes.append("Rows in italics, first in their group above a rule, are references or baselines (ground truth, "
                     "interpolation, the untrained or base model): shown for scale, never bold.")
    pivot.notes = [n for n in pivot.notes if n not in notes and not n.startswith(BOLD_NOTE)] + notes
    if pivot.bold and pivot.group_by and len({group_of(pivot, r) for r in pivot.rows}) > 1:
        names = [GROUP_WORDS.get(c, c) for c in pivot.group_by]
        pivot.notes.append(f"{BOLD_NOTE} among the rows of the same {', '.join(names)} (rules between groups).")


def group_of(pivot: Pivot, row: tuple) -> tuple:
    return tuple(row[pivot.index_columns.index(c)] for c in pivot.group_by)


def mark_best(pivot: Pivot) -> None:
    """Bold the best value of each metric column (by the metric's direction; ties all bold),
    among the methods of one comparison group (pivot.group_by) at a time: references and
    baselines are never bold. Columns with no direction (stage share) or fewer than two values
    in a group get none there."""
    pivot.bold = set()
    for metric in pivot.metrics:
        direction = metric_kind(metric).direction
        if direction not in (LOWER, HIGHER):
            continue
        groups: dict[tuple, dict[tuple, float]] = {}
        for (row, m), c in pivot.cells.items():
            if m == metric and _finite(c.value) and row_role(pivot, row) == "method":
                groups.setdefault(group_of(pivot, row), {})[row] = c.value
        for values in groups.values():
            if len(set(values.values())) < 2:
                continue   # nothing to choose between
            best = min(values.values()) if direction == LOWER else max(values.values())
            pivot.bold |= {(row, metric) for row, v in values.items() if v == best}
    finish_notes(pivot)   # says what the bold is chosen among, now that there is some


def _duplicated(frame: pd.DataFrame, index: list[str]) -> list[tuple]:
    keys = frame[[*index, "metric"]].astype(str)
    dup = keys[keys.duplicated(keep=False)]
    return sorted({tuple(r) for r in dup.itertuples(index=False)})


def _describe_n(pivot: Pivot) -> None:
    """n goes where it is shortest: one note, a note per metric, a column, or in each cell."""
    # a mean that left images out says "k of N" in its cell: N is its row's n here, so one exclusion
    # does not turn the table's one n into an "(n=...)" in every cell
    ns = {k: int(c.of or c.n) for k, c in pivot.cells.items() if _finite(c.n)}
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
    italic: Callable[[str], str] = _identity   # reference / baseline row names
    infinity: str = "∞"


MARKDOWN = Markup(bold=_markdown_bold, italic=lambda s: f"*{s}*")
PLAIN = Markup()   # the terminal: no markup at all (rules between blocks set references apart)
LATEX = Markup(pm=r"$\pm$", missing="--", escape=lambda s: latex_escape(s), bold=lambda s: rf"\textbf{{{s}}}",
               italic=lambda s: rf"\textit{{{s}}}", infinity=r"$\infty$")


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
    magnitudes = [m for m in (_magnitude(c.value) for c in cells) if m is not None]
    if metric_kind(metric).timing and magnitudes and max(magnitudes) - min(magnitudes) >= 2:
        return -1   # throughputs spanning decades (12,000 vs 8.7 img/s): each cell its own precision
    found = [decimals_for(metric, c.value, _half_width(c) if use_ci else None) for c in cells]
    found = [d for d in found if d is not None]
    return max(found) if found else None


def _magnitude(value: float) -> int | None:
    return math.floor(math.log10(abs(value))) if _finite(value) and value != 0 else None


def _interval_form(cell: Cell | None, metric: str, ci_style: str) -> str:
    """How a cell's interval is shown: "pm" (a symmetric CI), "bracket" ([low, high]) or "" (none).
    ci: pm and ci: auto alike never write "±" for an asymmetric interval or a spread (issue 28:
    precision 0.031 [0.006, 0.157] read 0.031 ± 0.076); ci: interval always brackets."""
    if cell is None or ci_style == "none":
        return ""
    half = _half_width(cell)
    if half is None or half == 0:   # "4 ± 0", "7.96 [7.96, 7.96]" (one timed batch) say nothing
        return ""
    below, above = cell.value - cell.ci_low, cell.ci_high - cell.value
    symmetric = abs(below - above) <= 0.05 * max(abs(below), abs(above)) + 1e-12
    return "pm" if ci_style in ("auto", "pm") and symmetric and not cell.bracket else "bracket"


def format_cell(cell: Cell | None, metric: str, ci_style: str = "auto", markup: Markup = MARKDOWN,
                show_n: bool = False, decimals: int | None = -1) -> str:
    """decimals=-1: chosen from this cell alone; None: scientific notation."""
    if cell is None or (not _finite(cell.value) and not (isinstance(cell.value, float) and math.isinf(cell.value))):
        return markup.missing   # no value (NaN) is no number: "–", never "nan"
    value, low, high = cell.value, cell.ci_low, cell.ci_high
    if math.isinf(value):
        text = markup.infinity if value > 0 else f"-{markup.infinity}"
    else:
        half = _half_width(cell)
        if decimals == -1:
            decimals = decimals_for(metric, value, half)
        text = format_number(value, decimals)
        form = _interval_form(cell, metric, ci_style)
        if form and format_number(low, decimals) == format_number(high, decimals):
            form = ""   # zero width at the shown precision ("1.0000 ± 0.0000" for the identity's SSIM)
        if form == "pm":
            text += f" {markup.pm} {format_number(half, decimals)}"
        elif form == "bracket":
            text += f" [{format_number(low, decimals)}, {format_number(high, decimals)}]"
    if cell.note:
        text += f" ({cell.note})"
    if show_n and _finite(cell.n):
        text += f" (n={int(cell.n)})"
    return text  # numbers, the markup's own tokens and notes of digits and words: nothing to escape


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
    name_column = next((c for c in columns if c in position and c not in pivot.group_by), None)
    records = []
    for row in pivot.rows:
        record = []
        for column in columns:
            if column in position:
                text = format_param(row[position[column]], markup)
                set_apart = column == name_column and row_role(pivot, row) != "method"
                record.append(markup.italic(text) if set_apart and text != markup.missing else text)
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
    lines = [line(cells[0]), rule]
    for row, values in zip(pivot.rows, cells[1:]):
        if row in pivot.rules and markup is PLAIN:   # the terminal: a rule between blocks (Markdown has none)
            lines.append("|" + "+".join("-" * (w + 2) for w in widths) + "|")
        lines.append(line(values))
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
               "^": r"\textasciicircum{}", "–": "--", "±": r"$\pm$", "Δ": r"$\Delta$", "∞": r"$\infty$",
               "·": r"$\cdot$", "…": r"\ldots{}", "×": r"$\times$"}   # pdflatex has no Unicode input for these
    return "".join(replace.get(ch, ch) for ch in text)


def to_latex(pivot: Pivot) -> str:
    """A booktabs tabular (\\toprule/\\midrule/\\bottomrule) via pandas' Styler; a \\midrule
    above every row that starts a comparison group or the methods' block."""
    table = display_frame(pivot, LATEX)
    column_format = "".join("l" if t else "r" for t in text_flags(pivot))
    body = table.style.hide(axis="index").to_latex(hrules=True, column_format=column_format)
    if pivot.rules:
        lines = body.split("\n")
        start = lines.index("\\midrule") + 1   # the first body line
        for i, row in reversed(list(enumerate(pivot.rows))):
            if row in pivot.rules:
                lines.insert(start + i, "\\midrule")
        body = "\n".join(lines)
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
    # what went into a mean beyond n (e.g. "1 of 8 exact"): a column where any cell says so
    noted = [m for m in pivot.metrics if any(c.note for (_, cm), c in pivot.cells.items() if cm == m)]
    for record, row in zip(records, pivot.rows):
        for metric in noted:
            cell = pivot.cells.get((row, metric))
            record[f"{metric}_excluded"] = cell.note if cell is not None and cell.note else None
    columns += [f"{metric}_excluded" for metric in noted]
    if pivot.roles:
        for record, row in zip(records, pivot.rows):
            record[ROLE_COLUMN] = row_role(pivot, row)
        columns.insert(len(pivot.index_columns), ROLE_COLUMN)
    buffer = io.StringIO()
    pd.DataFrame(records, columns=columns, dtype=object).to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def html_table(pivot: Pivot, table_class: str = "results") -> str:
    """A <table> whose cells carry their raw number (data-v) for sorting, best cells in <b>."""
    frame = display_frame(pivot, PLAIN)
    columns = column_names(pivot)
    is_text = text_flags(pivot)
    num = ' class="num"'   # a number column's header sits over its numbers (right-aligned)
    head = "".join(f"<th{'' if is_text[i] else num}>{html.escape(str(h))}</th>" for i, h in enumerate(frame.columns))
    body = []
    for row, texts in zip(pivot.rows, frame.itertuples(index=False)):
        classes = [c for c, on in (("rule", row in pivot.rules), (row_role(pivot, row), row in pivot.roles)) if on]
        cells = []
        for i, (column, text) in enumerate(zip(columns, texts)):
            cell = pivot.cells.get((row, column)) if column in pivot.metrics else None
            raw = f' data-v="{cell.value!r}"' if cell is not None and _finite(cell.value) else ""
            shown = html.escape(str(text))
            if (row, column) in pivot.bold:
                shown = f"<b>{shown}</b>"
            align = "" if is_text[i] else ' class="num"'
            cells.append(f"<td{align}{raw}>{shown}</td>")
        attribute = f' class="{" ".join(classes)}"' if classes else ""
        body.append(f"<tr{attribute}>" + "".join(cells) + "</tr>")
    # in its own box that scrolls sideways if the page is narrower than the table: never off-page
    return (f'<div class="table-box">\n<table class="{table_class}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(body) + "\n</tbody>\n</table>\n</div>")


def to_html(pivot: Pivot, title: str = "diffbench results") -> str:
    table = html_table(pivot)
    caption = f"<p>{html.escape(pivot.caption)}</p>\n" if pivot.caption else ""
    notes = caption + "".join(f"<p>{html.escape(note)}</p>\n" for note in pivot.notes)
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{TABLE_STYLE}</style>\n</head>\n<body>\n{table}\n{notes}"
            "</body>\n</html>\n")


# The tables' own look, shared by table.html and report.html: a box that scrolls sideways instead
# of running off the page, headers that wrap, reference/baseline rows in italics, rules between groups.
TABLE_STYLE = """
div.table-box { max-width: 100%; overflow-x: auto; }
table.results { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
table.results th, table.results td { padding: .3em .6em; border-bottom: 1px solid #e2e2e2; text-align: left; }
table.results th { vertical-align: bottom; }
table.results th.num { text-align: right; }
table.results td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.results tr.reference td, table.results tr.baseline td { font-style: italic; color: #444; }
table.results tr.rule td { border-top: 2px solid #999; }
"""


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
