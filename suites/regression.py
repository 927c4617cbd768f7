"""regression: a fixed, seeded, small configuration for CI. Its rows are checked against a
committed baseline by `python -m bench.regress` (see suites/baselines/README.md).
Timing metrics are left out by default: CI machines differ, quality numbers do not."""
from __future__ import annotations

from suites.common import applicable_metrics


def run(session) -> None:
    names = session.cfg.suite.params.get("metrics", ["fid", "kid", "precision_recall"])
    for name in session.pipeline_names():
        pipe = session.load_pipeline(name)
        metrics = applicable_metrics(names, pipe)
        session.evaluate(pipe, session.request(pipe), metrics, {}, data=session.data_for(pipe))
