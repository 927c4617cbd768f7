"""speed: sampler x steps x batch size x dtype (x compile) grid -> images/s, s/image, NFE,
per-stage share, peak memory. Warm-up excluded, repeated timings (median, min/max)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from bench.data.config import require
from bench.device import DTYPES
from bench.metrics.speed import measure_speed
from suites.params import SamplingParams


@dataclass
class Params(SamplingParams):
    batches_per_repeat: int = 1        # each timed repeat samples this many batches

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.batches_per_repeat >= 1, "suite.params.batches_per_repeat",
                f"must be >= 1, got {self.batches_per_repeat}")


def run(session, params: Params) -> None:
    cfg = session.cfg
    sweep = cfg.suite.sweep
    samplers = list(sweep.get("sampler", [cfg.sampler.name]))
    steps_grid = [int(s) for s in sweep.get("steps", [cfg.sampler.steps])]
    batch_sizes = [int(b) for b in sweep.get("batch_size", [cfg.hardware.batch_size])]
    dtypes = list(sweep.get("dtype", [cfg.hardware.dtype]))
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise ValueError(f"config key 'suite.sweep.dtype': {unknown} not among {list(DTYPES)}")
    for name in session.pipeline_names():
        pipe = session.load_pipeline(name)
        for dtype in dtypes:
            pipe.to(session.device, DTYPES[dtype])
            for sampler, steps, batch_size in itertools.product(samplers, steps_grid, batch_sizes):
                n = params.batches_per_repeat * batch_size
                request = session.request(pipe, n=n, sampler=sampler, steps=steps, batch_size=batch_size)
                values = measure_speed(pipe, request, repeats=cfg.metrics.speed_repeats, warmup=1)
                point = {"sampler": sampler, "steps": steps, "batch_size": batch_size, "dtype": dtype,
                         "compile": cfg.hardware.compile}
                session.record(pipe, values, point)
        pipe.to(session.device, session.dtype)
