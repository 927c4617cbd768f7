"""Sampler speed: throughput, latency, network evaluations, per-stage time and peak memory.

`measure_speed` runs the request `warmup` times untimed on its first batch (CUDA context,
cuDNN autotuning, torch.compile, allocator growth), then `repeats` timed full runs. Each
number is the median over the repeats, with the min and max as its interval. Wall time is
taken around the whole stream with CUDA synchronised at both ends; the per-stage seconds and
NFE come from the pipeline's own `SampleBatch` bookkeeping (models.core.interface.BatchContext).

Peak memory: on CUDA `torch.cuda.max_memory_allocated` (reset before each repeat); on CPU the
process's peak resident set size during the repeat, sampled every 5 ms from /proc (or psutil),
reported both absolute and as the increase over the RSS at the start of the repeat.
"""
from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from typing import Any

import torch

from bench.results import MetricValue
from models.core.interface import Pipeline, SampleRequest, synchronize

MIB = 1024 * 1024


def current_rss() -> int:
    """Resident set size of this process in bytes."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        try:
            import psutil
            return int(psutil.Process().memory_info().rss)
        except ImportError:  # last resort: the lifetime peak (KiB on Linux)
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """Context manager sampling this process's RSS in a background thread; `.peak`, `.start`."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, current_rss())

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = current_rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, current_rss())


def _timed_run(pipeline: Pipeline, request: SampleRequest) -> dict[str, Any]:
    device = pipeline.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    images, stage_seconds, stage_nfe_sum = 0, {}, {}
    with PeakRSS() as rss:
        synchronize(device)
        start = time.perf_counter()
        for batch in pipeline.sample(request):
            n = len(batch)
            images += n
            for stage, seconds in batch.stage_seconds.items():
                stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
            for stage, nfe in batch.stage_nfe.items():   # per image in that batch: weight by batch size
                stage_nfe_sum[stage] = stage_nfe_sum.get(stage, 0.0) + nfe * n
        synchronize(device)
        wall = time.perf_counter() - start
    memory = (torch.cuda.max_memory_allocated(device), "cuda_max_allocated") if cuda else \
        (rss.peak, "process_peak_rss")
    return {"wall": wall, "images": images, "stage_seconds": stage_seconds,
            "stage_nfe": {k: v / max(images, 1) for k, v in stage_nfe_sum.items()},
            "memory": memory[0], "memory_kind": memory[1], "rss_increase": rss.peak - rss.start}


def _row(metric: str, values: list[float], unit: str, n: int, details: dict[str, Any]) -> MetricValue:
    return MetricValue(metric, float(statistics.median(values)), n=n, unit=unit, ci_low=float(min(values)),
                       ci_high=float(max(values)), details={**details, "repeat_values": values})


def measure_speed(pipeline: Pipeline, request: SampleRequest, *, repeats: int = 3, warmup: int = 1) -> list[MetricValue]:
    """Rows: images_per_s, s_per_image, nfe_per_image (total and [stage]), stage_s_per_image[stage],
    stage_share[stage], gflops_per_forward (pipelines with a `gflops()`, e.g. latent_dit), peak_memory_mib.
    n = images per timed repeat."""
    if repeats < 1:
        raise ValueError(f"measure_speed: repeats must be >= 1, got {repeats}")
    if request.n < 1:
        raise ValueError("measure_speed: the request has n=0 images; nothing to time")
    warm = request.with_range(request.start_index, min(request.n, request.batch_size))
    for _ in range(warmup):
        for _batch in pipeline.sample(warm):
            pass
    runs = [_timed_run(pipeline, request) for _ in range(repeats)]
    n = runs[0]["images"]
    details = {"device": str(pipeline.device), "dtype": str(pipeline.dtype).removeprefix("torch."),
               "batch_size": request.batch_size, "repeats": repeats, "warmup": warmup,
               "sampler": request.sampler, "steps": request.steps,
               "ci_kind": "min-max over repeats (value: median)", "timing": "wall clock, CUDA synchronised"}
    rows = [
        _row("images_per_s", [r["images"] / r["wall"] for r in runs], "img/s", n, details),
        _row("s_per_image", [r["wall"] / r["images"] for r in runs], "s", n, details),
    ]
    stages = [s for s in pipeline.info.stage_names if any(s in r["stage_seconds"] or s in r["stage_nfe"] for r in runs)]
    stages += sorted({s for r in runs for s in (*r["stage_seconds"], *r["stage_nfe"])} - set(stages))
    rows.append(_row("nfe_per_image", [sum(r["stage_nfe"].values()) for r in runs], "", n,
                     {**details, "counting": "network evaluations per image, CFG's doubled batch counted twice"}))
    for stage in stages:
        if any(stage in r["stage_nfe"] for r in runs):
            rows.append(_row(f"nfe_per_image[{stage}]", [r["stage_nfe"].get(stage, 0.0) for r in runs], "", n,
                             {**details, "stage": stage}))
        seconds = [r["stage_seconds"].get(stage, 0.0) for r in runs]
        totals = [sum(r["stage_seconds"].values()) or 1.0 for r in runs]
        rows.append(_row(f"stage_s_per_image[{stage}]", [s / r["images"] for s, r in zip(seconds, runs)], "s", n,
                         {**details, "stage": stage}))
        rows.append(_row(f"stage_share[{stage}]", [s / t for s, t in zip(seconds, totals)], "", n,
                         {**details, "stage": stage, "share_of": "sum of stage times"}))
    gflops = getattr(pipeline, "gflops", None)   # compute per denoiser forward, where the pipeline can count it
    if callable(gflops):
        rows.append(MetricValue("gflops_per_forward", float(gflops()), n=1, unit="GFLOPs",
                                details={**details, "stage": "denoiser",
                                         "counting": "multiply-adds per image and forward pass (DiT paper, fvcore)"}))
    kind = runs[0]["memory_kind"]
    rows.append(_row("peak_memory_mib", [r["memory"] / MIB for r in runs], "MiB", n,
                     {**details, "memory_kind": kind,
                      "rss_increase_mib": [r["rss_increase"] / MIB for r in runs] if kind == "process_peak_rss" else None}))
    return rows
