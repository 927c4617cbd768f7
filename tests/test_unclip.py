"""unCLIP family (Ramesh et al. 2022): diffusion prior over CLIP image embeddings, decoder
conditioned on the image embedding (context tokens + timestep-embedding term), SR stages reused
from the cascaded family, separate guidance/steps per stage, training, checkpoints, and the
shipped shapes checkpoint's prompt alignment."""
from __future__ import annotations

import pytest
import torch

import models.sampling.guidance as guidance
from models.core.checkpoint import save_checkpoint
from models.core.interface import SampleRequest
from models.networks.reference_clip import ReferenceClip
from models.core.registry import CHECKPOINT_DIR, build_pipeline

CLIP = {"embed_dim": 16, "image": {"resolution": 16, "channels": [8, 16]},
        "text": {"tokenizer": {"kind": "byte"}, "width": 16, "layers": 1, "heads": 2, "max_length": 24}}
DECODER = {"base_channels": 16, "channel_mults": [1, 2], "attention_resolutions": [4], "num_heads": 2,
           "norm_groups": 8}
TINY = dict(clip={"random": CLIP, "seed": 0}, decoder_resolution=8, decoder=DECODER, context_dim=16,
            prior={"width": 32, "layers": 1, "heads": 2}, num_timesteps=100)
SR = {"params": {"resolutions": [8, 16], "num_timesteps": 100,
                 "unet": {"base_channels": 8, "channel_mults": [1, 2], "attention_resolutions": [4],
                          "num_heads": 2, "norm_groups": 4}}}
PROMPTS = ["a red circle", "a blue square", "a large green star at the top left on a white background"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def wake(pipe):
    """Zero-initialised output layers make a fresh UNet output 0 whatever its condition; give
    them small random values so that conditioning visibly changes the samples."""
    gen = torch.Generator().manual_seed(0)
    nets = list(pipe.nets.values()) + ([pipe.cascade.nets[n] for n in pipe.sr_names] if pipe.cascade else [])
    with torch.no_grad():
        for net in nets:
            for p in net.parameters():
                if p.ndim > 1 and not p.any():
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return pipe


def tiny_unclip(**overrides):
    return wake(build_pipeline("unclip", "unclip-tiny", **{**TINY, **overrides}))


def test_stages_and_separate_prior_decoder_settings() -> None:
    pipe = tiny_unclip(super_resolution=SR)
    assert [(s.name, s.kind) for s in pipe.info.stages] == [
        ("text_encoder", "text_encoder"), ("prior", "prior"), ("decoder", "denoiser"), ("sr1", "super_resolution")]
    assert pipe.info.conditioning == "text" and pipe.info.resolution == 16
    request = SampleRequest(n=3, prompts=PROMPTS, steps=2, seed=5, batch_size=3, stage_overrides={
        "prior": {"steps": 3, "guidance_scale": 4.0}, "decoder": {"steps": 2, "guidance_scale": 1.0},
        "sr1": {"steps": 1}})
    (batch,) = list(pipe.sample(request))
    assert batch.images.shape == (3, 3, 16, 16) and batch.images.dtype == torch.uint8
    # CFG doubles the prior's evaluations; decoder at scale 1 and SR (default scale 1) do not
    assert batch.stage_nfe == {"prior": 6.0, "decoder": 2.0, "sr1": 1.0}
    assert set(batch.stage_seconds) == {"text_encoder", "prior", "decoder", "sr1"}
    assert batch.stage_outputs["decoder"].shape == (3, 3, 8, 8)
    # a guided decoder costs two passes per step
    guided = next(pipe.sample(SampleRequest(**{**request.__dict__, "stage_overrides": {
        **request.stage_overrides, "decoder": {"steps": 2, "guidance_scale": 3.0}}})))
    assert guided.stage_nfe["decoder"] == 4.0
    with pytest.raises(ValueError, match="first resolution is 8"):
        tiny_unclip(super_resolution={"params": {**SR["params"], "resolutions": [16, 32]}})


def test_samples_do_not_depend_on_batch_size_and_follow_the_prompt() -> None:
    pipe = tiny_unclip()
    request = SampleRequest(n=3, prompts=PROMPTS, steps=3, seed=2, guidance_scale=3.0, batch_size=3)
    whole = torch.cat([b.images for b in pipe.sample(request)])
    singles = torch.cat([b.images for b in pipe.sample(SampleRequest(**{**request.__dict__, "batch_size": 1}))])
    assert (whole.int() - singles.int()).abs().max() <= 1
    other = torch.cat([b.images for b in pipe.sample(SampleRequest(**{**request.__dict__,
                                                                      "prompts": ["a yellow cross"] * 3}))])
    assert (other.int() - whole.int()).abs().float().mean() > 1


def test_decoder_reads_the_image_embedding_as_tokens_and_timestep_term() -> None:
    pipe = tiny_unclip()
    cond, null = pipe.encode_text(PROMPTS[:2])
    assert cond["text_embed"].shape == (2, 16)
    torch.testing.assert_close(cond["text_embed"].norm(dim=-1), torch.ones(2))
    embed = torch.nn.functional.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    dec, dec_null = pipe.decoder_conditions(embed, cond["text_tokens"], null["text_tokens"])
    # image_tokens (4) context tokens from z_i, then the text tokens; z_i * sqrt(D) is also `extra`
    assert dec["context"].shape == (2, 4 + 24, 16)
    torch.testing.assert_close(dec["extra"], embed * 4.0)
    assert not dec_null["extra"].any()
    x, t = torch.randn(2, 3, 8, 8), torch.full((2,), 500.0)
    decoder = pipe.nets["decoder"]
    with torch.no_grad():
        out = decoder(x, t, **dec)
        other, _ = pipe.decoder_conditions(embed.flip(0), cond["text_tokens"], null["text_tokens"])
        assert not torch.allclose(out, decoder(x, t, **other))             # another z_i, another output
        tokens_only = {"context": dec["context"], "extra": torch.zeros_like(dec["extra"])}
        assert not torch.allclose(out, decoder(x, t, **tokens_only))       # the timestep term matters too


def test_prior_is_not_thresholded_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    shapes: list[tuple[int, ...]] = []
    original = guidance.dynamic_threshold

    def spy(x0: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
        shapes.append(tuple(x0.shape[1:]))
        return original(x0, percentile)
    monkeypatch.setattr(guidance, "dynamic_threshold", spy)
    pipe = tiny_unclip()
    request = SampleRequest(n=2, prompts=PROMPTS, steps=2, guidance_scale=3.0, thresholding="dynamic")
    list(pipe.sample(request))
    assert shapes == [(3, 8, 8)] * 2                  # decoder steps only, never the (16,) embeddings
    shapes.clear()
    list(pipe.sample(SampleRequest(**{**request.__dict__, "stage_overrides": {"prior": {"thresholding": "dynamic"}}})))
    assert shapes.count((16,)) == 2


def test_training_trains_prior_and_decoder_and_leaves_clip_frozen() -> None:
    from bench.training.families.unclip import make_trainable
    params = {k: v for k, v in TINY.items()}
    trainable = make_trainable("t", params, resolution=16, num_classes=None, class_names=None)
    assert set(trainable.networks) == {"prior", "decoder_cond", "decoder"}    # CLIP is not trained
    assert trainable.config["diffusion"]["decoder"]["prediction"] == "v"        # the default; eps by choice
    eps = make_trainable("t", {**params, "decoder_prediction": "eps"}, resolution=16, num_classes=None, class_names=None)
    assert eps.config["diffusion"]["decoder"]["prediction"] == "eps"
    clip_before = {k: v.clone() for k, v in trainable.clip.model.state_dict().items()}
    with torch.no_grad():   # zero-initialised outputs block gradients at step 0, as in test_imagen
        for p in trainable.networks.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 1e-2, generator=torch.Generator().manual_seed(p.numel()))
    batch = {"image": torch.rand(4, 3, 16, 16) * 2 - 1, "label": torch.zeros(4, dtype=torch.long),
             "caption": ["a small red circle at the top left on a white background", "", "a dog", "a blue square"]}
    loss = trainable.training_loss(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    loss.backward()
    for role, net in trainable.networks.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), role
    assert all(p.grad is None for p in trainable.clip.model.parameters())
    for k, v in trainable.clip.model.state_dict().items():
        assert torch.equal(v, clip_before[k]), k
    with pytest.raises(ValueError, match="data.resolution >= 8"):
        make_trainable("t", params, resolution=4, num_classes=None, class_names=None)


def test_checkpoint_round_trip_and_clip_mismatch(tmp_path) -> None:
    pipe = tiny_unclip(init_seed=3)
    save_checkpoint(tmp_path / "ck", pipe.nets, pipe.config)
    again = build_pipeline("unclip", "again", checkpoint=str(tmp_path / "ck"))
    request = SampleRequest(n=2, prompts=PROMPTS, steps=2, seed=1, guidance_scale=2.0)
    assert torch.equal(next(pipe.sample(request)).images, next(again.sample(request)).images)
    with pytest.raises(ValueError, match="cannot be combined with checkpoint"):
        build_pipeline("unclip", "bad", checkpoint=str(tmp_path / "ck"), decoder_resolution=16)
    # an unCLIP trained on one CLIP refuses another CLIP's embedding space (sha256 recorded)
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "clip", {"clip": ReferenceClip(CLIP)},
                    {"networks": {"clip": {"type": "reference_clip", "config": CLIP}}})
    config = {**pipe.config, "clip": {"name": "shapes-clip", "checkpoint": str(tmp_path / "clip"), "sha256": "0" * 64}}
    save_checkpoint(tmp_path / "ck2", pipe.nets, config)
    with pytest.raises(ValueError, match="different space"):
        build_pipeline("unclip", "mismatch", checkpoint=str(tmp_path / "ck2"))


# --------------------------------------------------------------------------- shipped checkpoint
SHIPPED = CHECKPOINT_DIR / "unclip_shapes16"


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").exists(), reason="unclip_shapes16 not shipped")
def test_shipped_unclip_follows_the_prompted_colour() -> None:
    """The shipped checkpoint (16 px decoder output, separate prior/decoder guidance) for "a red
    circle" vs "a blue square": the reference CLIP and the pixel colour rule of
    bench/tools/prompt_alignment.py both tell them apart."""
    from bench.tools.prompt_alignment import alignment
    from models.networks.reference_clip import load_reference_clip
    pipe = build_pipeline("unclip", "unclip_shapes", checkpoint=str(SHIPPED))
    prompts = ["a red circle"] * 8 + ["a blue square"] * 8
    request = SampleRequest(n=16, prompts=prompts, steps=10, seed=0, guidance_scale=3.0, batch_size=16,
                            stage_overrides={"prior": {"steps": 10, "guidance_scale": 2.0}})
    images = next(pipe.sample(request)).images
    result = alignment({"a red circle": images[:8], "a blue square": images[8:]}, load_reference_clip())
    # P(>= 15 of 16 | chance) = 0.03%; measured 16 of 16 for both
    assert result["colour_in_set_accuracy"] >= 15 / 16 and result["clip_accuracy"] >= 15 / 16, result
