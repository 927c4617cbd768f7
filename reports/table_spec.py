"""Table specs: which rows, columns, order, precision, CI display, bold and format a table has,
as a YAML file or one of the presets in reports/presets/ (`python -m reports RUNS table=NAME`).

Schema (every key optional except `columns`; unknown keys are refused):

    title: Autoencoders              # a heading (Markdown/HTML) or a comment (LaTeX)
    where:                           # keep only rows whose column has this value (or one of a list)
      family: autoencoder
    rows: [pipeline]                 # group by: these columns identify a row (default [pipeline]);
                                     # any other setting that differs inside a group splits it and
                                     # is shown as a column too, never averaged away
    columns:                         # in order; a name, or a mapping with `metric` or `setting`
      - f                            # a setting (a sweep column of results.csv) ...
      - metric: rfid                 # ... or a metric (registered in bench.metrics.registry, or in
        label: rFID                  #     the results); "clip_score" also takes "clip_score[model]"
        decimals: 2                  # fixed decimals (default: from the CI, else the metric's own)
        optional: true               # leave the column out (said in a note) when no row has it
    sort: [f, -fid]                  # row order; "-" sorts descending (default: the rows columns)
    ci: auto                         # auto | pm | interval | none ("±" only for symmetric CIs either
                                     # way; Wilson / bootstrap / min-max intervals as [low, high])
    bold_best: true                  # the best method's value per metric column in bold (by its
                                     # direction); never a reference or baseline row (the `role`
                                     # column: identity, interpolation, base model), set in italics
    group_by: [mask, mask_ratio]     # bold is chosen within each group of these settings' values,
                                     # rows are ordered by group with a rule between groups
                                     # (default: the row columns that say what was measured against:
                                     # data, task, factor, degradation, mask, ...; [] = one group)
    format: markdown                 # markdown | latex | csv | html (the command line's format= wins)
    constant_settings: column        # column: listed settings stay columns even when every row shares
                                     # one value; caption: those go to the caption line above the
                                     # table, as unlisted shared settings always do

Settings that differ between methods but not within one (a sampler, RePaint's jump_length) are
said per method in the caption ("Per method: ..."), not as columns that are "–" in most rows.

`report_sections` gives the sectioned report its task tables: rows of an image-to-image task
(`task` superres / inpaint) and of `suite=lora_sweep` are shown by their preset (ldm_superres,
ldm_inpainting, lora_sweep) under a task-named heading, their other metrics named in a note; every
other row goes to reports.sections' generic sections.

Reads stored rows only (reports.load); errors are SpecError (a ReportError: exit code 2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import yaml

from bench.metrics.registry import row_kinds
from bench.results import CORE_COLUMNS, param_columns
from reports.load import ReportError, canonical_value, normalise
from reports.metric_kinds import metric_sort_key
from reports.sections import (COMPARISON_SETTINGS, IDENTITY_SETTINGS, NOT_SETTINGS, Section, SectionTable,
                              base_name, build_sections, comparison_columns, expand_pipeline_params,
                              format_setting, metric_labels, settings_caption)
from reports.tables import (CI_STYLES, Pivot, apply_groups, build_pivot, finish_notes, mark_best, row_roles, sort_key,
                            to_csv, to_html, to_latex, to_markdown)

PRESET_DIR = Path(__file__).resolve().parent / "presets"
SPEC_KEYS = ("title", "where", "rows", "columns", "sort", "ci", "bold_best", "group_by", "format",
             "constant_settings")
COLUMN_KEYS = ("metric", "setting", "label", "decimals", "optional")
FORMAT_NAMES = {"markdown": "md", "md": "md", "latex": "tex", "tex": "tex", "csv": "csv", "html": "html"}
ROW_KEYS = ("pipeline", "family", "suite", "run_id")   # row identities besides the settings


class SpecError(ReportError):
    """A table spec that cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Column:
    name: str
    is_metric: bool | None      # None: a bare name, decided against the results
    label: str | None = None
    decimals: int | None = None
    optional: bool = False


@dataclass
class TableSpec:
    name: str
    columns: list[Column]
    title: str = ""
    where: dict[str, list[Any]] = field(default_factory=dict)
    rows: list[str] = field(default_factory=lambda: ["pipeline"])
    sort: list[str] = field(default_factory=list)
    ci: str = "auto"
    bold_best: bool = True
    group_by: list[str] | None = None   # None: the comparison settings among the row columns
    format: str = "md"
    constant_settings: str = "column"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_spec(name_or_path: str | Path) -> TableSpec:
    """A preset by name (reports/presets/NAME.yaml) or a YAML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if not path.is_file():
        preset = PRESET_DIR / f"{text}.yaml"
        if text in preset_names():
            path = preset
        else:
            raise SpecError(f"table={text}: neither a preset nor a YAML file; presets: {preset_names()} "
                            "(or pass the path of your own spec, see reports/table_spec.py for the schema)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"table spec {path}: not readable as YAML ({err}); fix the file") from err
    return parse_spec(data, path.stem, where=str(path))


def parse_spec(data: Any, name: str, where: str = "table spec") -> TableSpec:
    """Check every key and value; metric names are checked against the registry later, together
    with the results (a metric a run wrote but nothing registers, e.g. a loss, is allowed)."""
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: a table spec is a mapping with keys {list(SPEC_KEYS)}; got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - set(SPEC_KEYS))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; a table spec takes {list(SPEC_KEYS)}")
    if not data.get("columns"):
        raise SpecError(f"{where}: 'columns' is missing or empty; list the metrics and settings to show")
    columns = [_column(entry, f"{where}: columns[{i}]") for i, entry in enumerate(_list(data["columns"], where, "columns"))]
    spec = TableSpec(name=name, columns=columns, title=str(data.get("title") or ""))
    where_ = data.get("where") or {}
    if not isinstance(where_, Mapping):
        raise SpecError(f"{where}: 'where' must map a column to a value or a list of values")
    spec.where = {str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in where_.items()}
    if "rows" in data:
        spec.rows = [str(r) for r in _list(data["rows"], where, "rows")]
    spec.sort = [str(s) for s in _list(data.get("sort") or [], where, "sort")]
    spec.ci = _choice(data.get("ci", "auto"), CI_STYLES, where, "ci")
    bold = data.get("bold_best", True)
    if not isinstance(bold, bool):
        raise SpecError(f"{where}: 'bold_best' must be true or false, got {bold!r}")
    spec.bold_best = bold
    if data.get("group_by") is not None:
        spec.group_by = [str(g) for g in _list(data["group_by"], where, "group_by")]
    spec.format = format_extension(data.get("format", "markdown"), f"{where}: 'format'")
    spec.constant_settings = _choice(data.get("constant_settings", "column"), ("caption", "column"), where,
                                     "constant_settings")
    return spec


def format_extension(name: Any, what: str = "format") -> str:
    if str(name) not in FORMAT_NAMES:
        raise SpecError(f"{what}: unknown format {name!r}; choose from {sorted(set(FORMAT_NAMES) - {'md', 'tex'})}")
    return FORMAT_NAMES[str(name)]


def _list(value: Any, where: str, key: str) -> list[Any]:
    if isinstance(value, (str, Mapping)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{where}: '{key}' must be a list, got {value!r}")
    return list(value)


def _choice(value: Any, allowed: Sequence[str], where: str, key: str) -> str:
    if str(value) not in allowed:
        raise SpecError(f"{where}: '{key}' is {value!r}; choose from {list(allowed)}")
    return str(value)


def _column(entry: Any, where: str) -> Column:
    if isinstance(entry, str):
        return Column(entry, None)
    if not isinstance(entry, Mapping):
        raise SpecError(f"{where}: a column is a name or a mapping with 'metric' or 'setting'; got {entry!r}")
    unknown = sorted(set(map(str, entry)) - set(COLUMN_KEYS))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; a column takes {list(COLUMN_KEYS)}")
    if ("metric" in entry) == ("setting" in entry):
        raise SpecError(f"{where}: give exactly one of 'metric' or 'setting'")
    decimals = entry.get("decimals")
    if decimals is not None and (not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 10):
        raise SpecError(f"{where}: 'decimals' must be a whole number from 0 to 10, got {decimals!r}")
    optional = entry.get("optional", False)
    if not isinstance(optional, bool):
        raise SpecError(f"{where}: 'optional' must be true or false, got {optional!r}")
    is_metric = "metric" in entry
    return Column(str(entry["metric" if is_metric else "setting"]), is_metric,
                  None if entry.get("label") is None else str(entry["label"]), decimals, optional)


# ---- building the table ---------------------------------------------------------------------

def registered_metrics() -> set[str]:
    return {kind.name for kind in row_kinds()}


def build_spec_table(frame: pd.DataFrame, spec: TableSpec) -> Pivot:
    """The spec's pivot over the rows: filtered, grouped, its columns in its order."""
    frame = expand_pipeline_params(normalise(frame))
    known = {*CORE_COLUMNS, *param_columns(frame)}
    grouping = [g for g in spec.group_by or [] if g not in COMPARISON_SETTINGS]   # those may be absent (one group)
    for col in [*spec.where, *spec.rows, *(s.lstrip("-") for s in spec.sort), *grouping]:
        if col not in known and not _is_metric_name(col, frame):
            raise SpecError(f"table {spec.name}: column {col!r} is not in the results; settings there: "
                            f"{param_columns(frame)}, and {list(ROW_KEYS)}")
    for col, values in spec.where.items():
        wanted = {canonical_value(v) for v in values}
        frame = frame[frame[col].map(canonical_value).isin(wanted)]
    metrics, settings, labels, decimals, missing = [], [], {}, {}, []
    for column in spec.columns:
        matched = _metrics_matching(column.name, frame) if column.is_metric is not False else []
        if column.is_metric is None and column.name in known:
            settings.append(column.name)
            if column.label:
                labels[column.name] = column.label
            continue
        if column.is_metric is False:
            if column.name not in known:
                raise SpecError(f"table {spec.name}: setting {column.name!r} is not in the results; settings "
                                f"there: {param_columns(frame)}")
            settings.append(column.name)
            if column.label:
                labels[column.name] = column.label
            continue
        if not matched:
            if column.name not in registered_metrics() and base_name(column.name) not in registered_metrics():
                raise SpecError(f"table {spec.name}: {column.name!r} is neither a metric (registered: "
                                f"{sorted(registered_metrics())}) nor a setting in the results ({param_columns(frame)})")
            if column.optional:
                missing.append(column.name)
                continue
            present = sorted(set(frame["metric"]))
            raise SpecError(f"table {spec.name}: metric {column.name!r} is not in the results (after 'where'); "
                            f"metrics there: {present}; mark the column 'optional: true' or pick other runs")
        for metric in matched:
            metrics.append(metric)
            if column.label:
                labels[metric] = column.label if len(matched) == 1 else f"{column.label} [{metric}]"
            if column.decimals is not None:
                decimals[metric] = column.decimals
    frame = frame[frame["metric"].isin(metrics)]
    if frame.empty:
        raise SpecError(f"table {spec.name}: no result row has any of its metrics {metrics or [c.name for c in spec.columns]}"
                        f"{' after where=' + str(spec.where) if spec.where else ''}; pick other runs or another table")
    unset = [c for c in [*spec.rows, *settings] if c not in CORE_COLUMNS and frame[c].map(canonical_value).isna().all()]
    if unset:
        raise SpecError(f"table {spec.name}: {unset} has no value in any row with its metrics {metrics}; these "
                        "results are not what the table is for (e.g. f_sweep needs an f-sweep run), pick other runs")
    index, constant = _index(frame, spec, settings)
    pivot = build_pivot(frame, spec.ci, index=index, metrics=metrics)
    pivot.labels.update(metric_labels(pivot, metrics))
    pivot.labels.update(labels)
    pivot.decimals.update(decimals)
    pivot.caption = " ".join(c for c in (settings_caption(constant, metrics), per_method_caption(frame, index)) if c)
    pivot.column_order = _spec_order(spec, pivot.index_columns, settings, metrics, frame)   # + run_id if added
    if missing:
        pivot.notes.append(f"Not in these results (optional columns left out): {', '.join(missing)}.")
    pivot.rows = _sorted_rows(pivot, spec.sort)
    apply_groups(pivot, comparison_columns(pivot.index_columns) if spec.group_by is None else spec.group_by)
    if spec.bold_best:
        mark_best(pivot)
    return pivot


def per_method_caption(frame: pd.DataFrame, index: Sequence[str]) -> str:
    """Settings that some rows lack (the baselines: no sampler) or that differ between pipelines but
    not within one (not row columns): those all methods share once ("Methods: sampler=ddim, steps=50."),
    the rest per pipeline ("Per method: pixel_ddpm: jump_length=5."). What a pipeline is
    (checkpoint, params) stays in results.csv and the provenance."""
    skip = {*index, *IDENTITY_SETTINGS, *NOT_SETTINGS, *COMPARISON_SETTINGS}
    columns = [c for c in param_columns(frame) if c not in skip
               and len({str(canonical_value(v)) for v in frame[c]}) > 1]
    if not columns or "pipeline" not in frame.columns:
        return ""
    shared: list[str] = []
    per: dict[str, list[str]] = {}
    methods = set(frame["pipeline"][[r == "method" for r in row_roles(frame)]])
    for col in columns:
        by_pipeline = {p: {canonical_value(v) for v in rows[col]} - {None} for p, rows in frame.groupby("pipeline")}
        having = {p: next(iter(v)) for p, v in by_pipeline.items() if len(v) == 1}
        if len(set(map(str, having.values()))) == 1 and methods <= set(having) and len(methods) > 1:
            shared.append(f"{col}={format_setting(next(iter(having.values())))}")
            continue
        for pipeline, value in having.items():
            per.setdefault(pipeline, []).append(f"{col}={format_setting(value)}")
    parts = [f"Methods: {', '.join(shared)}." if shared else "",
             "Per method: " + "; ".join(f"{p}: {', '.join(v)}" for p, v in sorted(per.items())) + "." if per else ""]
    return " ".join(p for p in parts if p)




def _is_metric_name(name: str, frame: pd.DataFrame) -> bool:
    return bool(_metrics_matching(name, frame))


def _metrics_matching(name: str, frame: pd.DataFrame) -> list[str]:
    """The metric itself, or its "[model]" / "[stage]" variants."""
    present = sorted(set(frame["metric"]))
    if name in present:
        return [name]
    return [m for m in present if base_name(m) == name]


def _index(frame: pd.DataFrame, spec: TableSpec, settings: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The row columns: spec.rows, the listed settings, then every other setting that differs
    inside a group (a row never mixes two settings' values). Unlisted settings shared by every
    row go to the caption; listed ones too when constant_settings is 'caption'."""
    index = [*spec.rows, *[s for s in settings if s not in spec.rows]]
    constant: dict[str, Any] = {}
    for col in [c for c in param_columns(frame) if c not in NOT_SETTINGS]:
        values = {canonical_value(v) for v in frame[col]}
        if col in spec.rows or values == {None}:
            continue
        if col in settings:
            if len(values) == 1 and spec.constant_settings == "caption":
                constant[col] = next(iter(values))
                index.remove(col)
        elif len(values) == 1:
            constant[col] = next(iter(values))
        elif frame.groupby([*index, "metric"], dropna=False)[col].nunique(dropna=False).max() > 1:
            index.append(col)   # differs within a group: split it and show it
    return index, {k: v for k, v in constant.items() if v is not None}


def _spec_order(spec: TableSpec, index: list[str], settings: list[str], metrics: list[str],
                frame: pd.DataFrame) -> list[str]:
    """The spec's column order; row columns it does not list first, settings that split a group
    right after the row identity."""
    listed: list[str] = []
    for column in spec.columns:
        if column.name in settings:
            if column.name in index:
                listed.append(column.name)
        else:
            listed += [m for m in _metrics_matching(column.name, frame) if m in metrics]
    extra = [c for c in index if c not in listed]   # rows not listed, then settings that split a group
    rows_listed = [i for i, c in enumerate(listed) if c in spec.rows]
    at = rows_listed[-1] + 1 if rows_listed else 0    # right after the row identity
    unlisted_rows = [c for c in extra if c in spec.rows]
    splits = [c for c in extra if c not in spec.rows]
    return [*unlisted_rows, *listed[:at], *splits, *listed[at:]]


def _sorted_rows(pivot: Pivot, sort: Sequence[str]) -> list[tuple]:
    rows = list(pivot.rows)
    for key in reversed(sort):   # stable sorts, last key first
        descending, name = key.startswith("-"), key.lstrip("-")
        if name in pivot.index_columns:
            i = pivot.index_columns.index(name)
            rows.sort(key=lambda r: sort_key(r[i]), reverse=descending)
        else:
            metric = next((m for m in pivot.metrics if m == name or base_name(m) == name), None)
            if metric is None:
                raise SpecError(f"sort: {name!r} is neither a row column {pivot.index_columns} nor a metric "
                                f"{pivot.metrics} of the table")

            def value(r: tuple, metric: str = metric, descending: bool = descending) -> tuple:
                cell = pivot.cells.get((r, metric))
                v = None if cell is None or not math.isfinite(cell.value) else cell.value
                return (v is None, 0 if v is None else (-v if descending else v))
            rows.sort(key=value)
    return rows


def render(pivot: Pivot, fmt: str, title: str = "") -> str:
    """The table in one format (md, tex, csv, html), the title as a heading or comment."""
    if fmt == "md":
        return (f"### {title}\n\n" if title else "") + to_markdown(pivot)
    if fmt == "tex":
        return (f"% {title}\n" if title else "") + to_latex(pivot)
    if fmt == "csv":
        return to_csv(pivot)
    return to_html(pivot, title or "diffbench table")


# ---- the report's task sections ----------------------------------------------------------------

# (column, value, preset, section key, heading): rows with this value in this column get the preset's
# table under a heading that names the task (issue 28: an SR run read "Generation quality" and
# "Reconstruction"). Image-to-image tasks: every metric of their rows is in the table or named in its
# note. lora_sweep: the preset's metrics here, the rest (training cost, latency) in the generic sections.
TASK_TABLES = (("task", "superres", "ldm_superres", "superres", "Super-resolution"),
               ("task", "inpaint", "ldm_inpainting", "inpainting", "Inpainting"),
               ("suite", "lora_sweep", "lora_sweep", "lora", "LoRA: concept fidelity and forgetting"))


def report_sections(frame: pd.DataFrame, ci_style: str = "auto") -> list[SectionTable]:
    """The sectioned report: a task table per image-to-image task and for lora_sweep rows (from
    their presets), then reports.sections' generic sections for every other row."""
    frame = normalise(frame)
    rest, out = frame, []
    for column, value, preset, key, title in TASK_TABLES:
        if column not in rest.columns:
            continue
        mine = rest[rest[column].map(canonical_value) == value]
        if mine.empty:
            continue
        spec = load_spec(preset)
        spec.ci = ci_style
        pivot = build_spec_table(mine, spec)
        shown = set(pivot.metrics)
        details: list[str] = []
        if column == "task":
            details = sorted(set(mine["metric"]) - shown, key=metric_sort_key)
            rest = rest.drop(index=mine.index)
        else:
            rest = rest.drop(index=mine.index[mine["metric"].isin(shown)])
        if details:
            pivot.notes.append(f"Also in results.csv and table.csv: {', '.join(details)}.")
        finish_notes(pivot)   # its own notes after "Also in"
        out.append(SectionTable(Section(key, title, tuple(pivot.metrics)), pivot, details))
    return out + (build_sections(rest, ci_style) if not rest.empty else [])
