"""The other diffusers adapters (DDPM/DDIM, LDM, LDM text-to-image, UnCLIP, the IF cascade) on
tiny random components built from config, offline. The tokenizer choice is explained in
test_diffusers.py."""
from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from models.families.diffusers import wrap_diffusers  # noqa: E402
from models.core.interface import RequestError, SampleRequest  # noqa: E402
from models.core.registry import build_pipeline  # noqa: E402
from test_diffusers import PROMPTS, assert_same_samples, images_of, tiny_pixel_unet, tiny_tokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_if_unet(size: int, super_resolution: bool):
    extra = dict(class_embed_type="timestep", mid_block_scale_factor=1.414, time_embedding_act_fn="gelu",
                 time_embedding_dim=32) if super_resolution else {}
    return diffusers.UNet2DConditionModel(
        sample_size=size, in_channels=6 if super_resolution else 3, out_channels=6, layers_per_block=1,
        block_out_channels=[16, 32], norm_num_groups=8,
        down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"],
        cross_attention_dim=32, encoder_hid_dim=32, attention_head_dim=8, addition_embed_type="text",
        addition_embed_type_num_heads=2, cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift",
        act_fn="gelu", **extra)


def if_scheduler():
    return diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", thresholding=True,
                                   dynamic_thresholding_ratio=0.95, sample_max_value=1.0, variance_type="learned_range")


def tiny_if_stages():
    torch.manual_seed(0)
    t5 = transformers.T5EncoderModel(transformers.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=32,
                                                           num_layers=1, num_heads=2))
    none = dict(safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)
    base = diffusers.IFPipeline(tokenizer=tiny_tokenizer(77), text_encoder=t5, unet=tiny_if_unet(8, False),
                                scheduler=if_scheduler(), **none)
    sr = diffusers.IFSuperResolutionPipeline(
        tokenizer=None, text_encoder=None, unet=tiny_if_unet(16, True), scheduler=if_scheduler(),
        image_noising_scheduler=diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2"), **none)
    return [base, sr]


def test_if_cascade_maps_per_stage_settings():
    cascade = wrap_diffusers(tiny_if_stages(), "tiny-if", scheduler="request")
    assert cascade.info.stage_names == ("text_encoder", "base", "sr1") and cascade.info.resolution == 16
    settings = dict(n=3, prompts=PROMPTS, steps=2, guidance_scale=2.0, sampler="ddpm", thresholding="dynamic", seed=4,
                    stage_overrides={"sr1": {"steps": 1, "guidance_scale": 1.0, "noise_aug": 0.25}})
    batch = next(cascade.sample(SampleRequest(batch_size=3, **settings)))
    assert batch.images.shape == (3, 3, 16, 16) and batch.stage_outputs["base"].shape == (3, 3, 8, 8)
    assert batch.stage_nfe == {"base": 4.0, "sr1": 1.0}                 # CFG only where guidance > 1
    assert set(batch.stage_seconds) == {"text_encoder", "base", "sr1"}
    singles = list(cascade.sample(SampleRequest(batch_size=1, **settings)))
    assert_same_samples(torch.cat([b.images for b in singles]), batch.images)
    assert_same_samples(torch.cat([b.stage_outputs["base"] for b in singles]), batch.stage_outputs["base"])
    # the super-resolution stage's noise_aug reaches IF's noise_level
    noisier = next(cascade.sample(SampleRequest(batch_size=3, **dict(
        settings, stage_overrides={"sr1": {"steps": 1, "guidance_scale": 1.0, "noise_aug": 0.9}}))))
    assert torch.equal(noisier.stage_outputs["base"], batch.stage_outputs["base"])
    assert not torch.equal(noisier.images, batch.images)
    with pytest.raises(RequestError, match="no thresholding"):
        next(cascade.sample(SampleRequest(**dict(settings, sampler="heun"))))


def test_ddpm_and_ddim_pipelines():
    torch.manual_seed(0)
    unet = tiny_pixel_unet()
    for cls in (diffusers.DDPMPipeline, diffusers.DDIMPipeline):
        pipe = wrap_diffusers(cls(unet=unet, scheduler=diffusers.DDPMScheduler()), cls.__name__, scheduler="request")
        assert (pipe.info.conditioning, pipe.info.resolution) == ("none", 8)
        settings = dict(n=2, steps=3, sampler="ddim", eta=1.0, thresholding="static", seed=1)
        pair = next(pipe.sample(SampleRequest(batch_size=2, **settings)))
        assert pair.stage_nfe == {"base": 3.0} and pair.images.shape == (2, 3, 8, 8)
        assert_same_samples(images_of(pipe, batch_size=1, **settings), pair.images)
        with pytest.raises(RequestError, match="heun"):        # these loops do not scale model inputs
            next(pipe.sample(SampleRequest(n=1, sampler="heun")))


def tiny_vq():
    return diffusers.VQModel(block_out_channels=[8, 8, 8, 8], in_channels=3, out_channels=3, latent_channels=3,
                             norm_num_groups=4, down_block_types=["DownEncoderBlock2D"] * 4,
                             up_block_types=["UpDecoderBlock2D"] * 4)        # f = 8, as LDMTextToImage assumes


def tiny_ldm():
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=2, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 8), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    return diffusers.LDMPipeline(vqvae=tiny_vq(), unet=unet, scheduler=diffusers.DDIMScheduler())


def tiny_ldm_text2im():
    torch.manual_seed(0)
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
    bert = LDMBertModel(LDMBertConfig(vocab_size=64, max_position_embeddings=77, encoder_layers=1, encoder_ffn_dim=16,
                                      encoder_attention_heads=2, head_dim=8, d_model=16))
    text_unet = diffusers.UNet2DConditionModel(
        sample_size=2, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4)
    return diffusers.LDMTextToImagePipeline(vqvae=tiny_vq(), bert=bert, tokenizer=tiny_tokenizer(77), unet=text_unet,
                                            scheduler=diffusers.DDIMScheduler())


def test_latent_diffusion_pipelines():
    ldm = wrap_diffusers(tiny_ldm(), "ldm", scheduler="request")
    assert ldm.info.resolution == 16 and ldm.info.stage_names == ("base", "decoder")
    batch = next(ldm.sample(SampleRequest(n=2, steps=2, sampler="heun", batch_size=2)))
    assert batch.images.shape == (2, 3, 16, 16) and batch.stage_nfe == {"base": 3.0}
    assert_same_samples(images_of(ldm, n=2, steps=2, sampler="heun", batch_size=1), batch.images)

    t2i = wrap_diffusers(tiny_ldm_text2im(), "ldm-t2i", scheduler="request")
    settings = dict(n=2, prompts=PROMPTS, steps=2, guidance_scale=3.0, sampler="ddpm", seed=3)
    batch = next(t2i.sample(SampleRequest(batch_size=2, **settings)))
    assert batch.images.shape == (2, 3, 16, 16) and batch.stage_nfe == {"base": 4.0}
    assert set(batch.stage_seconds) == {"text_encoder", "base", "decoder"}
    assert_same_samples(images_of(t2i, batch_size=1, **settings), batch.images)


def tiny_unclip():
    torch.manual_seed(0)
    text_encoder = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(
        vocab_size=64, hidden_size=16, projection_dim=16, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=1, max_position_embeddings=77, bos_token_id=2, eos_token_id=3, pad_token_id=0))
    prior = diffusers.PriorTransformer(num_attention_heads=2, attention_head_dim=8, embedding_dim=16, num_layers=1)
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    text_proj = UnCLIPTextProjModel(clip_embeddings_dim=16, time_embed_dim=64, cross_attention_dim=32)
    decoder = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=3, out_channels=6, layers_per_block=1, block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"), mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        cross_attention_dim=32, attention_head_dim=4, resnet_time_scale_shift="scale_shift", class_embed_type="identity")
    sr = dict(sample_size=16, layers_per_block=1, in_channels=6, out_channels=3, block_out_channels=(16, 32),
              norm_num_groups=8, down_block_types=("ResnetDownsampleBlock2D",) * 2, up_block_types=("ResnetUpsampleBlock2D",) * 2)
    scheduler = diffusers.UnCLIPScheduler
    pipe = diffusers.UnCLIPPipeline(
        prior=prior, decoder=decoder, text_proj=text_proj, text_encoder=text_encoder, tokenizer=tiny_tokenizer(77),
        super_res_first=diffusers.UNet2DModel(**sr), super_res_last=diffusers.UNet2DModel(**sr),
        prior_scheduler=scheduler(variance_type="fixed_small_log", prediction_type="sample", clip_sample_range=5.0),
        decoder_scheduler=scheduler(variance_type="learned_range", prediction_type="epsilon"),
        super_res_scheduler=scheduler(variance_type="fixed_small_log", prediction_type="epsilon"))
    return pipe


def test_unclip_prior_decoder_super_resolution():
    pipe = tiny_unclip()
    unclip = wrap_diffusers(pipe, "tiny-unclip")
    assert unclip.info.stage_names == ("text_encoder", "prior", "decoder", "sr1") and unclip.info.resolution == 16
    settings = dict(n=2, prompts=PROMPTS, steps=2, guidance_scale=2.0, seed=7,
                    stage_overrides={"prior": {"steps": 3}, "sr1": {"steps": 2}})
    batch = next(unclip.sample(SampleRequest(batch_size=2, **settings)))
    assert batch.images.shape == (2, 3, 16, 16)
    assert batch.stage_nfe == {"prior": 6.0, "decoder": 4.0, "sr1": 2.0}
    assert set(batch.stage_seconds) == {"text_encoder", "prior", "decoder", "sr1"}
    assert_same_samples(images_of(unclip, batch_size=1, **settings), batch.images)
    assert unclip.sampling_details()["sampler"] == "UnCLIPScheduler"       # its own schedulers, as saved
    assert set(unclip.sampling_details()["schedulers"]) == {"prior", "decoder", "sr1"}
    assert set(unclip.provenance["schedulers_ran"]) == {"prior", "decoder", "sr1"}
    with pytest.raises(ValueError, match="scheduler=saved"):
        wrap_diffusers(pipe, "x", scheduler="request")


def test_the_if_config_loads_its_stages_as_a_cascade(monkeypatch):
    import models.families.diffusers as adapters
    from test_diffusers import compose_pipeline
    stages = tiny_if_stages()
    loaded = []

    def load(source, **kwargs):
        loaded.append((source, kwargs))
        return stages[len(loaded) - 1]
    monkeypatch.setattr(adapters, "load_diffusers", load)
    spec = compose_pipeline("diffusers_if")
    pipe = build_pipeline(spec.family, spec.name, spec.checkpoint, **spec.params)
    assert isinstance(pipe, adapters.IFCascade) and pipe.info.stage_names == ("text_encoder", "base", "sr1")
    assert pipe.info.name == "IF-I-XL-v1.0+IF-II-L-v1.0" and set(pipe.provenance["stages"]) == {"sr1"}
    details = pipe.sampling_details()              # as saved: IF's own DDPM, which thresholds dynamically
    assert set(details["schedulers"]) == {"base", "sr1"}
    assert (details["sampler"], details["thresholding"]) == ("DDPMScheduler", "dynamic")
    first, second = spec.params["stages"]
    assert loaded == [(first, {"variant": "fp16", "revision": None}),
                      (second, {"text_encoder": None, "variant": "fp16", "revision": None})]
