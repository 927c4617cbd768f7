"""diffusers adapters, offline, on tiny randomly initialised components built from config
(as diffusers' own fast tests do).

Tokenizer: a CLIP tokenizer needs vocab/merges files from the hub, so the text pipelines get
a `PreTrainedTokenizerFast` over an in-memory word-level `tokenizers` model instead. The
pipelines only call the tokenizer's `__call__` / `batch_decode`, which it provides; what the
tests check (seeding, shapes, NFE, timing, config loading) does not depend on the BPE vocab.
"""
from __future__ import annotations

import sys

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from models.families.diffusers import DiffusersAdapter, wrap_diffusers  # noqa: E402
from models.core.interface import RequestError, SampleRequest  # noqa: E402
from models.core.registry import build_pipeline  # noqa: E402

WORDS = "a an the red blue green circle square star small large on at of left right".split()
PROMPTS = ["a red circle", "the large blue square on the left", "a small star"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_tokenizer(max_length: int = 16):
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "<s>", "</s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                bos_token="<s>", eos_token="</s>", model_max_length=max_length)


def tiny_pixel_unet():
    """An 8 px unconditional UNet2DModel (random weights: seed it first) for DDPM/DDIM pipelines."""
    return diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def tiny_vae():
    return diffusers.AutoencoderKL(block_out_channels=[8, 16], in_channels=3, out_channels=3, latent_channels=4,
                                   down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                                   norm_num_groups=4, sample_size=16)


def tiny_stable_diffusion():
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
        max_position_embeddings=16, bos_token_id=2, eos_token_id=3, pad_token_id=0))
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return diffusers.StableDiffusionPipeline(vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tiny_tokenizer(),
                                             unet=unet, scheduler=scheduler, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)


def tiny_dit():
    torch.manual_seed(0)
    transformer = diffusers.DiTTransformer2DModel(
        sample_size=4, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=2, in_channels=4,
        out_channels=8, activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_zero",
        norm_elementwise_affine=False)
    return diffusers.DiTPipeline(transformer=transformer, vae=tiny_vae(), scheduler=diffusers.DDIMScheduler())


def images_of(pipe, **request) -> torch.Tensor:
    return torch.cat([b.images for b in pipe.sample(SampleRequest(**request))])


def assert_same_samples(a: torch.Tensor, b: torch.Tensor) -> None:
    """Sample i is the same image at any batch size: equal noise, so equal up to float
    reassociation in batched matmuls, which may flip a rounding: at most 1 level, rarely."""
    diff = (a.int() - b.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    """A tiny random Stable Diffusion saved to a folder and loaded through the config path, with
    the request's sampler mapped onto diffusers schedulers (params.scheduler=request; running as
    saved is tested in test_diffusers_as_saved.py)."""
    folder = tmp_path_factory.mktemp("tiny-sd")
    tiny_stable_diffusion().save_pretrained(folder)
    return build_pipeline("external", "tiny-sd", source="diffusers", model=str(folder), scheduler="request")


def test_stable_diffusion_from_a_local_folder(sd):
    assert isinstance(sd, DiffusersAdapter)
    assert sd.provenance["pipeline_class"] == "StableDiffusionPipeline" and "tiny-sd" in sd.provenance["model"]
    assert sd.info.name == "tiny-sd" and sd.scheduler_mode == "request"     # the name given is kept
    assert (sd.info.family, sd.info.conditioning, sd.info.resolution) == ("external", "text", 16)
    assert sd.info.stage_names == ("text_encoder", "base", "decoder")
    settings = dict(n=3, prompts=PROMPTS, steps=2, guidance_scale=3.0, seed=5)
    whole = list(sd.sample(SampleRequest(batch_size=3, **settings)))[0]
    assert whole.images.dtype == torch.uint8 and whole.images.shape == (3, 3, 16, 16)
    assert whole.stage_nfe == {"base": 4.0}                     # 2 steps x CFG's doubled batch
    assert set(whole.stage_seconds) == {"text_encoder", "base", "decoder"}
    assert all(t > 0 for t in whole.stage_seconds.values())
    singles = images_of(sd, batch_size=1, **settings)
    assert_same_samples(singles, whole.images)
    other_seed = images_of(sd, batch_size=3, **dict(settings, seed=6))
    assert (other_seed.int() - whole.images.int()).abs().float().mean() > 5
    unguided = next(sd.sample(SampleRequest(n=1, prompts=PROMPTS, steps=2, guidance_scale=1.0)))
    assert unguided.stage_nfe == {"base": 2.0}


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp_2m", "heun"])
def test_stable_diffusion_samplers_map_onto_schedulers(sd, sampler):
    settings = dict(n=2, prompts=PROMPTS, steps=2, sampler=sampler, eta=1.0, seed=1)
    pair = images_of(sd, batch_size=2, **settings)
    assert_same_samples(images_of(sd, batch_size=1, **settings), pair)
    nfe = next(sd.sample(SampleRequest(**settings))).stage_nfe["base"]
    assert nfe == (3.0 if sampler == "heun" else 2.0)   # Heun: 2 evaluations per step but the last
    with pytest.raises(RequestError, match="latents"):
        next(sd.sample(SampleRequest(thresholding="dynamic", **settings)))


def test_dit_class_conditional_with_stochastic_steps_and_cfg():
    dit = wrap_diffusers(tiny_dit(), "tiny-dit", scheduler="request")
    assert (dit.info.conditioning, dit.info.num_classes, dit.info.resolution) == ("class", 1000, 8)
    # ddpm draws fresh noise every step; DiT's loop passes no generator: SeededSteps seeds it per sample
    settings = dict(n=3, labels=[7, 1, 999], steps=3, guidance_scale=2.5, sampler="ddpm", seed=2)
    batch = next(dit.sample(SampleRequest(batch_size=3, **settings)))
    assert batch.images.shape == (3, 3, 8, 8) and batch.labels.tolist() == [7, 1, 999]
    assert batch.stage_nfe == {"base": 6.0} and set(batch.stage_seconds) == {"base", "decoder"}
    assert_same_samples(images_of(dit, batch_size=1, **settings), batch.images)
    assert_same_samples(images_of(dit, batch_size=2, start_index=1, **dict(settings, n=2)), batch.images[1:])
    assert not torch.equal(images_of(dit, batch_size=3, **dict(settings, seed=3)), batch.images)
    with pytest.raises(RequestError, match="labels"):
        next(dit.sample(SampleRequest(n=1, steps=1)))


def test_resolution_override_where_the_pipeline_takes_one():
    sd = wrap_diffusers(tiny_stable_diffusion(), "sd24", resolution=24)
    assert sd.info.resolution == 24
    assert next(sd.sample(SampleRequest(n=1, prompts=PROMPTS, steps=1))).images.shape == (1, 3, 24, 24)
    with pytest.raises(ValueError, match="remove params.resolution"):
        wrap_diffusers(tiny_dit(), "dit", resolution=16)


def test_errors_name_what_to_change(monkeypatch):
    with pytest.raises(ValueError, match="no adapter for"):
        wrap_diffusers(object(), "x")
    with pytest.raises(ValueError, match="exactly one of params.model"):
        build_pipeline("external", "x", source="diffusers")
    with pytest.raises(ValueError, match="unknown params"):
        build_pipeline("external", "x", source="diffusers", model="m", guidance=2)
    with pytest.raises(FileNotFoundError, match="no/such/folder"):
        build_pipeline("external", "x", source="diffusers", model="/no/such/folder")
    monkeypatch.setitem(sys.modules, "diffusers", None)           # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'diffbench\[diffusers\]'"):
        build_pipeline("external", "x", source="diffusers", model="m")


def compose_pipeline(name: str):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from bench.config import register_schema, validate
    register_schema()
    with initialize_config_dir(str(Path(__file__).resolve().parent.parent / "conf"), version_base="1.3"):
        return validate(compose("config", overrides=[f"pipeline={name}"])).pipeline


def test_the_sd_config_builds_through_the_loader(monkeypatch):
    import models.families.diffusers as adapters
    loaded = []

    def load(source, **kwargs):
        loaded.append((source, kwargs))
        return tiny_stable_diffusion()
    monkeypatch.setattr(adapters, "load_diffusers", load)
    spec = compose_pipeline("diffusers_sd")
    pipe = build_pipeline(spec.family, spec.name, spec.checkpoint, **spec.params)
    assert isinstance(pipe, adapters.StableDiffusion) and pipe.scheduler_mode == "saved"
    assert pipe.info.name == "stable-diffusion-v1-5"            # rows name the model, not the config option
    assert loaded == [(spec.params["model"], {"variant": None, "revision": None})]


# -- through the whole runner: config -> Session -> smoke suite -> metrics -> results ---------
def smoke_run(run_dir, pipeline: str, model: str):
    """`bench.app.run` (what `python -m bench` runs after Hydra) of the smoke suite with the
    smoke metrics on a tiny diffusers pipeline saved to `model`. CLIP score uses the project's
    reference CLIP; it is left out (only) while that checkpoint is not shipped."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from bench.app import narrow_to_chosen_pipeline, run
    from bench.config import register_schema, validate
    from models.networks.reference_clip import REFERENCE_CLIP_DIR
    register_schema()
    names = ["fid", "kid", "precision_recall", "speed"]
    if (REFERENCE_CLIP_DIR / "model.safetensors").is_file():
        names.insert(3, "clip_score")
    overrides = [f"pipeline={pipeline}", f"pipeline.params.model={model}", "suite=smoke", "suite.n=8",
                 "data.n=16", "sampler.steps=2", "hardware=cpu", "hardware.batch_size=4",
                 f"metrics.names=[{','.join(names)}]", "metrics.kid_subsets=10", "metrics.kid_subset_size=4",
                 "metrics.speed_repeats=1", "suite.params.speed_n=2", "quiet=true"]
    with initialize_config_dir(str(Path(__file__).resolve().parent.parent / "conf"), version_base="1.3"):
        raw = compose("config", overrides=overrides)
    narrow_to_chosen_pipeline(raw, overrides)         # as `python -m bench pipeline=X` does
    return run(validate(raw), raw, run_dir), "clip_score" in names


@pytest.mark.parametrize("kind", ["sd", "dit"])
def test_tiny_random_pipelines_run_through_the_smoke_metrics(kind, tmp_path):
    import json
    import math
    folder = tmp_path / f"tiny-{kind}"
    (tiny_stable_diffusion() if kind == "sd" else tiny_dit()).save_pretrained(folder)
    pipeline = {"sd": "diffusers_sd", "dit": "diffusers_dit"}[kind]
    frame, with_clip = smoke_run(tmp_path / "run", pipeline, str(folder))

    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert set(frame.pipeline) == {f"tiny-{kind}"} and set(frame.family) == {"external"}   # the folder's name
    assert set(frame.sampler) == {"DDIMScheduler"}     # run as saved: the sampler column names its scheduler
    values = frame.set_index("metric").value
    quality = {"fid", "kid", "precision", "recall"} | ({"clip_score[shapes-clip]"} if kind == "sd" and with_clip else set())
    assert quality | {"images_per_s", "nfe_per_image", "peak_memory_mib"} <= set(values.index), sorted(values.index)
    assert (frame[frame.metric.isin(quality)].n == 8).all()
    assert all(math.isfinite(values[m]) for m in quality) and values["fid"] > 0
    assert values["nfe_per_image"] == 2.0 and values["images_per_s"] > 0    # 2 steps, no CFG at guidance 1
    stages = {"sd": {"text_encoder", "base", "decoder"}, "dit": {"base", "decoder"}}[kind]
    assert {m[len("stage_s_per_image["):-1] for m in values.index if m.startswith("stage_s_per_image[")} == stages
    store = tmp_path / "run" / "samples" / f"tiny-{kind}" / "default"
    assert (store / "shards" / "shard-000000.npz").is_file() and not (store / "parts").exists()
