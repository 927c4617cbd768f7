"""RePaint inpainting (models/sampling/repaint.py) through the pixel family: the resampling
schedule is the paper's, an all-zero mask returns the input exactly, a full mask with r = 1 is the
pipeline's own DDPM sampling at the same seed, pixels outside the mask are preserved exactly, and
requests the pipeline cannot serve fail with a RequestError naming the fix."""
from __future__ import annotations

import pytest
import torch

from bench.data.masks import make_masks
from models.core.interface import RequestError, SampleRequest
from models.core.registry import build_pipeline
from models.sampling.repaint import repaint_schedule

TINY_UNET = dict(base_channels=8, channel_mults=[1, 2], attention_resolutions=[4], num_heads=2, norm_groups=4)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    p = build_pipeline("pixel", "tiny_pixel", None, resolution=8, num_classes=3, unet=TINY_UNET,
                       num_timesteps=100, init_seed=3)
    with torch.no_grad():   # break the zero-initialised output so samples depend on the network
        for prm in p.unet.out.parameters():
            prm.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    return p


def inputs(n=5):
    return torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def images(pipe, **kw):
    return torch.cat([b.images for b in pipe.sample(SampleRequest(**kw))])


COMMON = dict(n=5, seed=4, labels=[0, 1, 2], sampler="ddpm", steps=6, batch_size=2, guidance_scale=1.5)
JUMPS = {"base": {"jump_length": 2, "jump_n_sample": 2}}


def test_schedule_is_repaints_jump_walk():
    assert repaint_schedule(5, 1, 1) == [4, 3, 2, 1, 0, -1]          # r = 1: plain reverse walk
    walk = repaint_schedule(6, 2, 2)
    assert walk == [5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
    downs = sum(b < a for a, b in zip(walk, walk[1:]))
    ups = sum(b > a for a, b in zip(walk, walk[1:]))
    assert (downs, ups) == (6 + ups, 4)                                  # every jump back is re-denoised


def test_all_zero_mask_returns_the_input_exactly(pipe):
    x = inputs()
    out = images(pipe, **COMMON, task="inpaint", input_images=x, masks=torch.zeros(5, 1, 8, 8, dtype=torch.uint8),
                 stage_overrides=JUMPS)
    assert torch.equal(out, x)


def test_full_mask_with_r1_is_the_pipelines_own_ddpm_sampling(pipe):
    own = images(pipe, **COMMON)
    full = images(pipe, **COMMON, task="inpaint", input_images=inputs(), masks=torch.ones(5, 1, 8, 8, dtype=torch.uint8))
    assert torch.equal(own, full)
    assert not torch.equal(own, inputs())


def test_pixels_outside_the_mask_are_preserved_and_inside_are_sampled(pipe):
    x, m = inputs(), make_masks("box", 0.4, 8, seed=0, indices=range(5))
    out = images(pipe, **COMMON, task="inpaint", input_images=x, masks=m, stage_overrides=JUMPS)
    known = m.expand_as(x) == 0
    assert torch.equal(out[known], x[known])
    assert not torch.equal(out[~known], x[~known])
    # batch invariance: sample i's inpainting depends on (seed, i) only
    again = images(pipe, **{**COMMON, "batch_size": 5}, task="inpaint", input_images=x, masks=m, stage_overrides=JUMPS)
    assert torch.equal(out, again)


def test_nfe_counts_the_resampling(pipe):
    batch = next(pipe.sample(SampleRequest(**COMMON, task="inpaint", input_images=inputs(), stage_overrides=JUMPS,
                                           masks=torch.ones(5, 1, 8, 8, dtype=torch.uint8))))
    walk = repaint_schedule(6, 2, 2)
    downs = sum(b < a for a, b in zip(walk, walk[1:]))
    assert batch.stage_nfe["base"] == 2 * downs                          # CFG doubles each evaluation


def test_requests_the_pipeline_cannot_serve_fail_clearly(pipe):
    x, m = inputs(), torch.ones(5, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(RequestError, match="cannot serve task 'superres'"):
        next(pipe.sample(SampleRequest(**COMMON, task="superres", input_images=x)))
    with pytest.raises(RequestError, match="use sampler=ddpm"):
        next(pipe.sample(SampleRequest(**{**COMMON, "sampler": "ddim"}, task="inpaint", input_images=x, masks=m)))
    with pytest.raises(RequestError, match="inpaints 8x8"):
        next(pipe.sample(SampleRequest(**COMMON, task="inpaint", input_images=inputs()[..., :4, :4],
                                       masks=m[..., :4, :4])))
    with pytest.raises(RequestError, match="masks"):
        SampleRequest(n=1, task="inpaint", input_images=x)
    with pytest.raises(RequestError, match="takes no masks"):
        SampleRequest(n=1, task="superres", input_images=x, masks=m)
    with pytest.raises(RequestError, match="only 0"):
        SampleRequest(n=1, task="inpaint", input_images=x, masks=m * 2)
    with pytest.raises(RequestError, match="task"):
        SampleRequest(n=1, task="outpaint")
    with pytest.raises(RequestError, match="jump_length"):
        SampleRequest(n=1, stage_overrides={"base": {"jump_length": 0}})


def test_resampling_keys_outside_inpainting_are_refused_not_ignored():
    with pytest.raises(RequestError, match="applies to task 'inpaint' only"):
        SampleRequest(n=1, stage_overrides={"base": {"jump_n_sample": 3}})
    SampleRequest(n=1, stage_overrides={"base": {"jump_n_sample": 1}})   # the neutral value is fine
