"""build_metrics / MetricSet: one feature pass per batch feeds FID, KID and precision/recall;
rows carry n, intervals and provenance. A cheap stand-in extractor keeps this fast."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from metric_helpers import PooledPixels, batches

from bench.config import DataConfig, MetricsConfig
from bench.data.shapes import ShapesSource
from bench.metrics import MetricSet, build_metrics, registry
from bench.metrics.frechet import GaussianAccumulator, frechet_distance
from bench.metrics.kid import kid_from_features
from bench.metrics.precision_recall import precision_recall
from bench.metrics.registry import INCEPTION_POOL


@pytest.fixture
def data() -> DataConfig:
    return DataConfig(name="shapes", resolution=16, n=80)


@pytest.mark.filterwarnings("ignore::bench.metrics.frechet.FrechetWarning")
def test_one_feature_pass_per_batch_feeds_every_metric(data: DataConfig, tmp_path: Path) -> None:
    extractor = PooledPixels()
    cfg = MetricsConfig(names=["fid", "kid", "precision_recall", "speed"], kid_subsets=5, kid_subset_size=30)
    metrics = build_metrics(cfg, data, cache_dir=tmp_path, extractor=extractor)
    reference_calls = extractor.calls
    for batch in batches(60):
        metrics.update(batch)
    assert extractor.calls - reference_calls == 3            # 60 images in batches of 20: 3 passes, not 9
    rows = {row.metric: row for row in metrics.compute()}
    assert set(rows) == {"fid", "kid", "precision", "recall"}    # speed is measured separately

    # the same numbers straight from the features
    gen = torch.cat([extractor(b.images)["2048"] for b in batches(60)])
    ref_source = ShapesSource(16, 80, 0, "test")
    ref = torch.cat([extractor(b.images)["2048"] for b in ref_source.iter_batches(80)])
    fid = frechet_distance(gen.double().mean(0).numpy(), np.cov(gen.double().numpy(), rowvar=False),
                           ref.double().mean(0).numpy(), np.cov(ref.double().numpy(), rowvar=False)).value
    assert rows["fid"].value == pytest.approx(fid, rel=1e-6)   # near-singular 48-d covariances
    assert rows["kid"].value == pytest.approx(kid_from_features(gen, ref, subsets=5, subset_size=30)[0], rel=1e-12)
    precision, recall = precision_recall(gen, ref, k=3)
    assert (rows["precision"].value, rows["recall"].value) == (precision, recall)
    declared = {kind.name: kind for kind in registry.row_kinds()}
    for row in rows.values():
        assert row.n == 60 and row.unit == declared[row.metric].unit
        assert row.details["feature_extractor"] == "pooled-pixels" and row.details["resize_mode"] == "none"
        assert row.details["weights"]["sha256"] == "0" * 64 and row.details["n_reference"] == 80
    assert rows["kid"].ci_low < rows["kid"].value < rows["kid"].ci_high


def test_kept_features_are_capped(data: DataConfig, tmp_path: Path) -> None:
    cfg = MetricsConfig(names=["kid"], kid_subsets=3, kid_subset_size=10, max_kept_features=25)
    metrics = build_metrics(cfg, data, cache_dir=tmp_path, extractor=PooledPixels())
    assert len(metrics.reference.features) == 25
    for batch in batches(60):
        metrics.update(batch)
    assert metrics.kept[INCEPTION_POOL].kept == 25 and metrics.kept[INCEPTION_POOL].seen == 60
    row = metrics.compute()[0]
    assert row.details["features_capped_at"] == 25 and row.details["n_features_generated"] == 25 and row.n == 60


def test_fid_alone_keeps_no_features(data: DataConfig, tmp_path: Path) -> None:
    metrics = build_metrics(MetricsConfig(names=["fid"]), data, cache_dir=tmp_path, extractor=PooledPixels())
    for batch in batches(40):
        metrics.update(batch)
    assert metrics.kept == {} and metrics.reference.features is None
    assert metrics.metrics["fid"].gaussian.n == 40


def test_npz_reference_serves_fid_but_not_kid(data: DataConfig, tmp_path: Path) -> None:
    extractor = PooledPixels()
    acc = GaussianAccumulator()
    for batch in ShapesSource(16, 50, 0, "test").iter_batches(25):
        acc.update(extractor(batch.images)["2048"])
    mu, sigma = acc.stats()
    np.savez(tmp_path / "ref.npz", mu=mu, sigma=sigma)
    cfg = MetricsConfig(names=["fid"], reference=str(tmp_path / "ref.npz"))
    metrics = build_metrics(cfg, data, cache_dir=tmp_path, extractor=extractor)
    for batch in batches(40):
        metrics.update(batch)
    row = metrics.compute()[0]
    assert row.details["reference"]["kind"] == "npz" and row.value > 0
    with pytest.raises(ValueError, match="kid needs reference features"):
        build_metrics(MetricsConfig(names=["fid", "kid"], reference=str(tmp_path / "ref.npz")), data,
                      cache_dir=tmp_path, extractor=extractor)
    np.savez(tmp_path / "wrong_dims.npz", mu=np.zeros(7), sigma=np.eye(7))
    with pytest.raises(ValueError, match="mu has 7 dimensions"):
        build_metrics(MetricsConfig(names=["fid"], reference=str(tmp_path / "wrong_dims.npz")), data,
                      cache_dir=tmp_path, extractor=extractor)


def test_unknown_metric_names_are_rejected(data: DataConfig) -> None:
    with pytest.raises(ValueError, match=r"\['fdi'\] are not metrics; choose from"):
        build_metrics(MetricsConfig(names=["fdi"]), data)


def test_inception_score_needs_an_extractor_with_logits(data: DataConfig, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="inception_score needs an extractor with logits"):
        build_metrics(MetricsConfig(names=["inception_score"]), data, cache_dir=tmp_path, extractor=PooledPixels())


def test_compute_without_images_is_an_error(data: DataConfig, tmp_path: Path) -> None:
    metrics = build_metrics(MetricsConfig(names=["fid"]), data, cache_dir=tmp_path, extractor=PooledPixels())
    with pytest.raises(ValueError, match="no images were added"):
        metrics.compute()


def test_metric_set_is_importable_with_its_contract() -> None:
    assert callable(MetricSet.update) and callable(MetricSet.compute)
