"""Tiny end-to-end runs of `python -m bench` shared by the scale tests (sharded runs, npz
export): each costs an Inception load and a 2048-d Fréchet distance, so the single-process
run is made once per test session and reused."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

REPO = Path(__file__).resolve().parent.parent

# The shipped pixel DDPM, 10 DDIM steps, 10 samples against 16 shapes images. batch_size=4
# does not divide either rank's 5 samples, so ranks batch differently from one process.
# pr_k=7 keeps recall (which needs the merged generated features' k-NN radii) off 0 and 1;
# at the default pr_k=3 precision and recall are both 0 here, which would compare nothing.
TINY = ("pipeline=pixel_ddpm", "suite=smoke", "suite.n=10", "data.n=16", "sampler.steps=10",
        "metrics.names=[fid,kid,precision_recall]", "metrics.pr_k=3", "metrics.kid_subsets=10",
        "metrics.kid_subset_size=5", "hardware=cpu", "hardware.batch_size=4", "quiet=true")
QUALITY = ("fid", "kid", "precision", "recall")


def env() -> dict[str, str]:
    # One BLAS/OpenMP thread per process: two ranks on two cores must not oversubscribe.
    return {**os.environ, "PYTHONPATH": str(REPO), "DIFFBENCH_QUIET": "1", "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def bench(run_dir: Path, *overrides: str, nproc: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m bench`, or `torchrun --nproc_per_node=nproc -m bench`, into run_dir."""
    launcher = [sys.executable, "-m", "bench"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "bench"]
    proc = subprocess.run([*launcher, *overrides, f"hydra.run.dir={run_dir}"], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@functools.lru_cache(maxsize=None)
def single_run(base: Path) -> Path:
    """The one-process TINY run (made once per `base`, the session's temp root)."""
    run_dir = base / "tiny-single"
    bench(run_dir, *TINY)
    return run_dir


def quality(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / "results.csv")
    return frame[frame.metric.isin(QUALITY)].set_index("metric")[["value", "ci_low", "ci_high", "n"]]


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def shard_bytes(run_dir: Path) -> dict[str, bytes]:
    """Every sample shard of the run, by path below the run directory."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted((run_dir / "samples").rglob("shards/*.npz"))}


def main_in_process(monkeypatch, capsys, argv: Sequence[str]) -> tuple[int, str]:
    """`python -m bench *argv` in this process (no interpreter start): (exit code, stderr + stdout;
    "" when capsys is None)."""
    from bench.app import main
    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    code = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    if capsys is None:
        return code, ""
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def the_error_line(code: int, output: str) -> str:
    """Exit 2 and exactly one `error:` line, no traceback: that line."""
    assert code == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output[-3000:]
    return errors[0]
