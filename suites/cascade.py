"""cascade: per-stage quality of cascaded and Imagen-style pipelines (FID/KID of the base
output at its own resolution and of every super-resolution output), with the sampling-time
noise-conditioning-augmentation level as a sweep axis (Ho et al. 2022, sec. 4.4)."""
from __future__ import annotations

from dataclasses import replace

from suites.common import applicable_metrics
from suites.params import SamplingParams as Params

IMAGE_STAGES = ("denoiser", "super_resolution")


def run(session, params: Params) -> None:
    sweep = session.cfg.suite.sweep
    levels = [None if v is None else float(v) for v in sweep.get("noise_aug", [None])]
    for name in session.pipeline_names():
        pipe = session.load_pipeline(name)
        stages = [s for s in pipe.info.stages if s.kind in IMAGE_STAGES and s.resolution]
        sr_stages = [s.name for s in stages if s.kind == "super_resolution"]
        if not sr_stages:
            raise ValueError(f"suite cascade: pipeline {name!r} has no super-resolution stage; "
                             "list cascaded or imagen pipelines in suite.pipelines")
        metrics = [m for m in applicable_metrics(session.cfg.metrics.names, pipe) if m != "clip_score"]
        for level in levels:
            overrides = {} if level is None else {s: {"noise_aug": level} for s in sr_stages}
            request = session.request(pipe, stage_overrides=overrides)
            point = {} if level is None else {"noise_aug": level}
            per_stage = {s.name: session.metric_set(metrics, data=replace(session.data_for(pipe),
                                                                          resolution=s.resolution))
                         for s in stages}
            final = stages[-1].name
            for batch in session.sample_stream(pipe, request, point):
                for stage, metric_set in per_stage.items():
                    images = batch.images if stage == final else batch.stage_outputs[stage]
                    metric_set.update(replace(batch, images=images))
            for s in stages:
                session.record(pipe, per_stage[s.name].compute(),
                               {**point, "stage": s.name, "stage_resolution": s.resolution,
                                "data_resolution": s.resolution})   # the reference as measured per stage
