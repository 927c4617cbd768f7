"""regression: a fixed, seeded, small configuration for CI. Its rows are checked against a
committed baseline by `python -m bench.regress` (see suites/baselines/README.md).
Timing metrics are left out by default: CI machines differ, quality numbers do not."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from bench.data.config import require
from bench.metrics.registry import metric_names, unknown_names
from suites.common import applicable_metrics
from suites.params import SamplingParams


@dataclass
class Params(SamplingParams):
    metrics: List[str] = field(default_factory=lambda: ["fid", "kid", "precision_recall"])  # no timings

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = unknown_names(self.metrics)   # never dropped silently by applicable_metrics
        require(not unknown, "suite.params.metrics", f"{unknown} are not metrics; choose from {sorted(metric_names())}")


def run(session, params: Params) -> None:
    for name in session.pipeline_names():
        pipe = session.load_pipeline(name)
        metrics = applicable_metrics(params.metrics, pipe)
        session.evaluate(pipe, session.request(pipe), metrics, {}, data=session.data_for(pipe))
