"""Fréchet Inception Distance (Heusel et al. 2017) from streamed float64 statistics."""
from __future__ import annotations

from typing import Any

import numpy as np

from bench.metrics.base import BatchInputs, ComputeContext, Metric, Resources
from bench.metrics.frechet import CovarianceFactor, GaussianAccumulator, frechet_distance
from bench.metrics.registry import INCEPTION_POOL
from bench.results import MetricValue


def fid_from_stats(mu_gen: np.ndarray, sigma_gen: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray,
                   *, n: int, name: str = "fid", details: dict[str, Any] | None = None,
                   reference_factor: CovarianceFactor | None = None) -> MetricValue:
    """One row: FID of generated vs reference statistics (n = generated samples); reference_factor:
    the reference's cached covariance factor (same value, less work).

    No CI: FID is a biased plug-in estimate, not a mean of per-image values (Chong & Forsyth
    2020); run repeated seeds for a spread."""
    result = frechet_distance(mu_gen, sigma_gen, mu_ref, sigma_ref, reference_factor=reference_factor)
    return MetricValue(metric=name, value=result.value, n=n, details={**(details or {}), **result.details()})


class FidMetric(Metric):
    """FID against the reference moments, from float64 moments of every generated image's pool
    features streamed batch by batch (constant memory: no features kept)."""

    def __init__(self, cfg: Any, resources: Resources) -> None:
        super().__init__(cfg, resources)
        self.gaussian = GaussianAccumulator()

    def update(self, inputs: BatchInputs) -> None:
        self.gaussian.update(inputs.features[INCEPTION_POOL])

    def state(self) -> dict[str, Any]:
        return self.gaussian.state()

    def merge(self, state: dict[str, Any]) -> None:
        self.gaussian.merge(GaussianAccumulator.from_state(state))

    def compute(self, context: ComputeContext) -> list[MetricValue]:
        mu, sigma = self.gaussian.stats()
        reference = context.reference
        return [fid_from_stats(mu, sigma, reference.mu, reference.sigma, n=self.gaussian.n, details=context.details,
                               reference_factor=reference.covariance_factor())]
