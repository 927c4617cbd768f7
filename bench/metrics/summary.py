"""Small statistics shared by the metrics: streaming means with 95% confidence intervals."""
from __future__ import annotations

import math

import torch

Z95 = 1.959963984540054   # two-sided 95% normal quantile


class RunningMean:
    """Mean, and a 95% normal-approximation CI of the mean, of per-item values, streamed in float64."""

    def __init__(self) -> None:
        self.n = 0
        self._sum = 0.0
        self._sumsq = 0.0
        self._shift: float | None = None   # first value: keeps the variance sum well conditioned

    def update(self, values: torch.Tensor) -> None:
        v = values.detach().reshape(-1).to(torch.float64).cpu()
        if v.numel() == 0:
            return
        if self._shift is None:
            self._shift = float(v[0])
        d = v - self._shift
        self.n += v.numel()
        self._sum += float(d.sum())
        self._sumsq += float((d * d).sum())

    def state(self) -> dict:
        """What another process needs to `merge` these values in."""
        return {"n": self.n, "shift": self._shift, "sum": self._sum, "sumsq": self._sumsq}

    def merge(self, state: dict) -> None:
        """Add another RunningMean's values (its `state()`), re-expressed around our shift (exact
        algebra: v - s = (v - s_o) + d with d = s_o - s)."""
        n = state["n"]
        if n == 0:
            return
        if self._shift is None:
            self._shift = state["shift"]
        d = state["shift"] - self._shift
        self._sum += state["sum"] + n * d
        self._sumsq += state["sumsq"] + 2 * d * state["sum"] + n * d * d
        self.n += n

    @property
    def mean(self) -> float:
        if self.n == 0:
            raise ValueError("no values were added")
        return self._shift + self._sum / self.n

    def std(self) -> float:
        if self.n < 2:
            return 0.0
        var = (self._sumsq - self._sum ** 2 / self.n) / (self.n - 1)
        return math.sqrt(max(var, 0.0))

    def ci95(self) -> tuple[float, float]:
        half = Z95 * self.std() / math.sqrt(self.n) if self.n > 1 else 0.0
        return self.mean - half, self.mean + half


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (precision and recall are fractions of samples)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
