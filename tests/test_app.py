"""The Hydra app: bad config fails at start-up naming the key; runs write complete results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench_runs import main_in_process, the_error_line

REPO = Path(__file__).resolve().parent.parent


def run_bench(*overrides: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DIFFBENCH_QUIET": "1"}
    return subprocess.run([sys.executable, "-m", "bench", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_unknown_pipeline_fails_naming_the_group(tmp_path):
    proc = run_bench("pipeline=nonexistent", f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode != 0
    assert "pipeline" in proc.stderr and "nonexistent" in proc.stderr
    assert not (tmp_path / "run" / "results.csv").exists()


@pytest.mark.parametrize("override, key", [
    ("hardware.batch_size=-1", "hardware.batch_size"),
    ("sampler.name=euler", "sampler.name"),
    ("hardware.device=tpu", "hardware.device"),
    ("suite.name=nosuchsuite", "suite.name"),
    ("+suite.params.no_such_param=1", "suite.params.no_such_param"),
    ("hardware.no_such_key=1", "no_such_key"),
])
def test_invalid_values_fail_at_start_naming_the_key(tmp_path, monkeypatch, capsys, override, key):
    # in this process: the same entry point (bench.app.main); the command line is the test above's
    code, output = main_in_process(monkeypatch, capsys, [override, f"hydra.run.dir={tmp_path}/run"])
    assert code != 0, output[-2000:]
    assert key in output, output[-2000:]
    assert not (tmp_path / "run" / "manifest.json").exists()


# A tiny but complete run: the shipped pixel checkpoint, few steps, a small reference set.
TINY_RUN = ("pipeline=pixel_ddpm", "suite.n=16", "data.n=48", "sampler.steps=3",
            "metrics.names=[fid,kid,precision_recall,speed]", "suite.params.speed_n=4", "metrics.speed_repeats=1")
VALUE_COLUMNS = ["pipeline", "metric", "value", "ci_low", "ci_high", "n"]
TIMING_METRICS = {"images_per_s", "s_per_image", "peak_memory_mib"} | {
    f"{m}[base]" for m in ("stage_s_per_image", "stage_share")}


def test_two_runs_with_one_seed_write_complete_identical_results(tmp_path):
    import pandas as pd
    frames = []
    for name in ("a", "b"):
        run = tmp_path / name
        proc = run_bench(*TINY_RUN, f"hydra.run.dir={run}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        for artefact in ("results.csv", "results.parquet", "manifest.json", "report.md"):
            assert (run / artefact).is_file(), artefact
        # one pipeline at one point: no plot (a single bar per panel would repeat the table), but its grid
        assert not list((run / "plots").glob("*.png")) and list((run / "grids").glob("*.png")), "no grid written"
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["seed"] == 0
        assert any("inception" in str(w).lower() for w in manifest["weights"]), manifest["weights"]
        frame = pd.read_csv(run / "results.csv")
        assert {"fid", "kid", "precision", "recall", "images_per_s"} <= set(frame.metric)
        pd.testing.assert_frame_equal(frame[VALUE_COLUMNS], pd.read_parquet(run / "results.parquet")[VALUE_COLUMNS],
                                      check_dtype=False)
        frames.append(frame)
    quality = [f[~f.metric.isin(TIMING_METRICS)][VALUE_COLUMNS].reset_index(drop=True) for f in frames]
    pd.testing.assert_frame_equal(quality[0], quality[1])        # timings aside, bit-identical



def test_a_corrupt_png_fails_the_run_naming_the_file_and_leaves_no_result(tmp_path, monkeypatch, capsys):
    from PIL import Image
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        Image.new("RGB", (32, 32), (40 * i, 10, 200)).save(images / f"ok_{i}.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    run = tmp_path / "run"
    code, output = main_in_process(monkeypatch, capsys, [*TINY_RUN, "data=folder", f"data.root={images}", "data.n=7",
                                                         f"hydra.run.dir={run}"])   # in this process: no start-up
    assert "broken.png" in the_error_line(code, output)
    assert not (run / "results.csv").exists() and not (run / "results.parquet").exists()
    if (run / "manifest.json").exists():
        assert json.loads((run / "manifest.json").read_text())["status"] != "complete"
