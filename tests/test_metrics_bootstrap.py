"""FID's bootstrap confidence interval (bench.metrics.bootstrap) and the CI method every FID/KID
row states. Small dimensions keep each replicate's eigenvalue problem cheap."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from metric_helpers import PooledPixels, batches

from bench.config import DataConfig, MetricsConfig
from bench.data.config import ConfigError
from bench.metrics import build_metrics
from bench.metrics.bootstrap import bootstrap_fid, resample_counts, weighted_moments
from bench.metrics.frechet import frechet_distance
from bench.results import RunContext, make_row
from reports.uncertainty import ci_footnotes


def gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=torch.Generator().manual_seed(99)) / d ** 0.5 + torch.eye(d)
    return (torch.randn(n, d, generator=g) @ mixing + shift).double()


def moments(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    a = x.double().numpy()
    return a.mean(0), np.cov(a, rowvar=False)


def interval(gen: torch.Tensor, ref: torch.Tensor, *, replicates: int = 40, seed: int = 0):
    mu_g, sigma_g = moments(gen)
    mu_r, sigma_r = moments(ref)
    point = frechet_distance(mu_g, sigma_g, mu_r, sigma_r, warn=False).value
    return point, bootstrap_fid(gen, mu_r, sigma_r, point=point, replicates=replicates, seed=seed)


def test_weighted_moments_equal_those_of_the_materialised_resample() -> None:
    x = gaussian(30, 5, 1)
    counts = resample_counts(30, 1, seed=7)[0]
    assert counts.sum() == 30 and (counts == 0).any()          # with replacement: some drawn twice, some never
    mu, sigma = weighted_moments(x, counts)
    expanded = x[torch.from_numpy(np.repeat(np.arange(30), counts))]
    mu_ref, sigma_ref = moments(expanded)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-10, atol=1e-12)


def test_interval_contains_the_point_estimate_and_is_deterministic_with_the_seed() -> None:
    gen, ref = gaussian(300, 8, 1, shift=0.4), gaussian(500, 8, 2)
    point, first = interval(gen, ref, seed=3)
    _, again = interval(gen, ref, seed=3)
    _, other = interval(gen, ref, seed=4)
    assert first.low < point < first.high
    assert (first.low, first.high) == (again.low, again.high)
    np.testing.assert_array_equal(first.replicates, again.replicates)
    assert (first.low, first.high) != (other.low, other.high)
    # resampling with replacement inflates FID (repeated samples): the raw bootstrap mean sits above
    # the point estimate, which is why the interval is recentred (and the shift recorded)
    assert first.details(point)["fid_bootstrap_shift"] > 0
    assert first.method == "bootstrap(B=40, seed=3)"


def test_interval_widens_with_fewer_samples() -> None:
    ref = gaussian(800, 8, 2)
    _, many = interval(gaussian(800, 8, 5, shift=0.4), ref)
    _, few = interval(gaussian(100, 8, 5, shift=0.4), ref)
    assert few.high - few.low > 1.5 * (many.high - many.low)


def test_bootstrap_rejects_degenerate_input() -> None:
    with pytest.raises(ValueError, match="replicates"):
        interval(gaussian(20, 3, 1), gaussian(20, 3, 2), replicates=1)


def test_config_rejects_too_few_replicates() -> None:
    with pytest.raises(ConfigError, match="metrics.bootstrap"):
        MetricsConfig(bootstrap=5)
    assert MetricsConfig().bootstrap == 0


@pytest.mark.filterwarnings("ignore::bench.metrics.frechet.FrechetWarning")
@pytest.mark.parametrize("names", [["fid"], ["fid", "kid"]])   # own kept features / MetricSet's shared bank
def test_rows_carry_the_interval_and_its_method(names: list[str], tmp_path: Path) -> None:
    data = DataConfig(name="shapes", resolution=16, n=80)
    cfg = MetricsConfig(names=names, kid_subsets=5, kid_subset_size=30, bootstrap=20, bootstrap_seed=11)
    metrics = build_metrics(cfg, data, cache_dir=tmp_path, extractor=PooledPixels())
    for batch in batches(60):
        metrics.update(batch)
    rows = {row.metric: row for row in metrics.compute()}
    fid = rows["fid"]
    assert fid.ci_low < fid.value < fid.ci_high
    assert fid.details["ci_method"] == "bootstrap(B=20, seed=11)" and fid.details["bootstrap_n"] == 60
    if "kid" in rows:
        assert rows["kid"].details["ci_method"] == "subset_std(subsets=5, size=30, seed=2020)"
    # the report's footnote states which interval each metric's "±" is
    frame = pd.DataFrame([make_row(RunContext("r", "smoke", "p", "pixel"), r) for r in rows.values()])
    notes = ci_footnotes(frame)
    assert notes[0].startswith("fid: bootstrap(B=20, seed=11) (1 row): 95% percentile interval")
    assert any(n.startswith("kid: subset_std(") for n in notes) == ("kid" in rows)

    plain = build_metrics(MetricsConfig(names=["fid"]), data, cache_dir=tmp_path, extractor=PooledPixels())
    for batch in batches(60):
        plain.update(batch)
    (row,) = plain.compute()
    assert row.value == pytest.approx(fid.value, rel=1e-12) and row.ci_low is None
    assert row.details["ci_method"].startswith("none")


@pytest.mark.filterwarnings("ignore::bench.metrics.frechet.FrechetWarning")
def test_sharded_evaluation_merges_the_kept_features_into_the_same_interval(tmp_path: Path) -> None:
    data = DataConfig(name="shapes", resolution=16, n=80)
    cfg = MetricsConfig(names=["fid"], bootstrap=10)
    single, first, second = (build_metrics(cfg, data, cache_dir=tmp_path, extractor=PooledPixels()) for _ in range(3))
    for k, batch in enumerate(batches(60)):
        single.update(batch)
        (first if k < 2 else second).update(batch)
    first.merge(second.state())   # torchrun: rank 1's share folded into rank 0's
    (one,), (merged,) = single.compute(), first.compute()
    assert merged.value == pytest.approx(one.value, rel=1e-9)
    assert (merged.ci_low, merged.ci_high) == pytest.approx((one.ci_low, one.ci_high), rel=1e-9)
