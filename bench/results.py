"""Tidy result rows (DESIGN.md "Results"): one measurement per row.

Columns: CORE_COLUMNS first, then one column per run setting (RUN_SETTINGS) and sweep parameter
(any other column except `details`), then `details`, a JSON object of provenance (feature extractor, resize mode,
weights name + sha256, CLIP model, device, dtype, ...). Written atomically as
results.csv + results.parquet; reports and the regression gate read only these files.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from bench.atomic import atomic_write

CORE_COLUMNS = ("run_id", "suite", "pipeline", "family", "metric", "value", "ci_low", "ci_high", "n", "unit")
# The run's own settings, a column of every row they shape (bench.session.Session.row_settings); a
# suite's sweep axis of the same name (guidance_scale, sampler, steps, ...) fills the same column.
RUN_SETTINGS = ("checkpoint", "pipeline_params", "sampler", "steps", "eta", "thresholding", "threshold_percentile",
                "guidance_scale", "seed", "data", "data_n", "data_root", "data_seed", "resize_mode", "reference",
                # what each side really was (issues 26, 29): the reference's n, the size its images reach the
                # feature extractor at, the sizes found (counts when mixed), the resize applied; the same for
                # samples made elsewhere
                "data_resolution", "data_sizes", "data_resize", "samples_n", "samples_sizes", "samples_resize")
DETAILS_COLUMN = "details"
RESULT_FILES = ("results.csv", "results.parquet")


@dataclass
class MetricValue:
    """What a metric computes: one number with its sample size, confidence interval and provenance."""
    metric: str
    value: float
    n: int
    unit: str = ""
    ci_low: float | None = None
    ci_high: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """Where a measurement was taken: the run, suite, pipeline and sweep point."""
    run_id: str
    suite: str
    pipeline: str
    family: str
    params: dict[str, Any] = field(default_factory=dict)


def make_row(ctx: RunContext, value: MetricValue) -> dict[str, Any]:
    clash = set(ctx.params) & (set(CORE_COLUMNS) | {DETAILS_COLUMN})
    if clash:
        raise ValueError(f"sweep parameter names {sorted(clash)} clash with result columns")
    return {
        "run_id": ctx.run_id, "suite": ctx.suite, "pipeline": ctx.pipeline, "family": ctx.family,
        "metric": value.metric, "value": float(value.value),
        "ci_low": math.nan if value.ci_low is None else float(value.ci_low),
        "ci_high": math.nan if value.ci_high is None else float(value.ci_high),
        "n": int(value.n), "unit": value.unit,
        **ctx.params,
        DETAILS_COLUMN: json.dumps(value.details, sort_keys=True, default=str),
    }


def rows_to_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return pd.DataFrame(columns=[*CORE_COLUMNS, DETAILS_COLUMN])
    params = [c for c in frame.columns if c not in CORE_COLUMNS and c != DETAILS_COLUMN]
    return frame[[*CORE_COLUMNS, *params, DETAILS_COLUMN]]


def param_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in CORE_COLUMNS and c != DETAILS_COLUMN]


def write_results(run_dir: Path, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    frame = rows_to_frame(list(rows))
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(run_dir / "results.csv", "w") as handle:
        frame.to_csv(handle, index=False)
    with atomic_write(run_dir / "results.parquet", "wb") as handle:
        _parquet_safe(frame).to_parquet(handle, index=False)
    return frame


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet needs one type per column; sweep columns may mix (e.g. None and floats)."""
    out = frame.copy()
    for col in param_columns(out):
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: None if v is None else str(v))
    return out


def read_results(run_dir: Path) -> pd.DataFrame:
    """Read one run's rows (parquet preferred, csv as fallback); error if the run is incomplete."""
    run_dir = Path(run_dir)
    manifest = run_dir / "manifest.json"
    if not manifest.exists() or json.loads(manifest.read_text()).get("status") != "complete":
        raise FileNotFoundError(
            f"{run_dir} holds no complete run (manifest.json missing or status != complete); "
            "rerun it, or point at a finished run directory")
    if (run_dir / "results.parquet").exists():
        return pd.read_parquet(run_dir / "results.parquet")
    return pd.read_csv(run_dir / "results.csv")
