"""Bootstrap confidence interval of FID over the generated samples (Efron & Tibshirani 1993, ch. 13).

FID is a plug-in estimate, not a mean of per-image values, so no closed-form interval exists. Here
the generated features are resampled with replacement B times (seeded), each resample's mean and
covariance are compared with the *fixed* reference statistics (through the reference's cached
`CovarianceFactor`), and the interval is read off the spread of the B values.

Why the interval is recentred: resampling with replacement leaves out ~37% of the samples and
repeats others, which makes the resampled covariance noisier and FID's upward small-sample bias
larger (Chong & Forsyth 2020), so the raw percentile interval of the bootstrap FIDs sits above the
point estimate and often excludes it (2048-d features, n = 1000: mean FID* - FID = 43 against a
95% half-width of 1.3). What the interval should say is how much the FID of *these n samples*
would move with another draw of n samples, so the percentiles of (FID* - mean FID*) are added to
the point estimate; the bootstrap's own shift, mean FID* - FID, is recorded in the row
(`fid_bootstrap_shift`). The interval covers sampling noise of the generated side only: the
reference statistics are held fixed.

Cost: each replicate is one weighted covariance (n d^2 multiply-adds) and one Fréchet distance
(an eigenvalue problem at d = 2048). Measured on one CPU thread at d = 2048: 1.2 s per replicate
at n = 1000, 4.1 s at n = 5000 (the covariance dominates as n grows), so B = 50 at n = 5000 adds
about 3.5 minutes. Hence opt-in: `metrics.bootstrap=0` by default.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.metrics.frechet import CovarianceFactor, frechet_distance

CI_LEVEL = 0.95


@dataclass(frozen=True)
class BootstrapInterval:
    low: float
    high: float
    replicates: np.ndarray      # the B bootstrap values, in draw order
    seed: int
    n: int                      # samples resampled

    @property
    def method(self) -> str:
        """What the row's `ci_method` says: which interval this is, with everything to redo it."""
        return f"bootstrap(B={len(self.replicates)}, seed={self.seed})"

    def details(self, point: float) -> dict:
        return {"ci_method": self.method, "ci_level": CI_LEVEL, "bootstrap_n": self.n,
                "ci_kind": "95% percentile interval of the bootstrap FIDs recentred on the point estimate "
                           "(generated samples resampled with replacement; reference statistics fixed)",
                "fid_bootstrap_std": float(self.replicates.std(ddof=1)),
                "fid_bootstrap_shift": float(self.replicates.mean() - point)}


def resample_counts(n: int, replicates: int, seed: int) -> np.ndarray:
    """(B, n) int64: how often each sample is drawn in each resample (n draws with replacement).
    Depends only on (n, B, seed): numpy's PCG64 stream, the same on every platform."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, size=n), minlength=n) for _ in range(replicates)])


def weighted_moments(features: torch.Tensor, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of the multiset that holds row i counts[i] times:
    the statistics of one resample without materialising it."""
    x = features.to(torch.float64)
    w = torch.from_numpy(counts.astype(np.float64))
    total = float(w.sum())
    mu = (w @ x) / total
    centred = (x - mu) * w.sqrt()[:, None]
    sigma = centred.T @ centred / (total - 1)
    return mu.numpy(), sigma.numpy()


def bootstrap_fid(features: torch.Tensor, mu_ref: np.ndarray, sigma_ref: np.ndarray, *, point: float,
                  replicates: int, seed: int, reference_factor: CovarianceFactor | None = None) -> BootstrapInterval:
    """95% bootstrap interval of FID(features vs reference), recentred on `point` (the FID of all
    samples; see the module docstring). `features`: (n, d) generated features, n >= 2."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"FID bootstrap needs (n >= 2, d) generated features, got shape {tuple(features.shape)}")
    if replicates < 2:
        raise ValueError(f"FID bootstrap needs at least 2 replicates, got {replicates}")
    factor = reference_factor if reference_factor is not None else CovarianceFactor.of(sigma_ref)
    values = np.empty(replicates)
    for b, counts in enumerate(resample_counts(len(features), replicates, seed)):
        mu, sigma = weighted_moments(features, counts)
        values[b] = frechet_distance(mu, sigma, mu_ref, sigma_ref, warn=False, reference_factor=factor).value
    if not np.isfinite(values).all():
        raise ValueError(f"FID bootstrap: {int((~np.isfinite(values)).sum())} of {replicates} replicates are not "
                         "finite; the generated features or the reference statistics are broken")
    alpha = (1 - CI_LEVEL) / 2
    spread = values - values.mean()
    low, high = np.quantile(spread, [alpha, 1 - alpha])
    return BootstrapInterval(low=float(point + low), high=float(point + high), replicates=values, seed=seed,
                             n=len(features))
