"""Sampler speed: throughput, latency, network evaluations, per-stage time and peak memory.

`measure_speed` runs the request `warmup` times untimed on its first batch (CUDA context,
cuDNN autotuning, torch.compile, allocator growth), then `repeats` timed full runs. Each
number is the median over the repeats, with the min and max as its interval. Wall time is
taken around the whole stream with CUDA synchronised at both ends; the per-stage seconds and
NFE come from the pipeline's own `SampleBatch` bookkeeping (models.core.interface.BatchContext).

Peak memory, per pipeline and the same on every device: the pipeline's own weights (bytes of
its networks' parameters and buffers) + the peak increase, during a repeat, over the memory in
use when the repeat starts (activations, workspaces, the images). On CUDA the increase is
`max_memory_allocated` (reset before each repeat) minus `memory_allocated` at the start; on CPU
it is the process's resident set size, sampled every 5 ms from /proc (or psutil) during the
repeat, minus the RSS at the start, taken after `gc.collect()` and glibc's `malloc_trim(0)` so
that memory freed by an earlier point is not held over. Not the process's peak RSS (~1.4 GB
for any pipeline: torch, the libraries, other pipelines and metric networks loaded in the
session); that and `max_memory_allocated` itself are kept in the row's details.

NFE follows the one convention of `models.core.interface.NFE_CONVENTION`, stated in the rows.
Samples made elsewhere (`Pipeline.samples_made_elsewhere`) have no sampling to time: refused.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import statistics
import threading
import time
from typing import Any

import torch

from bench.progress import progress
from bench.results import MetricValue
from models.core.interface import NFE_CONVENTION, Pipeline, SampleRequest, synchronize

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


def _load_libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _load_libc()


def release_freed_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the OS (glibc `malloc_trim`),
    so the RSS baseline of a measurement does not include memory an earlier one freed."""
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def weight_bytes(pipeline: Pipeline) -> int:
    """Bytes of the pipeline's parameters and buffers (each tensor once, even if shared)."""
    seen, total = set(), 0
    for net in pipeline.networks().values():
        for tensor in (*net.parameters(), *net.buffers()):
            key = (tensor.device, tensor.data_ptr()) if tensor.device.type != "meta" else id(tensor)
            if key not in seen:
                seen.add(key)
                total += tensor.numel() * tensor.element_size()
    return total


def _timed_run(pipeline: Pipeline, request: SampleRequest, bar: Any) -> dict[str, Any]:
    device = pipeline.device
    cuda = device.type == "cuda"
    release_freed_memory()
    if cuda:
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        cuda_start = torch.cuda.memory_allocated(device)
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
            bar.update(n)
        synchronize(device)
        wall = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated(device)
        increase, kind, raw = peak - cuda_start, "weights + cuda max_memory_allocated increase", peak
    else:
        increase, kind, raw = rss.peak - rss.start, "weights + peak RSS increase (sampled every 5 ms)", rss.peak
    return {"wall": wall, "images": images, "stage_seconds": stage_seconds,
            "stage_nfe": {k: v / max(images, 1) for k, v in stage_nfe_sum.items()},
            "increase": max(increase, 0), "memory_kind": kind, "raw_peak": raw}


def _row(metric: str, values: list[float], unit: str, n: int, details: dict[str, Any]) -> MetricValue:
    return MetricValue(metric, float(statistics.median(values)), n=n, unit=unit, ci_low=float(min(values)),
                       ci_high=float(max(values)), details={**details, "repeat_values": values})


def measure_speed(pipeline: Pipeline, request: SampleRequest, *, repeats: int = 3, warmup: int = 1,
                  quiet: bool = True, desc: str | None = None) -> list[MetricValue]:
    """Rows: images_per_s, s_per_image, nfe_per_image (total and [stage]), stage_s_per_image[stage],
    stage_share[stage], gflops_per_forward (pipelines with a `gflops()`, e.g. latent_dit), peak_memory_mib.
    n = images per timed repeat. Unless quiet, a progress bar (`desc`) counts the images sampled."""
    if repeats < 1:
        raise ValueError(f"measure_speed: repeats must be >= 1, got {repeats}")
    if request.n < 1:
        raise ValueError("measure_speed: the request has n=0 images; nothing to time")
    if pipeline.samples_made_elsewhere:
        raise ValueError(f"measure_speed: pipeline {pipeline.info.name!r} reads samples made elsewhere; "
                         "there is no sampling to time (reading files is not generation speed)")
    warm = request.with_range(request.start_index, min(request.n, request.batch_size))
    bar = progress(total=warmup * warm.n + repeats * request.n, desc=desc or f"speed {pipeline.info.name}",
                   unit="img", disable=quiet)
    for _ in range(warmup):
        for batch in pipeline.sample(warm):
            bar.update(len(batch))
    runs = [_timed_run(pipeline, request, bar) for _ in range(repeats)]
    bar.close()
    weights = weight_bytes(pipeline)
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
                     {**details, "counting": NFE_CONVENTION}))
    for stage in stages:
        if any(stage in r["stage_nfe"] for r in runs):
            rows.append(_row(f"nfe_per_image[{stage}]", [r["stage_nfe"].get(stage, 0.0) for r in runs], "", n,
                             {**details, "stage": stage, "counting": NFE_CONVENTION}))
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
    raw_kind = "cuda_max_memory_allocated_mib" if pipeline.device.type == "cuda" else "process_peak_rss_mib"
    rows.append(_row("peak_memory_mib", [(weights + r["increase"]) / MIB for r in runs], "MiB", n,
                     {**details, "memory_kind": runs[0]["memory_kind"], "weights_mib": weights / MIB,
                      "increase_mib": [r["increase"] / MIB for r in runs],
                      raw_kind: [r["raw_peak"] / MIB for r in runs]}))
    return rows
