"""The Hydra app: bad config fails at start-up naming the key; runs write complete results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    ("hardware.no_such_key=1", "no_such_key"),
])
def test_invalid_values_fail_at_start_naming_the_key(tmp_path, override, key):
    proc = run_bench(override, f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode != 0, proc.stdout
    assert key in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "run" / "manifest.json").exists()
