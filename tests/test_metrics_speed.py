"""Sampler speed: rows, NFE bookkeeping, stage shares, warm-up excluded, median with min/max."""
from __future__ import annotations

import mmap
import time
from typing import Mapping

import pytest
import torch

from bench.metrics import registry
from bench.metrics.speed import PeakRSS, current_rss, measure_speed
from models.core.interface import (NFE_CONVENTION, BatchContext, Pipeline, PipelineInfo, SampleRequest,
                                   StageInfo)


class TwoStage(Pipeline):
    """A denoiser run `steps` times on a CFG-doubled batch, then a decoder once; both sleep a
    little so their time shares are known (about 2:1)."""

    info = PipelineInfo("two-stage", "pixel", 8, "none",
                        (StageInfo("base", "denoiser", 8), StageInfo("decoder", "decoder", 8)))

    def __init__(self) -> None:
        self.denoiser, self.decoder = torch.nn.Conv2d(3, 3, 1), torch.nn.Conv2d(3, 3, 1)
        self.generated = 0

    def networks(self) -> Mapping[str, torch.nn.Module]:
        return {"base": self.denoiser, "decoder": self.decoder}

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        self.generated += len(ctx)
        settings = ctx.settings("base")
        x = torch.zeros(len(ctx), 3, 8, 8)
        with ctx.stage("base"):
            net = ctx.counted("base", self.denoiser)
            for _ in range(settings.steps):
                x = net(torch.cat([x, x]))[: len(ctx)]        # classifier-free guidance: 2 rows per image
                time.sleep(0.002)
        with ctx.stage("decoder"):
            x = self.decoder(x)                               # a single pass: timed, not NFE
            time.sleep(0.002 * settings.steps / 2)
        return x.clamp(-1, 1)


def test_rows_nfe_and_stage_shares() -> None:
    pipe = TwoStage()
    request = SampleRequest(n=6, steps=4, batch_size=4)
    rows = {row.metric: row for row in measure_speed(pipe, request, repeats=3, warmup=1)}
    assert pipe.generated == 4 + 3 * 6                     # warm-up: one batch, untimed
    assert rows["nfe_per_image[base]"].value == 8.0        # 4 steps x 2 (CFG counted honestly)
    assert "nfe_per_image[decoder]" not in rows            # decoders are not NFE (NFE_CONVENTION)
    assert rows["nfe_per_image"].value == 8.0
    assert rows["nfe_per_image"].details["counting"] == NFE_CONVENTION
    assert rows["nfe_per_image[base]"].details["counting"] == NFE_CONVENTION
    shares = rows["stage_share[base]"].value + rows["stage_share[decoder]"].value
    assert shares == pytest.approx(1.0, abs=0.05)
    assert 0.45 < rows["stage_share[base]"].value < 0.9      # sleeps stretch under load
    ips, spi = rows["images_per_s"], rows["s_per_image"]
    assert ips.ci_low <= ips.value <= ips.ci_high and spi.ci_low <= spi.value <= spi.ci_high
    assert ips.value == pytest.approx(1 / spi.value, rel=0.3)
    assert len(ips.details["repeat_values"]) == 3 and ips.n == 6 and ips.unit == "img/s"
    assert ips.details["warmup"] == 1 and ips.details["device"] == "cpu" and ips.details["batch_size"] == 4
    memory = rows["peak_memory_mib"]
    assert memory.details["memory_kind"].startswith("weights + peak RSS increase")
    assert memory.details["weights_mib"] == pytest.approx(2 * 12 * 4 / 2 ** 20)   # two 1x1 convs, float32
    assert 0 < memory.value < 50 < memory.details["process_peak_rss_mib"][0]     # not the process's ~GB
    declared = {kind.name: kind for kind in registry.spec("speed").rows}
    for name, row in rows.items():
        assert row.unit == declared[name.split("[")[0]].unit, name    # the registry declares every row


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        measure_speed(TwoStage(), SampleRequest(n=2), repeats=0)
    with pytest.raises(ValueError, match="n=0"):
        measure_speed(TwoStage(), SampleRequest(n=0), repeats=1)


def test_peak_rss_sees_a_temporary_allocation() -> None:
    with PeakRSS() as rss:
        # A fresh anonymous mapping, touched page by page: the heap may already hold freed,
        # still-resident memory from earlier tests, which a torch allocation would reuse.
        block = mmap.mmap(-1, 64 * 1024 * 1024)
        for offset in range(0, len(block), mmap.PAGESIZE):
            block[offset] = 1
        time.sleep(0.05)
        block.close()
    assert rss.peak - rss.start > 48 * 1024 * 1024
    assert current_rss() > 0


class WorkingSet(Pipeline):
    """Holds `mib_per_image` MiB per image for a moment while sampling, and `weights_mib` of
    weights: its peak memory is known."""

    info = PipelineInfo("working-set", "pixel", 8, "none", (StageInfo("base", "denoiser", 8),))

    def __init__(self, mib_per_image: int = 16, weights_mib: int = 8) -> None:
        self.mib_per_image = mib_per_image
        self.weights = torch.nn.Linear(weights_mib * 2 ** 18, 1, bias=False)   # weights_mib MiB of float32

    def networks(self) -> Mapping[str, torch.nn.Module]:
        return {"base": self.weights}

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        with ctx.stage("base"):
            held = torch.ones(len(ctx), self.mib_per_image * 2 ** 18)    # touched: resident
            time.sleep(0.05)                                              # seen by the 5 ms sampler
            del held
        return torch.zeros(len(ctx), 3, 8, 8)


def test_cpu_peak_memory_is_the_pipelines_own_weights_plus_its_working_set() -> None:
    pipe = WorkingSet(mib_per_image=16, weights_mib=8)
    unrelated = torch.ones(64 * 2 ** 18)          # 64 MiB held by the process, not by the pipeline
    one = {r.metric: r for r in measure_speed(pipe, SampleRequest(n=1, batch_size=1), repeats=2, warmup=1)}
    four = {r.metric: r for r in measure_speed(pipe, SampleRequest(n=4, batch_size=4), repeats=2, warmup=1)}
    small, large = one["peak_memory_mib"], four["peak_memory_mib"]
    assert small.details["weights_mib"] == pytest.approx(8.0) == large.details["weights_mib"]
    assert 8 + 14 < small.value < 8 + 40          # weights + ~16 MiB for one image
    assert 8 + 60 < large.value < 8 + 100         # weights + ~64 MiB for four: measured per point
    assert large.value < large.details["process_peak_rss_mib"][0] - 64   # not the process's RSS
    del unrelated


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_is_per_pipeline_after_a_reset() -> None:
    other = torch.ones(256 * 2 ** 18, device="cuda")     # 256 MiB of someone else's memory
    pipe = WorkingSet(mib_per_image=16, weights_mib=8).to("cuda")
    rows = {r.metric: r for r in measure_speed(pipe, SampleRequest(n=4, batch_size=4), repeats=1, warmup=1)}
    memory = rows["peak_memory_mib"]
    assert memory.details["memory_kind"].startswith("weights + cuda max_memory_allocated")
    assert 8 + 60 < memory.value < 8 + 80
    assert memory.details["cuda_max_memory_allocated_mib"][0] > 256
    del other


class Loader(TwoStage):
    samples_made_elsewhere = True


def test_samples_made_elsewhere_are_not_timed() -> None:
    with pytest.raises(ValueError, match="samples made elsewhere; there is no sampling to time"):
        measure_speed(Loader(), SampleRequest(n=2), repeats=1)


def test_progress_per_point_as_lines_in_a_log(capsys, monkeypatch) -> None:
    monkeypatch.delenv("DIFFBENCH_QUIET", raising=False)
    measure_speed(TwoStage(), SampleRequest(n=8, steps=1, batch_size=2), repeats=2, warmup=1,
                  quiet=False, desc="speed two-stage [1/1]")
    err = capsys.readouterr().err                  # pytest's capture is not a terminal: line mode
    lines = [line for line in err.splitlines() if line.startswith("speed two-stage [1/1]")]
    assert "\r" not in err and 2 <= len(lines) <= 12
    assert "100% 18/18" in lines[-1]               # 2 warm-up + 2 x 8 timed images
