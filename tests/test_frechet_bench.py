"""The Fréchet benchmark (python -m bench.tools.frechet_bench) runs end to end at a small d, so
its code path cannot rot; the numbers themselves are measured at d = 2048 by hand (README)."""
from __future__ import annotations

import pytest

from bench.tools.frechet_bench import main


def test_benchmark_runs_and_all_four_agree_at_small_d(capsys: pytest.CaptureFixture[str]) -> None:
    result = main(["--dims", "24", "--samples", "100", "--repeats", "2"])
    assert len(result["median"]) == 4 and all(len(times) == 2 for times in result["times"].values())
    assert result["max_rel_diff"] < 1e-8
    names = list(result["values"])
    assert result["values"][names[0]] == result["values"][names[1]]   # cached factor: same value, bit for bit
    out = capsys.readouterr().out
    assert "d = 24" in out and "targets:" in out and "torch-fidelity" in out
