"""inpainting: fill masked regions of held-out images (issue 21; the LDM paper's inpainting
evaluation, Rombach et al. 2022 sec. 4.5 and Tab. 7: FID on full images and LPIPS, per mask set).

Masks come from a seed (bench.data.masks: boxes, LaMa-style thin and thick strokes at stated area
ratios, `masks`). Methods: every pipeline in suite.pipelines that serves the "inpaint" task (the
pixel family by RePaint, Lugmayr et al. 2022, training-free; its resampling schedule is
`jump_length` / `jump_n_sample`; the LDM-style latent inpainting model conditioned on the masked
image + mask, models.families.latent_concat, which samples once and gets no such schedule:
`Pipeline.inpaints_by_resampling`), and the `mean_fill` baseline (each channel's mean over the known
pixels; a floor any model should beat). Rows per (method, mask set): FID (and KID) of the full
output images vs the reference set, PSNR and LPIPS inside the mask, the mask's measured area ratio,
and `changed_outside_mask`, the share (%) of the pixels outside the mask with any channel differing
from the input, over all images (0 for RePaint, whose last step pastes the known pixels exactly;
the baselines paste too; the latent model does not paste, as LDM, unless its pipeline param
paste_known is set). A grid
per method and mask set: masked input / output / ground truth.

RePaint samples with ancestral DDPM steps, so this suite's config sets sampler ddpm; another
sampler is refused by the pipeline (exit 2), not replaced.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from bench.data.config import require
from bench.data.masks import MASK_KINDS, area_ratio, check_mask_spec, mask_sequence
from bench.data.spooled import spool
from bench.metrics.reconstruction import load_lpips
from bench.results import MetricValue
from suites.image_to_image import (BATCH_WARMUP, PIPELINE_WARMUP, BatchTimer, PairedQuality, as_batch, chunks,
                                   ground_truth, hatch_masked, nearest_to, quality_set, task_pipelines,
                                   throughput_rows, warm_up, write_grid)
from suites.params import SamplingParams

BASELINES = ("mean_fill",)
GREY = 128   # mean_fill's value where an image has no known pixel


@dataclass
class MaskSpec:
    kind: str = "box"       # box | thin | thick
    ratio: float = 0.25     # fraction of pixels to inpaint, exact to one pixel


@dataclass
class Params(SamplingParams):
    """Besides these, `stage_overrides` (SamplingParams) set a stage's sampling; RePaint's schedule
    comes from jump_length / jump_n_sample below."""
    masks: List[MaskSpec] = field(default_factory=lambda: [MaskSpec("box", 0.25), MaskSpec("thin", 0.15),
                                                           MaskSpec("thick", 0.35)])
    mask_seed: Optional[int] = None    # None: the run's seed
    jump_length: int = 5               # RePaint (sec. 4.2): jump back this many steps ...
    jump_n_sample: int = 2             # ... this many times per block (1 = no resampling)
    baselines: List[str] = field(default_factory=lambda: list(BASELINES))
    grid_k: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.masks) > 0, "suite.params.masks", "give at least one {kind, ratio}")
        for i, spec in enumerate(self.masks):
            try:
                check_mask_spec(spec.kind, spec.ratio, f"suite.params.masks[{i}]")
            except ValueError as err:
                require(False, f"suite.params.masks[{i}]", f"{err}; kinds: {list(MASK_KINDS)}")
        require(self.jump_length >= 1, "suite.params.jump_length", f"must be >= 1, got {self.jump_length}")
        require(self.jump_n_sample >= 1, "suite.params.jump_n_sample", f"must be >= 1, got {self.jump_n_sample}")
        bad = [b for b in self.baselines if b not in BASELINES]
        require(not bad, "suite.params.baselines", f"choose from {list(BASELINES)}, got {self.baselines}")
        require(self.grid_k >= 1, "suite.params.grid_k", f"must be >= 1, got {self.grid_k}")


def run(session, params: Params) -> None:
    cfg = session.cfg
    pipes, resolution = task_pipelines(session, session.pipeline_names(), "inpaint",
                                       "list inpaint pipelines (pixel, latent_concat) in suite.pipelines")
    data, truth, labels = ground_truth(session, resolution, "inpainting")
    seed = cfg.seed if params.mask_seed is None else params.mask_seed
    probe = mask_sequence(params.masks[0].kind, params.masks[0].ratio, resolution, seed, len(truth))
    for pipe in pipes:   # a request a pipeline refuses (e.g. another sampler) fails here, before any work
        pipe.check_request(_request(session, pipe, truth, probe, labels, params))
    lpips = load_lpips("alex", session.device)
    for spec in params.masks:
        # made once per set and spooled: every method reads them (drawing strokes costs ~8 ms a mask)
        masks = spool(mask_sequence(spec.kind, spec.ratio, resolution, seed, len(truth)), f"masks {spec.kind}")
        area = _area_row(masks)
        point = {"task": "inpaint", "mask": spec.kind, "mask_ratio": spec.ratio, "mask_seed": seed,
                 "resolution": resolution, "data": data.name}
        tag = f"{spec.kind}{spec.ratio:g}"
        for name in params.baselines:
            _evaluate_baseline(session, name, truth, masks, area, lpips, data, point,
                               session.run_dir / "grids" / f"inpainting_{name}_{tag}.png", params.grid_k)
        for pipe in pipes:
            _evaluate_pipeline(session, pipe, truth, masks, area, labels, lpips, data, params,
                               {**point, "jump_length": params.jump_length, "jump_n_sample": params.jump_n_sample}
                               if pipe.inpaints_by_resampling else point,
                               session.run_dir / "grids" / f"inpainting_{pipe.info.name}_{tag}.png")


def mean_fill(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each unknown pixel set to its image's per-channel mean over the known pixels (mid-grey if none)."""
    known = (masks == 0).expand_as(images).double()
    count = known.flatten(2).sum(2)
    mean = (images.double() * known).flatten(2).sum(2) / count.clamp(min=1)
    mean = torch.where(count > 0, mean, torch.full_like(mean, GREY)).round().to(torch.uint8)
    return torch.where(known.bool(), images, mean[..., None, None].expand_as(images))


def _area_row(masks) -> MetricValue:
    ratios = torch.cat([area_ratio(masks[start:end]) for start, end in chunks(len(masks), 256)])   # N floats
    return MetricValue("mask_area_ratio", float(ratios.mean()), n=len(masks),
                       details={"min": float(ratios.min()), "max": float(ratios.max())})


def _rows(session, quality, fid, area, truth, changed, timer, what, warmup) -> list[MetricValue]:
    rows = (fid.compute() if fid is not None else []) + quality.rows() + [area]
    rows.append(changed_row(*changed, len(truth)))
    rows += throughput_rows(session, timer, what, warmup)
    return rows


def changed_row(changed: int, outside: int, n: int) -> MetricValue:
    """`changed_outside_mask`: % of the out-of-mask pixels (a pixel: all its channels) that differ from
    the input. Counting channels over all images read as pixels gave 9847 "px" where 8 images had
    6144 pixels outside the mask (issue 28); a share of the pixels that could change reads at once."""
    return MetricValue("changed_outside_mask", 100.0 * changed / max(outside, 1), n=n, unit="%",
                       details={"what": "pixels outside the mask with any channel differing from the input, as % "
                                        "of all pixels outside the mask (0 = known pixels preserved exactly)",
                                "changed_pixels": changed, "pixels_outside_mask": outside})


def _changed_outside(truth: torch.Tensor, output: torch.Tensor, masks: torch.Tensor) -> tuple[int, int]:
    """(pixels outside the mask with any channel changed, pixels outside the mask) of a batch."""
    outside = masks[:, 0] == 0                       # N H W
    changed = (output != truth).any(dim=1)           # N H W: a pixel changed in any channel
    return int((changed & outside).sum()), int(outside.sum())


def _add(total: tuple[int, int], part: tuple[int, int]) -> tuple[int, int]:
    return total[0] + part[0], total[1] + part[1]


def _evaluate_baseline(session, name, truth, masks, area, lpips, data, point, grid, k) -> None:
    quality, fid = PairedQuality(lpips, masked=True), quality_set(session, data)
    timer, changed, outputs = BatchTimer(), (0, 0), []
    first = min(len(truth), session.cfg.hardware.batch_size)
    mean_fill(truth[:first], masks[:first])   # a warm-up: the first batch once, untimed
    for start, end in chunks(len(truth), session.cfg.hardware.batch_size):
        known, mask = truth[start:end], masks[start:end]   # one read each per batch
        with timer.batch(end - start):
            out = mean_fill(known, mask)
        _update(quality, fid, known, out, mask, start)
        changed = _add(changed, _changed_outside(known, out, mask))
        outputs.extend(out[:max(0, k - len(outputs))])
    session.record(None, _rows(session, quality, fid, area, truth, changed, timer, f"{name} alone", BATCH_WARMUP),
                   {**point, "role": "baseline"}, pipeline_name=name, family="baseline")   # reports never bold it
    _grid(grid, truth, masks, outputs, k, name, _mask_text(point))


def _request(session, pipe, truth, masks, labels, params):
    """The inpainting request: class labels from the data, RePaint's schedule on the denoiser stage."""
    overrides = {"labels": labels} if pipe.info.conditioning == "class" and labels is not None else {}
    if pipe.info.conditioning == "class" and labels is None:
        session.say(f"suite inpainting: the data has no labels; {pipe.info.name} is conditioned on labels "
                    "cycling over its classes", warning=True)
    jumps = {"jump_length": params.jump_length, "jump_n_sample": params.jump_n_sample}
    stage_overrides = {name: dict(settings) for name, settings in params.stage_overrides.items()
                       if name in pipe.info.stage_names}
    for stage in pipe.info.stages:
        if stage.kind == "denoiser" and pipe.inpaints_by_resampling:   # RePaint's schedule, for RePaint only
            stage_overrides[stage.name] = {**stage_overrides.get(stage.name, {}), **jumps}
    return session.request(pipe, n=len(truth), task="inpaint", input_images=truth, masks=masks,
                           stage_overrides=stage_overrides, **overrides)


def _evaluate_pipeline(session, pipe, truth, masks, area, labels, lpips, data, params, point, grid) -> None:
    request = _request(session, pipe, truth, masks, labels, params)
    if params.stage_overrides:   # settings beyond RePaint's schedule (already columns): one more column
        point = {**point, "stage_overrides": json.dumps({k: dict(v) for k, v in params.stage_overrides.items()},
                                                        sort_keys=True)}
    quality, fid = PairedQuality(lpips, masked=True), quality_set(session, data)
    timer, changed, outputs = BatchTimer(), (0, 0), []
    warm_up(pipe, request)
    for batch in pipe.sample(request):
        start, end = int(batch.indices[0]), int(batch.indices[-1]) + 1
        timer.add(len(batch), sum(batch.stage_seconds.values()))
        known, mask = truth[start:end], masks[start:end]   # one read each per batch
        _update(quality, fid, known, batch.images, mask, start)
        changed = _add(changed, _changed_outside(known, batch.images, mask))
        outputs.extend(batch.images[:max(0, params.grid_k - len(outputs))])
    what = "RePaint" if pipe.inpaints_by_resampling else pipe.info.name
    rows = _rows(session, quality, fid, area, truth, changed, timer, f"{what} sampling (stage_seconds)",
                 PIPELINE_WARMUP)
    session.record(pipe, rows, {**point, "role": "method"}, request=request)
    _grid(grid, truth, masks, outputs, params.grid_k, pipe.info.name, _mask_text(point))


def _update(quality, fid, truth, output, masks, start) -> None:
    quality.update(truth, output, masks)
    if fid is not None:
        fid.update(as_batch(output, start))


def _mask_text(point) -> str:
    return f"{point['mask']} ({point['mask_ratio']:.0%} of pixels)"


def _grid(path, truth, masks, outputs, k, method: str, spec: str) -> None:
    out = torch.stack(outputs)
    scale = 4
    shown = hatch_masked(truth[:len(out)], masks[:len(out)], scale)
    big = lambda images: nearest_to(images, images.shape[-1] * scale)   # noqa: E731
    write_grid(path, [shown, big(out), big(truth[:len(out)])], k, scale=1,
               labels=["input (checkered: to inpaint)", f"output: {method}", "ground truth"],
               title=f"inpainting, {spec} masks: {method}")
