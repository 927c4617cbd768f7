"""Pieces several suites share: which metrics apply to a pipeline, and sample quality + speed
for one pipeline at one sweep point."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from models.interface import Pipeline

SAMPLE_METRICS = ("fid", "kid", "precision_recall", "inception_score", "clip_score")


def applicable_metrics(names: Sequence[str], pipe: Pipeline) -> list[str]:
    """Sample metrics from `names` that make sense for the pipeline (CLIP score needs prompts)."""
    out = [n for n in names if n in SAMPLE_METRICS]
    if pipe.info.conditioning != "text":
        out = [n for n in out if n != "clip_score"]
    return out


def quality_and_speed(session, pipe: Pipeline, point: Mapping[str, Any] | None = None,
                      **request_overrides: Any) -> None:
    """FID/KID/PR/(IS)/(CLIP) over suite.n samples, then timed sampling (warm-up excluded)."""
    point = dict(point or {})
    names = session.cfg.metrics.names
    metrics = applicable_metrics(names, pipe)
    if metrics:
        request = session.request(pipe, **request_overrides)
        session.evaluate(pipe, request, metrics, point, data=session.data_for(pipe))
    if "speed" in names and session.world.is_main:   # timed on one process, not contended
        from bench.metrics.speed import measure_speed
        n = int(session.cfg.suite.params.get("speed_n", session.cfg.hardware.batch_size))
        request = session.request(pipe, n=n, **request_overrides)
        values = measure_speed(pipe, request, repeats=session.cfg.metrics.speed_repeats, warmup=1)
        session.record(pipe, values, point)
