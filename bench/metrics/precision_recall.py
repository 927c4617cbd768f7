"""Improved precision and recall (Kynkäänniemi et al. 2019): each sample set's manifold is the
union of balls around its points with radius = distance to the k-th nearest neighbour (k=3).
Precision: fraction of generated samples inside the reference manifold; recall: fraction of
reference samples inside the generated manifold. Same estimator as torch-fidelity's `prc`,
computed in row blocks so memory stays O(block x N).
"""
from __future__ import annotations

from typing import Any

import torch

from bench.metrics.base import ComputeContext, Metric
from bench.metrics.registry import INCEPTION_POOL
from bench.metrics.summary import wilson_interval
from bench.results import MetricValue

BLOCK = 2048


def kth_neighbour_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point (the point itself is at 0)."""
    if len(features) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per side, got {len(features)}")
    return torch.cat([torch.cdist(block, features).kthvalue(k + 1, dim=1).values
                      for block in features.split(BLOCK)])


def coverage_fraction(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Fraction of queries within radius of at least one centre."""
    inside = [(torch.cdist(block, centres) <= radii.unsqueeze(0)).any(dim=1) for block in queries.split(BLOCK)]
    return float(torch.cat(inside).double().mean())


def precision_recall(gen: torch.Tensor, ref: torch.Tensor, k: int = 3) -> tuple[float, float]:
    gen, ref = gen.float(), ref.float()
    precision = coverage_fraction(gen, ref, kth_neighbour_radii(ref, k))
    recall = coverage_fraction(ref, gen, kth_neighbour_radii(gen, k))
    return precision, recall


def precision_recall_values(gen: torch.Tensor, ref: torch.Tensor, *, k: int, n: int,
                            details: dict[str, Any] | None = None) -> list[MetricValue]:
    precision, recall = precision_recall(gen, ref, k)
    common = {**(details or {}), "pr_k": k, "ci_kind": "95% Wilson interval of the fraction",
              "n_features_generated": len(gen), "n_features_reference": len(ref)}
    p_lo, p_hi = wilson_interval(precision * len(gen), len(gen))
    r_lo, r_hi = wilson_interval(recall * len(ref), len(ref))
    return [MetricValue("precision", precision, n=n, ci_low=p_lo, ci_high=p_hi, details=common),
            MetricValue("recall", recall, n=n, ci_low=r_lo, ci_high=r_hi, details=dict(common))]


class PrecisionRecallMetric(Metric):
    """Precision and recall (k = metrics.pr_k) of the kept generated vs the kept reference pool features."""

    def compute(self, context: ComputeContext) -> list[MetricValue]:
        details = {**context.details, **context.capped_details(INCEPTION_POOL)}
        return precision_recall_values(context.kept_features(INCEPTION_POOL),
                                       context.reference.require_features("precision/recall"), k=self.cfg.pr_k,
                                       n=context.n, details=details)
