"""Plots from stored result rows (matplotlib, Agg, no pyplot state):

- metric vs a sweep axis: one line per pipeline (and per value of any other axis that
  varies), error bars from the stored confidence interval;
- Pareto plot of two metrics (e.g. FID vs CLIP score, the Imagen/GLIDE guidance figure):
  one curve per pipeline, points labelled by their sweep value, the non-dominated points
  over all pipelines highlighted (directions from `reports.metric_kinds`);
- an overview (one bar panel per metric) when no sweep axis varies.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from bench.results import param_columns
from reports.load import ReportError, normalise
from reports.metric_kinds import EITHER, LOWER, is_better, metric_kind, metric_sort_key
from reports.tables import sort_key

_DPI = 100
_SAVE = {"dpi": _DPI, "metadata": {"Software": None}}  # no version string: same bytes across installs


def _save(fig: Any, ax: Any, path: str | Path) -> Path:
    """Grid, legend, tight layout; write the figure (parent folders made) and return its path."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **_SAVE)
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


def auto_specs(frame: pd.DataFrame) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Each metric vs each varying axis (where that metric has 2+ points on it); CLIP score
    (x) vs FID (y) when both were measured; and the suites' own Pareto pairs (SUITE_PARETOS)."""
    frame = normalise(frame)
    metrics = sorted(set(frame["metric"]), key=metric_sort_key)
    plots = []
    for axis in varying_axes(frame):
        for metric in metrics:
            values = frame.loc[frame["metric"] == metric, axis].dropna().astype(str)
            if values.nunique() > 1:
                plots.append((metric, axis))
    paretos = [(m, "fid") for m in metrics if "fid" in metrics and "clip" in m.lower()]
    for suite in sorted({s for s in frame["suite"] if s}):
        paretos += [(x, y) for x, y in SUITE_PARETOS.get(suite, [])
                    if x in metrics and y in metrics and (x, y) not in paretos]
    return plots, paretos


def _file_name(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", p).strip("-") for p in parts) + ".png"


def _check_metric(frame: pd.DataFrame, metric: str) -> None:
    if metric not in set(frame["metric"]):
        raise ReportError(f"metric {metric!r} is not in the results; available: "
                          f"{sorted(set(frame['metric']), key=metric_sort_key)}")


def _label(metric: str, unit: str = "") -> str:
    direction = metric_kind(metric).direction
    hint = "" if direction == EITHER else f" ({direction} is better)"
    return f"{metric}{f' [{unit}]' if unit else ''}{hint}"


def _unit(frame: pd.DataFrame, metric: str) -> str:
    return "/".join(sorted({u for u in frame.loc[frame["metric"] == metric, "unit"] if u}))


def _errors(sub: pd.DataFrame) -> list[list[float]]:
    """Asymmetric error bars from ci_low/ci_high; 0 where there is no interval."""
    below = [(v - lo) if math.isfinite(lo) else 0.0 for v, lo in zip(sub["value"], sub["ci_low"])]
    above = [(hi - v) if math.isfinite(hi) else 0.0 for v, hi in zip(sub["value"], sub["ci_high"])]
    return [[max(b, 0.0) for b in below], [max(a, 0.0) for a in above]]


def _group_label(pipeline: str, others: dict[str, Any]) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in others.items())
    return f"{pipeline} ({extra})" if extra else pipeline


def plot_metric_vs_axis(frame: pd.DataFrame, metric: str, axis: str, path: Path) -> Path:
    frame = normalise(frame)
    _check_metric(frame, metric)
    if axis not in param_columns(frame):
        raise ReportError(f"sweep axis {axis!r} is not in the results; available: {param_columns(frame)}")
    sub = frame[(frame["metric"] == metric) & frame[axis].notna()]
    if sub.empty:
        raise ReportError(f"no {metric!r} value has a {axis!r} value to plot against")
    xs = list(sub[axis])
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
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
    else:
        ax.set_xticks(range(len(categories)), [str(v) for v in categories])
    ax.set_xlabel(axis)
    ax.set_ylabel(_label(metric, _unit(sub, metric)))
    ax.set_title(f"{metric} vs {axis}")
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
    labels = f"; labels: {', '.join(label_axes)}" if label_axes else ""
    ax.set_title(f"{metric_y} vs {metric_x} ({best}{labels})", fontsize=10)
    return _save(fig, ax, path)


def plot_overview(frame: pd.DataFrame, path: Path) -> Path:
    """One horizontal-bar panel per metric, a bar per (pipeline, sweep point), CI as error bars."""
    frame = normalise(frame)
    if frame.empty:
        raise ReportError("no result rows to plot")
    metrics = sorted(set(frame["metric"]), key=metric_sort_key)
    params = param_columns(frame)
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(4.2 * cols, 0.6 + rows * (0.6 + 0.3 * frame["pipeline"].nunique())))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, i + 1)
        sub = frame[frame["metric"] == metric]
        sub = sub.assign(_o=[tuple(sort_key(v) for v in r) for r in sub[["pipeline", *params]]
                             .itertuples(index=False)]).sort_values("_o", kind="stable")
        labels = [_group_label(r[0], {k: v for k, v in zip(params, r[1:]) if v is not None})
                  for r in sub[["pipeline", *params]].itertuples(index=False)]
        if len(set(labels)) < len(labels):  # the same point from several runs
            labels = [f"{label} [{run}]" for label, run in zip(labels, sub["run_id"])]
        ax.barh(range(len(sub)), sub["value"].fillna(0.0), xerr=_errors(sub), capsize=2)
        ax.set_yticks(range(len(sub)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(_label(metric, _unit(sub, metric)), fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **_SAVE)
    return Path(path)


def write_plots(frame: pd.DataFrame, out_dir: Path, plots: Sequence[tuple[str, str]] | None = None,
                paretos: Sequence[tuple[str, str]] | None = None) -> list[Path]:
    """The plots asked for, or (when neither list is given) the automatic set; an overview
    when the automatic set is empty. Returns the PNG paths in a fixed order."""
    frame = normalise(frame)
    out_dir = Path(out_dir)
    if plots is None and paretos is None:
        plots, paretos = auto_specs(frame)
        if not plots and not paretos:
            return [] if frame.empty else [plot_overview(frame, out_dir / "overview.png")]
    written = []
    for metric, axis in plots or []:
        written.append(plot_metric_vs_axis(frame, metric, axis, out_dir / _file_name(metric, "vs", axis)))
    for metric_x, metric_y in paretos or []:
        name = _file_name("pareto", metric_y, "vs", metric_x)
        written.append(plot_pareto(frame, metric_x, metric_y, out_dir / name))
    return written
