"""Pieces the image-to-image suites (superres, inpainting; issue 21) share: held-out ground truth,
paired quality (PSNR, SSIM, LPIPS; PSNR also inside a mask), FID of the outputs against the
high-resolution reference set, a throughput row, and the input / output / ground-truth grids.

An output equal to its ground truth (the identity "SR" of an image already at high resolution, an
inpainting that happens to reproduce the masked pixels) has MSE 0 and infinite PSNR, which a mean
cannot hold. Counting such images at a cap (100 dB) made one exact image of 8 lift a 39.6 dB mean to
47.2 dB and win the bold (issue 28), so the PSNR mean is over the finite images only and the row says
how many were left out (details `excluded`: count, of, reason; the tables print "(1 of 8 exact)");
when every image is exact the value is +inf (the identity row).
"""
from __future__ import annotations

import math
import textwrap
import time
import weakref
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from bench.data import build_source
from bench.data.config import BUNDLED_DATASETS, ConfigError
from bench.data.spooled import SpooledImages
from bench.metrics.reconstruction import lpips_per_image, psnr_per_image, ssim_per_image
from bench.metrics.summary import RunningMean
from bench.results import MetricValue
from models.core.interface import SampleBatch

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


def finite_psnr(psnr: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(the finite PSNRs, how many images were exact: MSE 0, +inf dB), see the module docstring."""
    exact = torch.isinf(psnr) & (psnr > 0)
    return psnr[~exact], int(exact.sum())


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
    """Streaming PSNR (exact images counted, not averaged), SSIM and LPIPS of outputs against their ground truth, and inside a
    mask (PSNR there; LPIPS of the output pasted into the truth, so it differs only inside)."""

    def __init__(self, lpips: tuple[torch.nn.Module, dict[str, Any]], masked: bool = False) -> None:
        self.lpips_model, self.lpips_details = lpips
        self.masked = masked
        self.psnr, self.ssim, self.lpips = RunningMean(), RunningMean(), RunningMean()
        self.exact = 0     # images with MSE 0 (infinite PSNR): counted, left out of the mean
        self.images = 0

    def update(self, truth: torch.Tensor, output: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if self.masked:
            values = masked_psnr(truth, output, mask)
            values = values[~torch.isnan(values)]
            self.images += len(values)
            values, exact = finite_psnr(values)
            self.psnr.update(values)
            self.exact += exact
            inside = mask.to(torch.bool).expand_as(truth)
            self.lpips.update(lpips_per_image(self.lpips_model, truth, torch.where(inside, output, truth)))
            return
        values = psnr_per_image(truth, output)
        self.images += len(values)
        values, exact = finite_psnr(values)
        self.psnr.update(values)
        self.exact += exact
        self.ssim.update(ssim_per_image(truth, output))
        self.lpips.update(lpips_per_image(self.lpips_model, truth, output))

    def rows(self) -> list[MetricValue]:
        suffix = "_in_mask" if self.masked else ""
        psnr_details = {**CI, "data_range": 1.0, "aggregation": "per image, then mean over the finite ones",
                        "excluded": {"count": self.exact, "of": self.images, "reason": "exact"}}
        if self.images and self.exact == self.images:   # every output exact (the identity): +inf, no interval
            rows = [MetricValue(f"psnr{suffix}", math.inf, n=self.images, unit="dB",
                                details={**psnr_details, "excluded": {"count": 0, "of": self.images, "reason": "exact"},
                                         "exact_images": self.images})]
        else:
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


def throughput_rows(session, timer: "BatchTimer", what: str, warmup: str) -> list[MetricValue]:
    """Images per second of the method itself (data loading, degradation and metrics excluded),
    when `speed` is among metrics.names."""
    if "speed" not in session.cfg.metrics.names:
        return []
    return [throughput_row(timer.batches, what, warmup)]


WARMUP_IMAGES = 2   # images a pipeline samples untimed before its first timed batch in a run
PIPELINE_WARMUP = f"{WARMUP_IMAGES} images sampled untimed before the pipeline's first timed batch of the run"
BATCH_WARMUP = "the first batch run once untimed"


def warm_up(pipe, request) -> None:
    """Sample WARMUP_IMAGES untimed, once per pipeline and run (lazy initialisation, allocator
    growth and the first calls' dispatch costs fall here, as in bench.metrics.speed): without it
    the inpainting suite's img/s of one method varied 12-30x between mask sets (issue 28)."""
    if pipe in _WARM:
        return
    for _ in pipe.sample(request.with_range(request.start_index, min(request.n, WARMUP_IMAGES))):
        pass
    _WARM.add(pipe)


_WARM: "weakref.WeakSet" = weakref.WeakSet()


def throughput_row(batches: Sequence[tuple[int, float]], what: str, warmup: str) -> MetricValue:
    """images/s over (images, seconds) per timed batch (after a warm-up, `warmup` says which); the
    interval is the min-max of the batches' own rates, as bench.metrics.speed states its spread."""
    if not batches:
        raise ValueError(f"throughput of {what}: no batch was timed")
    n, seconds = sum(b for b, _ in batches), sum(s for _, s in batches)
    rates = [b / max(s, 1e-9) for b, s in batches]
    spread = {"ci_low": min(rates), "ci_high": max(rates)} if len(rates) > 1 else {}
    return MetricValue("images_per_s", n / max(seconds, 1e-9), n=n, unit="img/s", **spread,
                       details={"timed": what, "warmup": warmup, "batches_timed": len(batches), "batch_rates": rates,
                                "ci_method": "min-max over batches" if spread else "none: one batch timed",
                                "ci_kind": "spread of the timed batches' images/s; value: their images / their "
                                           "seconds"})


class BatchTimer:
    """Wall time per batch: `with timer.batch(n): ...` or `timer.add(n, seconds)` (a pipeline's own
    stage_seconds); `batches` is [(images, seconds)] in order."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, float]] = []

    def add(self, n: int, seconds: float) -> None:
        self.batches.append((int(n), float(seconds)))

    @contextmanager
    def batch(self, n: int) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.add(n, time.perf_counter() - start)


def nearest_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NCHW enlarged by pixel repetition to `size` (for showing small inputs in a grid)."""
    factor = size // images.shape[-1]
    return images.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)


GRID_LABEL_WIDTH = 190   # px of the left column naming each row (24 characters of 13 px type)
GRID_TITLE_HEIGHT = 26   # px of the title bar


def write_grid(path: Path, rows: Sequence[torch.Tensor], k: int, scale: int = 4, pad: int = 2,
               labels: Sequence[str] = (), title: str = "") -> Path:
    """A PNG with one row per entry of `rows` (uint8 NCHW, same size: e.g. input / output / ground
    truth), each named by its entry of `labels` in a left column, the first k images as columns,
    enlarged `scale`x by pixel repetition, under `title`. Every grid of a suite run has the same
    size (same k, rows and resolution), so a report's page is not ragged."""
    k = min(k, *(len(r) for r in rows))
    size = rows[0].shape[-1] * scale
    left0, top0 = (GRID_LABEL_WIDTH if labels else 0), (GRID_TITLE_HEIGHT if title else 0)
    canvas = torch.full((3, top0 + len(rows) * (size + pad) + pad, left0 + k * (size + pad) + pad), 255,
                        dtype=torch.uint8)
    for i, row in enumerate(rows):
        for j in range(k):
            tile = nearest_to(row[j:j + 1], size)[0]
            top, left = top0 + pad + i * (size + pad), left0 + pad + j * (size + pad)
            canvas[:, top:top + size, left:left + size] = tile
    image = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=13)   # Pillow's own font
    if title:
        draw.text((pad + 4, 5), title, fill=(0, 0, 0), font=font)
    for i, label in enumerate(labels):
        top = top0 + pad + i * (size + pad)
        lines = textwrap.wrap(label, 24, break_long_words=False)[:4]
        draw.multiline_text((6, top + size // 2 - 8 * len(lines)), "\n".join(lines), fill=(0, 0, 0), font=small,
                            spacing=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def hatch_masked(images: torch.Tensor, masks: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """uint8 NCHW enlarged `scale`x with the masked pixels (masks N1HW, 1 = to inpaint) drawn as a
    black-and-white checkerboard, visible on any background: the mid-grey fill they had before
    vanished on the gray backgrounds of `shapes` (issue 28)."""
    big = nearest_to(images, images.shape[-1] * scale)
    hole = nearest_to(masks.to(torch.uint8), masks.shape[-1] * scale).bool().expand_as(big)
    h, w = big.shape[-2:]
    cell = max(1, scale // 2)
    yy, xx = torch.meshgrid(torch.arange(h) // cell, torch.arange(w) // cell, indexing="ij")
    checker = (((yy + xx) % 2) * 255).to(torch.uint8).expand_as(big)
    return torch.where(hole, checker, big)


def chunks(n: int, size: int) -> Iterable[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)
