"""speed: sampler x steps x batch size x dtype (x compile) grid -> images/s, s/image, NFE,
per-stage share, peak memory. Warm-up excluded, repeated timings (median, min/max); a progress
bar per point. Pipelines that read samples made elsewhere (external folders / npz) have nothing
to time: they are skipped, said in the log and recorded in the manifest's warnings."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from bench.data.config import ConfigError, require
from bench.device import DTYPE_NAMES, torch_dtype
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
    unknown = [d for d in dtypes if d not in DTYPE_NAMES]
    if unknown:
        raise ValueError(f"config key 'suite.sweep.dtype': {unknown} not among {list(DTYPE_NAMES)}")
    grid = list(itertools.product(samplers, steps_grid, batch_sizes))
    skipped = []
    for name in session.pipeline_names():
        pipe = session.load_pipeline(name)
        if pipe.samples_made_elsewhere:   # named as suite.pipelines / pipeline= name it (its label: its samples')
            skipped.append(name)
            label = name if name == pipe.info.name else f"{name} ({pipe.info.name})"
            session.say(f"suite speed: skipped pipeline {label}: its samples were made elsewhere, so "
                        "there is no sampling to time (reading files is not generation speed); no speed rows "
                        "for it", warning=True)
            continue
        points = len(dtypes) * len(grid)
        for dtype in dtypes:
            pipe.to(session.device, torch_dtype(dtype))
            for k, (sampler, steps, batch_size) in enumerate(grid):
                n = params.batches_per_repeat * batch_size
                request = session.request(pipe, n=n, sampler=sampler, steps=steps, batch_size=batch_size)
                index = dtypes.index(dtype) * len(grid) + k + 1
                desc = f"speed {pipe.info.name} [{index}/{points}] {sampler} steps={steps} bs={batch_size} {dtype}"
                values = measure_speed(pipe, request, repeats=cfg.metrics.speed_repeats, warmup=1,
                                       quiet=session.quiet, desc=desc)
                point = {"sampler": sampler, "steps": steps, "batch_size": batch_size, "dtype": dtype,
                         "compile": cfg.hardware.compile}
                session.record(pipe, values, point)
        pipe.to(session.device, session.dtype)
    if skipped and len(skipped) == len(session.pipeline_names()):
        raise ConfigError(f"suite=speed: every pipeline ({', '.join(skipped)}) reads samples made elsewhere, so there "
                          "is nothing to time; choose a pipeline that samples (e.g. pipeline=pixel_ddpm)")
