"""Issue 26, item 5: `pipeline.params.scheduler=request` on every diffusers pipeline kind the
README lists (DDPM, DDIM, LDM, LDM text-to-image, Stable Diffusion, DiT, UnCLIP, the IF cascade)
with every sampler it lists (ddpm, ddim, dpmpp_2m, heun): either it samples (finite images of the
pipeline's size, the same whatever the batch size) or it is refused at start (before any network
runs: at construction, or in `check_request`) with a message naming what to use instead.

Found failing before: a DDIMPipeline passes `eta` (and `use_clipped_model_output`) to
`scheduler.step`, which DDPMScheduler / DPMSolverMultistepScheduler do not take: TypeError."""
from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from models.core.interface import RequestError, SampleRequest  # noqa: E402
from models.families.diffusers import wrap_diffusers  # noqa: E402
from models.families.diffusers_common import SCHEDULERS  # noqa: E402
from test_diffusers import PROMPTS, assert_same_samples, tiny_dit, tiny_pixel_unet, tiny_stable_diffusion  # noqa: E402
from test_diffusers_kinds import tiny_if_stages, tiny_ldm, tiny_ldm_text2im, tiny_unclip  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAMPLERS = ["ddpm", "ddim", "dpmpp_2m", "heun"]       # the README's list (`sampler=ddpm|ddim|dpmpp_2m|heun`)


def _ddpm():
    torch.manual_seed(0)
    return diffusers.DDPMPipeline(unet=tiny_pixel_unet(), scheduler=diffusers.DDPMScheduler())


def _ddim():
    torch.manual_seed(0)
    return diffusers.DDIMPipeline(unet=tiny_pixel_unet(), scheduler=diffusers.DDIMScheduler())


KINDS = {"DDPMPipeline": _ddpm, "DDIMPipeline": _ddim, "LDMPipeline": tiny_ldm,
         "LDMTextToImagePipeline": tiny_ldm_text2im, "StableDiffusionPipeline": tiny_stable_diffusion,
         "DiTPipeline": tiny_dit, "UnCLIPPipeline": tiny_unclip, "IFPipeline": tiny_if_stages}
# what is refused, and the words the refusal says (the rest must sample)
REFUSED = {("DDPMPipeline", "heun"): "heun", ("DDIMPipeline", "heun"): "heun",
           ("LDMTextToImagePipeline", "heun"): "heun",
           **{("UnCLIPPipeline", s): "scheduler=saved" for s in SAMPLERS}}


def test_the_matrix_is_the_readme_lists():
    assert sorted(SCHEDULERS) == sorted(SAMPLERS)
    from models.families.diffusers import ADAPTERS
    assert set(KINDS) == set(ADAPTERS) | {"IFPipeline"}


@pytest.fixture(scope="module")
def built():
    return {kind: make() for kind, make in KINDS.items()}


def request_for(pipe, sampler: str, **extra) -> SampleRequest:
    cond = pipe.info.conditioning
    fields = dict(n=2, steps=2, sampler=sampler, eta=1.0 if sampler == "ddim" else 0.0, seed=3, guidance_scale=2.0)
    if cond == "text":
        fields["prompts"] = PROMPTS[:2]
    elif cond == "class":
        fields["labels"] = [1, 7]
    return SampleRequest(**{**fields, **extra})


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_scheduler_request_samples_or_is_refused_at_start(built, kind, sampler):
    reason = REFUSED.get((kind, sampler))
    if kind == "UnCLIPPipeline":      # refused when the pipeline is built: nothing is loaded further
        with pytest.raises(ValueError, match=reason):
            wrap_diffusers(built[kind], kind, scheduler="request")
        return
    pipe = wrap_diffusers(built[kind], kind, scheduler="request")
    request = request_for(pipe, sampler)
    if reason:
        calls = []
        handles = [m.register_forward_pre_hook(lambda *a: calls.append(1)) for m in pipe.networks().values()]
        try:
            with pytest.raises(RequestError, match=reason):
                pipe.check_request(request)
            with pytest.raises(RequestError, match=reason):
                next(pipe.sample(request))
        finally:
            for handle in handles:
                handle.remove()
        assert calls == []            # refused before any network ran
        return
    pipe.check_request(request)
    whole = next(pipe.sample(request.with_range(0, 2)))
    size = pipe.info.resolution
    assert whole.images.dtype == torch.uint8 and whole.images.shape == (2, 3, size, size)
    details = pipe.sampling_details(request)["schedulers"]
    assert all(record["class"] == SCHEDULERS[sampler][0] for record in details.values())
    singles = torch.cat([b.images for b in pipe.sample(SampleRequest(**{**vars(request), "batch_size": 1}))])
    assert_same_samples(singles, whole.images)
