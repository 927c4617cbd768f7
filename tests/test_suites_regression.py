"""The CI regression gate end to end: the regression suite (conf/suite/regression.yaml) writes
results, `bench.regress --update` makes a baseline from them, the same configuration passes,
and a deliberately degraded checkpoint or sampler setting fails with exit 1. Tiny n here; the
committed configuration against the committed baseline is the slow test at the end and the
regression step of .ci/run."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.regress import load_baseline, main as gate
from suite_helpers import run_suite

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "suites" / "baselines" / "regression.json"
TINY = ("suite=regression", "suite.n=16", "data.n=32", "metrics.kid_subsets=10",
        "suite.params.metrics=[kid,precision_recall]")


@pytest.fixture(scope="module")
def tiny_baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("regression")
    run_suite(root / "main", *TINY)
    assert gate(["--baseline", str(root / "baseline.json"), "--current", str(root / "main"), "--update"]) == 0
    return root / "baseline.json"


def check(baseline: Path, run_dir: Path) -> int:
    return gate(["--baseline", str(baseline), "--current", str(run_dir)])


def test_main_configuration_passes_its_own_baseline(tiny_baseline: Path):
    assert check(tiny_baseline, tiny_baseline.parent / "main") == 0
    entries = load_baseline(tiny_baseline)["entries"]
    assert {e["metric"] for e in entries} == {"kid", "precision", "recall"}
    assert {e["pipeline"] for e in entries} == {"pixel_ddpm"}


@pytest.mark.slow   # a second regression run
def test_degraded_checkpoint_fails_the_gate(tiny_baseline: Path, tmp_path: Path, capsys):
    # the shipped architecture with fresh random weights, under the same pipeline name
    run_suite(tmp_path / "untrained", *TINY, "+pipeline.params.untrained=true")
    assert check(tiny_baseline, tmp_path / "untrained") == 1
    assert "regression gate: FAIL" in capsys.readouterr().out


def test_degraded_sampler_setting_fails_the_gate(tiny_baseline: Path, tmp_path: Path, capsys):
    run_suite(tmp_path / "ddpm3", *TINY, "sampler.name=ddpm", "sampler.steps=3")
    assert check(tiny_baseline, tmp_path / "ddpm3") == 1
    assert "regressed" in capsys.readouterr().out


def test_committed_baseline_is_readable_and_covers_the_suite():
    baseline = load_baseline(BASELINE)
    assert baseline["source"]["suites"] == ["regression"]
    assert {"fid", "kid", "precision", "recall"} <= {e["metric"] for e in baseline["entries"]}


@pytest.mark.slow   # the full CI configuration (what .ci/run gates): a few CPU minutes
def test_committed_configuration_passes_the_committed_baseline(tmp_path: Path):
    run_suite(tmp_path / "ci", "suite=regression")
    assert check(BASELINE, tmp_path / "ci") == 0
