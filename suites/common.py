"""Pieces several suites share: which metrics apply to a pipeline, and sample quality + speed
for one pipeline at one sweep point."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from bench.metrics.registry import sampled_names, spec
from bench.metrics.speed import measure_speed
from models.core.interface import Pipeline


def applicable_metrics(names: Sequence[str], pipe: Pipeline) -> list[str]:
    """Sample metrics (bench.metrics.registry) from `names` that make sense for the pipeline:
    those reading prompts (CLIP score) need a text-conditioned one."""
    out = [n for n in names if n in sampled_names()]
    if pipe.info.conditioning != "text":
        out = [n for n in out if not spec(n).needs_prompts]
    return out


def quality_and_speed(session, pipe: Pipeline, point: Mapping[str, Any] | None = None,
                      speed_n: int | None = None, **request_overrides: Any) -> None:
    """FID/KID/PR/(IS)/(CLIP) over suite.n samples, then timed sampling (warm-up excluded) of
    speed_n images per repeat (suite.params.speed_n; None = hardware.batch_size). Samples made
    elsewhere (`Pipeline.samples_made_elsewhere`) are all scored unless suite.n is given, and get
    no speed rows: nothing is sampled, and reading files is not generation speed."""
    point = dict(point or {})
    names = session.cfg.metrics.names
    metrics = applicable_metrics(names, pipe)
    if metrics:
        request = session.request(pipe, **request_overrides)
        session.evaluate(pipe, request, metrics, point, data=session.data_for(pipe))
    if "speed" in names and pipe.samples_made_elsewhere:
        session.say(f"speed: not measured for external pipeline {pipe.info.name}: its samples were made "
                    "elsewhere, so there is no sampling to time (reading files is not generation speed)")
    elif "speed" in names and session.world.is_main:   # timed on one process, not contended
        n = session.cfg.hardware.batch_size if speed_n is None else speed_n
        request = session.request(pipe, n=n, **request_overrides)
        values = measure_speed(pipe, request, repeats=session.cfg.metrics.speed_repeats, warmup=1,
                               quiet=session.quiet, desc=f"speed {pipe.info.name} {point or ''}".rstrip())
        session.record(pipe, values, point, request=request)
