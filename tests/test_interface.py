"""The one interface: per-sample seeding, batching, timing and NFE accounting."""
from __future__ import annotations

import pytest
import torch

from models.core.interface import (BatchContext, Pipeline, PipelineInfo, RequestError, SampleRequest,
                              StageInfo, to_uint8)
from models.core.seeding import NoiseSource, derive_seed


class ToyPipeline(Pipeline):
    """Two stages, a tiny conv 'denoiser' run `steps` times with optional CFG doubling."""

    def __init__(self, conditioning: str = "class") -> None:
        torch.manual_seed(0)
        self.net = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.info = PipelineInfo("toy", "pixel", 8, conditioning,
                                 (StageInfo("base", "denoiser", 8), StageInfo("post", "decoder", 8)),
                                 num_classes=3 if conditioning == "class" else None)

    def networks(self):
        return {"base": self.net}

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        settings = ctx.settings("base")
        net = ctx.counted("base", self.net)
        with ctx.stage("base"):
            x = ctx.noise("base").randn(3, 8, 8)
            for _ in range(settings.steps):
                rows = torch.cat([x, x]) if settings.guidance_scale != 1 else x
                x = net(rows)[: len(ctx)].tanh() + 0.1 * ctx.noise("step").randn_like(x)
        with ctx.stage("post"):
            x = x.clamp(-1, 1)
        return x


def test_noise_depends_only_on_seed_and_index():
    a = NoiseSource(7, [0, 1, 2, 3], "s").randn(2, 2)
    b = NoiseSource(7, [2, 3], "s").randn(2, 2)
    assert torch.equal(a[2:], b)
    assert not torch.equal(NoiseSource(8, [2], "s").randn(2, 2), b[:1])
    assert not torch.equal(NoiseSource(7, [2], "other").randn(2, 2), b[:1])
    assert derive_seed(1, 2, "x") == derive_seed(1, 2, "x") != derive_seed(1, 3, "x")


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_samples_are_batch_size_invariant(batch_size):
    pipe = ToyPipeline()
    ref = torch.cat([b.images for b in pipe.sample(SampleRequest(n=7, labels=[0, 1, 2], steps=3, batch_size=7))])
    got = list(pipe.sample(SampleRequest(n=7, labels=[0, 1, 2], steps=3, batch_size=batch_size)))
    assert torch.equal(torch.cat([b.images for b in got]), ref)
    assert torch.cat([b.indices for b in got]).tolist() == list(range(7))
    assert torch.cat([b.labels for b in got]).tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_resumed_range_equals_full_run():
    pipe = ToyPipeline()
    full = torch.cat([b.images for b in pipe.sample(SampleRequest(n=6, labels=[1], steps=2, batch_size=4))])
    tail = next(pipe.sample(SampleRequest(n=2, start_index=4, labels=[1], steps=2, batch_size=4)))
    assert torch.equal(full[4:], tail.images)
    assert tail.indices.tolist() == [4, 5]


def test_nfe_counts_cfg_as_two_and_times_every_stage():
    pipe = ToyPipeline()
    one = next(pipe.sample(SampleRequest(n=2, labels=[0], steps=5, guidance_scale=1.0)))
    two = next(pipe.sample(SampleRequest(n=2, labels=[0], steps=5, guidance_scale=3.0)))
    assert one.stage_nfe == {"base": 5.0}
    assert two.stage_nfe == {"base": 10.0}
    assert set(one.stage_seconds) == {"base", "post"} and all(t >= 0 for t in one.stage_seconds.values())
    assert one.images.dtype == torch.uint8 and one.images.shape == (2, 3, 8, 8)


def test_stage_overrides_apply_per_stage():
    req = SampleRequest(n=1, steps=50, stage_overrides={"sr1": {"steps": 10, "noise_aug": 0.2}})
    assert req.settings_for("sr1").steps == 10 and req.settings_for("sr1").noise_aug == 0.2
    assert req.settings_for("base").steps == 50 and req.settings_for("base").noise_aug is None


@pytest.mark.parametrize("kwargs, key", [
    (dict(n=-1), "n"), (dict(n=1, batch_size=0), "batch_size"), (dict(n=1, steps=0), "steps"),
    (dict(n=1, thresholding="soft"), "thresholding"), (dict(n=1, prompts=[]), "prompts"),
    (dict(n=1, stage_overrides={"sr1": {"stepz": 3}}), "stage_overrides"),
    (dict(n=1, stage_overrides={"sr1": {"steps": 0}}), r"stage_overrides\['sr1'\]\.steps"),
])
def test_bad_requests_name_the_field(kwargs, key):
    with pytest.raises(RequestError, match=key):
        SampleRequest(**kwargs)


def test_pipeline_rejects_requests_it_cannot_serve():
    pipe = ToyPipeline()
    with pytest.raises(RequestError, match="needs labels"):
        next(pipe.sample(SampleRequest(n=1)))
    with pytest.raises(RequestError, match="outside"):
        next(pipe.sample(SampleRequest(n=1, labels=[5])))
    with pytest.raises(RequestError, match="does not have"):
        next(pipe.sample(SampleRequest(n=1, labels=[0], stage_overrides={"sr9": {"steps": 2}})))
    with pytest.raises(RequestError, match="needs prompts"):
        next(ToyPipeline("text").sample(SampleRequest(n=1)))


def test_to_uint8_rounds_and_clips():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5)
    assert to_uint8(x).flatten().tolist() == [0, 0, 128, 255, 255]
