"""CMMD (Jayasumana et al., "Rethinking FID: Towards a Better Evaluation Metric for Image
Generation", CVPR 2024): the maximum mean discrepancy between the CLIP embeddings of generated and
reference images, with a Gaussian RBF kernel k(x, y) = exp(-||x - y||^2 / (2 sigma^2)), sigma = 10,
reported x 1000.

The estimator is the one of the authors' code (google-research `cmmd/distance.py`, also PyPI
`clip-mmd`): the minimum-variance ("biased") MMD^2 of Gretton et al. (JMLR 2012, eq. 5), i.e. the
means of the full kernel matrices, diagonals included:

    CMMD = 1000 * (mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j))

Like theirs, the embeddings are L2-normalised first (`cmmd/embedding.py`), so every squared
distance lies in [0, 4] and sigma = 10 makes the kernel nearly quadratic in the distance: the
metric then compares first and second moments of the unit-norm embeddings (README, "Which metric").
Computed in float64, in row blocks (memory O(block x n)); the authors use float32.

Runs in the CLIP space `metrics.cmmd_space` (default clip-vit-l-14-336, the paper's ViT-L/14@336)
on the kept features (the first max_kept_features) of both sides; the row is `cmmd[<space>]`.
The preprocessing is torch-fidelity 0.4.0's for that space (TF1 bilinear resize), not the
authors' (bicubic resize and centre crop): README, "Which metric".
"""
from __future__ import annotations

from typing import Any

import torch

from bench.metrics.base import ComputeContext, Metric
from bench.metrics.registry import INCEPTION_POOL
from bench.results import MetricValue

SIGMA = 10.0     # the paper's bandwidth (sec. 4)
SCALE = 1000.0   # the paper's scale, "to make the metric more readable"
BLOCK = 2048
NO_CI = "none: CMMD is a plug-in MMD estimate over all kept samples (repeat with other seeds for a spread)"


def normalise(embeddings: torch.Tensor) -> torch.Tensor:
    """Unit L2 norm per row, in float64 (cmmd/embedding.py normalises the CLIP image embeddings)."""
    x = embeddings.to(torch.float64)
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True)


def _kernel_mean(x: torch.Tensor, y: torch.Tensor, gamma: float) -> float:
    """mean_ij exp(-gamma ||x_i - y_j||^2), the squared distance written as cmmd/distance.py writes
    it (|x|^2 + |y|^2 - 2 x.y), summed block by block."""
    y_sq = (y * y).sum(dim=1)
    total = 0.0
    for block in x.split(BLOCK):
        sq = (block * block).sum(dim=1)[:, None] + y_sq[None, :] - 2.0 * block @ y.T
        total += float(torch.exp(-gamma * sq).sum())
    return total / (len(x) * len(y))


def mmd(x: torch.Tensor, y: torch.Tensor, *, sigma: float = SIGMA, scale: float = SCALE) -> float:
    """scale x the minimum-variance MMD^2 estimate between the rows of x and of y (as given: not
    normalised here), Gaussian RBF kernel of bandwidth sigma."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"CMMD needs (N, D) embeddings of equal D, got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) == 0 or len(y) == 0:
        raise ValueError("CMMD needs at least one embedding on each side")
    x, y = x.to(torch.float64), y.to(torch.float64)
    gamma = 1.0 / (2.0 * sigma ** 2)
    return scale * (_kernel_mean(x, x, gamma) + _kernel_mean(y, y, gamma) - 2.0 * _kernel_mean(x, y, gamma))


def cmmd(generated: torch.Tensor, reference: torch.Tensor) -> float:
    """CMMD of raw CLIP image embeddings: normalised, then `mmd` with sigma 10, x 1000."""
    return mmd(normalise(generated), normalise(reference))


def cmmd_value(generated: torch.Tensor, reference: torch.Tensor, *, n: int,
               details: dict[str, Any] | None = None) -> MetricValue:
    return MetricValue("cmmd", cmmd(generated, reference), n=n,
                       details={**(details or {}), "ci_method": NO_CI, "cmmd_sigma": SIGMA, "cmmd_scale": SCALE,
                                "cmmd_estimator": "minimum-variance MMD^2 (google-research cmmd/distance.py)",
                                "n_features_generated": len(generated), "n_features_reference": len(reference)})


class CmmdMetric(Metric):
    """CMMD between the kept generated and the kept reference embeddings of a CLIP space."""

    def compute(self, context: ComputeContext) -> list[MetricValue]:
        return [cmmd_value(context.kept_features(INCEPTION_POOL), context.reference.require_features("cmmd"),
                           n=context.n, details={**context.details, **context.capped_details(INCEPTION_POOL)})]
