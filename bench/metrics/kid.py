"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial
kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets.

Subsets are drawn exactly as torch-fidelity draws them (numpy RandomState(seed), for each
subset `choice(n_gen, m, replace=False)` then `choice(n_ref, m, replace=False)`), so with the
same seed, subset count and size the result matches `calculate_metrics(kid=True)`. Kernels are
computed in float64 (torch-fidelity uses float32; they agree to ~1e-7).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from bench.metrics.base import ComputeContext, Metric
from bench.metrics.registry import INCEPTION_POOL
from bench.results import MetricValue

KID_SEED = 2020   # torch-fidelity's default rng_seed


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef0: float = 1.0) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(k_xx: torch.Tensor, k_xy: torch.Tensor, k_yy: torch.Tensor) -> float:
    """Unbiased MMD^2 estimate from kernel matrices of two equally sized samples (diagonals of
    k_xx and k_yy left out; Gretton et al. 2012, eq. 3)."""
    m = k_xx.shape[0]
    sum_xx = k_xx.sum() - k_xx.diagonal().sum()
    sum_yy = k_yy.sum() - k_yy.diagonal().sum()
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kid_from_features(gen: torch.Tensor, ref: torch.Tensor, *, subsets: int = 100, subset_size: int = 1000,
                      seed: int = KID_SEED) -> tuple[float, float, int]:
    """(mean, std over subsets, subset size used). The subset size is capped at the smaller
    sample (with a warning), as clean-fid does; torch-fidelity would refuse instead."""
    if gen.ndim != 2 or ref.ndim != 2 or gen.shape[1] != ref.shape[1]:
        raise ValueError(f"KID needs (N, D) features of equal D, got {tuple(gen.shape)} and {tuple(ref.shape)}")
    m = min(subset_size, len(gen), len(ref))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples on each side, got {len(gen)} generated and {len(ref)} reference")
    if m < subset_size:
        warnings.warn(f"KID: subset size {subset_size} exceeds the samples ({len(gen)} generated, {len(ref)} "
                      f"reference); using {m}", stacklevel=2)
    gen64, ref64 = gen.to(torch.float64), ref.to(torch.float64)
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        x = gen64[torch.from_numpy(rng.choice(len(gen), m, replace=False))]
        y = ref64[torch.from_numpy(rng.choice(len(ref), m, replace=False))]
        values[i] = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y))
    return float(values.mean()), float(values.std()), m


def kid_value(gen: torch.Tensor, ref: torch.Tensor, *, subsets: int, subset_size: int, n: int,
              seed: int = KID_SEED, details: dict[str, Any] | None = None) -> MetricValue:
    mean, std, m = kid_from_features(gen, ref, subsets=subsets, subset_size=subset_size, seed=seed)
    return MetricValue(
        metric="kid", value=mean, n=n, ci_low=mean - std, ci_high=mean + std,
        details={**(details or {}), "kid_std": std, "ci_kind": "mean +- std over subsets (torch-fidelity kid_std)",
                 # the interval is +-1 std of the per-subset estimates (not a 95% interval of the mean)
                 "ci_method": f"subset_std(subsets={subsets}, size={m}, seed={seed})",
                 "kid_subsets": subsets, "kid_subset_size": m, "kid_seed": seed,
                 "n_features_generated": len(gen), "n_features_reference": len(ref)})


class KidMetric(Metric):
    """KID between the kept generated and the kept reference pool features."""

    def compute(self, context: ComputeContext) -> list[MetricValue]:
        return [kid_value(context.kept_features(INCEPTION_POOL), context.reference.require_features("kid"),
                          subsets=self.cfg.kid_subsets, subset_size=self.cfg.kid_subset_size, n=context.n,
                          details={**context.details, **context.capped_details(INCEPTION_POOL)})]
