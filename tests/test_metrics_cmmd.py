"""CMMD (Jayasumana et al., CVPR 2024) against the PyPI `clip-mmd` package (a port of
google-research cmmd/distance.py) and against the estimator written out here independently."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.metrics.cmmd import SCALE, SIGMA, cmmd, cmmd_value, mmd, normalise
from bench.metrics.refstats import ReferenceStats
from bench.metrics.base import ComputeContext
from bench.metrics.inception import FeatureBank
from bench.metrics.registry import INCEPTION_POOL


def _embeddings(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=torch.float64) + shift


def _reference_formula(x: np.ndarray, y: np.ndarray, sigma: float = 10.0) -> float:
    """1000 (E k(x,x') + E k(y,y') - 2 E k(x,y)) with means over all pairs, diagonals included
    (the minimum-variance MMD^2 of Gretton et al. 2012 eq. 5), k Gaussian RBF of bandwidth sigma."""
    def mean_kernel(a: np.ndarray, b: np.ndarray) -> float:
        squared = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return float(np.exp(-squared / (2 * sigma ** 2)).mean())
    return 1000 * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y))


@pytest.mark.parametrize("n_x,n_y,d", [(50, 50, 32), (70, 40, 768)])
def test_equals_clip_mmd_package(n_x, n_y, d):
    calculation = pytest.importorskip("clip_mmd.calculation")
    x = normalise(_embeddings(n_x, d, 0))
    y = normalise(_embeddings(n_y, d, 1, shift=0.3))
    theirs = float(calculation.mmd(x.clone(), y.clone()))     # float64 in, float64 out
    ours = mmd(x, y)
    assert ours > 0.1
    assert abs(ours - theirs) / abs(theirs) < 1e-6, (ours, theirs)
    assert calculation._SIGMA == SIGMA and calculation._SCALE == SCALE


def test_equals_independent_formula_and_normalises():
    raw_x, raw_y = 5 * _embeddings(60, 16, 2), 3 * _embeddings(45, 16, 3, shift=0.5)   # not unit norm
    expected = _reference_formula(normalise(raw_x).numpy(), normalise(raw_y).numpy())
    assert abs(cmmd(raw_x, raw_y) - expected) / expected < 1e-9
    assert abs(cmmd(raw_x.float(), raw_y.float()) - expected) / expected < 1e-5   # float32 embeddings
    assert cmmd(raw_x, 7 * raw_x) == pytest.approx(0.0, abs=1e-9)     # same directions: same distribution
    assert mmd(raw_x, raw_y, sigma=1.0) != pytest.approx(mmd(raw_x, raw_y))   # sigma matters


def test_blocks_do_not_change_the_value(monkeypatch):
    x, y = normalise(_embeddings(130, 8, 4)), normalise(_embeddings(90, 8, 5, shift=0.2))
    whole = mmd(x, y)
    monkeypatch.setattr("bench.metrics.cmmd.BLOCK", 16)
    assert mmd(x, y) == pytest.approx(whole, rel=1e-12)


def test_metric_row_reads_kept_features():
    from bench.metrics.cmmd import CmmdMetric
    gen, ref = _embeddings(40, 12, 6).float(), _embeddings(50, 12, 7, shift=0.4).float()
    bank = FeatureBank(1000)
    bank.update(gen)
    cfg = type("Cfg", (), {"max_kept_features": 1000})()
    context = ComputeContext(cfg, 40, ReferenceStats(np.zeros(12), np.eye(12), 50, ref), {"feature_space": "x"}, {},
                             {INCEPTION_POOL: bank})
    (row,) = CmmdMetric(cfg, None).compute(context)
    assert row.metric == "cmmd" and row.value == pytest.approx(cmmd(gen, ref), rel=1e-12)
    assert row.details["cmmd_sigma"] == 10 and row.details["n_features_reference"] == 50
    assert cmmd_value(gen, ref, n=40).value == row.value
    with pytest.raises(ValueError, match="equal D"):
        mmd(gen, ref[:, :5])
