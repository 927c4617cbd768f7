"""Gaussian statistics of features, streamed in float64, and the Fréchet distance between two.

FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))   (Heusel et al. 2017, eq. 6; Dowson &
Landau 1982). The trace of the matrix square root is computed from eigenvalues instead of
scipy's `sqrtm` (slow: ~9-13 CPU-s at d=2048, and broken in some scipy releases). For any
factor S2 = F2 F2^T, S1 S2 is similar to the symmetric PSD matrix M = F2^T S1 F2, so
tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(M)). F2 is the reference's pivoted Cholesky factor
(LAPACK dpstrf: S2[o][:, o] = L2 L2^T, L2 lower trapezoidal, r2 = numerical rank), which
depends on the reference only: `CovarianceFactor` holds it with a fingerprint of the sigma it
factors, bench.metrics.refstats caches it next to mu/sigma, and an evaluation against it costs
a Cholesky test of S1, two triangular products and one eigvalsh (~0.7 CPU-s at d=2048, one
thread, against ~9 for the scipy formula and ~3 for torch-fidelity's eigvals:
`python -m bench.tools.frechet_bench`). That route needs M numerically positive definite; when
S1 has less rank than S2 (n1 <= d samples), M's surplus eigenvalues would be rounding noise,
whose square roots add ~1e-8 relative, so S1 is then factored too (F1) and the eigenvalues are
those of the Gram matrix of W = F1^T F2 (r1 x r2) on its smaller side: the same spectrum with
no noise, and cheap for n < d. When a factor does not reproduce its covariance (an indefinite
"covariance", e.g. a corrupted file), the symmetric square root from eigh is used instead.

Singular covariances (n <= d, e.g. FID from fewer than 2049 samples) and rounding make some
eigenvalues slightly negative; mathematically they are >= 0. Fallback, documented:
negative eigenvalues are clamped to 0, which equals what torch-fidelity does (it keeps the real
part of the complex square roots of eig(S1 S2)), and a warning says so when the clamped mass
is not negligible ("meaningful imaginary part" in the S1 S2 formulation) or the covariances
are singular (FID is then defined but strongly biased: use more samples). If the result is
still not finite, pytorch-fid's remedy is applied: eps * I added to both covariances.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg.lapack import dpstrf

NEGATIVE_EIGEN_RTOL = 1e-6   # negative eigenvalue mass (relative to the trace) worth a warning
FALLBACK_EPS = 1e-6          # pytorch-fid's diagonal offset for non-finite results
FACTOR_RTOL = 1e-9           # |F F^T - S| / |S| above this: S is not PSD, use eigh
FACTOR_METHOD = "dpstrf-or-eigh/1"   # how CovarianceFactor is computed; part of its fingerprint
PANEL = 256                  # column panel of the triangular products (_lower_congruence)


class FrechetWarning(UserWarning):
    """The Fréchet distance was computed with a fallback (singular or indefinite covariances)."""


class GaussianAccumulator:
    """Streaming mean and covariance in float64: never keeps the features.

    Shifted sums (by the first batch's mean) keep the cancellation in
    cov = (sum xx^T - n mu mu^T) / (n - 1) harmless even for features with a large mean."""

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self.n = 0
        self._shift: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None

    def update(self, features: torch.Tensor) -> None:
        if features.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
        if features.shape[0] == 0:
            return
        x = features.detach().to(torch.float64)
        if self._shift is None:
            self.dim = x.shape[1] if self.dim is None else self.dim
            self._shift = x.mean(dim=0)
            self._sum = torch.zeros_like(self._shift)
            self._outer = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=x.device)
        if x.shape[1] != self.dim:
            raise ValueError(f"features have {x.shape[1]} dimensions, expected {self.dim}")
        x = x - self._shift
        self._sum += x.sum(dim=0)
        self._outer.addmm_(x.T, x)
        self.n += x.shape[0]

    def merge(self, other: "GaussianAccumulator") -> None:
        """Add another accumulator's samples (e.g. from another process)."""
        if other.n == 0:
            return
        mu, cov = other.stats()
        n = other.n
        # Re-express other's samples as if shifted by our shift: sums of (x - shift) and their outer products.
        if self._shift is None:
            self.dim, self._shift = other.dim, torch.from_numpy(mu)
            self._sum = torch.zeros_like(self._shift)
            self._outer = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        d = torch.from_numpy(mu).to(self._shift) - self._shift
        self._sum += n * d
        self._outer += torch.from_numpy(cov).to(self._outer) * (n - 1) + n * torch.outer(d, d)
        self.n += n

    def state(self) -> dict:
        """n, mean and covariance: what another process needs to `merge` these samples in."""
        if self.n == 0:
            return {"n": 0}
        mu, sigma = self.stats()
        return {"n": self.n, "mu": mu, "sigma": sigma}

    @classmethod
    def from_state(cls, state: dict) -> "GaussianAccumulator":
        """An accumulator holding the samples of a `state()`, ready to be merged."""
        acc = cls()
        if state["n"]:
            mu, sigma, n = state["mu"], state["sigma"], state["n"]
            acc.dim, acc.n, acc._shift = len(mu), n, torch.from_numpy(mu)
            acc._sum = torch.zeros_like(acc._shift)
            acc._outer = torch.from_numpy(sigma) * (n - 1)
        return acc

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) as float64 numpy; sigma is the unbiased sample covariance (as np.cov)."""
        if self.n < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.n}")
        mean_shifted = self._sum / self.n
        cov = (self._outer - self.n * torch.outer(mean_shifted, mean_shifted)) / (self.n - 1)
        mu = mean_shifted + self._shift
        return mu.cpu().numpy(), cov.cpu().numpy()


@dataclass
class FrechetResult:
    value: float
    singular: bool              # a covariance of rank < d: FID defined but strongly biased
    clamped_fraction: float     # negative-eigenvalue mass clamped (of S1, S2, Gram), relative
    fallback: str | None        # None, "clamped", or "eps_offset"

    def details(self) -> dict:
        return {"fd_singular_covariance": self.singular, "fd_clamped_fraction": self.clamped_fraction,
                "fd_fallback": self.fallback}



def _numerical_rank(eigenvalues: np.ndarray) -> int:
    top = float(eigenvalues.max()) if eigenvalues.size else 0.0
    return int((eigenvalues > top * eigenvalues.size * np.finfo(np.float64).eps).sum()) if top > 0 else 0


def covariance_fingerprint(sigma: np.ndarray) -> str:
    """sha256 of the factor method, a covariance's shape and its float64 bytes: what a stored
    factor is checked against (a new FACTOR_METHOD makes every stored factor stale)."""
    sigma = np.ascontiguousarray(sigma, dtype=np.float64)
    digest = hashlib.sha256(f"{FACTOR_METHOD} {sigma.shape}".encode())
    digest.update(sigma.data)
    return digest.hexdigest()


def _pivoted_cholesky(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(L, order): L (d x r) lower trapezoidal with sigma[order][:, order] = L L^T, r the numerical
    rank; None when sigma is not PSD to rounding.

    Only the trailing block that dpstrf left unfactored is checked (its Schur complement must be
    ~0): the factored rows have norms bounded by sigma's diagonal, so Cholesky's backward error
    keeps the rest of L L^T within ~d eps |sigma|. A full-rank factor needs no check at all,
    which saves the d^3 product L L^T an evaluation would otherwise spend on checking."""
    if not np.isfinite(sigma).all():
        return None   # eigh then raises LinAlgError, as for any non-finite input
    lower, piv, rank, info = dpstrf(sigma, lower=1, tol=-1.0)   # tol < 0: LAPACK's d * eps * max(diag)
    if info < 0:
        return None
    lower, order = np.tril(lower[:, :rank]), piv - 1
    if rank < sigma.shape[0]:
        tail = order[rank:]
        schur = sigma[np.ix_(tail, tail)] - lower[rank:] @ lower[rank:].T
        if not np.abs(schur).max() <= FACTOR_RTOL * max(float(np.abs(sigma).max()), 1e-300):
            return None
    return lower, order


def _factorise(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
    """(lower, order, clamped negative-eigenvalue mass of sigma relative to sum |eigenvalues|)
    as CovarianceFactor holds them."""
    sigma = (sigma + sigma.T) / 2
    pivoted = _pivoted_cholesky(sigma)
    if pivoted is not None:
        return *pivoted, 0.0
    w, v = np.linalg.eigh(sigma)   # indefinite: symmetric square root, negative eigenvalues clamped
    negative = float(-w[w < 0].sum()) / (float(np.abs(w).sum()) or 1.0)
    return v[:, w > 0] * np.sqrt(w[w > 0]), None, negative


@dataclass(frozen=True, eq=False)
class CovarianceFactor:
    """sigma = F F^T (negative eigenvalues clamped), F[order] = lower: what every Fréchet distance
    against one reference can reuse, computed once and kept with the reference statistics."""
    lower: np.ndarray           # d x r float64, r = numerical rank: lower trapezoidal (dpstrf), or
                                # the dense eigh square root of an indefinite sigma when order is None
    order: np.ndarray | None    # dpstrf's pivot order: sigma[order][:, order] = lower lower^T
    negative: float             # clamped negative-eigenvalue mass of sigma (0 for a PSD sigma)
    fingerprint: str            # covariance_fingerprint of the sigma it factors

    @classmethod
    def of(cls, sigma: np.ndarray) -> "CovarianceFactor":
        sigma = np.atleast_2d(np.asarray(sigma, np.float64))
        return cls(*_factorise(sigma), covariance_fingerprint(sigma))

    @property
    def factor(self) -> np.ndarray:
        """F (d x r) in sigma's own row order."""
        if self.order is None:
            return self.lower
        factor = np.empty_like(self.lower)
        factor[self.order] = self.lower
        return factor

    def matches(self, sigma: np.ndarray) -> bool:
        sigma = np.atleast_2d(np.asarray(sigma, np.float64))
        return self.lower.shape[0] == sigma.shape[0] and self.fingerprint == covariance_fingerprint(sigma)


def _eigvalsh(matrix: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric matrix from its lower triangle. torch's LAPACK (MKL in the
    wheels) runs this at d=2048 in half the time of numpy's OpenBLAS."""
    return torch.linalg.eigvalsh(torch.from_numpy(matrix), UPLO="L").numpy() if matrix.size else np.zeros(0)


def _lower_congruence(lower: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Lower triangle of L^T sigma L for lower-trapezoidal L, panel by panel: skipping L's zero
    blocks does ~40% of two dense products' work (BLAS has no trapezoidal product; trmm runs at
    gemm speed in OpenBLAS). The strict upper triangle is left 0: _eigvalsh does not read it."""
    d, r = lower.shape
    product = np.empty((d, r))
    for j0 in range(0, r, PANEL):   # (sigma L)[:, j0:j1]: L's rows above j0 are 0 in these columns
        j1 = min(j0 + PANEL, r)
        product[:, j0:j1] = sigma[:, j0:] @ lower[j0:, j0:j1]
    congruence = np.zeros((r, r))
    for i0 in range(0, r, PANEL):   # rows i0:i1 of L^T (sigma L), left of the diagonal block's end
        i1 = min(i0 + PANEL, r)
        congruence[i0:i1, :i1] = lower[i0:, i0:i1].T @ product[i0:, :i1]
    return congruence


def _positive_definite(sigma: np.ndarray) -> bool:
    """Whether Cholesky (torch's MKL, ~0.1 CPU-s at d=2048) succeeds: a covariance of n <= d
    samples fails at once, so the fast route is not tried where it would be thrown away."""
    return bool(np.isfinite(sigma).all()) and int(torch.linalg.cholesky_ex(torch.from_numpy(sigma)).info) == 0


def _trace_sqrt_through_reference(sigma1: np.ndarray, factor2: CovarianceFactor) -> tuple[float, float, int] | None:
    """Fast route: M = L2^T S1[o][:, o] L2 (r2 x r2) with the reference's triangular factor, one
    eigvalsh; S1 is read as given (a covariance is symmetric to rounding). None unless M is numerically positive definite: where S1 has less rank than S2, M's
    extra eigenvalues would be rounding noise (their square roots add ~1e-8 relative), and where
    S1 is indefinite it must be clamped first; the general route does both."""
    order = factor2.order
    eig = _eigvalsh(_lower_congruence(factor2.lower, sigma1[np.ix_(order, order)]))
    negative = float(-eig[eig < 0].sum()) / (float(np.abs(eig).sum()) or 1.0)
    rank = _numerical_rank(eig)
    if rank < eig.size or negative > NEGATIVE_EIGEN_RTOL:
        return None
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum()), factor2.negative + negative, rank


def _trace_sqrt_general(sigma1: np.ndarray, factor2: CovarianceFactor) -> tuple[float, float, int]:
    """General route: S1 factored too, W = F1^T F2 (r1 x r2), eigenvalues of the smaller Gram
    matrix of W: exact for any ranks, each side's negative eigenvalues clamped in its factor."""
    lower1, order1, negative1 = _factorise(sigma1)
    factor2_rows = factor2.factor if order1 is None else factor2.factor[order1]
    cross = lower1.T @ factor2_rows   # = F1^T F2, as F1[order1] = lower1
    eig = _eigvalsh(cross @ cross.T if cross.shape[0] <= cross.shape[1] else cross.T @ cross)
    negative = negative1 + factor2.negative + float(-eig[eig < 0].sum()) / (float(np.abs(eig).sum()) or 1.0)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum()), negative, _numerical_rank(eig)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray,
                       factor2: CovarianceFactor | None = None) -> tuple[float, float, int]:
    """(tr((S1 S2)^(1/2)), clamped negative-eigenvalue mass (of the factored covariances and the
    eigenvalue problem, each relative to its size), numerical rank). factor2: a CovarianceFactor
    of sigma2 made before (a cached reference); checked against sigma2's fingerprint and
    recomputed if it differs."""
    if factor2 is not None and not factor2.matches(sigma2):
        warnings.warn("Fréchet distance: the reference factor was made for another covariance (fingerprint "
                      "mismatch); recomputed from sigma", FrechetWarning, stacklevel=3)
        factor2 = None
    if factor2 is None:
        factor2 = CovarianceFactor(*_factorise(sigma2), fingerprint="")
    fast = None
    if factor2.order is not None and _positive_definite(sigma1):
        fast = _trace_sqrt_through_reference(sigma1, factor2)
    return fast or _trace_sqrt_general(sigma1, factor2)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     *, warn: bool = True, reference_factor: CovarianceFactor | None = None) -> FrechetResult:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2); reference_factor: a cached
    `CovarianceFactor` of sigma2 (same value, one factorisation fewer)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                         f"{sigma2.shape}; both sides must come from the same feature layer")
    diff = mu1 - mu2
    tr_sqrt, clamped, rank = trace_sqrt_product(sigma1, sigma2, reference_factor)
    singular = rank < mu1.size
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_sqrt)
    fallback = "clamped" if clamped > NEGATIVE_EIGEN_RTOL else None
    if not math.isfinite(value):
        offset = np.eye(mu1.size) * FALLBACK_EPS
        tr_sqrt, clamped, _ = trace_sqrt_product(sigma1 + offset, sigma2 + offset)
        value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_sqrt)
        fallback = "eps_offset"
    if warn and singular:
        warnings.warn(f"Fréchet distance: a covariance is singular (rank {rank} < {mu1.size} dimensions, "
                      f"e.g. fewer samples than dimensions); the value is defined but strongly biased, "
                      f"use more samples (>= {mu1.size + 1})", FrechetWarning, stacklevel=2)
    if warn and fallback:
        warnings.warn(f"Fréchet distance: fallback {fallback!r} (negative-eigenvalue mass {clamped:.2e} of "
                      f"the trace clamped to 0); check the statistics are covariances of real features",
                      FrechetWarning, stacklevel=2)
    return FrechetResult(value=value, singular=singular, clamped_fraction=clamped, fallback=fallback)
