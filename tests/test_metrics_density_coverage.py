"""Density and coverage (Naeem et al. 2020) against a direct sklearn/numpy transcription of the
paper's formulas, its edge cases, and the metric in a MetricSet (registered, sharded, opt-in)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from metric_helpers import PooledPixels, batches
from sklearn.neighbors import NearestNeighbors

from bench.config import DataConfig, MetricsConfig
from bench.distributed import World, merge_metric_states, metric_state, shard
from bench.metrics import MetricSet, build_metrics
from bench.metrics.density_coverage import density_coverage, density_coverage_values
from bench.metrics.refstats import ReferenceStats
from models.core.interface import SampleBatch
from reports.metric_kinds import HIGHER, metric_kind


def paper(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Eqs. 3-4: r_i = distance of X_i to its k-th nearest other real sample (sklearn's neighbours
    of the real set include X_i itself first); density = 1/(kM) sum_j sum_i 1[|Y_j - X_i| < r_i],
    coverage = 1/N sum_i 1[min_j |Y_j - X_i| < r_i]."""
    radii = NearestNeighbors(n_neighbors=k + 1).fit(real).kneighbors(real)[0][:, k]
    distances = np.linalg.norm(real[:, None, :] - fake[None, :, :], axis=-1)      # (N, M)
    inside = distances < radii[:, None]
    return inside.sum() / (k * len(fake)), float((distances.min(axis=1) < radii).mean())


def features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g) + shift      # non-negative, like pool3 features


@pytest.mark.parametrize("n_real, n_fake, d, k, shift", [(200, 150, 16, 3, 0.0), (120, 300, 64, 5, 0.05),
                                                          (50, 40, 8, 1, 0.2), (300, 300, 32, 3, 0.5)])
def test_matches_the_papers_formulas(n_real: int, n_fake: int, d: int, k: int, shift: float) -> None:
    real, fake = features(n_real, d, 0), features(n_fake, d, 1, shift)
    density, coverage, per_sample = density_coverage(fake, real, k)
    expected_density, expected_coverage = paper(real.double().numpy(), fake.double().numpy(), k)
    assert density == pytest.approx(expected_density, abs=1e-12)
    assert coverage == pytest.approx(expected_coverage, abs=1e-12)
    assert per_sample.shape == (n_fake,) and int(per_sample.sum()) == round(density * k * n_fake)


def test_row_blocks_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    real, fake = features(90, 8, 2), features(70, 8, 3, 0.1)
    whole = density_coverage(fake, real, 3)[:2]
    monkeypatch.setattr("bench.metrics.density_coverage.BLOCK", 16)
    assert density_coverage(fake, real, 3)[:2] == whole


def test_edge_cases() -> None:
    real = features(60, 8, 4)
    density, coverage, _ = density_coverage(real, real, 3)
    assert coverage == 1.0                              # every real point holds its own copy
    assert density == pytest.approx(paper(real.double().numpy(), real.double().numpy(), 3)[0], abs=1e-12)
    assert density_coverage(real + 100.0, real, 3)[:2] == (0.0, 0.0)        # far away: nothing inside
    # a ball of radius 0 (k duplicates) holds nothing, not even a sample exactly at its centre
    duplicated = torch.cat([real[:1].repeat(4, 1), real[1:]])
    assert density_coverage(real[:1], duplicated, 3)[:2] == paper(duplicated.double().numpy(),
                                                                  real[:1].double().numpy(), 3)
    with pytest.raises(ValueError, match="more than k reference samples"):
        density_coverage(real, real[:3], 3)
    with pytest.raises(ValueError, match="equal D"):
        density_coverage(features(5, 4, 0), real, 3)
    with pytest.raises(ValueError, match="at least one generated sample"):
        density_coverage(torch.empty(0, 8), real, 3)


def test_opt_in_only_existing_results_stay_as_they_are() -> None:
    assert "density_coverage" not in MetricsConfig().names
    default_yaml = Path(__file__).resolve().parents[1] / "conf" / "metrics" / "default.yaml"
    assert "density_coverage" not in default_yaml.read_text()
    assert MetricsConfig(names=["fid", "density_coverage"]).names == ["fid", "density_coverage"]


def test_rows_carry_intervals_and_k() -> None:
    rows = density_coverage_values(features(100, 8, 5), features(120, 8, 6), k=4, n=100, details={"x": 1})
    density, coverage = rows
    assert (density.metric, coverage.metric) == ("density", "coverage")
    assert 0.0 <= density.ci_low <= density.value <= density.ci_high
    assert 0.0 <= coverage.ci_low <= coverage.value <= coverage.ci_high <= 1.0
    for row in rows:
        assert row.n == 100 and row.details["density_coverage_k"] == 4 and row.details["x"] == 1
        assert row.details["n_features_generated"] == 100 and row.details["n_features_reference"] == 120
    assert metric_kind("density").direction == metric_kind("coverage").direction == HIGHER


def test_in_a_metric_set_it_reads_the_features_precision_recall_keeps(tmp_path: Path) -> None:
    extractor = PooledPixels()
    cfg = MetricsConfig(names=["precision_recall", "density_coverage"], pr_k=3)
    metrics = build_metrics(cfg, DataConfig(name="shapes", resolution=16, n=80), cache_dir=tmp_path,
                            extractor=extractor)
    calls = extractor.calls
    for batch in batches(60):
        metrics.update(batch)
    assert extractor.calls - calls == 3 and len(metrics.kept) == 1      # one pass per batch, one kept bank
    rows = {row.metric: row for row in metrics.compute()}
    assert list(rows) == ["precision", "recall", "density", "coverage"]
    gen = torch.cat([extractor(b.images)["2048"] for b in batches(60)])
    density, coverage, _ = density_coverage(gen, metrics.reference.features, 3)
    assert (rows["density"].value, rows["coverage"].value) == (density, coverage)
    assert rows["density"].n == 60 and rows["density"].details["feature_extractor"] == "pooled-pixels"


def test_sharded_states_merge_to_the_single_process_numbers() -> None:
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    reference = ReferenceStats(np.zeros(48), np.eye(48), 50, features=features(50, 48, 8) / 2)
    cfg = MetricsConfig(names=["density_coverage"], max_kept_features=30)

    def make() -> MetricSet:
        return MetricSet(cfg.names, cfg, extractor=PooledPixels(), reference=reference)

    single = make()
    single.update(SampleBatch(images, torch.arange(40), None, None, {}, {}))
    ranks = [make() for _ in range(3)]
    for rank, metrics in enumerate(ranks):
        start, count = shard(0, 40, World(rank, 3))
        metrics.update(SampleBatch(images[start:start + count], torch.arange(start, start + count), None, None, {}, {}))
    merge_metric_states(ranks[0], [metric_state(m) for m in ranks[1:]])
    expected, got = single.compute(), ranks[0].compute()
    assert [(r.metric, r.value, r.ci_low, r.ci_high, r.n) for r in got] == \
        [(r.metric, r.value, r.ci_low, r.ci_high, r.n) for r in expected]
    assert got[0].details["features_capped_at"] == 30 and got[0].details["n_features_generated"] == 30
