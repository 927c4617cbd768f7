"""Sampler speed: rows, NFE bookkeeping, stage shares, warm-up excluded, median with min/max."""
from __future__ import annotations

import mmap
import time
from typing import Mapping

import pytest
import torch

from bench.metrics import registry
from bench.metrics.speed import PeakRSS, current_rss, measure_speed
from models.core.interface import BatchContext, Pipeline, PipelineInfo, SampleRequest, StageInfo


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
            x = ctx.counted("decoder", self.decoder)(x)
            time.sleep(0.002 * settings.steps / 2)
        return x.clamp(-1, 1)


def test_rows_nfe_and_stage_shares() -> None:
    pipe = TwoStage()
    request = SampleRequest(n=6, steps=4, batch_size=4)
    rows = {row.metric: row for row in measure_speed(pipe, request, repeats=3, warmup=1)}
    assert pipe.generated == 4 + 3 * 6                     # warm-up: one batch, untimed
    assert rows["nfe_per_image[base]"].value == 8.0        # 4 steps x 2 (CFG counted honestly)
    assert rows["nfe_per_image[decoder]"].value == 1.0
    assert rows["nfe_per_image"].value == 9.0
    shares = rows["stage_share[base]"].value + rows["stage_share[decoder]"].value
    assert shares == pytest.approx(1.0, abs=0.05)
    assert 0.45 < rows["stage_share[base]"].value < 0.9      # sleeps stretch under load
    ips, spi = rows["images_per_s"], rows["s_per_image"]
    assert ips.ci_low <= ips.value <= ips.ci_high and spi.ci_low <= spi.value <= spi.ci_high
    assert ips.value == pytest.approx(1 / spi.value, rel=0.3)
    assert len(ips.details["repeat_values"]) == 3 and ips.n == 6 and ips.unit == "img/s"
    assert ips.details["warmup"] == 1 and ips.details["device"] == "cpu" and ips.details["batch_size"] == 4
    memory = rows["peak_memory_mib"]
    assert memory.details["memory_kind"] == "process_peak_rss" and memory.value > 10
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
