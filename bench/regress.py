"""Regression gate: compare a finished run against a committed baseline, metric by metric.

    python -m bench.regress --baseline FILE --current RUN_DIR [--update] [--check-timing]

Exit status: 0 when nothing regressed, 1 when any metric regressed or a baseline metric
is missing from the current run, 2 for unusable input (no baseline, no complete run).

The rule. For each (pipeline, sweep point, metric) in the baseline, with b the baseline
value, c the current value, and h_b, h_c the half-widths of their stored confidence
intervals (0 when absent):

    tolerance = max(abs, rel * |b|, ci_k * sqrt(h_b^2 + h_c^2))
    worse     = c - b (lower is better) | b - c (higher is better) | |c - b| (either)
    status    = regressed if worse > tolerance, improved if -worse > tolerance, else ok

The CI term is the 95% half-width of the difference of two independent estimates, so
with ci_k = 1 a change inside sampling noise is never called a regression. Direction and
default tolerances come from the metric registry (bench.metrics.registry, by name through
`reports.metric_kinds`): lower is better for FID, KID, LPIPS, rFID, NFE, time and memory;
higher for IS, CLIP score, PSNR, SSIM, precision, recall, throughput.
Timing metrics (images/s, s/image, stage time, memory) are noisy across machines: they are
reported but skipped unless --check-timing (or `"skip": false` in the baseline), and then get
a generous relative tolerance (50%).

Points and settings. A baseline entry is (pipeline, sweep point, metric) and the run settings it
was measured with (bench.results.RUN_SETTINGS: checkpoint, pipeline params, sampler, steps, seed,
data, ...). Entries are matched on pipeline, metric and sweep point, and compared value against
value whatever the settings were: settings that differ are named ("pixel_ddpm: steps: baseline
50, current 10") above the diff, not turned into missing and new metrics; the values decide the
verdict. A setting the run sweeps (it varies within one pipeline, metric and point) is part of
the point. A baseline that records no settings (written before they were row columns) or keeps
them among its params is read the same way; a point column it never had is set aside.

Baseline file: JSON, small, meant to live in the user's repository:
    {"format": "diffbench-baseline", "version": 1,
     "tolerances": {"fid": {"direction": "lower", "abs": 0.5, "rel": 0.02, "ci_k": 1.0,
                            "skip": false}, "clip_score*": {"rel": 0.01}, ...},
     "entries": [{"pipeline": ..., "params": {...}, "settings": {...}, "metric": ..., "value": ...,
                  "ci": half-width or null, "ci_low": ..., "ci_high": ..., "n": ..., "unit": ...}]}
Tolerance keys are metric names or glob patterns (exact name first, then the longest
matching pattern, then the registry's defaults); a spec may give any subset of its fields.
`--update` rewrites the entries from the current run, keeps the file's tolerances and adds
the defaults, spelled out, for metrics that have none, so they can be edited in place.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from bench.atomic import atomic_write_json, atomic_write_text
from bench.results import RUN_SETTINGS, param_columns
from reports.load import ReportError, canonical_value, load_runs, normalise
from reports.metric_kinds import DIRECTIONS, metric_kind, metric_sort_key

FORMAT, VERSION = "diffbench-baseline", 1
SPEC_KEYS = ("direction", "abs", "rel", "ci_k", "skip")
STATUSES = ("regressed", "missing", "improved", "new", "ok", "skipped")


class BaselineError(ValueError):
    """A baseline or run that cannot be compared; the message says what to do."""


@dataclass(frozen=True)
class Tolerance:
    direction: str
    abs: float
    rel: float
    ci_k: float
    skip: bool

    def threshold(self, baseline: float, half_b: float | None, half_c: float | None) -> float:
        ci = math.hypot(half_b or 0.0, half_c or 0.0)
        return max(self.abs, self.rel * abs(baseline), self.ci_k * ci)


def default_spec(metric: str) -> dict[str, Any]:
    """The registry's direction and default tolerance for the metric (reports.metric_kinds)."""
    kind = metric_kind(metric)
    gate = kind.gate
    return {"direction": kind.direction, "abs": float(gate.abs), "rel": float(gate.rel), "ci_k": float(gate.ci_k),
            "skip": bool(gate.skip)}


def _matching_key(metric: str, specs: dict[str, dict]) -> str | None:
    if metric in specs:
        return metric
    globs = sorted((k for k in specs if fnmatch.fnmatchcase(metric, k)), key=lambda k: (-len(k), k))
    return globs[0] if globs else None


def resolve_tolerance(metric: str, specs: dict[str, dict], check_timing: bool = False) -> Tolerance:
    spec = default_spec(metric)
    key = _matching_key(metric, specs)
    if key is not None:
        spec.update(specs[key])
    if check_timing and metric_kind(metric).timing:
        spec["skip"] = False
    return Tolerance(spec["direction"], float(spec["abs"]), float(spec["rel"]), float(spec["ci_k"]),
                     bool(spec["skip"]))


# ---- baseline entries ----------------------------------------------------------------------

def _num(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _half(low: Any, high: Any) -> float | None:
    low, high = _num(low), _num(high)
    return None if low is None or high is None else (high - low) / 2


def point_key(pipeline: str, params: dict[str, Any], metric: str) -> str:
    return json.dumps([pipeline, sorted(params.items()), metric], default=str)


def describe_point(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"


def split_settings(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(sweep point, run settings) of a row's or entry's parameter columns: the run settings
    (bench.results.RUN_SETTINGS: checkpoint, sampler, steps, data, ...) say how the number was made,
    the rest where in the suite's sweep it was measured."""
    point = {k: v for k, v in params.items() if k not in RUN_SETTINGS}
    return point, {k: v for k, v in params.items() if k in RUN_SETTINGS}


def entries_from_frame(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per (pipeline, sweep point, metric), sorted; duplicates are an error. `params` is
    the sweep point, `settings` the run settings it was measured with; a run setting the run
    sweeps (it varies within one pipeline and metric, e.g. a steps sweep) stays in `params`."""
    frame = normalise(frame)
    params = param_columns(frame)
    entries: dict[str, dict[str, Any]] = {}
    for rec in frame.to_dict("records"):
        point = {k: rec[k] for k in params if rec[k] is not None}
        key = point_key(rec["pipeline"], point, rec["metric"])
        if key in entries:
            raise BaselineError(
                f"the run holds {rec['metric']!r} for {rec['pipeline']} at ({describe_point(point)}) more "
                "than once (several runs of the same point?); point --current at one run directory")
        n = _num(rec["n"])
        entries[key] = {"pipeline": rec["pipeline"], "params": point, "metric": rec["metric"],
                        "value": _num(rec["value"]), "ci": _half(rec["ci_low"], rec["ci_high"]),
                        "ci_low": _num(rec["ci_low"]), "ci_high": _num(rec["ci_high"]),
                        "n": None if n is None else int(n), "unit": rec["unit"]}
    out = [_normalise_entry(e) for e in entries.values()]
    axes = _axes(out, [])
    for entry in out:   # a swept setting is part of the point
        swept = axes.get(_group(entry), set())
        entry["params"].update({k: entry["settings"].pop(k) for k in swept if k in entry["settings"]})
    return sorted(out, key=lambda e: (e["pipeline"], point_key("", e["params"], ""), metric_sort_key(e["metric"])))


def _normalise_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with its run settings under `settings` (a baseline written before they were kept
    apart, issue 28, has them among `params`)."""
    point, settings = split_settings(entry.get("params", {}))
    return {**entry, "params": point, "settings": {**settings, **(entry.get("settings") or {})}}


def make_baseline(frame: pd.DataFrame, tolerances: dict[str, dict] | None = None) -> dict[str, Any]:
    entries = entries_from_frame(frame)
    specs = dict(tolerances or {})
    for metric in sorted({e["metric"] for e in entries}):
        if _matching_key(metric, specs) is None:
            specs[metric] = default_spec(metric)
    return {"format": FORMAT, "version": VERSION,
            "rule": "regressed if worse by more than max(abs, rel*|baseline|, ci_k*sqrt(ci_b^2+ci_c^2))",
            "source": {"run_ids": sorted({str(r) for r in frame["run_id"] if r}),
                       "suites": sorted({str(s) for s in frame["suite"] if s})},
            "tolerances": dict(sorted(specs.items())), "entries": entries}


def load_baseline(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BaselineError(f"baseline {path} does not exist; create it from a good run with "
                            f"`python -m bench.regress --baseline {path} --current RUN_DIR --update`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise BaselineError(f"baseline {path} is not valid JSON ({err}); fix it or regenerate it with --update")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BaselineError(f"baseline {path} is not a diffbench baseline (needs \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise BaselineError(f"baseline {path} has version {data.get('version')!r}; this gate reads "
                            f"version {VERSION}: regenerate it with --update")
    _validate_tolerances(path, data.setdefault("tolerances", {}))
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise BaselineError(f"baseline {path}: \"entries\" must be a list")
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("pipeline"), str)
                and isinstance(entry.get("metric"), str) and isinstance(entry.get("params", {}), dict)
                and (entry.get("value") is None or isinstance(entry.get("value"), (int, float)))):
            raise BaselineError(f"baseline {path}: entry {i} needs pipeline (text), metric (text), "
                                f"params (object) and value (number or null); got {entry!r}")
        if not isinstance(entry.get("settings", {}), dict):
            raise BaselineError(f"baseline {path}: entry {i}: settings must be an object; got {entry['settings']!r}")
        for key in ("params", "settings"):
            entry[key] = {k: canonical_value(v) for k, v in (entry.get(key) or {}).items()
                          if canonical_value(v) is not None}
    return data


def _validate_tolerances(path: Path, specs: Any) -> None:
    if not isinstance(specs, dict):
        raise BaselineError(f"baseline {path}: \"tolerances\" must be an object of metric -> spec")
    for metric, spec in specs.items():
        where = f"baseline {path}: tolerances[{metric!r}]"
        if not isinstance(spec, dict):
            raise BaselineError(f"{where} must be an object with keys from {list(SPEC_KEYS)}")
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise BaselineError(f"{where}: unknown key(s) {unknown}; allowed: {list(SPEC_KEYS)}")
        if "direction" in spec and spec["direction"] not in DIRECTIONS:
            raise BaselineError(f"{where}: direction {spec['direction']!r} is not one of {list(DIRECTIONS)}")
        for key in ("abs", "rel", "ci_k"):
            if key in spec and not (isinstance(spec[key], (int, float)) and spec[key] >= 0):
                raise BaselineError(f"{where}: {key} must be a number >= 0, got {spec[key]!r}")
        if "skip" in spec and not isinstance(spec["skip"], bool):
            raise BaselineError(f"{where}: skip must be true or false, got {spec['skip']!r}")


# ---- comparison ------------------------------------------------------------------------------

@dataclass
class Comparison:
    pipeline: str
    params: dict[str, Any]
    metric: str
    baseline: float | None
    current: float | None
    tolerance: float | None
    status: str
    note: str = ""
    # run settings the two were made with that differ: name -> (baseline's, current's)
    settings: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


def judge(tol: Tolerance, base: float | None, cur: float | None,
          half_b: float | None, half_c: float | None) -> tuple[str, float | None]:
    """(status, tolerance) for one metric present in both runs."""
    if base is None or cur is None:  # a non-finite value: broken measurement
        if base is None and cur is None:
            return "ok", None
        return ("improved" if base is None else "regressed"), None
    threshold = tol.threshold(base, half_b, half_c)
    delta = cur - base
    worse = {"lower": delta, "higher": -delta}.get(tol.direction, abs(delta))
    if worse > threshold:
        return "regressed", threshold
    if tol.direction != "either" and -worse > threshold:
        return "improved", threshold
    return "ok", threshold


# ---- matching baseline entries to the current run ---------------------------------------------
# An entry is (pipeline, metric, sweep point) measured with some run settings. The gate compares
# value against value whatever settings either side was made with (issue 28: a baseline rewritten
# by --update records every setting, and a changed `steps` read "4 missing, 4 new" instead of a
# diff); the settings that differ are named beside the values. A run setting is part of the point
# only where a run sweeps it (its value varies within one pipeline, metric and point).

def _group(entry: dict[str, Any]) -> str:
    return point_key(entry["pipeline"], entry["params"], entry["metric"])


def _axes(*sides: Sequence[dict[str, Any]]) -> dict[str, set[str]]:
    """Per group: the run settings that vary within it on either side (swept, so they must match)."""
    axes: dict[str, set[str]] = {}
    for entries in sides:
        values: dict[str, dict[str, set[str]]] = {}
        for entry in entries:
            seen = values.setdefault(_group(entry), {})
            for key in RUN_SETTINGS:
                seen.setdefault(key, set()).add(json.dumps(entry["settings"].get(key), default=str))
        for group, seen in values.items():
            axes.setdefault(group, set()).update(k for k, v in seen.items() if len(v) > 1)
    return axes


def _settings_diff(base: dict[str, Any], cur: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Settings the baseline recorded that the current run has otherwise. A setting the baseline
    does not record (written before it was a column) is set aside."""
    return {k: (v, cur.get(k)) for k, v in sorted(base.items()) if cur.get(k) != v}


def _candidates(entry: dict[str, Any], current: Sequence[dict[str, Any]], base_columns: set[str],
                axes: set[str]) -> list[dict[str, Any]]:
    """Current entries of the same pipeline and metric at the entry's point (point columns the
    baseline never had, e.g. one added to the rows later, set aside), with the same value of
    every swept setting the entry records."""
    out = []
    for other in current:
        if other["pipeline"] != entry["pipeline"] or other["metric"] != entry["metric"]:
            continue
        point = {k: v for k, v in other["params"].items() if k in base_columns or k in entry["params"]}
        if point != entry["params"]:
            continue
        if all(other["settings"].get(k) == entry["settings"][k] for k in axes if k in entry["settings"]):
            out.append(other)
    return out


def compare(baseline: dict[str, Any], frame: pd.DataFrame, *, check_timing: bool = False) -> list[Comparison]:
    current = [_normalise_entry(e) for e in entries_from_frame(frame)]
    entries = [_normalise_entry(e) for e in baseline["entries"]]
    axes = _axes(entries, current)
    base_columns = {k for e in entries for k in e["params"]}
    specs = baseline.get("tolerances", {})
    out, used = [], set()
    for entry in entries:
        tol = resolve_tolerance(entry["metric"], specs, check_timing)
        base = _num(entry.get("value"))
        group_axes = axes.get(_group(entry), set())
        found = [c for c in _candidates(entry, current, base_columns, group_axes) if id(c) not in used]
        exact = [c for c in found if c["params"] == entry["params"] and c["settings"] == entry["settings"]]
        cur_entry = exact[0] if exact else found[0] if len(found) == 1 else None
        row = Comparison(entry["pipeline"], entry["params"], entry["metric"], base,
                         None if cur_entry is None else cur_entry["value"], None, "")
        if cur_entry is None:
            row.status = "skipped" if tol.skip else "missing"
            row.note = (f"{len(found)} current points match it; give the baseline's settings" if found
                        else _near_miss(entry, current))
        else:
            used.add(id(cur_entry))
            row.params = {**entry["params"], **{k: v for k, v in cur_entry["params"].items() if k not in base_columns}}
            base_half = _num(entry["ci"]) if entry.get("ci") is not None else \
                _half(entry.get("ci_low"), entry.get("ci_high"))
            row.status, row.tolerance = judge(tol, base, cur_entry["value"], base_half, cur_entry["ci"])
            if tol.skip:
                row.status = "skipped"
            if entry.get("n") is not None and cur_entry["n"] is not None and entry["n"] != cur_entry["n"]:
                row.note = f"n {entry['n']} -> {cur_entry['n']}"
            row.settings = _settings_diff(entry["settings"], cur_entry["settings"])
        out.append(row)
    for entry in current:
        if id(entry) not in used:
            out.append(Comparison(entry["pipeline"], entry["params"], entry["metric"], None,
                                  entry["value"], None, "new"))
    return sorted(out, key=lambda c: (c.pipeline, point_key("", c.params, ""), metric_sort_key(c.metric)))


def _near_miss(entry: dict[str, Any], current: Any) -> str:
    """For a missing entry: where the current run does have that metric for that pipeline."""
    for other in current:
        if other["pipeline"] == entry["pipeline"] and other["metric"] == entry["metric"]:
            return f"current run has it at ({describe_point(other['params'])})"
    return "not in the current run"


def failed(comparisons: Sequence[Comparison]) -> bool:
    return any(c.status in ("regressed", "missing") for c in comparisons)


# ---- the diff, for people ---------------------------------------------------------------------
WIDTH = 119   # every line of the diff fits a 120-column terminal or CI log


def _fmt(x: float | None, signed: bool = False) -> str:
    return "-" if x is None else (f"{x:+.6g}" if signed else f"{x:.6g}")


def _short(value: Any, width: int = 40) -> str:
    text = "(none)" if value is None else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def describe_setting(name: str, base: Any, cur: Any) -> list[str]:
    """'steps: baseline 50, current 10'; a JSON setting (pipeline_params) key by key."""
    try:
        old, new = json.loads(base), json.loads(cur)
    except (TypeError, ValueError):
        old = new = None
    if isinstance(old, dict) and isinstance(new, dict):
        return [f"{name}.{k}: baseline {_short(old.get(k))}, current {_short(new.get(k))}"
                for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return [f"{name}: baseline {_short(base)}, current {_short(cur)}"]


def _wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "    ",
                         break_on_hyphens=False) or [indent]


def format_diff(comparisons: Sequence[Comparison]) -> str:
    """The settings that differ (once per pipeline), then per pipeline and point a table of metric,
    baseline, current, delta, tolerance and status; the verdict last. No line is wider than WIDTH."""
    lines: list[str] = []
    differing: dict[str, list[str]] = {}
    for c in comparisons:
        for name, (base, cur) in c.settings.items():
            for text in describe_setting(name, base, cur):
                if text not in differing.setdefault(c.pipeline, []):
                    differing[c.pipeline].append(text)
    if differing:
        lines.append("Run settings that differ from the baseline's (the values are compared all the same):")
        for pipeline, texts in differing.items():
            for text in texts:
                lines += _wrap(f"{pipeline}: {text}", "  ")
        lines.append("")
    header = ["metric", "baseline", "current", "delta", "tolerance", "status"]
    groups: dict[tuple[str, str], list[list[str]]] = {}
    notes: dict[tuple[str, str], list[str]] = {}
    for c in comparisons:
        delta = _fmt(c.delta, signed=True)
        if c.delta is not None and c.baseline:
            delta += f" ({100 * c.delta / abs(c.baseline):+.1f}%)"
        key = (c.pipeline, describe_point(c.params))
        groups.setdefault(key, []).append([c.metric, _fmt(c.baseline), _fmt(c.current), delta,
                                           _fmt(c.tolerance), c.status])
        notes.setdefault(key, []).append(c.note)
    rows = [r for g in groups.values() for r in g]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {1, 2, 3, 4}

    def line(r: list[str]) -> str:
        return "  " + "  ".join(v.rjust(w) if i in right else v.ljust(w)
                                for i, (v, w) in enumerate(zip(r, widths))).rstrip()
    for (pipeline, point), group in groups.items():
        lines += _wrap(pipeline if point == "-" else f"{pipeline} ({point})")
        lines += [line(header), "  " + "  ".join("-" * w for w in widths)]
        for r, note in zip(group, notes[(pipeline, point)]):
            text = line(r)
            if note and len(text) + 2 + len(note) <= WIDTH:
                lines.append(f"{text}  {note}")
            else:
                lines.append(text)
                if note:
                    lines += _wrap(note, "      ")
        lines.append("")
    counts = {s: sum(c.status == s for c in comparisons) for s in STATUSES}
    verdict = "FAIL" if failed(comparisons) else "PASS"
    lines.append(f"regression gate: {verdict}: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES))
    if differing:
        lines += _wrap(f"settings differ for {', '.join(differing)} (above): rerun with the baseline's settings, "
                       "or --update to make this run the baseline")
    lines += ["rule: regressed if worse than baseline by more than max(abs, rel*|baseline|,",
              "      ci_k*sqrt(ci_b^2 + ci_c^2)); timing metrics skipped unless --check-timing"]
    return "\n".join(lines) + "\n"


# ---- command line ----------------------------------------------------------------------------

def _load_current(run_dir: Path) -> pd.DataFrame:
    try:
        frame, _ = load_runs([run_dir])
    except ReportError as err:
        raise BaselineError(f"--current: {err}") from err
    return frame


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.regress",
        description="Compare a finished run against a baseline; exit 1 on any regression.")
    parser.add_argument("--baseline", type=Path, required=True, metavar="FILE", help="baseline JSON file")
    parser.add_argument("--current", type=Path, required=True, metavar="RUN_DIR",
                        help="run directory (or a multirun directory) to check")
    parser.add_argument("--update", action="store_true",
                        help="write the baseline from the current run (keeps the file's tolerances)")
    parser.add_argument("--check-timing", action="store_true",
                        help="also gate timing metrics (throughput, latency, memory)")
    parser.add_argument("--diff-out", type=Path, default=None, metavar="CSV",
                        help="also write the diff table as CSV (e.g. a CI artifact)")
    args = parser.parse_args(argv)
    try:
        frame = _load_current(args.current)
        old = None
        if not args.update:
            old = load_baseline(args.baseline)
        elif args.baseline.exists():
            try:
                old = load_baseline(args.baseline)
            except BaselineError as err:
                raise BaselineError(f"{err}\n--update keeps the old file's tolerances, so it must be "
                                    "readable: fix it, or delete it to start from the defaults") from err
        comparisons = compare(old, frame, check_timing=args.check_timing) if old is not None else []
        if comparisons:
            print(format_diff(comparisons), end="")
        if args.diff_out is not None:
            _write_diff_csv(args.diff_out, comparisons)
        if args.update:
            baseline = make_baseline(frame, old["tolerances"] if old else None)
            atomic_write_json(args.baseline, baseline)
            print(f"wrote baseline {args.baseline} ({len(baseline['entries'])} entries from {args.current})")
            return 0
    except BaselineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if failed(comparisons) else 0


def _write_diff_csv(path: Path, comparisons: Sequence[Comparison]) -> None:
    rows = [{"pipeline": c.pipeline, "point": describe_point(c.params), "metric": c.metric,
             "baseline": c.baseline, "current": c.current, "delta": c.delta, "tolerance": c.tolerance,
             "status": c.status, "note": c.note,
             "settings_differ": "; ".join(t for k, (b, v) in c.settings.items() for t in describe_setting(k, b, v))}
            for c in comparisons]
    columns = ["pipeline", "point", "metric", "baseline", "current", "delta", "tolerance", "status", "note",
               "settings_differ"]
    atomic_write_text(path, pd.DataFrame(rows, columns=columns).to_csv(index=False, lineterminator="\n"))


if __name__ == "__main__":
    sys.exit(main())
