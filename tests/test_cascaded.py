"""Family `cascaded` and its conditioning augmentation (Ho et al. 2022)."""
from __future__ import annotations

import math

import pytest
import torch

from models.sampling.augment import (ConditioningAugmentation, apply_noise_aug, downsample, gaussian_blur, noise_aug_sigma,
                            upsample)
from bench.training.families.cascaded import make_trainable
from models.core.checkpoint import save_checkpoint
from models.core.interface import SampleRequest
from models.core.registry import CHECKPOINT_DIR, build_pipeline

TINY_UNET = dict(base_channels=8, channel_mults=[1, 2], attention_resolutions=[4], num_heads=2, norm_groups=4)
PARAMS = dict(resolutions=[8, 16], num_classes=3, unet=TINY_UNET, num_timesteps=100)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def perturb_outputs(pipe) -> None:
    with torch.no_grad():
        for k, net in enumerate(pipe.networks().values()):
            for prm in net.out.parameters():
                prm.normal_(0, 0.05, generator=torch.Generator().manual_seed(k))


@pytest.fixture(scope="module")
def cascade():
    p = build_pipeline("cascaded", "tiny_cascade", None, **PARAMS)
    perturb_outputs(p)
    return p


def test_stages_outputs_timings_and_nfe(cascade) -> None:
    assert [s.name for s in cascade.info.stages] == ["base", "sr1"]
    assert [s.kind for s in cascade.info.stages] == ["denoiser", "super_resolution"]
    req = SampleRequest(n=3, labels=[0, 1, 2], steps=4, guidance_scale=2.0, batch_size=3,
                        stage_overrides={"sr1": {"steps": 2, "guidance_scale": 1.0}})
    batch = next(cascade.sample(req))
    assert batch.images.shape == (3, 3, 16, 16)
    assert batch.stage_outputs["base"].shape == (3, 3, 8, 8) and batch.stage_outputs["base"].dtype == torch.uint8
    assert batch.stage_nfe == {"base": 8, "sr1": 2}
    assert set(batch.stage_seconds) == {"base", "sr1"}


def test_noise_aug_level_is_a_per_stage_setting(cascade) -> None:
    def run(level):
        req = SampleRequest(n=2, labels=[1], steps=2, seed=4, batch_size=2,
                            stage_overrides={} if level is None else {"sr1": {"noise_aug": level}})
        return next(cascade.sample(req))
    default, clean, noisy = run(None), run(0.0), run(0.6)
    assert torch.equal(default.stage_outputs["base"], noisy.stage_outputs["base"])   # base is unaffected
    assert not torch.equal(clean.images, noisy.images)
    assert torch.equal(default.images, run(cascade.default_levels[0]).images)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        run(1.5)


def test_truncated_and_non_truncated_sampling(cascade) -> None:
    truncated = build_pipeline("cascaded", "t", None, **PARAMS, truncated=True)
    truncated.nets.load_state_dict(cascade.nets.state_dict())
    req = SampleRequest(n=2, labels=[2], steps=6, seed=1, batch_size=2, stage_overrides={"sr1": {"noise_aug": 0.3}})
    a, b = next(cascade.sample(req)), next(truncated.sample(req))
    # Truncation stops the base's reverse process early: fewer base evaluations, different SR input.
    assert b.stage_nfe["base"] < a.stage_nfe["base"]
    assert not torch.equal(a.images, b.images)


def test_noise_augmentation_is_the_vp_forward_process() -> None:
    g = torch.Generator().manual_seed(0)
    z0 = torch.full((20000, 1), 0.6)
    level = torch.full((20000,), 0.3)
    z = apply_noise_aug(z0, level, torch.randn(z0.shape, generator=g))
    abar = math.cos(math.pi * 0.3 / 2) ** 2
    assert z.mean().item() == pytest.approx(math.sqrt(abar) * 0.6, abs=0.02)
    assert z.var().item() == pytest.approx(1 - abar, rel=0.05)
    # The VE level of the same corruption: sigma = sqrt((1 - abar) / abar).
    assert noise_aug_sigma(0.3) == pytest.approx(math.sqrt((1 - abar) / abar))
    assert torch.equal(apply_noise_aug(z0[:4], torch.zeros(4), torch.randn(4, 1)), z0[:4])


def test_gaussian_blur_per_sample() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 16, 16, generator=g)
    out = gaussian_blur(x, torch.tensor([0.0, 0.5, 2.0]))
    assert torch.allclose(out[0], x[0])                                  # sigma 0: unchanged
    assert out[1].std() < x[1].std() and out[2].std() < out[1].std()     # more blur, less contrast
    flat = torch.ones(1, 3, 16, 16) * 0.3
    assert torch.allclose(gaussian_blur(flat, torch.tensor([1.5])), flat)   # normalised kernel


def test_conditioning_augmentation_config_and_resampling() -> None:
    aug = ConditioningAugmentation("blur", 0.5)
    levels = aug.training_levels(1000, torch.Generator().manual_seed(0))
    assert 0 <= levels.min() and levels.max() <= 0.5
    low = torch.rand(2, 3, 8, 8)
    up = aug.condition(low, torch.zeros(2), 16, None)
    assert up.shape == (2, 3, 16, 16) and torch.allclose(up, upsample(low, 16))   # level 0: plain upsampling
    assert not torch.allclose(aug.condition(low, torch.full((2,), 0.5), 16, None), up)
    assert torch.allclose(downsample(torch.arange(4.0).reshape(1, 1, 2, 2).repeat_interleave(2, 2)
                                     .repeat_interleave(2, 3), 2), torch.arange(4.0).reshape(1, 1, 2, 2))
    with pytest.raises(ValueError, match="truncated"):
        ConditioningAugmentation("blur", 0.5, truncated=True)
    with pytest.raises(ValueError, match="kind"):
        ConditioningAugmentation("jpeg", 0.5)


def test_cascade_training_loss_covers_every_stage() -> None:
    trainable = make_trainable("c", PARAMS, resolution=16, num_classes=3, class_names=None)
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "label": torch.tensor([0, 1, -1, 2]), "caption": [""] * 4}
    loss = trainable.training_loss(batch, torch.Generator().manual_seed(0))
    loss.backward()
    for role, net in trainable.networks.items():
        assert net.out[2].weight.grad.abs().sum() > 0, role
    with pytest.raises(ValueError, match="data.resolution"):
        trainable.training_loss({**batch, "image": torch.zeros(4, 3, 8, 8)}, torch.Generator())


def test_training_one_stage_keeps_the_others_from_a_trained_checkpoint(tmp_path) -> None:
    """train_stages=[sr1] + init_from: the base comes bit-exactly from the checkpoint, gets no
    gradient and no loss term; a frozen stage whose architecture differs is refused by name."""
    trained = make_trainable("c", PARAMS, resolution=16, num_classes=3, class_names=None)
    with torch.no_grad():
        for prm in trained.networks["base"].parameters():
            prm.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    save_checkpoint(tmp_path / "ck", trained.networks, trained.config)
    new_sr = {**PARAMS, "sr_unet": {"base_channels": 4, "norm_groups": 2}}
    trainable = make_trainable("c", {**new_sr, "train_stages": ["sr1"], "init_from": str(tmp_path / "ck")},
                               resolution=16, num_classes=3, class_names=None)
    for key, value in trained.networks["base"].state_dict().items():
        assert torch.equal(trainable.networks["base"].state_dict()[key], value), key
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "label": torch.tensor([0, 1, -1, 2]), "caption": [""] * 4}
    trainable.training_loss(batch, torch.Generator().manual_seed(0)).backward()
    assert all(p.grad is None and not p.requires_grad for p in trainable.networks["base"].parameters())
    assert trainable.networks["sr1"].out[2].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="init_from"):
        make_trainable("c", {**new_sr, "train_stages": ["sr1"]}, resolution=16, num_classes=3, class_names=None)
    with pytest.raises(ValueError, match="'base' is frozen but its networks config differs"):
        make_trainable("c", {**new_sr, "unet": {**TINY_UNET, "base_channels": 4, "norm_groups": 2},
                             "train_stages": ["sr1"], "init_from": str(tmp_path / "ck")},
                       resolution=16, num_classes=3, class_names=None)
    with pytest.raises(ValueError, match="train_stages"):
        make_trainable("c", {**PARAMS, "train_stages": ["sr7"]}, resolution=16, num_classes=3, class_names=None)


@pytest.mark.skipif(not (CHECKPOINT_DIR / "cascaded_shapes16_32").exists(), reason="shipped checkpoint not built yet")
def test_shipped_cascade_loads_and_is_small() -> None:
    path = CHECKPOINT_DIR / "cascaded_shapes16_32"
    assert (path / "model.safetensors").stat().st_size < 5_000_000
    assert (path / "README.md").is_file()
    p = build_pipeline("cascaded", "cascaded", "cascaded_shapes16_32")
    assert p.resolutions == [16, 32] and p.info.num_classes == 8


@pytest.mark.parametrize("truncated", [False, True])
def test_same_seed_and_index_give_the_same_image_at_batch_sizes_1_7_32(cascade, truncated: bool) -> None:
    """Both stages' noise, and the SR stage's augmentation noise, come from per-sample streams."""
    pipe = cascade
    if truncated:
        pipe = build_pipeline("cascaded", "t", None, **PARAMS, truncated=True)
        pipe.nets.load_state_dict(cascade.nets.state_dict())
    common = dict(n=32, seed=5, labels=[0, 1, 2], sampler="ddpm", steps=3, guidance_scale=2.0,
                  stage_overrides={"sr1": {"steps": 2, "noise_aug": 0.3}})

    def run(batch_size: int, **kw):
        batches = list(pipe.sample(SampleRequest(**{**common, **kw}, batch_size=batch_size)))
        return (torch.cat([b.images for b in batches]).int(),
                torch.cat([b.stage_outputs["base"] for b in batches]).int())

    ref, ref_base = run(32)
    for bs in (1, 7):
        images, base = run(bs)
        assert (images - ref).abs().max().item() <= 1, f"batch size {bs} changed the final images"
        assert (base - ref_base).abs().max().item() <= 1, f"batch size {bs} changed the base images"
    tail, _ = run(4, n=7, start_index=25)
    assert (tail - ref[25:]).abs().max().item() <= 1
    assert not torch.equal(ref[0], ref[3])


def test_blur_augmented_cascade_trains_and_samples() -> None:
    """Gaussian-blur conditioning augmentation (CDM's high-resolution variant), end to end."""
    params = {**PARAMS, "augmentation": {"kind": "blur", "max_level": 0.5}, "default_noise_aug": 0.2}
    trainable = make_trainable("b", params, resolution=16, num_classes=3, class_names=None)
    assert trainable.pipeline.augs[0].kind == "blur"
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "label": torch.tensor([0, 1, -1, 2]), "caption": [""] * 4}
    assert torch.isfinite(trainable.training_loss(batch, torch.Generator().manual_seed(0)))
    pipe = build_pipeline("cascaded", "blur", None, **params)
    perturb_outputs(pipe)
    req = dict(n=2, labels=[1], steps=2, seed=3, batch_size=2)
    sharp = next(pipe.sample(SampleRequest(**req, stage_overrides={"sr1": {"noise_aug": 0.0}})))
    blurred = next(pipe.sample(SampleRequest(**req, stage_overrides={"sr1": {"noise_aug": 0.5}})))
    assert torch.equal(sharp.stage_outputs["base"], blurred.stage_outputs["base"])
    assert not torch.equal(sharp.images, blurred.images)
    with pytest.raises(ValueError, match="truncated"):
        build_pipeline("cascaded", "bad", None, **params, truncated=True)
