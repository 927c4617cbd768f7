"""Fréchet distance from eigenvalues vs pytorch-fid's scipy-sqrtm formula; streamed statistics."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from bench.metrics.frechet import FrechetWarning, GaussianAccumulator, frechet_distance


def sqrtm_fid(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's calculate_frechet_distance (without its eps retry, not needed here)."""
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def gaussian_features(d: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d))
    mix = np.eye(d) + 0.3 * rng.standard_normal((d, d)) / np.sqrt(d)
    b = rng.standard_normal((n, d)) @ mix + 0.1 * rng.standard_normal(d)
    return a, b


def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("d", [64, 256, pytest.param(2048, marks=pytest.mark.slow)])
def test_matches_scipy_sqrtm_formula(d: int) -> None:
    a, b = gaussian_features(d, 3 * d, seed=d)
    (mu1, s1), (mu2, s2) = stats(a), stats(b)
    ours = frechet_distance(mu1, s1, mu2, s2).value
    reference = sqrtm_fid(mu1, s1, mu2, s2)
    assert ours == pytest.approx(reference, rel=1e-6)


def test_matches_scipy_sqrtm_formula_at_2048_dimensions_from_few_samples() -> None:
    """d = 2048 in CI: with n < d samples the scipy-sqrtm formula can be evaluated exactly (and
    fast) in sample space: S1 S2 = A^T (A B^T B) / (n-1)^2 has the nonzero spectrum of
    (A B^T)(B A^T) / (n-1)^2 for centred A, B, so tr sqrtm(S1 S2) = tr sqrtm(that n x n matrix).
    (The full-rank 2048-d case, n = 3d, is the slow test above: scipy's sqrtm takes minutes.)"""
    a, b = gaussian_features(2048, 300, seed=7)
    (mu1, s1), (mu2, s2) = stats(a), stats(b)
    a0, b0 = a - mu1, b - mu2
    cross = a0 @ b0.T
    covmean = scipy.linalg.sqrtm(cross @ cross.T / (len(a) - 1) ** 2)
    diff = mu1 - mu2
    reference = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))
    with pytest.warns(FrechetWarning, match="singular"):
        result = frechet_distance(mu1, s1, mu2, s2)
    assert result.value == pytest.approx(reference, rel=1e-6)
    assert result.singular and result.fallback is None


def test_identical_statistics_give_zero() -> None:
    a, _ = gaussian_features(128, 512, seed=1)
    mu, sigma = stats(a)
    assert abs(frechet_distance(mu, sigma, mu, sigma).value) < 1e-8 * np.trace(sigma)


def test_equal_covariances_give_squared_mean_difference() -> None:
    a, b = gaussian_features(96, 400, seed=2)
    mu1, sigma = stats(a)
    mu2 = stats(b)[0]
    result = frechet_distance(mu1, sigma, mu2, sigma)
    assert result.value == pytest.approx(float(((mu1 - mu2) ** 2).sum()), rel=1e-9, abs=1e-9)


def test_singular_covariances_warn_and_match_torch_fidelity() -> None:
    """n < d: rank-deficient covariances. Negative eigenvalues clamped to 0 equals torch-fidelity's
    real part of the complex square roots of eig(S1 S2)."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((40, 128)), rng.standard_normal((40, 128)) + 0.2
    (mu1, s1), (mu2, s2) = stats(a), stats(b)
    with pytest.warns(FrechetWarning, match="singular"):
        result = frechet_distance(mu1, s1, mu2, s2)
    assert result.singular
    tf = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, verbose=False)
    assert result.value == pytest.approx(tf["frechet_inception_distance"], rel=1e-6)


def test_indefinite_input_warns_and_clamps() -> None:
    """A 'covariance' with a clearly negative eigenvalue (a corrupted file) takes the fallback path."""
    rng = np.random.default_rng(4)
    mu = np.zeros(8)
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    bad = q @ np.diag([1, 1, 1, 1, 1, 1, 1, -0.5]) @ q.T
    good = np.eye(8)
    with pytest.warns(FrechetWarning, match="fallback 'clamped'"):
        result = frechet_distance(mu, bad, mu, good)
    assert result.fallback == "clamped" and np.isfinite(result.value)


def test_mismatched_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="same feature layer"):
        frechet_distance(np.zeros(4), np.eye(4), np.zeros(5), np.eye(5))


def test_streaming_accumulator_equals_numpy_in_float64() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1000, 32)) * 3 + 100.0     # a large mean: the shifted sums must cope
    acc = GaussianAccumulator()
    for chunk in np.array_split(x, 13):
        acc.update(torch.from_numpy(chunk).float())
    mu, sigma = acc.stats()
    x32 = x.astype(np.float32).astype(np.float64)       # what the float32 features hold
    np.testing.assert_allclose(mu, x32.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x32, rowvar=False), rtol=1e-9, atol=1e-9)
    assert acc.n == 1000 and mu.dtype == np.float64


def test_accumulators_merge_as_if_one_stream() -> None:
    rng = np.random.default_rng(6)
    x = torch.from_numpy(rng.standard_normal((300, 16)))
    whole, left, right = GaussianAccumulator(), GaussianAccumulator(), GaussianAccumulator()
    whole.update(x)
    left.update(x[:120])
    right.update(x[120:] + 0.0)
    left.merge(right)
    for a, b in zip(whole.stats(), left.stats()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
