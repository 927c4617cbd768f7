"""regression: a fixed, seeded, small configuration for CI. Its rows are checked against a
committed baseline by `python -m bench.regress` (see suites/baselines/README.md).
Timing metrics are left out by default: CI machines differ, quality numbers do not."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from suites.common import applicable_metrics
from suites.params import SamplingParams


@dataclass
class Params(SamplingParams):
    metrics: List[str] = field(default_factory=lambda: ["fid", "kid", "precision_recall"])  # no timings


def run(session, params: Params) -> None:
    for name in session.pipeline_names():
        pipe = session.load_pipeline(name)
        metrics = applicable_metrics(params.metrics, pipe)
        session.evaluate(pipe, session.request(pipe), metrics, {}, data=session.data_for(pipe))
