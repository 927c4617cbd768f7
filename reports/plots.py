"""Plots from stored result rows (matplotlib, Agg, no pyplot state):

- metric vs a sweep axis: one line per pipeline (and per value of any other axis that
  varies), error bars from the stored confidence interval;
- Pareto plot of two metrics (e.g. FID vs CLIP score, the Imagen/GLIDE guidance figure):
  one curve per pipeline, points labelled by their sweep value, the non-dominated points
  over all pipelines highlighted (directions from `reports.metric_kinds`);
- per-model bar charts: FID (and rFID) with their CIs, one bar per pipeline (and sweep point),
  and time per image split into stacked per-stage bars (annotated with images/s) where the
  pipelines have per-stage timings; `--plot METRIC:AXIS` with a categorical axis (pipeline,
  data, ...) is a bar chart too;
- an overview (one bar panel per metric; descriptor rows such as the masks' measured area are
  said in the group headings instead) when no sweep axis varies and nothing else is plotted.

Every bar chart is drawn by reports.bars: bars in the table's row order and comparison groups,
references and baselines gray and hatched, values printed at the bars' ends, a log axis where
positive values span more than 30x.

A line plot needs an axis with at least two numeric values and a series (a pipeline at fixed
other settings) that has two points on it: one point per series on a categorical axis answers
nothing a bar chart does not answer better. A metric that is the same at every point (a one-stage
pipeline's stage_share = 1.0) or repeats another (nfe_per_image[base] = nfe_per_image) gets no
plot; a Pareto plot needs MIN_PARETO_POINTS points (with two, "one beats the other" is a table's
job); an overview needs a metric with two or more bars. Axes and titles use the metric registry's
labels and units ("FID", "images/s"), never raw keys.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from bench.atomic import atomic_savefig
from bench.results import param_columns
from reports.bars import draw_panel, label_lines, role_legend, slots, style_rows, table_layout, wrap
from reports.load import ReportError, normalise
from reports.metric_kinds import EITHER, LOWER, is_better, is_descriptor, metric_kind, metric_sort_key
from reports.plot_labels import AXIS_LABELS, axis_label, axis_title as _label, metric_label, unit_of as _unit
from reports.tables import sort_key

__all__ = ["AXIS_LABELS", "auto_bars", "auto_specs", "axis_label", "metric_label", "pareto_front", "parse_spec",
           "plot_bars", "plot_metric_vs_axis", "plot_overview", "plot_pareto", "plot_stage_times", "write_plots"]

_DPI = 100
_SAVE = {"dpi": _DPI, "metadata": {"Software": None}}  # no version string: same bytes across installs


def _save(fig: Any, ax: Any, path: str | Path) -> Path:
    """Grid, legend, tight layout; write the figure (parent folders made) and return its path."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, path, **_SAVE)   # no half-written image; a failed write names the file
    return Path(path)


def parse_spec(text: str, what: str) -> tuple[str, str]:
    """'fid:guidance_scale' -> ('fid', 'guidance_scale'). Splits at the first colon outside
    brackets, so model-tagged names such as clip_score[hf-hub:org/model] survive."""
    depth = 0
    for i, ch in enumerate(str(text)):
        depth += (ch == "[") - (ch == "]")
        if ch == ":" and depth == 0 and 0 < i < len(text) - 1:
            return text[:i], text[i + 1:]
    raise ReportError(f"{what} spec {text!r} must look like A:B (e.g. fid:guidance_scale)")


def varying_axes(frame: pd.DataFrame) -> list[str]:
    """Sweep columns with more than one distinct value."""
    return [c for c in param_columns(frame) if frame[c].dropna().astype(str).nunique() > 1]


# Suite-specific Pareto figures added to the automatic set (x, y): LDM's FID-vs-throughput
# trade-off over f (Rombach et al. 2022, Fig. 7).
SUITE_PARETOS: dict[str, list[tuple[str, str]]] = {"f_sweep": [("images_per_s", "fid")]}


# A Pareto front over fewer points says no more than the table does (issue 28: the smoke run's two).
MIN_PARETO_POINTS = 3
def _flat(values: Sequence[float]) -> bool:
    """All finite values equal (or fewer than two): a line or bars that say one number."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return len(finite) < 2 or max(finite) - min(finite) <= 1e-9 * max(1.0, max(abs(v) for v in finite))


def _repeats_total(frame: pd.DataFrame, metric: str) -> bool:
    """A per-stage row (`x[stage]`) equal to its total `x` at every point: a one-stage pipeline."""
    match = re.fullmatch(r"(nfe_per_image|stage_s_per_image)\[.+\]", metric)
    if not match:
        return False
    total = "s_per_image" if match.group(1) == "stage_s_per_image" else match.group(1)
    keys = ["run_id", "pipeline", *param_columns(frame)]
    mine = frame[frame["metric"] == metric].set_index(keys)["value"]
    theirs = frame[frame["metric"] == total].set_index(keys)["value"]
    both = mine.index.intersection(theirs.index)
    return len(both) == len(mine) and bool(((mine[both] - theirs[both]).abs() <= 1e-9 * theirs[both].abs()).all())


# Metrics compared model by model in a bar chart when no numeric sweep already plots them.
BAR_METRICS = ("fid", "rfid")
STAGE_PLOT = "time_per_image_by_stage.png"


def is_numeric(values: Sequence[Any]) -> bool:
    """All present values are numbers (bools are not)."""
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


def _series_have_a_line(sub: pd.DataFrame, axis: str) -> bool:
    """Whether some series (pipeline at fixed other varying settings) has 2+ values on `axis`."""
    others = [c for c in varying_axes(sub) if c != axis]
    keyed = sub.assign(_k=[repr(tuple(r)) for r in sub[["pipeline", *others]].itertuples(index=False)])
    return bool((keyed.groupby("_k")[axis].agg(lambda v: v.dropna().astype(str).nunique()) > 1).any())


def line_plot_wanted(frame: pd.DataFrame, metric: str, axis: str) -> bool:
    """A line plot of `metric` vs `axis` answers a question: the axis has 2+ numeric values for
    this metric and some series has 2+ points on it."""
    sub = frame[(frame["metric"] == metric) & frame[axis].notna()]
    return (not sub.empty and is_numeric(list(sub[axis])) and sub[axis].astype(str).nunique() > 1
            and _series_have_a_line(sub, axis) and not _flat(list(sub["value"]))
            and not _repeats_total(frame, metric))


def auto_specs(frame: pd.DataFrame) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Each metric vs each numeric varying axis (where a line plot is wanted, see
    `line_plot_wanted`); CLIP score (x) vs FID (y) over every model that has both (2+ points);
    and the suites' own Pareto pairs (SUITE_PARETOS)."""
    frame = normalise(frame)
    metrics = sorted(set(frame["metric"]), key=metric_sort_key)
    plots = [(metric, axis) for axis in varying_axes(frame) for metric in metrics
             if line_plot_wanted(frame, metric, axis)]
    paretos = [(m, "fid") for m in metrics if "fid" in metrics and "clip" in m.lower()]
    for suite in sorted({s for s in frame["suite"] if s}):
        paretos += [(x, y) for x, y in SUITE_PARETOS.get(suite, [])
                    if x in metrics and y in metrics and (x, y) not in paretos]
    paretos = [(x, y) for x, y in paretos if len(_paired(frame, x, y)) >= MIN_PARETO_POINTS]
    return plots, paretos


def auto_bars(frame: pd.DataFrame, plots: Sequence[tuple[str, str]]) -> list[str]:
    """BAR_METRICS with 2+ values, unless the line plots in `plots` already show every one of
    them (merged runs: the models outside a sweep still get their bars)."""
    frame = normalise(frame)
    wanted = []
    for metric in BAR_METRICS:
        rows = frame[frame["metric"] == metric]
        axes = [axis for m, axis in plots if m == metric]
        shown = rows[axes].notna().any(axis=1) if axes else pd.Series(False, index=rows.index)
        if len(rows) >= 2 and not shown.all():
            wanted.append(metric)
    return wanted


def _file_name(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", p).strip("-") for p in parts) + ".png"


def _check_metric(frame: pd.DataFrame, metric: str) -> None:
    if metric not in set(frame["metric"]):
        raise ReportError(f"metric {metric!r} is not in the results; available: "
                          f"{sorted(set(frame['metric']), key=metric_sort_key)}")


def _errors(sub: pd.DataFrame) -> list[list[float]]:
    """Asymmetric error bars from ci_low/ci_high; 0 where there is no interval."""
    below = [(v - lo) if math.isfinite(lo) else 0.0 for v, lo in zip(sub["value"], sub["ci_low"])]
    above = [(hi - v) if math.isfinite(hi) else 0.0 for v, hi in zip(sub["value"], sub["ci_high"])]
    return [[max(b, 0.0) for b in below], [max(a, 0.0) for a in above]]


def _group_label(pipeline: str, others: dict[str, Any]) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in others.items())
    return f"{pipeline} ({extra})" if extra else pipeline


def _readable_xticks(ax: Any) -> None:
    """Rotate x tick labels that would otherwise overlap (many, or long, labels)."""
    labels = [t.get_text() for t in ax.get_xticklabels()]
    if sum(len(t) for t in labels) > 40 or max((len(t) for t in labels), default=0) > 8:
        for tick in ax.get_xticklabels():
            tick.set_rotation(30)
            tick.set_horizontalalignment("right")


def _save_figure(fig: Any, path: str | Path, top: float = 1.0) -> Path:
    fig.tight_layout(rect=(0, 0, 1, top))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, path, **_SAVE)   # no half-written image; a failed write names the file
    return Path(path)


def _legend_room(height: float) -> float:
    """The top of the panels' area (figure fraction) leaving a band for the role legend."""
    return 1.0 - 0.32 / height


def plot_bars(frame: pd.DataFrame, metric: str, path: Path, axis: str = "pipeline") -> Path:
    """One horizontal bar per `axis` value (and per setting of the other varying columns) in the
    table's order and groups (reports.bars), the stored CI as error bars, the value at each bar's end."""
    frame = normalise(frame)
    _check_metric(frame, metric)
    layout = table_layout(frame, [metric], primary=axis)
    bars = layout.bars_of(metric)
    if not bars:
        raise ReportError(f"no {metric!r} value has a {axis!r} value to plot against")
    height = 1.3 + 0.2 * label_lines(layout, bars)
    fig = Figure(figsize=(6.4, height))
    ax = fig.add_subplot()
    sub = frame[frame["metric"] == metric]
    has_ci = bool(sub["ci_low"].notna().any())
    ci = "; error bars: the stored CI" if has_ci else ""
    draw_panel(ax, layout, metric, bars, f"{metric_label(metric)} by {axis_label(axis)}{ci}")
    ax.title.set_fontsize(10)
    ax.set_xlabel(_label(metric, _unit(sub, metric)))
    legend = role_legend(fig, layout)
    return _save_figure(fig, path, _legend_room(height) if legend else 1.0)


def _stage_of(metric: str, prefix: str) -> str | None:
    match = re.fullmatch(re.escape(prefix) + r"\[(.+)\]", metric)
    return match.group(1) if match else None


def stage_time_wanted(frame: pd.DataFrame) -> bool:
    """Per-stage timings exist for at least one pipeline, and s/image for two bars or more."""
    frame = normalise(frame)   # a stage that is the whole time of its pipeline splits nothing
    return (any(_stage_of(m, "stage_s_per_image") and not _repeats_total(frame, m) for m in set(frame["metric"]))
            and (frame["metric"] == "s_per_image").sum() >= 2)


def plot_stage_times(frame: pd.DataFrame, path: Path) -> Path:
    """Seconds per image as stacked per-stage bars (stage_s_per_image[stage] rows, the stages in
    pipeline order; the rest of the total as 'other'), one bar per pipeline and sweep point in the
    table's order and groups (reports.bars), annotated with images/s: where a pipeline's sampling
    time goes, and how the models compare."""
    frame = normalise(frame)
    _check_metric(frame, "s_per_image")
    stages = {m for m in frame["metric"] if _stage_of(m, "stage_s_per_image")}
    layout = table_layout(frame, ["s_per_image", "images_per_s", *stages])
    bars = layout.bars_of("s_per_image")
    placed = slots(layout, bars)
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
               "tab:olive", "tab:cyan"]
    colours: dict[str, str] = {}   # one colour per stage name across bars (first come, first served)
    height = 1.5 + 0.2 * label_lines(layout, bars)
    fig = Figure(figsize=(7.2, height))
    ax = fig.add_subplot()
    ends = []
    for y, bar, _ in placed:
        if bar is None:
            continue
        total = layout.cells[(bar.key, "s_per_image")][0]
        segments = [(_stage_of(m, "stage_s_per_image"), cell[0]) for (key, m), cell in layout.cells.items()
                    if key == bar.key and m in stages and math.isfinite(cell[0])]   # in the order written
        rest = total - sum(v for _, v in segments)
        if rest > 0.005 * total:
            segments.append(("other", rest))
        left = 0.0
        for stage, seconds in segments:
            new = stage not in colours
            colours.setdefault(stage, "lightgray" if stage == "other" else palette[len(colours) % len(palette)])
            ax.barh(y, seconds, left=left, height=0.7, color=colours[stage], label=stage if new else "_nolegend_",
                    **({} if bar.role == "method" else {"hatch": "////", "edgecolor": "0.45", "linewidth": 0.5}))
            left += seconds
        ends.append(left)
        ips = layout.cells.get((bar.key, "images_per_s"))
        throughput = ips[0] if ips else 1.0 / total
        ax.annotate(f"{throughput:.3g} img/s", (left, y), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=7)
    style_rows(ax, layout, placed, labels=True)
    ax.set_xlim(0, max(ends) * 1.25 if ends and max(ends) > 0 else 1)
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.set_xlabel("seconds per image (lower is better), split by stage")
    ax.set_title("time per image by stage (annotated: throughput)", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="stage", title_fontsize=7)
    return _save_figure(fig, path)


def plot_metric_vs_axis(frame: pd.DataFrame, metric: str, axis: str, path: Path) -> Path:
    """A line per series against a numeric axis; a bar chart against `pipeline` or a
    categorical axis (one bar per value, labelled with the other settings that vary)."""
    frame = normalise(frame)
    _check_metric(frame, metric)
    if axis != "pipeline" and axis not in param_columns(frame):
        raise ReportError(f"axis {axis!r} is not in the results; available: {['pipeline', *param_columns(frame)]}")
    sub = frame[(frame["metric"] == metric) & frame[axis].notna()]
    if sub.empty:
        raise ReportError(f"no {metric!r} value has a {axis!r} value to plot against")
    xs = list(sub[axis])
    if axis == "pipeline" or not is_numeric(xs):
        return plot_bars(frame, metric, path, axis=axis)
    numeric = True
    categories = sorted(set(xs), key=sort_key)
    others = [c for c in varying_axes(sub) if c != axis]
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    groups = [(tuple(None if v != v else v for v in (k if isinstance(k, tuple) else (k,))), g)
              for k, g in sub.groupby(["pipeline", *others], sort=False, dropna=False)]
    for group_key, group in sorted(groups, key=lambda kg: tuple(sort_key(v) for v in kg[0])):
        group = group.assign(_x=group[axis].map(sort_key)).sort_values("_x", kind="stable")
        x = list(group[axis]) if numeric else [categories.index(v) for v in group[axis]]
        ax.errorbar(x, group["value"], yerr=_errors(group), marker="o", capsize=3,
                    label=_group_label(group_key[0], dict(zip(others, group_key[1:]))))
    if numeric:
        lo, hi = min(xs), max(xs)
        if lo > 0 and hi / lo >= 10 and len(categories) >= 3:
            powers_of_two = all(float(v).is_integer() and int(v) & (int(v) - 1) == 0 for v in xs)
            ax.set_xscale("log", base=2 if powers_of_two else 10)
            ax.xaxis.set_minor_formatter(NullFormatter())
        if len(categories) <= 12:  # tick exactly the swept values, spelled as in the table
            ax.set_xticks(categories, [str(v) for v in categories])
    _readable_xticks(ax)
    ax.set_xlabel(axis_label(axis))
    ax.set_ylabel(_label(metric, _unit(sub, metric)))
    ax.set_title(f"{metric_label(metric)} vs {axis_label(axis)}")
    return _save(fig, ax, path)


def pareto_front(xs: Sequence[float], ys: Sequence[float], dir_x: str, dir_y: str) -> list[int]:
    """Indices of the points no other point dominates (at least as good on both metrics and
    strictly better on one), sorted by x."""
    points = [(i, x, y) for i, (x, y) in enumerate(zip(xs, ys)) if math.isfinite(x) and math.isfinite(y)]
    front = []
    for i, x, y in points:
        dominated = any(
            (not is_better(dir_x, x, ox)) and (not is_better(dir_y, y, oy))
            and (is_better(dir_x, ox, x) or is_better(dir_y, oy, y))
            for j, ox, oy in points if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (xs[i], ys[i]))


def _paired(frame: pd.DataFrame, metric_x: str, metric_y: str) -> pd.DataFrame:
    """One row per point measured with both metrics: its sweep values, x, y and their CIs."""
    keys = ["pipeline", *param_columns(frame)]

    def part(metric: str, tag: str, keys: list[str]) -> pd.DataFrame:
        sub = frame.loc[frame["metric"] == metric, [*keys, "value", "ci_low", "ci_high"]].copy()
        sub["_key"] = [repr(tuple(r)) for r in sub[keys].itertuples(index=False)]
        return sub.rename(columns={"value": tag, "ci_low": f"{tag}_low", "ci_high": f"{tag}_high"})

    xs, ys = part(metric_x, "x", keys), part(metric_y, "y", keys)
    if xs["_key"].duplicated().any() or ys["_key"].duplicated().any():
        keys = [*keys, "run_id"]  # the same point in several runs: pair within each run
        xs, ys = part(metric_x, "x", keys), part(metric_y, "y", keys)
    merged = xs.merge(ys.drop(columns=keys), on="_key", how="inner")
    return merged.drop(columns="_key").reset_index(drop=True)


def plot_pareto(frame: pd.DataFrame, metric_x: str, metric_y: str, path: Path) -> Path:
    frame = normalise(frame)
    for metric in (metric_x, metric_y):
        _check_metric(frame, metric)
        if metric_kind(metric).direction == EITHER:
            raise ReportError(f"metric {metric!r} has no known better direction, so a Pareto front "
                              "is undefined; pick metrics such as fid, clip_score, images_per_s")
    points = _paired(frame, metric_x, metric_y)
    if points.empty:
        raise ReportError(f"no point has both {metric_x!r} and {metric_y!r}; a Pareto plot needs "
                          "both metrics measured at the same sweep points")
    dir_x, dir_y = metric_kind(metric_x).direction, metric_kind(metric_y).direction
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    label_axes = [c for c in param_columns(frame) if points[c].dropna().astype(str).nunique() > 1]
    for pipeline, group in points.groupby("pipeline", sort=True):
        own = [c for c in label_axes if group[c].dropna().astype(str).nunique() > 1] or label_axes
        group = group.assign(_o=[tuple(sort_key(v) for v in r) for r in group[own].itertuples(index=False)]) \
            .sort_values("_o", kind="stable") if own else group
        xerr = _errors(group.rename(columns={"x": "value", "x_low": "ci_low", "x_high": "ci_high"}))
        yerr = _errors(group.rename(columns={"y": "value", "y_low": "ci_low", "y_high": "ci_high"}))
        ax.errorbar(group["x"], group["y"], xerr=xerr, yerr=yerr, marker="o", capsize=2, label=pipeline)
        values = group[own].itertuples(index=False) if own else [()] * len(group)
        for x, y, point in zip(group["x"], group["y"], values):
            text = ", ".join(str(v) for v in point if v is not None)
            if text:
                ax.annotate(text, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    front = pareto_front(list(points["x"]), list(points["y"]), dir_x, dir_y)
    if front:
        fx, fy = points["x"].iloc[front], points["y"].iloc[front]
        ax.plot(fx, fy, color="black", alpha=0.25, linewidth=6, zorder=0, label="Pareto front")
        ax.scatter(fx, fy, s=120, facecolors="none", edgecolors="black", zorder=3)
    ax.set_xlabel(_label(metric_x, _unit(frame, metric_x)))
    ax.set_ylabel(_label(metric_y, _unit(frame, metric_y)))
    best = f"best: {'left' if dir_x == LOWER else 'right'}, {'bottom' if dir_y == LOWER else 'top'}"
    labels = f"; labels: {', '.join(axis_label(a) for a in label_axes)}" if label_axes else ""
    ax.set_title(f"{metric_label(metric_y)} vs {metric_label(metric_x)} ({best}{labels})", fontsize=10)
    return _save(fig, ax, path)


def overview_metrics(frame: pd.DataFrame) -> list[str]:
    """The overview's panels: every metric with two or more values, but per-stage rows (the stacked
    time plot's) and descriptors (a measured setting such as the masks' area: said in the group
    headings, not compared as a result)."""
    return [m for m in sorted(set(frame["metric"]), key=metric_sort_key)
            if (frame["metric"] == m).sum() >= 2 and not re.fullmatch(r"(stage_\w+|nfe_per_image)\[.+\]", m)
            and not is_descriptor(m)]


def plot_overview(frame: pd.DataFrame, path: Path) -> Path:
    """One horizontal-bar panel per metric, a bar per (pipeline, sweep point) in the table's order
    and groups (reports.bars), CI as error bars. Where the panels show (nearly) the same rows, the
    rows line up across panels like a table's and only the first column is labelled."""
    frame = normalise(frame)
    if frame.empty:
        raise ReportError("no result rows to plot")
    metrics = overview_metrics(frame)
    if not metrics:
        raise ReportError("no metric has two or more values to compare; the table says it all")
    layout = table_layout(frame, metrics)
    panels = {metric: layout.bars_of(metric) for metric in metrics}
    shared = all(2 * len(bars) >= len(layout.bars) for bars in panels.values())
    if shared:
        panels = {metric: layout.bars for metric in metrics}
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    lines = max(label_lines(layout, bars) for bars in panels.values())
    widest = max((len(line) for b in layout.bars for line in wrap(b.label).split("\n")), default=10)
    label_width = min(2.4, 0.3 + 0.055 * widest)   # inches of tick labels at 7 pt
    width = (label_width + 3.3 * cols) if shared else (label_width + 3.3) * cols
    height = 0.4 + rows * (0.75 + 0.18 * lines)
    fig = Figure(figsize=(width, height))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, i + 1)
        sub = frame[frame["metric"] == metric]
        draw_panel(ax, layout, metric, panels[metric], _label(metric, _unit(sub, metric)),
                   labels=not shared or i % cols == 0)
    legend = role_legend(fig, layout)
    return _save_figure(fig, path, _legend_room(height) if legend else 1.0)


def write_plots(frame: pd.DataFrame, out_dir: Path, plots: Sequence[tuple[str, str]] | None = None,
                paretos: Sequence[tuple[str, str]] | None = None) -> list[Path]:
    """The plots asked for, or (when neither list is given) the automatic set; an overview
    when the automatic set is empty. Returns the PNG paths in a fixed order."""
    frame = normalise(frame)
    out_dir = Path(out_dir)
    bars: list[str] = []
    stage_plot = False
    written = []
    if plots is None and paretos is None:
        plots, paretos = auto_specs(frame)
        bars, stage_plot = auto_bars(frame, plots), stage_time_wanted(frame)
        if not plots and not paretos and not frame.empty:   # the overview holds the per-model bars then
            if overview_metrics(frame):   # one bar per panel would only repeat the table
                written.append(plot_overview(frame, out_dir / "overview.png"))
            bars = []
    for metric, axis in plots or []:
        kind = "vs" if axis in param_columns(frame) and is_numeric(list(frame[axis].dropna())) else "by"
        written.append(plot_metric_vs_axis(frame, metric, axis, out_dir / _file_name(metric, kind, axis)))
    for metric in bars:
        written.append(plot_bars(frame, metric, out_dir / _file_name(metric, "by", "pipeline")))
    if stage_plot:
        written.append(plot_stage_times(frame, out_dir / STAGE_PLOT))
    for metric_x, metric_y in paretos or []:
        name = _file_name("pareto", metric_y, "vs", metric_x)
        written.append(plot_pareto(frame, metric_x, metric_y, out_dir / name))
    return written
