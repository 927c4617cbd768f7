"""Hydra multirun with the joblib launcher (conf/hydra/launcher/joblib_local.yaml): two guidance
scales as two parallel jobs, then `python -m reports MULTIRUN_DIR` merges them into one table
and one set of plots. Real processes end to end, so it is marked slow (~1 CPU minute)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent


def python(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DIFFBENCH_QUIET": "1"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_joblib_multirun_over_two_guidance_scales_gives_one_merged_report(tmp_path: Path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "multirun"
    proc = python("-m", "bench", "-m", "hydra/launcher=joblib_local", f"hydra.sweep.dir={sweep}",
                  "guidance_scale=1,3", "pipeline=pixel_ddpm", "suite.n=8", "data.n=24", "sampler.steps=3",
                  "metrics.names=[fid,kid]", "metrics.kid_subsets=10", "quiet=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib" in proc.stdout + proc.stderr              # the joblib launcher ran the jobs
    jobs = sorted(p.parent for p in sweep.glob("*/results.csv"))
    assert len(jobs) == 2, jobs

    out = tmp_path / "report"
    proc = python("-m", "reports", str(sweep), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(out / "table.csv")
    assert sorted(table["guidance_scale"]) == [1.0, 3.0]         # one row per job, merged
    assert table["pipeline"].tolist() == ["pixel_ddpm", "pixel_ddpm"]
    assert (out / "plots" / "fid_vs_guidance_scale.png").is_file()
    report = (out / "report.md").read_text()
    assert report.count("multirun/") >= 1 and "fid_vs_guidance_scale" in report
