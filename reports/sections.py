"""The sectioned report: one table per question a reader asks of a run.

  generation quality   FID, KID, precision, recall, IS            (generated samples vs data)
  text alignment       CLIP score                                 (text-conditioned pipelines)
  reconstruction       f, c, regularizer | rFID, PSNR, SSIM, LPIPS (the shape of LDM's Table 8,
                                                                   Rombach et al. 2022)
  speed                img/s, s/image, NFE, per-stage share, peak memory
  other                whatever no section above owns (training losses, ...)

Each section is a pivot over the rows of its metrics only, so a setting that only
autoencoder rows carry (f, c) never widens the generation table. Its rows are the pipelines,
split by every setting that differs between them (those settings are columns); the settings
every row shares are one caption line above the table. Metrics a section does not show
(density, coverage, per-stage seconds, ...) are named in a note: they stay in results.csv
and table.csv. Pure functions of the rows.
"""
from __future__ import annotations

import html
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from bench.atomic import atomic_write_text
from bench.metrics.feature_spaces import space_names
from bench.results import param_columns
from reports.captions import CAPTION_STARTS, format_setting, settings_caption  # noqa: F401 (format_setting: table_spec)
from reports.load import canonical_value, normalise
from reports.metric_kinds import metric_kind, metric_sort_key
from reports.tables import (PLAIN, ROLE_COLUMN, TABLE_STYLE, Pivot, apply_groups, build_pivot, column_names,
                            framed, display_frame, format_number, html_table, mark_best, sort_key, text_flags, to_latex,
                            to_markdown)

TERMINAL_WIDTH = 120
STAGE_SHARE = "stage_share"
STAGE_SHARE_COLUMN = "stage share"


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    shown: tuple[str, ...]         # metric base names shown as columns, in this order
    leading: tuple[str, ...] = ()  # settings always shown first when the rows carry them


SECTIONS = (
    Section("generation", "Generation quality", ("fid", "fd", "kid", "cmmd", "precision", "recall", "inception_score")),
    Section("text", "Text alignment", ("clip_score",)),
    Section("reconstruction", "Reconstruction", ("rfid", "psnr", "ssim", "lpips"), ("f", "c", "regularizer")),
    Section("speed", "Speed", ("images_per_s", "s_per_image", "nfe_per_image", STAGE_SHARE, "peak_memory_mib")),
    Section("other", "Other", ()),
)
_BY_KEY = {s.key: s for s in SECTIONS}
# Speed headers short enough for a terminal; the registry's labels elsewhere
SHORT_LABELS = {"images_per_s": "img/s", "s_per_image": "s/image", "nfe_per_image": "NFE",
                "peak_memory_mib": "peak MiB"}
MAX_OTHER_COLUMNS = 6
# Settings that say what a pipeline is rather than how it was run: one value per pipeline is
# its identity (shown in results.csv and report.html's provenance), not a difference between rows.
# Shown as a column only where one pipeline has several (e.g. two runs, two checkpoints).
IDENTITY_SETTINGS = ("checkpoint", "pipeline_params")   # the "other" section shows its first few metrics, the rest stay in the files
# Settings that say what was measured against (the data, the task, the degradation or mask, the
# evaluation size): numbers under different values are not comparable, so the bold "best" is chosen
# within one group of these at a time, and they lead the row (issue 28: identity and x2 rows took
# the bold from x4 rows, box masks from thin ones, one data set's rFID from another's).
COMPARISON_SETTINGS = ("task", "data", "data_root", "reference", "resolution", "input_resolution", "factor",
                       "degradation", "noise_std", "mask", "mask_ratio", "mask_seed")
NOT_SETTINGS = (ROLE_COLUMN,)   # a row's role is how it is drawn, not a setting of the number


def comparison_columns(index: Sequence[str]) -> list[str]:
    return [c for c in index if c in COMPARISON_SETTINGS]


def expand_pipeline_params(rows: pd.DataFrame) -> pd.DataFrame:
    """`pipeline_params` (a JSON object per row) as one readable column per key whose value differs
    between rows (adapter, adapter_scale, ...), so adapter runs are told apart by `adapter` and
    `adapter_scale` columns, not a JSON blob (issue 28). Keys a row lacks are None there."""
    if "pipeline_params" not in rows.columns:
        return rows
    parsed = []
    for text in rows["pipeline_params"]:
        try:
            value = json.loads(text) if isinstance(text, str) and text else {}
        except ValueError:
            return rows   # not JSON: leave it as it is
        parsed.append(value if isinstance(value, dict) else {})
    if not _varies_within_a_pipeline(rows, "pipeline_params"):
        return rows   # one value per pipeline: what the pipeline is (IDENTITY_SETTINGS), not a column
    out = rows.drop(columns="pipeline_params")
    for key in sorted({k for p in parsed for k in p}):
        values = pd.Series([json.dumps(p.get(key), sort_keys=True) if isinstance(p.get(key), (dict, list)) else
                            canonical_value(p.get(key)) for p in parsed], index=rows.index, dtype=object)
        if key not in out.columns and (values.map(str).groupby(rows["pipeline"]).nunique() > 1).any():
            out[key] = values   # differs between rows of one pipeline: a readable column of its own
    return out


def base_name(metric: str) -> str:
    """'clip_score[ViT-B-32/laion2b]' -> 'clip_score'; 'stage_share[sr1]' -> 'stage_share'."""
    return re.sub(r"\[.*\]$", "", str(metric))


def bracket(metric: str) -> str:
    found = re.search(r"\[(.*)\]$", str(metric))
    return found.group(1) if found else ""


def section_of(metric: str) -> str:
    """Which section a metric belongs to, from its registered kind (bench.metrics.registry)."""
    name, kind = base_name(metric).lower(), metric_kind(metric)
    if name.startswith("rfid") or kind.group in ("psnr", "ssim", "lpips"):
        return "reconstruction"
    if kind.group == "clip_score":
        return "text"
    if kind.timing or kind.group == "count":
        return "speed"
    if kind.group in ("fid", "kid", "fraction", "density", "inception_score", "cmmd"):
        return "generation"
    return "other"


@dataclass
class SectionTable:
    section: Section
    pivot: Pivot
    details: list[str]   # the section's metrics not shown (in results.csv / table.csv)

    @property
    def title(self) -> str:
        return self.section.title


def build_sections(frame: pd.DataFrame, ci_style: str = "auto") -> list[SectionTable]:
    """One table per section that has rows, in SECTIONS order."""
    frame = normalise(frame)
    owner = {m: section_of(m) for m in set(frame["metric"])}
    out = []
    for section in SECTIONS:
        rows = frame[frame["metric"].map(owner) == section.key]
        if rows.empty:
            continue
        out.append(section_table(section, rows, ci_style))
    return out


def _shown_metrics(section: Section, metrics: Sequence[str]) -> list[str]:
    if not section.shown:
        return sorted(metrics, key=metric_sort_key)[:MAX_OTHER_COLUMNS]
    order = {name: i for i, name in enumerate(section.shown)}
    shown = [m for m in metrics if base_name(m) in order and base_name(m) != STAGE_SHARE]
    # "nfe_per_image[base]" beside "nfe_per_image" is a per-stage detail; "clip_score[model]" alone is the metric
    bare = {m for m in shown if not bracket(m)}
    # ... but "kid[dinov2-vit-l-14]" is KID in another feature space (issue 27): always its own column
    shown = [m for m in shown if not bracket(m) or base_name(m) not in bare or bracket(m) in space_names()]
    return sorted(shown, key=lambda m: (order[base_name(m)], m))


def section_table(section: Section, rows: pd.DataFrame, ci_style: str = "auto") -> SectionTable:
    rows = expand_pipeline_params(rows.copy())
    for col in param_columns(rows):   # settings these rows do not carry at all
        if rows[col].isna().all():
            rows = rows.drop(columns=col)
    metrics = sorted(set(rows["metric"]), key=metric_sort_key)
    shown = _shown_metrics(section, metrics)
    shares = [m for m in metrics if base_name(m) == STAGE_SHARE] if STAGE_SHARE in section.shown else []
    if not shown and not shares:   # only detail metrics here: show them rather than nothing
        shown = sorted(metrics, key=metric_sort_key)[:MAX_OTHER_COLUMNS]
    details = [m for m in metrics if m not in shown and m not in shares]
    table_rows = rows[rows["metric"].isin(shown + shares)]
    index, constant = row_columns(table_rows, section.leading)
    pivot = build_pivot(table_rows[table_rows["metric"].isin(shown)] if shown else table_rows.iloc[:0],
                        ci_style, index=index, metrics=shown)
    pivot.labels.update(metric_labels(pivot, shown))
    pivot.labels.update({m: SHORT_LABELS[m] for m in shown if m in SHORT_LABELS})
    if "s_per_image" in shown:
        pivot.decimals["s_per_image"] = 4   # 0.1 ms resolution: plenty beside run-to-run noise
    if shares:
        pivot.text_columns[STAGE_SHARE_COLUMN] = stage_shares(table_rows, pivot.index_columns, shares)
        pivot.rows = sorted(set(pivot.rows) | set(pivot.text_columns[STAGE_SHARE_COLUMN]),
                            key=lambda k: tuple(sort_key(v) for v in k))
    pivot.caption = settings_caption(constant, shown)
    if details:
        pivot.notes.append(f"Also in results.csv and table.csv: {', '.join(details)}.")
    apply_groups(pivot, comparison_columns(pivot.index_columns))
    mark_best(pivot)
    return SectionTable(section, pivot, details)


def row_columns(rows: pd.DataFrame, leading: Sequence[str] = ()) -> tuple[list[str], dict[str, Any]]:
    """(index columns, constant settings): pipeline, the leading settings the rows carry, then
    every setting whose value differs between the rows; the settings that do not differ go to
    the caption. Suite (and then run id) join the index only when rows would otherwise clash."""
    settings = [c for c in param_columns(rows) if c not in NOT_SETTINGS]
    varying, constant = [], {}
    for col in settings:
        values = {canonical_value(v) for v in rows[col]}
        if col in leading:
            continue
        if len(values) > 1:
            if col in IDENTITY_SETTINGS and not _varies_within_a_pipeline(rows, col):
                continue   # what the pipeline is (its checkpoint), not how it was run: in results.csv
            varying.append(col)
        else:
            constant[col] = next(iter(values))
    varying = [*comparison_columns(varying), *[c for c in varying if c not in COMPARISON_SETTINGS]]
    index = [*comparison_columns(varying), "pipeline", *[c for c in leading if c in settings],
             *[c for c in varying if c not in COMPARISON_SETTINGS]]
    keys = rows[[*index, "metric"]].astype(str)
    if keys.duplicated().any() and rows["suite"].nunique() > 1:
        index.insert(0, "suite")
    return index, {k: v for k, v in constant.items() if v is not None}


def _varies_within_a_pipeline(rows: pd.DataFrame, col: str) -> bool:
    values = rows[col].map(lambda v: str(canonical_value(v)))
    return bool((values.groupby(rows["pipeline"]).nunique() > 1).any())


def metric_labels(pivot: Pivot, metrics: Sequence[str]) -> dict[str, str]:
    """Short headers from the registry's labels, "[model]" suffixes kept only where two columns
    share a label, units in parentheses: "FID", "CLIP score", "PSNR (dB)", "img/s"."""
    labels = {}
    for metric in metrics:
        kind = metric_kind(metric)
        label = kind.label if kind.label and kind.name == base_name(metric).lower() else base_name(metric)
        labels[metric] = label
    counts = pd.Series(list(labels.values())).value_counts()
    for metric, label in labels.items():
        if bracket(metric) and (counts[label] > 1 or bracket(metric) in space_names()):   # the space: always said
            labels[metric] = f"{label} [{bracket(metric)}]"
    unit = pivot.units
    return {m: f"{label} ({unit[m]})" if unit.get(m) and "/" not in label else label   # "images/s": unit said
            for m, label in labels.items()}


def stage_shares(rows: pd.DataFrame, index: Sequence[str], shares: Sequence[str]) -> dict[tuple, str]:
    """Per row, 'base 62% · sr1 38%': the share of sampling time each stage took, as one text
    column (the per-stage seconds stay in results.csv)."""
    out: dict[tuple, list[tuple[str, float]]] = {}
    sub = rows[rows["metric"].isin(list(shares))]
    for rec in sub[[*index, "metric", "value"]].itertuples(index=False):
        *key, metric, value = rec
        out.setdefault(tuple(canonical_value(v) for v in key), []).append((bracket(metric) or metric, value))
    return {key: " · ".join(f"{stage} {format_number(100 * v, 0)}%" for stage, v in parts)
            for key, parts in out.items()}


# ---- the terminal ---------------------------------------------------------------------------

def terminal_text(tables: Sequence[SectionTable], width: int = TERMINAL_WIDTH) -> str:
    """Every section as a titled, aligned plain-text table that fits `width` columns: first as
    Markdown, then without the pipes, then without the confidence intervals (said in a note)."""
    parts = []
    for table in tables:
        parts.append(f"== {table.title} ==")
        parts.append(fit_table(table.pivot, width))
    return "\n".join(parts).rstrip("\n") + "\n"


def fit_table(pivot: Pivot, width: int = TERMINAL_WIDTH) -> str:
    text = to_markdown(pivot, PLAIN)
    if _widest(text) <= width:
        return _wrap_prose(text, width)
    text = plain_text(pivot)
    if _widest(text) <= width or pivot.ci_style == "none":
        return _wrap_prose(text, width)
    narrow = Pivot(**{**pivot.__dict__, "ci_style": "none", "notes": [
        n for n in pivot.notes if not n.startswith(("±", "[low"))] + ["Confidence intervals: in report.md and report.html."]})
    text = plain_text(narrow)
    if _widest(text) > width:   # still too wide: the columns in blocks under the row columns, full names kept
        text = _in_blocks(narrow, width)
    if _widest(text) > width:   # the row columns alone are too wide: shorten the longest ("…"), said in a note
        narrow.notes.append("Long names are shortened with '…' here; report.md has them in full.")
        text = plain_text(narrow, width)
    return _wrap_prose(text, width)


def _in_blocks(pivot: Pivot, width: int) -> str:
    """The table as several tables of the same rows, each with the row columns and as many of the
    other columns as fit `width` (issue 28: cutting method names to "latent_in…" lost them)."""
    frame = display_frame(pivot, PLAIN)
    names = column_names(pivot)
    widths = {c: max([len(str(h)) for h in [frame.columns[i]]] + [len(str(v)) for v in frame.iloc[:, i]])
              for i, c in enumerate(names)}
    lead = [c for c in names if c in pivot.index_columns or c == "n"]
    used = sum(widths[c] + 2 for c in lead)
    blocks: list[list[str]] = [[]]
    for column in [c for c in names if c not in lead]:
        if blocks[-1] and used + sum(widths[c] + 2 for c in blocks[-1]) + widths[column] > width:
            blocks.append([])
        blocks[-1].append(column)
    parts = []
    for i, block in enumerate(blocks):
        part = Pivot(**{**pivot.__dict__, "column_order": [*lead, *block],
                        "caption": pivot.caption if i == 0 else "",
                        "notes": pivot.notes if i == len(blocks) - 1 else []})
        parts.append(plain_text(part).rstrip("\n"))
    return "\n\n".join(parts) + "\n"


MIN_TEXT_WIDTH = 10


def plain_text(pivot: Pivot, width: int | None = None) -> str:
    """Columns separated by two spaces, numbers right-aligned, a dashed rule under the header.
    With `width`, the widest text columns are cut (ending in "…") until the table fits."""
    frame = display_frame(pivot, PLAIN)
    text = text_flags(pivot)
    cells = [[str(c) for c in frame.columns]] + [[str(v) for v in r] for r in frame.itertuples(index=False)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(frame.columns))]
    if width is not None:
        while sum(widths) + 2 * (len(widths) - 1) > width:
            candidates = [i for i, t in enumerate(text) if t and widths[i] > MIN_TEXT_WIDTH]
            if not candidates:
                break
            i = max(candidates, key=lambda k: widths[k])
            widths[i] = max(MIN_TEXT_WIDTH, widths[i] - (sum(widths) + 2 * (len(widths) - 1) - width))
        cells = [[v if len(v) <= widths[i] else v[:widths[i] - 1] + "…" for i, v in enumerate(r)] for r in cells]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if text[i] else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    lines = [line(cells[0]), "  ".join("-" * w for w in widths)]
    for row, values in zip(pivot.rows, cells[1:]):
        if row in pivot.rules:   # a new comparison group, or the methods after the references
            lines.append("  ".join("·" * w for w in widths))
        lines.append(line(values))
    return framed(pivot, lines)


def _widest(text: str) -> int:
    return max((len(line) for line in text.splitlines() if not _is_prose(line)), default=0)


def _is_prose(line: str) -> bool:
    return line.startswith(("- ", *CAPTION_STARTS))


def _wrap_prose(text: str, width: int) -> str:
    out = []
    for line in text.splitlines():
        if _is_prose(line) and len(line) > width:
            out += textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def section_by_key(key: str) -> Section:
    return _BY_KEY[key]


# ---- files -----------------------------------------------------------------------------------

def sections_markdown(tables: Sequence[SectionTable], level: int = 2) -> str:
    """Every section as a Markdown heading and its table."""
    return "\n".join(f"{'#' * level} {t.title}\n\n{to_markdown(t.pivot)}" for t in tables)


def sections_latex(tables: Sequence[SectionTable]) -> str:
    """One booktabs tabular per section, each preceded by a comment naming it."""
    return "\n".join(f"% {t.title}\n{to_latex(t.pivot)}" for t in tables)


def sections_html(tables: Sequence[SectionTable], title: str) -> str:
    body = "\n".join(f"<h2>{html.escape(t.title)}</h2>\n"
                     + (f"<p>{html.escape(t.pivot.caption)}</p>\n" if t.pivot.caption else "")
                     + html_table(t.pivot) + "\n"
                     + "".join(f"<p>{html.escape(n)}</p>\n" for n in t.pivot.notes) for t in tables)
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{TABLE_STYLE}</style>\n</head>\n<body>\n{body}"
            "</body>\n</html>\n")


def write_section_tables(tables: Sequence[SectionTable], out_dir: Path, formats: Sequence[str],
                         title: str = "diffbench results") -> list[Path]:
    """table.md / table.tex / table.html: the sections (table.csv is the full pivot, elsewhere)."""
    renderers = {"md": sections_markdown, "tex": sections_latex, "html": lambda t: sections_html(t, title)}
    written = []
    for fmt in formats:
        path = Path(out_dir) / f"table.{fmt}"
        atomic_write_text(path, renderers[fmt](tables))
        written.append(path)
    return written
