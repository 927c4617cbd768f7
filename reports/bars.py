"""Bar panels that read like the report's tables (issue 28).

- Bars come in the order the table puts its rows: grouped by the settings that define a
  comparison (a task table's `group_by`: factor and degradation, mask set; else the comparison
  settings that vary: data set, ...), references and baselines first in their group, then the
  methods; each group under a heading naming its settings (and what a descriptor row measured
  of them, e.g. the masks' area).
- References and baselines (the table's italics) are drawn gray and hatched, their labels in
  italics; `role_legend` says so once per figure.
- The value is printed at each bar's end (after its error bar), with what went into a mean
  ("1 of 8 exact"); an infinite value (an exact reproduction's PSNR) reads "∞ (exact)", a bar
  with no value "–".
- Timings (throughput, time per image) whose positive values span more than LOG_SPAN
  (interpolation at 12,000 img/s beside diffusion models at 9) get a log axis, said in the panel's
  title; quality metrics stay linear, as papers draw them (a bar's length is its value).
"""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullFormatter

from bench.results import DETAILS_COLUMN, param_columns
from reports.load import canonical_value
from reports.metric_kinds import display_label, is_descriptor, metric_kind
from reports.plot_labels import axis_label
from reports.captions import format_setting
from reports.sections import NOT_SETTINGS, comparison_columns, expand_pipeline_params
from reports.table_spec import TASK_TABLES, load_spec
from reports.tables import ROLES, cell_details, row_roles, sort_key

LOG_SPAN = 30.0        # positive values spanning more than this factor: a log axis (issue 28)
METHOD_STYLE = {"facecolor": "tab:blue"}
SCALE_STYLE = {"facecolor": "0.86", "hatch": "////", "edgecolor": "0.45", "linewidth": 0.5}
SCALE_LABEL = "reference / baseline"
_FILL = 0.78           # share of a panel's width for bars and error bars; the rest holds the printed values
_ROLE_RANK = {role: i for i, role in enumerate(ROLES)}
# Group headings: "×2, degradation bicubic", "box mask, area ratio 0.25 (measured 0.25)"
_HEADINGS = {"task": "{}", "factor": "×{}", "mask": "{} mask", "mask_ratio": "area ratio {}"}
_DESCRIBED = {"mask_area_ratio": "measured {}"}   # beside "area ratio 0.25": what the masks made


@dataclass(frozen=True)
class Bar:
    key: tuple        # its values of Layout.keys
    group: tuple      # its values of Layout.groups
    role: str         # method | reference | baseline
    label: str


@dataclass
class Layout:
    groups: list[str]                 # settings whose values make a comparison group
    keys: list[str]                   # groups, then the settings that tell a group's bars apart
    bars: list[Bar]                   # in table order
    cells: dict[tuple[tuple, str], tuple[float, float, float, str]]   # (bar key, metric) -> value, low, high, note
    headings: dict[tuple, str] = field(default_factory=dict)          # group values -> heading

    def bars_of(self, metric: str) -> list[Bar]:
        return [b for b in self.bars if (b.key, metric) in self.cells]


def group_columns(frame: pd.DataFrame) -> list[str]:
    """The settings the report's table groups these rows by: a task table's preset `group_by`
    (reports.table_spec.TASK_TABLES) when every row is that task's, else the comparison settings
    that vary, in column order, as reports.sections' tables do."""
    varying = [c for c in param_columns(frame) if c not in NOT_SETTINGS and frame[c].map(str).nunique() > 1]
    for column, value, preset, *_ in TASK_TABLES:
        if column in frame.columns and len(frame) and (frame[column].map(canonical_value) == value).all():
            wanted = load_spec(preset).group_by
            if wanted is not None:
                return [c for c in wanted if c in varying]
    return comparison_columns(varying)


def _varies_within(rows: pd.DataFrame, by: list[str], column: str) -> bool:
    keyed = pd.Series([repr(tuple(r)) for r in rows[by].itertuples(index=False)], index=rows.index)
    return bool((rows[column].map(repr).groupby(keyed).nunique() > 1).any())


def table_layout(frame: pd.DataFrame, metrics: Sequence[str], primary: str = "pipeline") -> Layout:
    """The bars of `metrics` (normalised rows), one per `primary` value and setting that tells
    rows of a group apart, in the table's order."""
    full = expand_pipeline_params(frame)   # adapter runs told apart by adapter, adapter_scale
    rows = full[full["metric"].isin(list(metrics)) & full[primary].notna()]
    groups = [c for c in group_columns(rows) if c != primary]
    settings = [c for c in ["pipeline", *param_columns(rows)] if c not in (*NOT_SETTINGS, *groups, primary)]
    extra: list[str] = []
    for column in settings:   # only what still tells bars apart: a fixed-by-the-group input size adds nothing
        if _varies_within(rows, [*groups, primary, *extra, "metric"], column):
            extra.append(column)
    keys = [*groups, primary, *extra]
    if rows[[*keys, "metric"]].astype(str).duplicated().any():
        keys.append("run_id")   # the same point measured in several runs: one bar per run
    details = rows[DETAILS_COLUMN] if DETAILS_COLUMN in rows.columns else pd.Series("", index=rows.index)
    roles: dict[tuple, str] = {}
    cells = {}
    for rec, role, text in zip(rows[[*keys, "metric", "value", "ci_low", "ci_high"]].itertuples(index=False),
                               row_roles(rows), details):
        *key, metric, value, low, high = rec
        roles.setdefault(tuple(key), role)
        cells[(tuple(key), metric)] = (float(value), float(low), float(high), cell_details(text)[0])
    n = len(groups)
    order = sorted(roles, key=lambda k: (tuple(sort_key(v) for v in k[:n]), _ROLE_RANK[roles[k]],
                                         tuple(sort_key(v) for v in k[n:])))
    bars = [Bar(k, k[:n], roles[k], _bar_label(keys[n:], k[n:])) for k in order]
    # a setting with one value wherever it is set (a mask seed, absent from superres rows) says nothing in a heading
    said = [c for c in groups if rows[c].dropna().map(repr).nunique() > 1]
    headings = {b.group: _heading(groups, said, b.group, full) for b in bars} if groups else {}
    return Layout(groups, keys, bars, cells, headings)


def _bar_label(columns: Sequence[str], values: Sequence[Any]) -> str:
    extra = [f"{c}={format_setting(v, c)}" for c, v in zip(columns[1:], values[1:]) if v is not None and c != "run_id"]
    label = f"{values[0]} ({', '.join(extra)})" if extra else str(values[0])
    return f"{label} [{values[-1]}]" if columns[-1] == "run_id" else label


def _heading(groups: Sequence[str], said: Sequence[str], values: Sequence[Any], frame: pd.DataFrame) -> str:
    parts = [_HEADINGS[c].format(format_setting(v, c)) if c in _HEADINGS else f"{axis_label(c)} {format_setting(v, c)}"
             for c, v in zip(groups, values) if v is not None and c in said]
    mine = frame
    for column, value in zip(groups, values):
        mine = mine[mine[column].map(lambda x, value=value: x == value)]
    notes = []
    for metric in sorted({m for m in mine["metric"] if is_descriptor(m)}):
        measured = {format(v, ".3g") for v in mine.loc[mine["metric"] == metric, "value"]}
        if len(measured) == 1:   # a setting measured: said beside the setting, not a panel of its own
            notes.append(_DESCRIBED.get(metric, display_label(metric) + " {}").format(measured.pop()))
    text = ", ".join(parts)
    return f"{text} ({'; '.join(notes)})" if notes and text else text or "; ".join(notes)


def wrap(text: str, width: int = 30) -> str:
    """Long labels over several lines instead of running into the next one."""
    return "\n".join(textwrap.wrap(str(text), width, break_long_words=False, break_on_hyphens=False)) or str(text)


def slots(layout: Layout, bars: Sequence[Bar]) -> list[tuple[float, Bar | None, tuple]]:
    """(y, bar or None for a group's heading, group) from the top: a heading slot before each group
    where the bars fall in two groups or more."""
    out: list[tuple[float, Bar | None, tuple]] = []
    current: tuple | None = None
    headed = len({bar.group for bar in bars}) > 1   # one group: the table's caption names its settings
    for bar in bars:
        if headed and bar.group != current:
            out.append((float(len(out)), None, bar.group))
            current = bar.group
        out.append((float(len(out)), bar, bar.group))
    return out


def label_lines(layout: Layout, bars: Sequence[Bar]) -> int:
    return sum(1 if bar is None else wrap(bar.label).count("\n") + 1 for _, bar, _ in slots(layout, bars))


def value_text(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def wants_log(metric: str, values: Sequence[float]) -> bool:
    if not metric_kind(metric).timing:
        return False
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > LOG_SPAN


def style_rows(ax: Any, layout: Layout, placed: Sequence[tuple[float, Bar | None, tuple]], labels: bool) -> None:
    """Tick labels (italic for references and baselines), group headings inside the panel with a
    rule above every group but the first; the first row at the top."""
    ys = [y for y, bar, _ in placed if bar is not None]
    texts = [wrap(bar.label) if labels else "" for _, bar, _ in placed if bar is not None]
    ax.set_yticks(ys, texts, fontsize=7)
    for tick, bar in zip(ax.get_yticklabels(), [b for _, b, _ in placed if b is not None]):
        if bar.role != "method":
            tick.set_fontstyle("italic")
    ax.tick_params(axis="y", length=0)
    for y, bar, group in placed:
        if bar is None:
            if y > 0:
                ax.axhline(y - 0.5, color="0.6", linewidth=0.6)
            ax.text(0.01, y, layout.headings.get(group, ""), transform=ax.get_yaxis_transform(), fontsize=7,
                    fontweight="bold", va="center", ha="left", color="0.2")
    ax.set_ylim(len(placed) - 0.5, -0.5)


def draw_panel(ax: Any, layout: Layout, metric: str, bars: Sequence[Bar], title: str, labels: bool = True) -> None:
    """One metric's bars on `ax` at the slots of `bars` (those without a value say "–")."""
    placed = slots(layout, bars)
    cells = [(y, bar, layout.cells.get((bar.key, metric))) for y, bar, _ in placed if bar is not None]
    values = [c[0] for _, _, c in cells if c is not None]
    log = wants_log(metric, values)
    finite = [v for v in values if math.isfinite(v)]
    base = 10.0 ** math.floor(math.log10(min(finite))) if log else 0.0
    ends, lows = [base], [base]
    exact = metric_kind(metric).group == "psnr"   # infinite PSNR: the output is its ground truth
    for y, bar, cell in cells:
        if cell is None or not math.isfinite(cell[0]):
            text = "–" if cell is None else value_text(cell[0]) + (" (exact)" if exact and cell[0] > 0 else "")
            ax.annotate(text, (base, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7,
                        color="0.3" if cell is None else "black", fontweight="normal" if cell is None else "bold")
            continue
        value, low, high, note = cell
        ax.barh(y, value - base, left=base, height=0.7, **(METHOD_STYLE if bar.role == "method" else SCALE_STYLE))
        end = value if value >= 0 else 0.0
        if math.isfinite(low) and math.isfinite(high):
            below, above = max(value - max(low, base if log else low), 0.0), max(high - value, 0.0)
            ax.errorbar(value, y, xerr=[[below], [above]], fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
            end, low = max(end, high), min(value, low)
        else:
            low = value
        ends.append(end)
        lows.append(low)
        text = value_text(value) + (f" ({note})" if note else "")
        ax.annotate(text, (end, y), xytext=(2, 0), textcoords="offset points", va="center", fontsize=6.5)
    top = max(ends)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(base, base * (top / base) ** (1 / _FILL))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        left = min(lows)
        span = (top - left) or 1.0
        ax.set_xlim(left - (0.03 * span if left < 0 else 0.0), left + span / _FILL)
        ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.tick_params(axis="x", labelsize=7)
    style_rows(ax, layout, placed, labels)
    ax.set_title(f"{title}{' (log scale)' if log else ''}", fontsize=9)
    ax.grid(alpha=0.3, axis="x")


def role_legend(fig: Any, layout: Layout) -> bool:
    """'method' and 'reference / baseline' patches above the panels, where both are drawn."""
    if all(b.role == "method" for b in layout.bars) or all(b.role != "method" for b in layout.bars):
        return False
    handles = [Patch(label="method", **METHOD_STYLE), Patch(label=SCALE_LABEL, **SCALE_STYLE)]
    fig.legend(handles=handles, loc="upper center", ncol=2, fontsize=7, frameon=False)
    return True
