"""Family `pixel` behind the one interface: batch-size invariance, NFE accounting, checkpoints."""
from __future__ import annotations

import pytest
import torch

from models.core.checkpoint import load_checkpoint, save_checkpoint
from models.core.interface import RequestError, SampleRequest
from models.core.registry import CHECKPOINT_DIR, build_pipeline

TINY_UNET = dict(base_channels=8, channel_mults=[1, 2], attention_resolutions=[4], num_heads=2, norm_groups=4)
PARAMS = dict(resolution=8, num_classes=3, unet=TINY_UNET, num_timesteps=100)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    p = build_pipeline("pixel", "tiny_pixel", None, **PARAMS, init_seed=3)
    with torch.no_grad():   # break the zero-initialised output so samples depend on the network
        for prm in p.unet.out.parameters():
            prm.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    return p


def images(pipe, **kw) -> torch.Tensor:
    return torch.cat([b.images for b in pipe.sample(SampleRequest(**kw))])


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp_2m"])
def test_same_seed_and_index_give_the_same_image_at_batch_sizes_1_7_32(pipe, sampler: str) -> None:
    common = dict(n=32, seed=11, labels=[0, 1, 2], sampler=sampler, steps=3, guidance_scale=2.0)
    ref = images(pipe, **common, batch_size=32).int()
    for bs in (1, 7):
        other = images(pipe, **common, batch_size=bs).int()
        assert (other - ref).abs().max().item() <= 1, f"batch size {bs} changed the images"
    # A shifted index range reproduces the same samples (resume / sharding).
    tail = images(pipe, **{**common, "n": 7}, start_index=25, batch_size=4).int()
    assert (tail - ref[25:]).abs().max().item() <= 1
    assert not torch.equal(ref[0], ref[1])


def test_nfe_per_image_counts_guidance_honestly(pipe) -> None:
    for scale, per_step in ((1.0, 1), (3.0, 2)):
        batch = next(pipe.sample(SampleRequest(n=4, labels=[1], steps=5, guidance_scale=scale, batch_size=4)))
        assert batch.stage_nfe == {"base": 5 * per_step}
        assert batch.stage_seconds["base"] > 0
        assert batch.images.dtype == torch.uint8 and batch.images.shape == (4, 3, 8, 8)
    heun = next(pipe.sample(SampleRequest(n=2, labels=[1], sampler="heun", steps=4, batch_size=2)))
    assert heun.stage_nfe == {"base": 2 * 4 - 1}


def test_request_errors(pipe) -> None:
    with pytest.raises(RequestError, match="labels"):
        next(pipe.sample(SampleRequest(n=1)))
    with pytest.raises(RequestError, match="outside"):
        next(pipe.sample(SampleRequest(n=1, labels=[3])))
    with pytest.raises(ValueError, match="unknown"):
        build_pipeline("pixel", "x", None, depth=3)


def test_checkpoint_round_trip_and_untrained_variant(pipe, tmp_path) -> None:
    save_checkpoint(tmp_path / "ck", pipe.networks(), pipe.config)
    loaded = build_pipeline("pixel", "reloaded", str(tmp_path / "ck"))
    request = dict(n=3, labels=[0, 2], steps=2, sampler="ddim", batch_size=3)
    assert torch.equal(images(pipe, **request), images(loaded, **request))
    untrained = build_pipeline("pixel", "untrained", str(tmp_path / "ck"), untrained=True)
    assert untrained.parameter_count() == pipe.parameter_count()
    assert not torch.equal(untrained.unet.out[2].weight, pipe.unet.out[2].weight)
    with pytest.raises(ValueError, match="architecture comes from"):
        build_pipeline("pixel", "x", str(tmp_path / "ck"), resolution=16)
    config, nets = load_checkpoint(tmp_path / "ck")
    assert config["family"] == "pixel" and set(nets) == {"base"}


def test_float16_checkpoint_is_half_the_size_and_loads_as_float32_rounded_weights(pipe, tmp_path) -> None:
    save_checkpoint(tmp_path / "f32", pipe.networks(), pipe.config)
    save_checkpoint(tmp_path / "f16", pipe.networks(), pipe.config, dtype="float16")
    size = lambda name: (tmp_path / name / "model.safetensors").stat().st_size
    assert size("f16") < 0.55 * size("f32")
    _, nets = load_checkpoint(tmp_path / "f16")
    for (key, want), got in zip(pipe.networks()["base"].state_dict().items(), nets["base"].state_dict().values()):
        assert got.dtype == want.dtype, key
        assert torch.equal(got, want.half().to(want.dtype) if want.is_floating_point() else want), key
    with pytest.raises(ValueError, match="weight dtype"):
        save_checkpoint(tmp_path / "bad", pipe.networks(), pipe.config, dtype="int8")


@pytest.mark.skipif(not (CHECKPOINT_DIR / "pixel_ddpm_shapes32").exists(), reason="shipped checkpoint not built yet")
def test_shipped_checkpoint_loads_and_is_small() -> None:
    path = CHECKPOINT_DIR / "pixel_ddpm_shapes32"
    assert (path / "model.safetensors").stat().st_size < 5_000_000
    assert (path / "README.md").is_file()
    p = build_pipeline("pixel", "pixel_ddpm", "pixel_ddpm_shapes32")
    assert p.info.resolution == 32 and p.info.conditioning == "class" and p.info.num_classes == 8


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_compiled_networks_give_the_same_images(device: str) -> None:
    """hardware.compile: torch.compile in place; same weights, same samples (inductor on CUDA,
    the eager backend on CPU, where inductor would need a C++ toolchain and minutes)."""
    p = build_pipeline("pixel", "c", None, **PARAMS, init_seed=3)
    with torch.no_grad():
        for prm in p.unet.out.parameters():
            prm.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    p.to(device)
    request = dict(n=6, labels=[0, 1, 2], steps=3, sampler="ddim", batch_size=3)
    plain = images(p, **request)
    p.compile_networks(**({"backend": "eager"} if device == "cpu" else {}))
    assert set(p.unet.state_dict()) == set(build_pipeline("pixel", "c", None, **PARAMS).unet.state_dict())
    assert (images(p, **request).int() - plain.int()).abs().max().item() <= 1


def test_bfloat16_networks_keep_a_float32_sampler_state() -> None:
    p = build_pipeline("pixel", "bf16", None, **PARAMS, init_seed=3)
    with torch.no_grad():
        for prm in p.unet.out.parameters():
            prm.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    request = SampleRequest(n=4, labels=[0, 1], steps=3, sampler="ddim", batch_size=4)
    full = images(p, **request.__dict__).float()
    p.to("cpu", torch.bfloat16)
    assert next(p.unet.parameters()).dtype == torch.bfloat16
    half = images(p, **request.__dict__).float()
    assert (full - half).abs().mean().item() < 3.0      # uint8 levels: bf16 rounding only


def test_ddim_eta0_is_deterministic_through_the_pipeline(pipe) -> None:
    """Same request twice: identical images; eta = 0 draws no per-step noise, so only the seed
    (the prior noise) matters, while eta = 1 changes the images."""
    request = dict(n=4, labels=[0, 1, 2], sampler="ddim", steps=4, eta=0.0, guidance_scale=2.0, batch_size=4)
    a, b = images(pipe, **request), images(pipe, **request)
    assert torch.equal(a, b)
    assert not torch.equal(a, images(pipe, **{**request, "seed": 1}))
    assert not torch.equal(a, images(pipe, **{**request, "eta": 1.0}))
