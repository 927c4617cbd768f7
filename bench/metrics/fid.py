"""Fréchet Inception Distance (Heusel et al. 2017) from streamed float64 statistics."""
from __future__ import annotations

from typing import Any

import numpy as np

from bench.metrics.frechet import frechet_distance
from bench.results import MetricValue


def fid_from_stats(mu_gen: np.ndarray, sigma_gen: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray,
                   *, n: int, name: str = "fid", details: dict[str, Any] | None = None) -> MetricValue:
    """One row: FID of generated vs reference statistics (n = generated samples).

    No CI: FID is a biased plug-in estimate, not a mean of per-image values (Chong & Forsyth
    2020); run repeated seeds for a spread."""
    result = frechet_distance(mu_gen, sigma_gen, mu_ref, sigma_ref)
    return MetricValue(metric=name, value=result.value, n=n, details={**(details or {}), **result.details()})
