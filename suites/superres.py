"""superres: super-resolution of degraded held-out images (issue 21; the LDM paper's SR
evaluation, Rombach et al. 2022 sec. 4.4 and Tab. 5: bicubic-degraded inputs, FID against the
high-resolution set and PSNR / SSIM against each image's own high-resolution original).

Methods: the interpolation baselines (bicubic, nearest: bench.data.degrade.upscale) and every
pipeline in suite.pipelines that serves the "superres" task (the cascade's SR stage run alone on
the degraded image: models.families.cascaded; the LDM-style latent SR model, x4 on the f = 4
latents: models.families.latent_concat), each at every factor in `factors` whose input size the
pipeline takes (`Pipeline.superres_input_sizes`) and every degradation in `degradations`. One row
set per (method, factor, degradation):
FID (and KID) of the outputs vs the reference statistics at the high resolution, PSNR (the mean
over finite images, exact ones counted: suites.image_to_image), SSIM, LPIPS, and throughput. An
"identity" row (the high-resolution images themselves) gives the floor of FID (PSNR +inf). Rows carry a
`role` (reports keep it out of the bold "best" and set it apart): identity "reference", the
interpolations "baseline", the pipelines "method". A grid per method
(input / output / ground truth) goes to grids/superres_<method>_x<factor>_<degradation>.png.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import List

import torch

from bench.data.config import require
from bench.data.degrade import DEGRADATIONS, SR_FACTORS, degraded, upscale
from bench.metrics.reconstruction import load_lpips
from suites.image_to_image import (BATCH_WARMUP, PIPELINE_WARMUP, BatchTimer, PairedQuality, as_batch, chunks,
                                   ground_truth, nearest_to, quality_set, task_pipelines, throughput_rows, warm_up,
                                   write_grid)
from suites.params import SamplingParams

BASELINES = ("bicubic", "nearest")


@dataclass
class Params(SamplingParams):
    """Besides these, `stage_overrides` (SamplingParams) set the SR stages' sampling, e.g.
    {sr1: {noise_aug: 0.0, steps: 20}}."""
    factors: List[int] = field(default_factory=lambda: [2, 4])
    degradations: List[str] = field(default_factory=lambda: ["bicubic"])   # bicubic | blur_noise
    noise_std: float = 0.02            # blur_noise's Gaussian noise, in [0, 1] units
    baselines: List[str] = field(default_factory=lambda: list(BASELINES))
    identity_row: bool = True          # the high-resolution images as their own "SR": FID floor, PSNR +inf
    grid_k: int = 8                    # examples per grid

    def __post_init__(self) -> None:
        bad = [f for f in self.factors if f not in SR_FACTORS]
        require(self.factors and not bad, "suite.params.factors", f"choose from {list(SR_FACTORS)}, got {self.factors}")
        bad = [d for d in self.degradations if d not in DEGRADATIONS]
        require(self.degradations and not bad, "suite.params.degradations",
                f"choose from {list(DEGRADATIONS)}, got {self.degradations}")
        bad = [b for b in self.baselines if b not in BASELINES]
        require(not bad, "suite.params.baselines", f"choose from {list(BASELINES)}, got {self.baselines}")
        require(0.0 <= self.noise_std <= 1.0, "suite.params.noise_std", f"must be in [0, 1], got {self.noise_std}")
        super().__post_init__()
        require(self.grid_k >= 1, "suite.params.grid_k", f"must be >= 1, got {self.grid_k}")


def run(session, params: Params) -> None:
    cfg = session.cfg
    pipes, resolution = task_pipelines(session, cfg.suite.pipelines or [], "superres",
                                       "list superres pipelines (cascaded, latent_concat) in suite.pipelines")
    data, truth, labels = ground_truth(session, resolution, "superres")
    lpips = load_lpips("alex", session.device)
    grids = session.run_dir / "grids"
    base = {"task": "superres", "resolution": resolution, "data": data.name}
    if params.identity_row:
        _evaluate(session, "identity", lambda s, e: truth[s:e], truth, lpips, data,
                  {**base, "factor": 1, "degradation": "none", "input_resolution": resolution}, family="reference")
    for degradation in params.degradations:
        for factor in params.factors:
            if resolution % factor or resolution // factor < 4:
                session.say(f"suite superres: no x{factor} rows: {resolution} px does not downsample x{factor}",
                            warning=True)
                continue
            low = degraded(truth, factor, degradation, seed=cfg.seed, noise_std=params.noise_std)
            point = {**base, "factor": factor, "degradation": degradation, "input_resolution": resolution // factor}
            if degradation == "blur_noise":
                point["noise_std"] = params.noise_std
            tag = f"x{factor}_{degradation}"
            for mode in params.baselines:
                _evaluate(session, mode, lambda s, e, m=mode: upscale(low[s:e], resolution, m), truth, lpips, data,
                          point, family="baseline", low=low, grid=grids / f"superres_{mode}_{tag}.png", k=params.grid_k)
            for pipe in pipes:
                sizes = list(pipe.superres_input_sizes)
                if resolution // factor not in sizes:
                    session.say(f"suite superres: no x{factor} row for {pipe.info.name}: it super-resolves "
                                f"{sizes} px inputs, not {resolution // factor} px", warning=True)
                    continue
                _evaluate_pipeline(session, pipe, low, labels, truth, lpips, data, point,
                                   grids / f"superres_{pipe.info.name}_{tag}.png", params.grid_k)


def _evaluate(session, name, method, truth, lpips, data, point, family, low=None, grid=None, k=8) -> None:
    """Rows for an SR method given as a function of an index range -> uint8 high-resolution images."""
    quality, fid, timer = PairedQuality(lpips), quality_set(session, data), BatchTimer()
    outputs = []
    if family != "reference":   # a warm-up: the first batch once, untimed
        method(0, min(len(truth), session.cfg.hardware.batch_size))
    for start, end in chunks(len(truth), session.cfg.hardware.batch_size):
        with timer.batch(end - start):
            out = method(start, end)
        quality.update(truth[start:end], out)
        if fid is not None:
            fid.update(as_batch(out, start))
        if len(outputs) < k:
            outputs.extend(out[:k - len(outputs)])
    rows = (fid.compute() if fid is not None else []) + quality.rows()
    if family != "reference":   # the identity copies nothing worth timing
        rows += throughput_rows(session, timer, f"{name} upsampling alone", BATCH_WARMUP)
    role = "reference" if family == "reference" else "baseline"   # never a method the table may bold
    session.record(None, rows, {**point, "role": role}, pipeline_name=name, family=family)
    if grid is not None:
        _grid(grid, low, outputs, truth, k, name, point)


def _evaluate_pipeline(session, pipe, low, labels, truth, lpips, data, point, grid, k) -> None:
    """A pipeline's SR stages alone on the degraded images (task "superres"), class labels from the data."""
    overrides = {"labels": labels} if pipe.info.conditioning == "class" and labels is not None else {}
    if pipe.info.conditioning == "class" and labels is None:
        session.say(f"suite superres: data {data.name} has no labels; {pipe.info.name} is conditioned on labels "
                    "cycling over its classes", warning=True)
    request = session.request(pipe, n=len(truth), task="superres", input_images=low, **overrides)
    if request.stage_overrides:   # e.g. the SR stage's noise_aug: a setting of these numbers, so a column
        point = {**point, "stage_overrides": json.dumps({k: dict(v) for k, v in request.stage_overrides.items()},
                                                        sort_keys=True)}
    quality, fid = PairedQuality(lpips), quality_set(session, data)
    timer, outputs = BatchTimer(), []
    warm_up(pipe, request)
    for batch in pipe.sample(request):
        start = int(batch.indices[0])
        timer.add(len(batch), sum(batch.stage_seconds.values()))
        quality.update(truth[start:start + len(batch)], batch.images)
        if fid is not None:
            fid.update(batch)
        if len(outputs) < k:
            outputs.extend(batch.images[:k - len(outputs)])
    rows = (fid.compute() if fid is not None else []) + quality.rows()
    rows += throughput_rows(session, timer, "the SR stages' wall time (stage_seconds)", PIPELINE_WARMUP)
    session.record(pipe, rows, {**point, "role": "method"}, request=request)
    _grid(grid, low, outputs, truth, k, pipe.info.name, point)


def _grid(path, low, outputs, truth, k, method, point) -> None:
    out = torch.stack(outputs)
    write_grid(path, [nearest_to(low[:len(out)], truth.shape[-1]), out, truth[:len(out)]], k,
               labels=[f"input: {point['input_resolution']} px, {point['degradation']}", f"output: {method}",
                       f"ground truth: {point['resolution']} px"],
               title=f"super-resolution x{point['factor']}, {point['degradation']} degradation: {method}")
