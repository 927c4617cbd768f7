"""Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative
Models", eqs. 3-4). With X_1..X_N the reference features, Y_1..Y_M the generated ones and
B(X_i, r_i) the ball around X_i out to its k-th nearest other reference point:

    density  = 1/(kM) sum_j sum_i 1[Y_j in B(X_i, r_i)]
    coverage = 1/N sum_i 1[some Y_j in B(X_i, r_i)]

Density counts how many reference balls hold each sample (about 1 when the distributions match,
above 1 where samples crowd), so one oversized ball around a reference outlier matters little,
unlike for precision; coverage is the fraction of reference balls holding any sample, built
around the reference rather than, like recall, around the (outlier-prone) generated samples.
"In the ball" is strict (distance < radius), as in the authors' code (clovaai/prdc); distances
are float64 (their sklearn code upcasts float32 features too), computed in row blocks. Read from
the kept Inception features that precision/recall uses, with k = metrics.pr_k.
"""
from __future__ import annotations

from typing import Any

import torch

from bench.metrics.base import ComputeContext, Metric
from bench.metrics.registry import INCEPTION_POOL
from bench.metrics.summary import Z95, wilson_interval
from bench.results import MetricValue

BLOCK = 1024   # rows per distance block: 1024 x 50,000 float64 distances = 400 MB


def reference_radii(reference: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each reference point to its k-th nearest other reference point (itself is at 0)."""
    return torch.cat([torch.cdist(block, reference).kthvalue(k + 1, dim=1).values for block in reference.split(BLOCK)])


def density_coverage(gen: torch.Tensor, ref: torch.Tensor, k: int) -> tuple[float, float, torch.Tensor]:
    """(density, coverage, for each generated sample the number of reference balls holding it)."""
    if gen.ndim != 2 or ref.ndim != 2 or gen.shape[1] != ref.shape[1]:
        raise ValueError(f"density/coverage needs (N, D) features of equal D, got {tuple(gen.shape)} and "
                         f"{tuple(ref.shape)}")
    if k < 1 or len(ref) <= k:
        raise ValueError(f"density/coverage with k={k} needs k >= 1 and more than k reference samples, "
                         f"got {len(ref)}")
    if len(gen) == 0:
        raise ValueError("density/coverage needs at least one generated sample")
    gen, ref = gen.double(), ref.double()
    radii = reference_radii(ref, k)
    counts, covered = [], torch.zeros(len(ref), dtype=torch.bool)
    for block in gen.split(BLOCK):
        inside = torch.cdist(block, ref) < radii          # (block, N): Y_j in B(X_i, r_i)
        counts.append(inside.sum(dim=1))
        covered |= inside.any(dim=0)
    per_sample = torch.cat(counts)
    return int(per_sample.sum()) / (k * len(gen)), int(covered.sum()) / len(ref), per_sample


def density_coverage_values(gen: torch.Tensor, ref: torch.Tensor, *, k: int, n: int,
                            details: dict[str, Any] | None = None) -> list[MetricValue]:
    density, coverage, per_sample = density_coverage(gen, ref, k)
    common = {**(details or {}), "density_coverage_k": k, "n_features_generated": len(gen),
              "n_features_reference": len(ref)}
    # density is the mean over generated samples of (balls holding it) / k: a normal CI of that
    # mean, cut at 0 like the values; coverage is a fraction of the reference samples: Wilson
    half = Z95 * float((per_sample.double() / k).std()) / len(gen) ** 0.5 if len(gen) > 1 else 0.0
    c_lo, c_hi = wilson_interval(coverage * len(ref), len(ref))
    return [MetricValue("density", density, n=n, ci_low=max(density - half, 0.0), ci_high=density + half,
                        details={**common, "ci_kind": "95% normal CI of the mean over generated samples, cut at 0"}),
            MetricValue("coverage", coverage, n=n, ci_low=c_lo, ci_high=c_hi,
                        details={**common, "ci_kind": "95% Wilson interval of the fraction"})]


class DensityCoverageMetric(Metric):
    """Density and coverage of the kept generated vs the kept reference pool features."""

    def compute(self, context: ComputeContext) -> list[MetricValue]:
        details = {**context.details, **context.capped_details(INCEPTION_POOL)}
        return density_coverage_values(context.kept_features(INCEPTION_POOL),
                                       context.reference.require_features("density/coverage"), k=self.cfg.pr_k,
                                       n=context.n, details=details)
