"""Reference statistics: computed once, cached as npz, stale caches detected, external npz accepted.
A cheap stand-in extractor keeps these tests fast; the Inception itself is tested elsewhere."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data.shapes import ShapesSource
from bench.metrics.frechet import CovarianceFactor, GaussianAccumulator, covariance_fingerprint
from bench.metrics.refstats import (FACTOR_FIELDS, ReferenceError, StaleCacheWarning, cache_path, load_reference_npz,
                                    reference_key, reference_stats)


class PooledPixels:
    """A 48-d 'feature extractor': 4x4 average-pooled RGB. Counts the images it sees."""
    name, dims, has_logits, resize_mode = "pooled-pixels", 48, False, "none"

    def __init__(self) -> None:
        self.images_seen = 0

    def cache_key(self) -> dict:
        return {"extractor": self.name, "weights_sha256": "none", "resize_mode": self.resize_mode}

    def describe(self) -> dict:
        return {"feature_extractor": self.name, "resize_mode": self.resize_mode, "weights": {"name": "none", "sha256": "none"}}

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.images_seen += len(images)
        return {"2048": torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)}


@pytest.fixture
def source() -> ShapesSource:
    return ShapesSource(16, 60, seed=0, split="test")


def test_computed_once_then_read_from_the_cache(source: ShapesSource, tmp_path: Path) -> None:
    extractor = PooledPixels()
    first = reference_stats(source, extractor, n=50, keep_features=20, cache_dir=tmp_path, batch_size=16)
    assert extractor.images_seen == 50 and first.n == 50 and first.features.shape == (20, 48)
    expected = GaussianAccumulator()
    for batch in source.iter_batches(50, 0, 50):
        expected.update(extractor(batch.images)["2048"])
    np.testing.assert_allclose(first.mu, expected.stats()[0], rtol=1e-12)
    seen = extractor.images_seen
    again = reference_stats(source, extractor, n=50, keep_features=20, cache_dir=tmp_path, batch_size=16)
    assert extractor.images_seen == seen and again.description["cached"] is True
    np.testing.assert_array_equal(again.sigma, first.sigma)
    torch.testing.assert_close(again.features, first.features)
    # the cache is a plain npz with pytorch-fid's field names
    files = list((tmp_path / "refstats").glob("shapes-*.npz"))
    assert len(files) == 1 and {"mu", "sigma", "n", "key", "features"} <= set(np.load(files[0]).files)


def test_key_covers_data_extractor_resize_and_n(source: ShapesSource, tmp_path: Path) -> None:
    extractor = PooledPixels()
    reference_stats(source, extractor, n=30, cache_dir=tmp_path)
    reference_stats(source, extractor, n=40, cache_dir=tmp_path)                              # other n
    reference_stats(ShapesSource(16, 60, seed=1, split="test"), extractor, n=30, cache_dir=tmp_path)  # other data
    extractor.resize_mode = "clean"
    reference_stats(source, extractor, n=30, cache_dir=tmp_path)                              # other resize mode
    assert len(list((tmp_path / "refstats").glob("*.npz"))) == 4 and extractor.images_seen == 130


def test_more_features_needed_than_cached_recomputes(source: ShapesSource, tmp_path: Path) -> None:
    extractor = PooledPixels()
    reference_stats(source, extractor, n=30, keep_features=0, cache_dir=tmp_path)
    stats = reference_stats(source, extractor, n=30, keep_features=30, cache_dir=tmp_path)
    assert extractor.images_seen == 60 and stats.features.shape == (30, 48)


def test_stale_cache_is_detected_and_recomputed(source: ShapesSource, tmp_path: Path) -> None:
    extractor = PooledPixels()
    fresh = reference_stats(source, extractor, n=30, cache_dir=tmp_path)
    key = reference_key(source.fingerprint(), extractor.cache_key(), 30)
    path = cache_path(tmp_path, source.name, key)
    # a file at the right name that was made for something else (e.g. copied by hand)
    np.savez(path, mu=fresh.mu + 1, sigma=fresh.sigma, n=np.int64(30),
             key=np.array(json.dumps({**key, "data": "another dataset"}, sort_keys=True)))
    with pytest.warns(StaleCacheWarning, match="recomputing"):
        again = reference_stats(source, extractor, n=30, cache_dir=tmp_path)
    np.testing.assert_allclose(again.mu, fresh.mu)
    path.write_bytes(b"truncated")
    with pytest.warns(StaleCacheWarning, match="unreadable"):
        reference_stats(source, extractor, n=30, cache_dir=tmp_path)
    assert extractor.images_seen == 90


def test_cache_dir_defaults_to_the_environment(source: ShapesSource, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFBENCH_CACHE", str(tmp_path / "envcache"))
    reference_stats(source, PooledPixels(), n=10)
    assert len(list((tmp_path / "envcache" / "refstats").glob("*.npz"))) == 1


def test_pytorch_fid_and_adm_style_npz_are_accepted(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(8), np.eye(8)
    np.savez(tmp_path / "fid_stats.npz", mu=mu, sigma=sigma)                           # pytorch-fid --save-stats
    np.savez(tmp_path / "VIRTUAL_ref.npz", arr_0=np.zeros((5, 4, 4, 3), np.uint8), mu=mu, sigma=sigma,
             mu_s=mu, sigma_s=sigma)                                                   # ADM reference batch
    plain = load_reference_npz(tmp_path / "fid_stats.npz")
    adm = load_reference_npz(tmp_path / "VIRTUAL_ref.npz")
    np.testing.assert_array_equal(plain.mu, mu)
    assert adm.n == 5 and adm.features is None
    with pytest.raises(ReferenceError, match="KID needs reference features"):
        adm.require_features("KID")


def test_npz_without_mu_sigma_is_rejected_with_its_contents(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", means=np.zeros(3))
    with pytest.raises(ReferenceError, match=r"has arrays \['means'\] but needs 'mu' and 'sigma'"):
        load_reference_npz(tmp_path / "bad.npz")
    with pytest.raises(ReferenceError, match="no such file"):
        load_reference_npz(tmp_path / "missing.npz")


def test_too_few_reference_images(tmp_path: Path) -> None:
    with warnings.catch_warnings(), pytest.raises(ReferenceError, match="at least 2"):
        reference_stats(ShapesSource(16, 1, 0, "test"), PooledPixels(), n=1, cache_dir=tmp_path)


def cached_file(tmp_path: Path) -> Path:
    files = list((tmp_path / "refstats").glob("*.npz"))
    assert len(files) == 1
    return files[0]


def test_the_covariance_factor_is_cached_with_its_fingerprint(source: ShapesSource, tmp_path: Path) -> None:
    first = reference_stats(source, PooledPixels(), n=50, cache_dir=tmp_path)
    with np.load(cached_file(tmp_path)) as data:
        assert set(FACTOR_FIELDS) <= set(data.files)
        lower, order = data["sigma_factor"], data["sigma_factor_order"]
        assert lower.dtype == np.float64 and str(data["sigma_factor_fingerprint"]) == covariance_fingerprint(data["sigma"])
    np.testing.assert_allclose(lower @ lower.T, first.sigma[np.ix_(order, order)], atol=1e-12 * np.abs(first.sigma).max())
    again = reference_stats(source, PooledPixels(), n=50, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.covariance_factor().lower, lower)


def test_an_old_cache_without_the_factor_loads_and_is_completed(source: ShapesSource, tmp_path: Path) -> None:
    extractor = PooledPixels()
    first = reference_stats(source, extractor, n=30, keep_features=10, cache_dir=tmp_path)
    path = cached_file(tmp_path)
    with np.load(path) as data:   # as written before factors were stored
        np.savez(path, **{name: data[name] for name in ("mu", "sigma", "n", "key", "features")})
    again = reference_stats(source, extractor, n=30, keep_features=10, cache_dir=tmp_path)
    assert extractor.images_seen == 30 and again.description["cached"] is True
    assert again.factor is not None and again.factor.matches(first.sigma)
    with np.load(path) as data:   # rewritten with the factor, everything else as it was
        assert set(FACTOR_FIELDS) <= set(data.files)
        np.testing.assert_array_equal(data["features"], first.features.numpy())
        np.testing.assert_array_equal(data["sigma_factor"], first.factor.lower)


def test_a_stored_factor_of_another_sigma_is_recomputed(source: ShapesSource, tmp_path: Path) -> None:
    extractor = PooledPixels()
    first = reference_stats(source, extractor, n=30, cache_dir=tmp_path)
    path = cached_file(tmp_path)
    other = CovarianceFactor.of(first.sigma * 2)   # a consistent factor, but of another sigma
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    np.savez(path, **{**arrays, "sigma_factor": other.lower, "sigma_factor_order": other.order,
                      "sigma_factor_fingerprint": np.array(other.fingerprint)})
    with pytest.warns(StaleCacheWarning, match="factor does not match sigma"):
        again = reference_stats(source, extractor, n=30, cache_dir=tmp_path)
    assert extractor.images_seen == 30 and again.factor.matches(first.sigma)
    np.testing.assert_array_equal(again.factor.lower, first.factor.lower)
    arrays["sigma_factor"] = arrays["sigma_factor"].copy()
    arrays["sigma_factor"][0, 1] = 1.0   # right fingerprint, but not lower trapezoidal: not trusted either
    np.savez(path, **arrays)
    with pytest.warns(StaleCacheWarning, match="factor does not match sigma"):
        assert reference_stats(source, extractor, n=30, cache_dir=tmp_path).factor.matches(first.sigma)
    with np.load(path) as data:
        assert str(data["sigma_factor_fingerprint"]) == first.factor.fingerprint


def test_external_npz_factor_is_computed_once_in_memory(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 8))
    np.savez(tmp_path / "fid_stats.npz", mu=x.mean(0), sigma=np.cov(x, rowvar=False))
    reference = load_reference_npz(tmp_path / "fid_stats.npz")
    assert reference.factor is None
    factor = reference.covariance_factor()
    assert reference.covariance_factor() is factor and factor.matches(reference.sigma)
    assert set(np.load(tmp_path / "fid_stats.npz").files) == {"mu", "sigma"}   # the user's file is left alone
