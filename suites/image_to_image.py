"""Pieces the image-to-image suites (superres, inpainting; issue 21) share: held-out ground truth,
paired quality (PSNR, SSIM, LPIPS; PSNR also inside a mask), FID of the outputs against the
high-resolution reference set, a throughput row, and the input / output / ground-truth grids.

PSNR is capped at PSNR_CAP_DB: an output equal to its ground truth (the identity "SR" of an image
already at high resolution, an inpainting with nothing to fill) has MSE 0 and infinite PSNR, which
a mean cannot hold; such images count as PSNR_CAP_DB and the row says how many were capped.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from PIL import Image

from bench.data import build_source
from bench.data.config import BUNDLED_DATASETS, ConfigError
from bench.data.spooled import SpooledImages
from bench.metrics.reconstruction import lpips_per_image, psnr_per_image, ssim_per_image
from bench.metrics.summary import RunningMean
from bench.results import MetricValue
from models.core.interface import SampleBatch

PSNR_CAP_DB = 100.0          # the value an exact reproduction counts as (MSE 0 -> +inf dB)
QUALITY_METRICS = ("fid", "kid")
CI = {"ci_kind": "95% normal CI of the mean", "aggregation": "per image, then mean"}


def task_pipelines(session, names, task: str, hint: str) -> tuple[list, int]:
    """The suite's pipelines, each checked to serve `task`, and their one output resolution
    (data.resolution where there are none)."""
    pipes = [session.load_pipeline(name) for name in names]
    for pipe in pipes:
        if task not in pipe.supported_tasks:
            raise ConfigError(f"config key 'suite.pipelines': pipeline {pipe.info.name!r} does not serve the {task} task "
                              f"(it serves {sorted(pipe.supported_tasks)}); {hint}")
    resolution = pipes[0].info.resolution if pipes else session.cfg.data.resolution
    if any(p.info.resolution != resolution for p in pipes):
        raise ConfigError(f"config key 'suite.pipelines': pipelines {[p.info.name for p in pipes]} output different "
                          "resolutions; list pipelines of one output size")
    return pipes, resolution


def ground_truth(session, resolution: int, suite: str):
    """The run's data at the pipelines' resolution (bundled data is rendered at it) and its first
    suite.n held-out images (read a batch at a time) with their labels; data of another size is refused."""
    cfg = session.cfg
    data = replace(cfg.data, resolution=resolution) if cfg.data.name in BUNDLED_DATASETS else cfg.data
    truth, labels = held_out(session, data, cfg.suite.n)
    if truth.shape[-1] != resolution:
        raise ConfigError(f"config key 'data': suite {suite}: data {data.name} gives {truth.shape[-1]} px images; "
                          f"the pipelines output {resolution} px")
    return data, truth, labels


def held_out(session, data, n: int) -> tuple[SpooledImages, list[int] | None]:
    """The first n test-split images of `data` (a DataConfig), streamed once to a temporary file
    and read back a batch at a time (SpooledImages: never all in memory), and their labels (None
    where the source has none)."""
    source = build_source(replace(data, n=min(data.n, n)), split="test")
    labels: list[int] | None = [] if source.has_labels else None

    def images():
        for batch in source.iter_batches(session.cfg.hardware.batch_size,
                                         num_workers=session.cfg.hardware.num_workers):
            if labels is not None:   # as ints: small tensors kept per batch pin the freed image buffers
                labels.extend(batch.labels.tolist())   # between them in the heap (+90 MiB for 94 MiB of images)
            yield batch.images

    truth = SpooledImages(images(), f"data {data.name} (test split)")
    if not len(truth):
        truth.close()
        raise ConfigError(f"data {data.name}: no held-out (test-split) images; give a larger data.n")
    return truth, labels


def capped_psnr(psnr: torch.Tensor) -> tuple[torch.Tensor, int]:
    capped = torch.isinf(psnr) & (psnr > 0)
    return torch.where(capped, torch.full_like(psnr, PSNR_CAP_DB), psnr), int(capped.sum())


def masked_psnr(truth: torch.Tensor, output: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,) PSNR in dB over the pixels where mask (N 1 H W) is 1, all channels, data range 1.0;
    images with an empty mask have no such pixels and get NaN (left out by the caller)."""
    diff2 = ((truth.double() - output.double()) / 255.0) ** 2
    weight = mask.double().expand_as(diff2)
    count = weight.flatten(1).sum(1)
    mse = (diff2 * weight).flatten(1).sum(1) / count
    psnr = 10 * torch.log10(1.0 / mse)
    return torch.where(count > 0, psnr, torch.full_like(psnr, float("nan")))


class PairedQuality:
    """Streaming PSNR (capped), SSIM and LPIPS of outputs against their ground truth, and inside a
    mask (PSNR there; LPIPS of the output pasted into the truth, so it differs only inside)."""

    def __init__(self, lpips: tuple[torch.nn.Module, dict[str, Any]], masked: bool = False) -> None:
        self.lpips_model, self.lpips_details = lpips
        self.masked = masked
        self.psnr, self.ssim, self.lpips = RunningMean(), RunningMean(), RunningMean()
        self.capped = 0

    def update(self, truth: torch.Tensor, output: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if self.masked:
            values = masked_psnr(truth, output, mask)
            values, capped = capped_psnr(values[~torch.isnan(values)])
            self.psnr.update(values)
            self.capped += capped
            inside = mask.to(torch.bool).expand_as(truth)
            self.lpips.update(lpips_per_image(self.lpips_model, truth, torch.where(inside, output, truth)))
            return
        values, capped = capped_psnr(psnr_per_image(truth, output))
        self.psnr.update(values)
        self.capped += capped
        self.ssim.update(ssim_per_image(truth, output))
        self.lpips.update(lpips_per_image(self.lpips_model, truth, output))

    def rows(self) -> list[MetricValue]:
        suffix = "_in_mask" if self.masked else ""
        psnr_details = {**CI, "data_range": 1.0, "psnr_cap_db": PSNR_CAP_DB, "capped_images": self.capped}
        rows = [mean_row(f"psnr{suffix}", self.psnr, "dB", psnr_details)]
        if not self.masked:
            rows.append(mean_row("ssim", self.ssim, "", {**CI, "data_range": 1.0}))
        lpips_details = {**CI, **self.lpips_details}
        if self.masked:
            lpips_details["region"] = "the output pasted into the ground truth: differences only inside the mask"
        rows.append(mean_row(f"lpips{suffix}", self.lpips, "", lpips_details))
        return rows


def mean_row(name: str, values: RunningMean, unit: str, details: dict[str, Any]) -> MetricValue:
    if values.n == 0:
        raise ValueError(f"{name}: no images to average (every mask empty?)")
    low, high = values.ci95()
    return MetricValue(name, values.mean, n=values.n, unit=unit, ci_low=low, ci_high=high, details=details)


def quality_set(session, data):
    """FID / KID (those of metrics.names) of outputs against `data`'s reference statistics; None if neither."""
    names = [m for m in session.cfg.metrics.names if m in QUALITY_METRICS]
    return session.metric_set(names, data=data) if names else None


def as_batch(images: torch.Tensor, start: int) -> SampleBatch:
    return SampleBatch(images=images, indices=torch.arange(start, start + len(images)), prompts=None,
                       labels=None, stage_seconds={}, stage_nfe={})


def throughput_rows(session, seconds: float, n: int, what: str) -> list[MetricValue]:
    """Images per second of the method itself (data loading, degradation and metrics excluded),
    when `speed` is among metrics.names."""
    if "speed" not in session.cfg.metrics.names:
        return []
    return [throughput_row(seconds, n, what)]


def throughput_row(seconds: float, n: int, what: str) -> MetricValue:
    return MetricValue("images_per_s", n / max(seconds, 1e-9), n=n, unit="img/s",
                       details={"timed": what, "warmup": "none: each method timed over the whole set once"})


class Timer:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> "Timer":
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds += time.perf_counter() - self._start


def nearest_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NCHW enlarged by pixel repetition to `size` (for showing small inputs in a grid)."""
    factor = size // images.shape[-1]
    return images.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)


def write_grid(path: Path, rows: Sequence[torch.Tensor], k: int, scale: int = 4, pad: int = 2) -> Path:
    """A PNG with one row per entry of `rows` (uint8 NCHW, same size: e.g. input / output / ground
    truth) and the first k images as columns, enlarged `scale`x by pixel repetition."""
    k = min(k, *(len(r) for r in rows))
    size = rows[0].shape[-1] * scale
    canvas = torch.full((3, len(rows) * (size + pad) + pad, k * (size + pad) + pad), 255, dtype=torch.uint8)
    for i, row in enumerate(rows):
        for j in range(k):
            tile = nearest_to(row[j:j + 1], size)[0]
            top, left = pad + i * (size + pad), pad + j * (size + pad)
            canvas[:, top:top + size, left:left + size] = tile
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(path)
    return path


def chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)
