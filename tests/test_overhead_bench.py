"""The overhead benchmark (python -m bench.tools.overhead_bench) runs end to end at tiny sizes, so
its code path cannot rot; the figures are measured with the shipped UNet at batch 64 and the
real-size DiT-XL/2 / SD 1.5 UNet by hand (README, "Performance")."""
from __future__ import annotations

import math

import pytest

from bench.tools.overhead_bench import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow   # a benchmark run end to end
def test_all_three_comparisons_run_and_both_sides_make_the_same_images(capsys: pytest.CaptureFixture[str]) -> None:
    comparisons = main(["--batch", "2", "--steps", "2", "--repeats", "1", "--diffusers-size", "tiny",
                        "--diffusers-steps", "1", "--images", "4", "--feature-batch", "4"])
    names = [c.name for c in comparisons]
    assert len(comparisons) == 4 and names[0].startswith("a:") and names[-1].startswith("c:")
    harness, dit, sd, _ = comparisons
    assert harness.max_diff is not None and harness.max_diff <= 1      # the bare loop is the same DDIM
    assert dit.max_diff == 0 and sd.max_diff == 0                      # the adapter is the same diffusers call
    for c in comparisons:
        assert all(len(c.cpu[side]) == 1 and c.wall[side][0] > 0 for side in ("harness", "direct"))
        assert math.isfinite(c.ratio) and c.ratio > 0
    out = capsys.readouterr().out
    assert "ratio" in out and "DiT (tiny)" in out and "torch_fidelity.calculate_metrics" in out


def test_only_selects_parts_and_rejects_unknown_ones() -> None:
    comparisons = main(["--only", "harness", "--batch", "1", "--steps", "1", "--repeats", "1"])
    assert [c.name[:2] for c in comparisons] == ["a:"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "harness,warp"])
    assert exit_info.value.code == 2
