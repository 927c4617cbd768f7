"""The latent_concat family (issue 21; LDM sec. 3.3 concatenation conditioning): latent super-resolution
and latent inpainting behind the one interface, their conditioning, training plug-in, the shipped
checkpoints and their rows in the superres / inpainting suites."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.training.families.latent_concat import (MASK_KINDS, dihedral, make_trainable, random_masks,
                                                   to_uint8)
from models.core.interface import RequestError, SampleRequest
from models.core.registry import CHECKPOINT_DIR, build_pipeline
from models.families.latent_concat import inpaint_condition
from suite_helpers import run_suite

TINY_AE = {"regularizer": "kl", "downsample_factor": 4, "latent_channels": 3, "base_channels": 8,
           "channel_mult": [1, 1, 1]}
TINY_UNET = {"base_channels": 16, "channel_mults": [1, 2], "attention_resolutions": [2], "norm_groups": 8}
FAST = ("suite.n=4", "data.n=8", "hardware.batch_size=4", "sampler.steps=2", "metrics.names=[speed]",
        "suite.params.grid_k=3")
SHIPPED = {"superres": "latent_sr_shapes32", "inpaint": "latent_inpaint_shapes32"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs_shipped = pytest.mark.skipif(
    not all((CHECKPOINT_DIR / name / "model.safetensors").is_file() for name in SHIPPED.values()),
    reason="shipped latent_concat checkpoints not built")


def tiny(task: str, **kw):
    """A random tiny latent_concat pipeline: 16 px images, 3x4x4 latents."""
    pipe = build_pipeline("latent_concat", f"tiny_{task}", autoencoder=TINY_AE, task=task, resolution=16,
                          unet=TINY_UNET, num_timesteps=100, **kw)
    torch.manual_seed(1)
    with torch.no_grad():   # fresh output layers are zero: give the denoiser some weights
        for p in pipe.denoiser.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return pipe


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def box_masks(n: int, size: int) -> torch.Tensor:
    masks = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    masks[:, :, size // 4: size // 2, size // 4:] = 1
    return masks


def test_each_checkpoint_serves_its_one_task_and_refuses_the_rest_clearly():
    sr, ip = tiny("superres"), tiny("inpaint")
    assert sr.supported_tasks == {"superres"} and ip.supported_tasks == {"inpaint"}
    assert sr.superres_input_sizes == (4,) and ip.superres_input_sizes == ()
    assert not ip.inpaints_by_resampling     # conditioned on the masked image: no RePaint schedule
    assert sr.denoiser.config.cond_channels == 3 and ip.denoiser.config.cond_channels == 3 + 1
    with pytest.raises(RequestError, match="cannot serve task 'generate'"):
        next(sr.sample(SampleRequest(n=1, steps=2)))
    with pytest.raises(RequestError, match="cannot serve task 'inpaint'"):
        next(sr.sample(SampleRequest(n=1, steps=2, task="inpaint", input_images=images(1, 16),
                                     masks=box_masks(1, 16))))
    with pytest.raises(RequestError, match="cannot serve task 'superres'"):
        next(ip.sample(SampleRequest(n=1, steps=2, task="superres", input_images=images(1, 4))))
    with pytest.raises(RequestError, match=r"super-resolves 3x4x4 images to 16 px \(x4"):   # x2 is refused, not resized
        next(sr.sample(SampleRequest(n=1, steps=2, task="superres", input_images=images(1, 8))))
    with pytest.raises(RequestError, match="inpaints 3x16x16 images"):
        next(ip.sample(SampleRequest(n=1, steps=2, task="inpaint", input_images=images(1, 8), masks=box_masks(1, 8))))
    with pytest.raises(RequestError, match="jump_length / jump_n_sample"):
        next(ip.sample(SampleRequest(n=1, steps=2, task="inpaint", input_images=images(1, 16), masks=box_masks(1, 16),
                                     stage_overrides={"denoiser": {"jump_length": 2, "jump_n_sample": 2}})))
    with pytest.raises(RequestError, match="guidance_scale=1"):
        next(sr.sample(SampleRequest(n=1, steps=2, guidance_scale=3.0, task="superres", input_images=images(1, 4))))
    with pytest.raises(ValueError, match="paste_known applies to inpainting"):
        tiny("superres", paste_known=True)


def test_inpaint_condition_is_the_encoded_masked_image_and_the_area_downsampled_mask():
    pipe = tiny("inpaint")
    x = images(2, 16).float() / 127.5 - 1.0
    masks = box_masks(2, 16).float()
    cond = inpaint_condition(pipe.autoencoder, x, masks)
    assert cond.shape == (2, 3 + 1, 4, 4)
    with torch.no_grad():
        assert torch.allclose(cond[:, :3], pipe.autoencoder.encode(x * (1 - masks)))   # masked pixels set to 0
        # only the masked image reaches the condition: changing the pixels to inpaint changes nothing
        other = torch.where(masks.bool(), -x, x)
        assert torch.allclose(inpaint_condition(pipe.autoencoder, other, masks), cond)
    # rows 4..7 of 16 are masked from column 4 on: latent row 1, columns 1..3, each cell wholly
    assert torch.equal(cond[0, 3], torch.tensor([[0.0, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]))


def test_sampling_is_deterministic_batch_invariant_and_follows_the_input():
    sr = tiny("superres")
    low = images(3, 4)
    request = SampleRequest(n=3, seed=5, steps=3, batch_size=3, task="superres", input_images=low)
    batch = next(sr.sample(request))
    assert batch.images.shape == (3, 3, 16, 16) and batch.stage_nfe == {"denoiser": 3.0}
    assert torch.equal(next(sr.sample(request)).images, batch.images)                  # same seed, same images
    ones = torch.cat([b.images for b in sr.sample(SampleRequest(**{**request.__dict__, "batch_size": 1}))])
    assert torch.equal(ones, batch.images)                                              # batch invariant
    assert not torch.equal(next(sr.sample(SampleRequest(**{**request.__dict__, "seed": 6}))).images, batch.images)
    other = next(sr.sample(SampleRequest(**{**request.__dict__, "input_images": 255 - low})))
    assert not torch.equal(other.images, batch.images)                                  # the condition is used


def test_inpainting_does_not_paste_unless_asked():
    truth, masks = images(2, 16), box_masks(2, 16)
    request = SampleRequest(n=2, steps=2, sampler="ddpm", eta=1.0, batch_size=2, task="inpaint",
                            input_images=truth, masks=masks)
    plain = next(tiny("inpaint").sample(request)).images
    pasted = next(tiny("inpaint", paste_known=True).sample(request)).images
    outside = (masks == 0).expand_as(truth)
    assert (plain != truth)[outside].any()                  # LDM does not paste: known pixels are re-decoded
    assert torch.equal(pasted[outside], truth[outside])     # paste_known: exactly the given pixels
    assert torch.equal(pasted[~outside], plain[~outside])   # and the same fill


def test_training_conditions_are_made_from_the_batch_and_one_step_is_finite():
    g = torch.Generator().manual_seed(0)
    masks = random_masks(6, 32, g)
    assert masks.shape == (6, 1, 32, 32) and masks.dtype == torch.uint8 and 0 < masks.float().mean() < 0.7
    assert torch.equal(random_masks(6, 32, torch.Generator().manual_seed(0)), masks)    # seeded from the generator
    assert torch.equal(dihedral(masks, torch.full((6,), 5)).sum((1, 2, 3)), masks.sum((1, 2, 3)))   # same area
    assert len(MASK_KINDS) == 3
    x = images(4, 16).float() / 127.5 - 1.0
    assert torch.equal(to_uint8(x), images(4, 16))
    for task in ("superres", "inpaint"):
        trainable = make_trainable("t", {"autoencoder": TINY_AE, "task": task, "unet": TINY_UNET, "num_timesteps": 100},
                                   resolution=16, num_classes=3, class_names=None)
        if task == "inpaint":   # a small bank keeps the test fast; the recipe's is MASK_BANK_SIZE
            trainable._mask_bank = random_masks(8, 16, torch.Generator().manual_seed(0))
        cond = trainable.condition(x, torch.Generator().manual_seed(1))
        assert cond.shape == ((4, 3, 4, 4) if task == "superres" else (4, 3 + 1, 4, 4))
        loss = trainable.training_loss({"image": x, "label": torch.full((4,), -1), "caption": [""] * 4},
                                       torch.Generator().manual_seed(2))
        assert torch.isfinite(loss) and loss.requires_grad
        loss.backward()
        assert all(p.grad is None for p in trainable.networks["autoencoder"].parameters())   # frozen first stage
        assert trainable.checkpoint_config()["task"] == task


@needs_shipped
@pytest.mark.parametrize("task", ["superres", "inpaint"])
def test_shipped_checkpoints_load_by_name_and_serve_their_task(task):
    pipe = build_pipeline("latent_concat", SHIPPED[task], SHIPPED[task])
    assert pipe.supported_tasks == {task} and pipe.info.resolution == 32 and pipe.latent_shape == (4, 8, 8)
    truth = images(2, 32)
    inputs = ({"input_images": truth[:, :, ::4, ::4].contiguous()} if task == "superres"
              else {"input_images": truth, "masks": box_masks(2, 32)})
    batch = next(pipe.sample(SampleRequest(n=2, steps=2, batch_size=2, task=task, **inputs)))
    assert batch.images.shape == (2, 3, 32, 32)
    with pytest.raises(RequestError, match="cannot serve task 'generate'"):
        next(pipe.sample(SampleRequest(n=1, steps=2)))


@needs_shipped
def test_superres_suite_runs_the_latent_model_at_x4_only(tmp_path: Path):
    frame = run_suite(tmp_path / "sr", "suite=superres", *FAST)
    latent = frame[frame.pipeline == "latent_sr_shapes32"]
    assert set(latent.factor) == {4} and {"psnr", "ssim", "lpips"} <= set(latent.metric)
    assert set(frame[frame.pipeline == "cascaded_ddpm"].factor) == {2}     # the cascade keeps its x2 rows
    assert (tmp_path / "sr" / "grids" / "superres_latent_sr_shapes32_x4_bicubic.png").is_file()


@needs_shipped
def test_inpainting_suite_runs_the_latent_model_beside_repaint(tmp_path: Path):
    frame = run_suite(tmp_path / "ip", "suite=inpainting", *FAST, "suite.params.masks=[{kind: box, ratio: 0.3}]")
    assert {"pixel_ddpm", "latent_inpaint_shapes32", "mean_fill"} <= set(frame.pipeline)
    rows = frame.set_index(["pipeline", "metric"]).value
    assert rows[("pixel_ddpm", "changed_outside_mask")] == 0            # RePaint's exact paste
    assert rows[("latent_inpaint_shapes32", "changed_outside_mask")] > 0  # no paste: reported, not hidden
    assert abs(rows[("latent_inpaint_shapes32", "mask_area_ratio")] - 0.3) <= 0.02
    latent = frame[frame.pipeline == "latent_inpaint_shapes32"]
    assert set(latent.sampler) == {"ddpm"} and latent.jump_length.isna().all()   # no RePaint schedule for it
    assert set(frame[frame.pipeline == "pixel_ddpm"].jump_length) == {5}
