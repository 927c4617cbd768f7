"""smoke: every listed reference pipeline on bundled data, small n, all applicable metrics.
The default of `python -m bench` / `make run`."""
from __future__ import annotations

from suites.common import quality_and_speed


def run(session) -> None:
    for name in session.pipeline_names():
        quality_and_speed(session, session.load_pipeline(name))
