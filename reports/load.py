"""Find finished run directories (single runs and Hydra multirun trees) and read their rows.

A run directory is any directory whose manifest.json says `status: complete` (the runner
writes it last). Reading goes through `bench.results.read_results`, so reports and the
regression gate see exactly what the runner stored, nothing recomputed.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from bench.results import CORE_COLUMNS, DETAILS_COLUMN, param_columns, read_results

MANIFEST = "manifest.json"
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ReportError(ValueError):
    """Input that cannot be reported on; the message names it and says what to do."""


def manifest_status(run_dir: Path) -> str | None:
    """The manifest's status, "unreadable" for a broken manifest, None when there is none."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("status"))
    except (OSError, ValueError, AttributeError):
        return "unreadable"


def find_run_dirs(path: str | Path) -> list[Path]:
    """Complete run directories at or below `path`, sorted. A directory holding a manifest is
    a run: its subdirectories (sample shards, .hydra) are not searched."""
    root = Path(path)
    if not root.exists():
        raise ReportError(f"{root}: no such directory; pass a run directory (with manifest.json) "
                          "or a multirun directory that contains runs")
    if not root.is_dir():
        raise ReportError(f"{root}: is a file; pass the run directory that contains it")
    status = manifest_status(root)
    if status is not None:
        if status != "complete":
            raise ReportError(f"{root}: manifest.json says status={status!r}, not 'complete': the run "
                              "did not finish (or is still running); rerun it or wait for it to finish")
        return [root]
    found, unfinished = [], []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        status = manifest_status(here)
        if status is None:
            continue
        dirnames[:] = []  # a run's own subdirectories hold no further runs
        (found if status == "complete" else unfinished).append(here)
    if not found:
        hint = (f"; {len(unfinished)} run(s) there did not finish, e.g. {unfinished[0]}"
                if unfinished else "")
        raise ReportError(f"{root}: no complete run found (no manifest.json with status 'complete' "
                          f"at or below it){hint}; point at a finished run or multirun directory")
    return sorted(found)


def canonical_value(value: Any) -> Any:
    """One spelling per sweep value, whichever file it came from: parquet stores mixed
    columns as strings, CSV infers numbers, in-memory rows hold Python objects.
    None/NaN -> None; integral floats -> int; numeric and True/False strings -> numbers/bools."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar -> Python
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float):
            if math.isnan(value):
                return None
            if value.is_integer() and abs(value) < 2**53:
                return int(value)
        return value
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "None", "nan", "NaN"):
            return None
        if text in ("True", "False"):
            return text == "True"
        if _NUMBER.match(text):
            return canonical_value(float(text))
        return text
    return str(value)


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical sweep values (object columns, None for missing), numeric value/ci/n columns,
    empty units as "", and sweep columns that are empty in every row dropped."""
    out = frame.copy()
    missing = [c for c in ("pipeline", "metric", "value") if c not in out.columns]
    if missing:
        raise ReportError(f"result rows lack the columns {missing}; expected bench.results rows "
                          f"with columns {list(CORE_COLUMNS)}")
    for col in CORE_COLUMNS:
        if col not in out.columns:
            out[col] = math.nan if col in ("ci_low", "ci_high", "n") else ""
    for col in ("value", "ci_low", "ci_high", "n"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    for col in ("run_id", "suite", "pipeline", "family", "metric", "unit"):
        out[col] = out[col].map(lambda v: "" if canonical_value(v) is None else str(v)).astype(object)
    for col in param_columns(out):
        out[col] = pd.Series([canonical_value(v) for v in out[col]], index=out.index, dtype=object)
        if out[col].isna().all():
            out = out.drop(columns=col)
    return out.reset_index(drop=True)


def load_runs(paths: Sequence[str | Path] | str | Path) -> tuple[pd.DataFrame, list[Path]]:
    """Read and merge every complete run at or below each path. Returns (rows, run dirs)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise ReportError("no run directory given; pass at least one RUN_DIR")
    run_dirs: list[Path] = []
    for path in paths:
        for run_dir in find_run_dirs(path):
            if run_dir not in run_dirs:
                run_dirs.append(run_dir)
    frames = []
    for run_dir in run_dirs:
        try:
            frames.append(read_results(run_dir))
        except FileNotFoundError as err:
            raise ReportError(f"{run_dir}: {err}") from err
        except (OSError, ValueError) as err:
            raise ReportError(f"{run_dir}: results.parquet / results.csv could not be read ({err}); "
                              "the run directory is damaged, rerun it") from err
    return merge_frames(frames), run_dirs


def merge_frames(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate runs whose sweep columns may differ (missing ones become None)."""
    frames = [f for f in frames if not f.empty]
    if not frames:
        return normalise(pd.DataFrame(columns=[*CORE_COLUMNS, DETAILS_COLUMN]))
    merged = pd.concat([f.astype(object) for f in frames], ignore_index=True, sort=False)
    params = sorted({c for f in frames for c in param_columns(f)}, key=_first_seen(frames))
    ordered = [*CORE_COLUMNS, *params, DETAILS_COLUMN]
    return normalise(merged[[c for c in ordered if c in merged.columns]])


def _first_seen(frames: Sequence[pd.DataFrame]):
    order: dict[str, int] = {}
    for frame in frames:
        for col in param_columns(frame):
            order.setdefault(col, len(order))
    return lambda col: order[col]
