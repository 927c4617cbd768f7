"""guidance_sweep: guidance scale x pipeline (x sampler) -> FID, KID, CLIP score per point.
The report plots FID vs CLIP score as one Pareto curve per pipeline (the GLIDE / Imagen
figure) and FID vs scale. Models and reference statistics load once and serve every point."""
from __future__ import annotations

from suites.common import quality_and_speed
from suites.params import QualityParams as Params

DEFAULT_SCALES = [1.0, 2.0, 4.0]


def run(session, params: Params) -> None:
    sweep = session.cfg.suite.sweep
    scales = [float(s) for s in sweep.get("guidance_scale", DEFAULT_SCALES)]
    samplers = list(sweep.get("sampler", [session.cfg.sampler.name]))
    for name in session.pipeline_names():
        pipe = session.load_pipeline(name)
        if pipe.info.conditioning == "none":
            raise ValueError(f"suite guidance_sweep: pipeline {name!r} is unconditional, so guidance "
                             "has nothing to guide; list class- or text-conditioned pipelines in suite.pipelines")
        for sampler in samplers:
            for scale in scales:
                point = {"guidance_scale": scale}
                if len(samplers) > 1:
                    point["sampler"] = sampler
                quality_and_speed(session, pipe, point, speed_n=params.speed_n, guidance_scale=scale, sampler=sampler)
