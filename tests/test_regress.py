"""bench.regress: direction-aware tolerances, exit codes, baseline round trip. Synthetic run
directories are written with bench.results (the gate only reads stored files)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.regress import Tolerance, default_spec, judge, main, resolve_tolerance
from bench.results import MetricValue, RunContext, make_row, write_results

ROOT = Path(__file__).resolve().parents[1]
BASE = {"fid": 20.0, "clip_score": 25.0, "psnr": 30.0, "nfe": 50.0, "images_per_s": 10.0}


def make_run(run_dir: Path, values: dict[str, float] | None = None, ci: float | None = None,
             params: dict | None = None) -> Path:
    values = {**BASE, **(values or {})}
    ctx = RunContext("run", "regression", "pixel_tiny", "pixel", params or {"steps": 10, "sampler": "ddim"})
    rows = []
    for metric, value in values.items():
        if value is None:
            continue
        lo, hi = (None, None) if ci is None or metric == "fid" else (value - ci, value + ci)
        rows.append(make_row(ctx, MetricValue(metric, value, 64, ci_low=lo, ci_high=hi)))
    write_results(run_dir, rows)
    (run_dir / "manifest.json").write_text(json.dumps({"status": "complete"}))
    return run_dir


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    path = tmp_path / "baseline.json"
    assert main(["--baseline", str(path), "--current", str(make_run(tmp_path / "good")), "--update"]) == 0
    return path


def gate(baseline: Path, run_dir: Path, *extra: str) -> int:
    return main(["--baseline", str(baseline), "--current", str(run_dir), *extra])


def test_lower_is_better_metric_rising_beyond_tolerance_fails(baseline: Path, tmp_path: Path, capsys):
    # fid default tolerance: max(0.5, 2% of 20 = 0.4) = 0.5
    assert gate(baseline, make_run(tmp_path / "within", {"fid": 20.45})) == 0
    assert gate(baseline, make_run(tmp_path / "worse", {"fid": 20.6})) == 1
    out = capsys.readouterr().out
    assert "regression gate: FAIL: 1 regressed" in out
    line = next(l for l in out.splitlines() if " fid " in l and "regressed" in l)
    assert "+0.6" in line and "0.5" in line
    assert "pixel_tiny" in out.splitlines()[0]   # the table's heading: the pipeline (and its point)
    assert gate(baseline, make_run(tmp_path / "better", {"fid": 15.0})) == 0
    assert "1 improved" in capsys.readouterr().out


def test_higher_is_better_metric_is_symmetric(baseline: Path, tmp_path: Path):
    # clip_score default: max(0.25, 1% of 25 = 0.25) = 0.25; psnr: max(0.1, 0.5% of 30 = 0.15)
    assert gate(baseline, make_run(tmp_path / "a", {"clip_score": 24.8})) == 0
    assert gate(baseline, make_run(tmp_path / "b", {"clip_score": 24.7})) == 1
    assert gate(baseline, make_run(tmp_path / "c", {"clip_score": 30.0})) == 0
    assert gate(baseline, make_run(tmp_path / "d", {"psnr": 29.8})) == 1


def test_missing_metric_fails_and_new_metric_does_not(baseline: Path, tmp_path: Path, capsys):
    diff = tmp_path / "diff.csv"
    assert gate(baseline, make_run(tmp_path / "missing", {"psnr": None}), "--diff-out", str(diff)) == 1
    assert "missing" in capsys.readouterr().out
    table = pd.read_csv(diff)
    assert table.set_index("metric").loc["psnr", "status"] == "missing"
    assert table.set_index("metric").loc["fid", "status"] == "ok"
    assert gate(baseline, make_run(tmp_path / "new", {"ssim": 0.9})) == 0
    assert "1 new" in capsys.readouterr().out


def test_changed_sweep_point_is_reported_as_missing_with_a_hint(tmp_path: Path, capsys):
    path = tmp_path / "b.json"
    assert main(["--baseline", str(path), "--current", str(make_run(tmp_path / "g", params={"f": 4, "steps": 10})),
                 "--update"]) == 0
    assert gate(path, make_run(tmp_path / "moved", params={"f": 8, "steps": 10})) == 1
    assert "current run has it at (f=8)" in capsys.readouterr().out


def test_timing_is_skipped_by_default_and_checked_on_request(baseline: Path, tmp_path: Path):
    slow = make_run(tmp_path / "slow", {"images_per_s": 4.0})
    assert gate(baseline, slow) == 0
    assert gate(baseline, slow, "--check-timing") == 1  # 60% slower > the 50% timing tolerance
    assert gate(baseline, make_run(tmp_path / "bit_slow", {"images_per_s": 6.0}), "--check-timing") == 0


def test_nfe_is_exact(baseline: Path, tmp_path: Path):
    assert gate(baseline, make_run(tmp_path / "nfe", {"nfe": 51.0})) == 1


def test_ci_based_tolerance(tmp_path: Path):
    path = tmp_path / "b.json"
    assert main(["--baseline", str(path), "--current", str(make_run(tmp_path / "g", ci=1.0)), "--update"]) == 0
    # combined half-width sqrt(1 + 1) = 1.41: a 1.2 drop in CLIP score is within noise
    assert gate(path, make_run(tmp_path / "a", {"clip_score": 23.8}, ci=1.0)) == 0
    assert gate(path, make_run(tmp_path / "b", {"clip_score": 23.5}, ci=1.0)) == 1
    spec = json.loads(path.read_text())
    spec["tolerances"]["clip_score"]["ci_k"] = 0.0
    path.write_text(json.dumps(spec))
    assert gate(path, make_run(tmp_path / "c", {"clip_score": 23.8}, ci=1.0)) == 1


def test_update_round_trip_keeps_tolerances(baseline: Path, tmp_path: Path):
    data = json.loads(baseline.read_text())
    assert data["tolerances"]["fid"] == {"direction": "lower", "abs": 0.5, "rel": 0.02, "ci_k": 1.0,
                                         "skip": False}
    entry = next(e for e in data["entries"] if e["metric"] == "fid")
    assert entry["value"] == 20.0 and entry["n"] == 64 and entry["params"] == {}
    assert entry["settings"] == {"sampler": "ddim", "steps": 10}   # how it was made, apart from where
    data["tolerances"]["fid"]["abs"] = 3.0
    del data["tolerances"]["clip_score"]  # an exact name would take precedence over a pattern
    data["tolerances"]["clip*"] = {"rel": 0.2}
    baseline.write_text(json.dumps(data))
    worse = make_run(tmp_path / "worse", {"fid": 22.0, "clip_score": 21.0})
    assert gate(baseline, worse) == 0  # the hand-tuned tolerances admit it
    assert gate(baseline, worse, "--update") == 0
    updated = json.loads(baseline.read_text())
    assert updated["tolerances"]["fid"]["abs"] == 3.0 and updated["tolerances"]["clip*"] == {"rel": 0.2}
    assert "clip_score" not in updated["tolerances"]  # covered by the user's pattern
    assert next(e for e in updated["entries"] if e["metric"] == "fid")["value"] == 22.0
    before = baseline.read_bytes()
    assert gate(baseline, worse, "--update") == 0 and baseline.read_bytes() == before
    assert gate(baseline, worse) == 0


def test_baseline_from_parquet_matches_csv_only_run(baseline: Path, tmp_path: Path):
    run = make_run(tmp_path / "csv_only", params={"steps": 10, "sampler": "ddim"})
    (run / "results.parquet").unlink()
    assert gate(baseline, run) == 0


def test_unusable_input_exits_2_with_a_message(baseline: Path, tmp_path: Path, capsys):
    assert gate(tmp_path / "none.json", make_run(tmp_path / "r")) == 2
    assert "does not exist; create it" in capsys.readouterr().err
    data = json.loads(baseline.read_text())
    data["tolerances"]["fid"]["absolute"] = 1
    baseline.write_text(json.dumps(data))
    assert gate(baseline, tmp_path / "r") == 2
    assert "unknown key(s) ['absolute']" in capsys.readouterr().err
    unfinished = make_run(tmp_path / "unfinished")
    (unfinished / "manifest.json").write_text(json.dumps({"status": "running"}))
    assert gate(baseline, unfinished) == 2
    assert "did not finish" in capsys.readouterr().err


def test_judge_rule():
    tol = Tolerance("lower", abs=0.1, rel=0.0, ci_k=2.0, skip=False)
    assert judge(tol, 1.0, 1.5, 0.15, 0.2) == ("ok", 0.5)        # 2 * hypot(0.15, 0.2) = 0.5
    assert judge(tol, 1.0, 1.6, 0.15, 0.2)[0] == "regressed"
    assert judge(tol, 1.0, None, None, None)[0] == "regressed"   # the metric became NaN
    either = resolve_tolerance("mystery_metric", {})
    assert either.direction == "either" and judge(either, 10.0, 9.0, None, None)[0] == "regressed"


# The defaults as they were before they moved into bench.metrics.registry: (abs, rel, ci_k, skip).
QUALITY = {"fid": (0.5, 0.02), "rfid": (0.5, 0.02), "kid": (0.001, 0.05), "precision": (0.02, 0.0),
           "recall": (0.02, 0.0), "inception_score": (0.05, 0.02),
           "clip_score[ViT-B-32/laion2b_s34b_b79k]": (0.25, 0.01), "psnr": (0.1, 0.005), "ssim": (0.005, 0.005),
           "lpips": (0.005, 0.02), "val_loss": (0.0, 0.05), "mystery_metric": (0.0, 0.05)}


@pytest.mark.parametrize("metric", sorted(QUALITY))
def test_default_tolerances_come_from_the_registry(metric: str):
    spec = default_spec(metric)
    assert (spec["abs"], spec["rel"], spec["ci_k"], spec["skip"]) == (*QUALITY[metric], 1.0, False)
    assert all(isinstance(spec[key], float) for key in ("abs", "rel", "ci_k"))   # "0.0", not "0", in the JSON


def test_timings_are_skipped_and_nfe_is_exact_by_default():
    timing = default_spec("stage_s_per_image[decoder]")
    assert (timing["direction"], timing["abs"], timing["rel"], timing["skip"]) == ("lower", 0.0, 0.5, True)
    assert default_spec("nfe_per_image") == {"direction": "lower", "abs": 0.0, "rel": 0.0, "ci_k": 0.0, "skip": False}


def test_gate_does_not_import_torch(baseline: Path, tmp_path: Path):
    run = make_run(tmp_path / "r", {"fid": 25.0})
    code = ("import sys; from bench.regress import main; "
            f"rc = main(['--baseline', {str(baseline)!r}, '--current', {str(run)!r}]); "
            "assert 'torch' not in sys.modules; sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "regressed" in done.stdout


# ---- issue 28: a baseline written by --update diffs value against value when a setting changed ----

def statuses(diff_csv: Path) -> dict[str, str]:
    return pd.read_csv(diff_csv).set_index("metric")["status"].to_dict()


def test_update_baseline_diffs_values_and_names_a_changed_setting(baseline: Path, tmp_path: Path, capsys):
    # `baseline` was written by --update from a run at steps=10: it records the settings. A run at
    # steps=5 used to read "0 regressed, 5 missing, 5 new" in 400-character lines.
    fewer = make_run(tmp_path / "steps5", {"fid": 23.0}, params={"steps": 5, "sampler": "ddim"})
    capsys.readouterr()
    assert gate(baseline, fewer, "--diff-out", str(tmp_path / "a.csv")) == 1
    out = capsys.readouterr().out
    assert "pixel_tiny: steps: baseline 10, current 5" in out
    assert "1 regressed, 0 missing, 0 improved, 0 new, 3 ok, 1 skipped" in out
    assert "+3 (+15.0%)" in next(l for l in out.splitlines() if " fid " in l)
    assert max(len(line) for line in out.splitlines()) < 120
    assert pd.read_csv(tmp_path / "a.csv").set_index("metric").loc["fid", "settings_differ"] == \
        "steps: baseline 10, current 5"
    # ... exactly as a baseline that records no settings (the committed one's format) diffs it
    bare = json.loads(baseline.read_text())
    for entry in bare["entries"]:
        entry.pop("settings")
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(bare))
    assert gate(plain, fewer, "--diff-out", str(tmp_path / "b.csv")) == 1
    assert statuses(tmp_path / "a.csv") == statuses(tmp_path / "b.csv")
    # and as a baseline from before settings were kept apart (they sat among the params)
    old = json.loads(baseline.read_text())
    for entry in old["entries"]:
        entry["params"] = {**entry["params"], **entry.pop("settings")}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert gate(tmp_path / "old.json", fewer, "--diff-out", str(tmp_path / "c.csv")) == 1
    assert statuses(tmp_path / "a.csv") == statuses(tmp_path / "c.csv")
    # within tolerance the changed setting is named, and the values decide
    capsys.readouterr()
    assert gate(baseline, make_run(tmp_path / "same", params={"steps": 5, "sampler": "ddim"})) == 0
    assert "steps: baseline 10, current 5" in capsys.readouterr().out


def test_a_swept_setting_is_part_of_the_point(tmp_path: Path, capsys):
    def sweep(run_dir: Path, steps: list[int], fid: float = 20.0) -> Path:
        rows = [make_row(RunContext("run", "s", "pixel_tiny", "pixel", {"steps": s, "sampler": "ddim"}),
                         MetricValue("fid", fid + s, 64)) for s in steps]
        write_results(run_dir, rows)
        (run_dir / "manifest.json").write_text(json.dumps({"status": "complete"}))
        return run_dir

    path = tmp_path / "b.json"
    assert main(["--baseline", str(path), "--current", str(sweep(tmp_path / "g", [10, 20])), "--update"]) == 0
    assert {e["params"]["steps"] for e in json.loads(path.read_text())["entries"]} == {10, 20}
    assert gate(path, sweep(tmp_path / "same", [10, 20])) == 0
    capsys.readouterr()
    assert gate(path, sweep(tmp_path / "half", [10])) == 1   # steps=20 is missing, not matched to 10
    out = capsys.readouterr().out
    assert "0 regressed, 1 missing" in out and "settings differ" not in out


def test_long_settings_and_notes_keep_lines_readable(baseline: Path, tmp_path: Path, capsys):
    params = {"steps": 10, "sampler": "ddim", "checkpoint": "/a/very/long/path/" * 8,
              "pipeline_params": json.dumps({"adapter": "heart_lora_r4", "adapter_scale": 0.5, "x": "y" * 90})}
    path = tmp_path / "b.json"
    assert main(["--baseline", str(path), "--current", str(make_run(tmp_path / "g", params=params)), "--update"]) == 0
    changed = {**params, "pipeline_params": json.dumps({"adapter": "heart_lora_r4", "adapter_scale": 1.0,
                                                        "x": "y" * 90})}
    capsys.readouterr()
    assert gate(path, make_run(tmp_path / "c", {"psnr": None}, params=changed)) == 1
    out = capsys.readouterr().out
    assert "pipeline_params.adapter_scale: baseline 0.5, current 1.0" in out
    assert "psnr" in out and "missing" in out
    assert max(len(line) for line in out.splitlines()) < 120
