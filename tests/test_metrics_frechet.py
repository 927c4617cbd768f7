"""Fréchet distance from eigenvalues vs pytorch-fid's scipy-sqrtm formula; streamed statistics."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from scipy.linalg.lapack import dpstrf

from bench.metrics.frechet import (CovarianceFactor, FrechetWarning, GaussianAccumulator, _trace_sqrt_general,
                                   _trace_sqrt_through_reference, covariance_fingerprint, frechet_distance)


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


def random_covariance(d: int, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu, sigma = X X^T, X): a random PSD d x d matrix of exactly the given rank (X is d x rank)."""
    rng = np.random.default_rng(seed)
    mix = np.eye(d) + 0.4 * rng.standard_normal((d, d)) / np.sqrt(d)
    x = mix @ rng.standard_normal((d, rank)) / np.sqrt(rank)
    return rng.standard_normal(d) * 0.1, x @ x.T, x


def previous_trace_sqrt(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """The computation before the reference factor was cached: F1 from pivoted Cholesky of S1,
    sum sqrt(eigvalsh(F1^T S2 F1)). Exact when rank S2 >= rank S1; otherwise F1^T S2 F1 has
    eigenvalues that are pure rounding noise, whose square roots add ~1e-8 relative."""
    lower, piv, rank, _ = dpstrf((sigma1 + sigma1.T) / 2, lower=1, tol=-1.0)
    factor = np.zeros((len(sigma1), rank))
    factor[piv - 1] = np.tril(lower)[:, :rank]
    eig = np.linalg.eigvalsh(factor.T @ sigma2 @ factor)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def exact_trace_sqrt(x_small: np.ndarray, sigma_other: np.ndarray) -> float:
    """tr (S1 S2)^(1/2) from the known factor X (d x k, rank k) of the lower-rank side:
    sum sqrt(eig(X^T S_other X)), a k x k matrix with no rounding-noise eigenvalues."""
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(x_small.T @ sigma_other @ x_small), 0, None)).sum())


SLOW = pytest.mark.slow   # full rank at d = 2048: 10-20 s each


@pytest.mark.parametrize("rank1, rank2", [pytest.param(2304, 2304, marks=SLOW), pytest.param(1000, 2304, marks=SLOW),
                                          pytest.param(2304, 1500, marks=SLOW), (700, 900)])   # 2304: full rank
def test_cached_reference_factor_gives_the_same_value_at_2048_dimensions(rank1: int, rank2: int) -> None:
    """Real-size statistics, full rank and rank < d on either side: the value through a cached
    reference factor equals the uncached one bit for bit, and the previous computation (or, where
    that carried rounding noise, the exact low-rank formula) to 1e-10 relative; same flags."""
    d = 2048
    (mu1, s1, x1), (mu2, s2, x2) = random_covariance(d, rank1, seed=rank1), random_covariance(d, rank2, seed=rank2 + 1)
    factor = CovarianceFactor.of(s2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrechetWarning)   # singular: checked through the flags below
        cached = frechet_distance(mu1, s1, mu2, s2, reference_factor=factor)
        uncached = frechet_distance(mu1, s1, mu2, s2)
    assert cached.value == uncached.value and cached.details() == uncached.details()
    assert cached.singular == (min(rank1, rank2) < d) and cached.fallback is None
    rest = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2))
    expected = [rest - 2 * previous_trace_sqrt(s1, s2)] if rank2 >= rank1 else []
    if min(rank1, rank2) <= d:
        expected.append(rest - 2 * exact_trace_sqrt(*((x1, s2) if rank1 <= rank2 else (x2, s1))))
    for value in expected:
        assert cached.value == pytest.approx(value, rel=1e-10, abs=0)


def test_a_factor_of_another_covariance_is_not_trusted() -> None:
    (mu1, s1, _), (mu2, s2, _) = random_covariance(32, 80, seed=1), random_covariance(32, 80, seed=2)
    nudged = s2.copy()
    nudged[3, 5] += 1e-13   # one rounding-size change: another fingerprint
    stale = CovarianceFactor.of(nudged)
    assert covariance_fingerprint(nudged) != covariance_fingerprint(s2) and not stale.matches(s2)
    with pytest.warns(FrechetWarning, match="fingerprint mismatch"):
        result = frechet_distance(mu1, s1, mu2, s2, reference_factor=stale)
    assert result.value == frechet_distance(mu1, s1, mu2, s2).value


def test_indefinite_reference_factor_keeps_the_clamped_fallback() -> None:
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    bad = q @ np.diag([1, 1, 1, 1, 1, 1, 1, -0.5]) @ q.T
    factor = CovarianceFactor.of(bad)
    assert factor.negative > 0.05 and factor.factor.shape == (8, 7)
    with pytest.warns(FrechetWarning, match="fallback 'clamped'"):
        result = frechet_distance(np.zeros(8), np.eye(8), np.zeros(8), bad, reference_factor=factor)
    assert result.fallback == "clamped" and result.value == pytest.approx(8 + np.trace(bad) - 14, rel=1e-12)


def test_fast_route_serves_full_rank_and_declines_where_rank_is_missing() -> None:
    """The triangular-factor route is taken for a full-rank S1 (and agrees with the general
    route); with rank S1 < rank S2 it declines, as its surplus eigenvalues would be noise."""
    (_, s1, _), (_, s2, _), (_, low, _) = (random_covariance(64, 200, seed=1), random_covariance(64, 200, seed=2),
                                          random_covariance(64, 20, seed=3))
    factor = CovarianceFactor.of(s2)
    fast, general = _trace_sqrt_through_reference(s1, factor), _trace_sqrt_general(s1, factor)
    assert fast is not None and fast[2] == general[2] == 64
    assert fast[0] == pytest.approx(general[0], rel=1e-12)
    assert _trace_sqrt_through_reference(low, factor) is None
