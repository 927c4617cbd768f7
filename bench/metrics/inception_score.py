"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), over 10 splits, from the
unbiased logits (pool3 @ fc.weight^T, no bias) as torch-fidelity computes it, including its
seeded shuffle before splitting, so values match `calculate_metrics(isc=True)`.
Needs Inception weights with the 1008-way layer (see bench.metrics.inception)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.metrics.base import ComputeContext, Metric
from bench.metrics.registry import INCEPTION_LOGITS
from bench.results import MetricValue

IS_SEED = 2020   # torch-fidelity's default rng_seed (shuffle before splitting)
IS_SPLITS = 10   # Salimans et al. 2016 and torch-fidelity's default


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int | None = IS_SEED) -> tuple[float, float]:
    """(mean, std) over splits."""
    n = logits.shape[0]
    if n < splits:
        raise ValueError(f"Inception Score with {splits} splits needs at least {splits} images, got {n}")
    if seed is not None:
        logits = logits[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    logits = logits.double()
    p, log_p = logits.softmax(dim=1), logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        part = slice(i * n // splits, (i + 1) * n // splits)
        p_part, log_p_part = p[part], log_p[part]
        log_marginal = p_part.mean(dim=0, keepdim=True).log()
        scores.append(float((p_part * (log_p_part - log_marginal)).sum(dim=1).mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


def inception_score_value(logits: torch.Tensor, *, splits: int = 10, n: int,
                          details: dict[str, Any] | None = None) -> MetricValue:
    mean, std = inception_score(logits, splits)
    return MetricValue("inception_score", mean, n=n, ci_low=mean - std, ci_high=mean + std,
                       details={**(details or {}), "is_std": std, "is_splits": splits, "is_seed": IS_SEED,
                                "ci_kind": "mean +- std over splits", "n_logits": len(logits)})


class InceptionScoreMetric(Metric):
    """IS of the kept logits (the first metrics.max_kept_features generated images); needs no reference."""

    def compute(self, context: ComputeContext) -> list[MetricValue]:
        return [inception_score_value(context.kept_features(INCEPTION_LOGITS), splits=IS_SPLITS, n=context.n,
                                      details=context.extractor_details)]
