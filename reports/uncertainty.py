"""Footnotes saying which uncertainty each metric's interval is: the rows' `ci_method` detail
(bench.metrics: FID's opt-in bootstrap, KID's spread over subsets, ...), one line per metric and
method, so a reader of the table knows whether "±" is a bootstrap CI, a subset std or nothing."""
from __future__ import annotations

import json
from typing import Any

import pandas as pd

from bench.results import DETAILS_COLUMN
from reports.metric_kinds import metric_sort_key


def _details(text: Any) -> dict:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def ci_footnotes(frame: pd.DataFrame) -> list[str]:
    """'fid: bootstrap(B=50, seed=0) (6 rows): <ci_kind>' per (metric, method), sorted like the table."""
    if DETAILS_COLUMN not in frame.columns:
        return []
    counts: dict[tuple[str, str], list] = {}
    for metric, text in zip(frame["metric"], frame[DETAILS_COLUMN]):
        details = _details(text)
        method = details.get("ci_method")
        if method:
            entry = counts.setdefault((str(metric), str(method)), [0, details.get("ci_kind") or details.get("ci_note")])
            entry[0] += 1
    lines = []
    for (metric, method), (n, kind) in sorted(counts.items(), key=lambda kv: (metric_sort_key(kv[0][0]), kv[0][1])):
        lines.append(f"{metric}: {method} ({n} row{'s' if n != 1 else ''})" + (f": {kind}" if kind else ""))
    return lines
