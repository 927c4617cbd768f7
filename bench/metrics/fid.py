"""Fréchet Inception Distance (Heusel et al. 2017) from streamed float64 statistics, with an opt-in
bootstrap confidence interval over the generated samples (`metrics.bootstrap`, bench.metrics.bootstrap)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.metrics import registry
from bench.metrics.base import BatchInputs, ComputeContext, Metric, Resources
from bench.metrics.bootstrap import bootstrap_fid
from bench.metrics.frechet import CovarianceFactor, GaussianAccumulator, frechet_distance
from bench.metrics.inception import FeatureBank
from bench.metrics.registry import INCEPTION_POOL
from bench.results import MetricValue

NO_CI = "none: FID is a biased plug-in estimate, not a mean (set metrics.bootstrap=B for a bootstrap CI)"


def fid_from_stats(mu_gen: np.ndarray, sigma_gen: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray,
                   *, n: int, name: str = "fid", details: dict[str, Any] | None = None,
                   reference_factor: CovarianceFactor | None = None) -> MetricValue:
    """One row: FID of generated vs reference statistics (n = generated samples); reference_factor:
    the reference's cached covariance factor (same value, less work).

    No CI: FID is a biased plug-in estimate, not a mean of per-image values (Chong & Forsyth
    2020); `with_bootstrap_ci` adds one from the generated features, or run repeated seeds."""
    result = frechet_distance(mu_gen, sigma_gen, mu_ref, sigma_ref, reference_factor=reference_factor)
    return MetricValue(metric=name, value=result.value, n=n, details={**(details or {}), **result.details()})


def with_bootstrap_ci(row: MetricValue, features: torch.Tensor, mu_ref: np.ndarray, sigma_ref: np.ndarray, *,
                      replicates: int, seed: int, reference_factor: CovarianceFactor | None = None) -> MetricValue:
    """`row` (an FID) with the bootstrap interval of `features` against the fixed reference."""
    interval = bootstrap_fid(features, mu_ref, sigma_ref, point=row.value, replicates=replicates, seed=seed,
                             reference_factor=reference_factor)
    details = {**row.details, **interval.details(row.value)}
    if interval.n < row.n:   # the kept features are the first max_kept_features: a wider interval than n's
        details["ci_kind"] += (f"; resampled the first {interval.n} of {row.n} samples (metrics.max_kept_features), "
                               "so the interval is wider than that of all n")
    return MetricValue(metric=row.metric, value=row.value, n=row.n, unit=row.unit, ci_low=interval.low,
                       ci_high=interval.high, details=details)


def _shared_bank_expected(cfg: Any) -> bool:
    """Whether another named metric makes MetricSet keep the pool features anyway (KID, P/R, ...)."""
    names = [n for n in getattr(cfg, "names", ()) if n in registry.metric_names()]
    return any(INCEPTION_POOL in registry.spec(n).keeps for n in names)


class FidMetric(Metric):
    """FID against the reference moments, from float64 moments of every generated image's pool
    features streamed batch by batch (constant memory: no features kept). With metrics.bootstrap
    = B > 0 it also resamples the first max_kept_features features (MetricSet's kept bank when
    another metric keeps one, else its own) B times for a confidence interval."""

    def __init__(self, cfg: Any, resources: Resources) -> None:
        super().__init__(cfg, resources)
        self.gaussian = GaussianAccumulator()
        self.replicates = int(getattr(cfg, "bootstrap", 0) or 0)
        self.bank = (FeatureBank(cfg.max_kept_features)
                     if self.replicates and not _shared_bank_expected(cfg) else None)

    def update(self, inputs: BatchInputs) -> None:
        self.gaussian.update(inputs.features[INCEPTION_POOL])
        if self.bank is not None:
            self.bank.update(inputs.features[INCEPTION_POOL])

    def state(self) -> dict[str, Any]:
        state = self.gaussian.state()
        return state if self.bank is None else {**state, "bank": self.bank.state()}

    def merge(self, state: dict[str, Any]) -> None:
        self.gaussian.merge(GaussianAccumulator.from_state(state))
        if self.bank is not None:
            self.bank.merge(state["bank"])

    def compute(self, context: ComputeContext) -> list[MetricValue]:
        mu, sigma = self.gaussian.stats()
        reference = context.reference
        factor = reference.covariance_factor()
        row = fid_from_stats(mu, sigma, reference.mu, reference.sigma, n=self.gaussian.n,
                             details={**context.details, "ci_method": NO_CI}, reference_factor=factor)
        if not self.replicates:
            return [row]
        if INCEPTION_POOL in context.kept:
            features = context.kept_features(INCEPTION_POOL)
        elif self.bank is not None:
            features = self.bank.tensor()
        else:
            raise ValueError("metrics.bootstrap: FID has no kept generated features to resample; the metric set was "
                             "built without the metrics that keep them. Set metrics.bootstrap=0 or list kid too")
        return [with_bootstrap_ci(row, features, reference.mu, reference.sigma, replicates=self.replicates,
                                  seed=int(getattr(self.cfg, "bootstrap_seed", 0)), reference_factor=factor)]
