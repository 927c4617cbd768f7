"""diffusers pipelines behind the one interface (family `external`, `params.source: diffusers`).

    pipeline: {family: external, params: {source: diffusers, model: MODEL_ID_OR_PATH}}
    pipeline: {family: external, params: {source: diffusers, stages: [IF_I, IF_II]}}   # IF cascade

Adapters: DDPMPipeline / DDIMPipeline, LDMPipeline, LDMTextToImagePipeline,
StableDiffusionPipeline, DiTPipeline, UnCLIPPipeline, and IFPipeline followed by
IFSuperResolutionPipeline stages as a cascade. `wrap_diffusers(pipe_or_stages, name)` wraps
pipelines already in memory (e.g. built from config, as the tests do).

What each request setting becomes:
- seeds: one CPU `torch.Generator` per sample, seeded `derive_seed(seed, i, stage)` and passed
  as diffusers' list of generators, so sample i is the same whatever its batch, and equal to
  calling the pipeline directly with those generators;
- the scheduler: `params.scheduler: saved` (default) runs the model as saved, `request` maps the
  request's sampler onto a diffusers scheduler (`diffusers_schedulers`: what runs, what the rows
  say ran, what is refused);
- row label: `pipeline.name`, except that a shipped option's name (`diffusers_sd`, ...) is
  replaced by the model's own name (folder or repo id's last part): `/x/my-ddim` -> `my-ddim`;
- steps, guidance scale: per stage (`stage_overrides`), onto each call's arguments; IF's
  super-resolution `noise_level` = round(noise_aug * 1000) when the stage sets `noise_aug`;
- timing and NFE: `models.families.diffusers_common.measured`.
- LoRA: `params.lora`, `params.lora_scale` (`diffusers_lora`).
Provenance for the manifest: `diffusers_provenance`; the start-time checks of a saved folder:
`diffusers_preflight`.
diffusers' safety checkers are switched off: a benchmark must see the images as generated.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from models.families.diffusers_common import (INSTALL_HINT, SCHEDULER_MODES, SeededSteps, images_01_to_uint8, measured,
                                              require_diffusers, sample_generators, scheduler_mode, scheduler_swapped)
from models.families.diffusers_lora import load_lora
from models.families.diffusers_provenance import OPTION_NAMES, describe_pipeline, model_label
from models.families.diffusers_schedulers import SchedulerChoice, unclip_refusal
from models.core.interface import BatchContext, Pipeline, PipelineInfo, StageInfo
from models.core.registry import looks_like_path

log = logging.getLogger(__name__)


class DiffusersAdapter(SchedulerChoice, Pipeline):
    """One diffusers pipeline. Subclasses name its stages and map a batch onto its `__call__`;
    which scheduler runs is `SchedulerChoice`'s."""

    conditioning = "none"
    pixel_space = False           # thresholding applies (x0 is an image, not a latent)
    scales_model_input = True     # its loop calls scheduler.scale_model_input (Heun/Karras sigmas need it)
    scheduler_attribute: str | None = "scheduler"   # None: the pipeline has several (UnCLIP) and keeps them
    resizable = False             # its __call__ takes height/width (params.resolution)

    def __init__(self, name: str, pipe: Any, *, scheduler: str = "saved", negative_prompt: str | None = None,
                 resolution: int | None = None, revision: str | None = None) -> None:
        mode = scheduler_mode(scheduler, name)
        if resolution is not None and not self.resizable:
            raise ValueError(f"diffusers pipeline {name!r}: {type(pipe).__name__} generates at its model's own size; "
                             "remove params.resolution")
        self.pipe = pipe
        self.scheduler_mode = mode
        self._warned: set[str] = set()
        self.negative_prompt = negative_prompt
        self.resolution_override = resolution
        _prepare(pipe)
        self.info = PipelineInfo(name=name, family="external", resolution=resolution or self.native_resolution(),
                                 conditioning=self.conditioning, stages=self.stages(),
                                 num_classes=self.num_classes())
        # what was loaded, for the run manifest (bench.manifest hashes the weight files in `folder`);
        # `schedulers_ran` fills in as stages run: every distinct scheduler class + config used
        self.provenance = {**describe_pipeline(pipe, revision), "scheduler_mode": mode, "schedulers_ran": {}}
        if mode == "saved":
            log.info("diffusers pipeline %s runs as saved: %s (params.scheduler=saved; the request's sampler is not "
                     "used and the rows' sampler column names the scheduler class; params.scheduler=request maps "
                     "the request's sampler onto a diffusers scheduler)", name, self.saved_sampler())

    # -- what a subclass says --------------------------------------------------------------
    def stages(self) -> tuple[StageInfo, ...]:
        raise NotImplementedError

    def native_resolution(self) -> int:
        raise NotImplementedError

    def num_classes(self) -> int | None:
        return None

    # -- the interface -------------------------------------------------------------------
    def networks(self) -> dict[str, torch.nn.Module]:
        return _modules(self.pipe)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> "DiffusersAdapter":
        self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        _move(self.pipe, self.device, self.dtype)
        return self

    # -- one diffusers call, seeded and measured -------------------------------------------
    def call(self, ctx: BatchContext, stage: str, pipe: Any = None, *, counted: Mapping[str, Sequence[Any]],
             timed: Mapping[str, Sequence[Any]] | None = None, steps_argument: str | None = "num_inference_steps",
             **kwargs: Any) -> Any:
        pipe = self.pipe if pipe is None else pipe
        settings = ctx.settings(stage)
        generators = sample_generators(ctx, stage)
        swap: Any = contextlib.nullcontext()
        if self.scheduler_attribute is not None:
            scheduler = self.scheduler_for(stage, settings, getattr(pipe, self.scheduler_attribute))
            self._note_ran(stage, scheduler)
            swap = scheduler_swapped(pipe, self.scheduler_attribute, SeededSteps(scheduler, generators, settings.eta))
        else:   # several schedulers of its own (UnCLIP), each stepped with the generators by the pipeline
            for name, saved in self.saved_schedulers().items():
                self._note_ran(name, saved)
        accepted = set(inspect.signature(pipe.__call__).parameters)
        if "eta" in accepted:
            kwargs.setdefault("eta", settings.eta)
        if steps_argument:
            kwargs[steps_argument] = settings.steps
        with swap, measured(ctx, stage, counted, timed or {}):
            return pipe(generator=generators, return_dict=True, **kwargs).images

    def text_kwargs(self, ctx: BatchContext) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"prompt": list(ctx.prompts or [])}
        if self.negative_prompt is not None:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(ctx)
        return kwargs


def _prepare(pipe: Any) -> None:
    pipe.set_progress_bar_config(disable=True)
    for checker in ("safety_checker", "watermarker"):
        if getattr(pipe, checker, None) is not None:
            log.info("%s: %s switched off (a benchmark must see the images as generated)", type(pipe).__name__, checker)
            setattr(pipe, checker, None)


def _move(pipe: Any, device: torch.device, dtype: torch.dtype) -> None:
    """pipe.to(device[, dtype]); the dtype only when it changes (diffusers warns on every cast)."""
    pipe.to(device=device, **({"dtype": dtype} if pipe.dtype != dtype else {}))


def _modules(pipe: Any, prefix: str = "") -> dict[str, torch.nn.Module]:
    return {prefix + k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}


def _vae_factor(vae: Any) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _decoders(vae: Any) -> list[Any]:
    return [getattr(vae, "post_quant_conv", None), vae.decoder]


# -- the adapters --------------------------------------------------------------------------
class PixelUncond(DiffusersAdapter):
    """DDPMPipeline / DDIMPipeline: an unconditional pixel-space UNet (Ho et al. 2020; Song et al. 2021)."""
    pixel_space = True
    scales_model_input = False

    def stages(self):
        return (StageInfo("base", "denoiser", self.native_resolution()),)

    def native_resolution(self) -> int:
        size = self.pipe.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0])

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        images = self.call(ctx, "base", counted={"base": [self.pipe.unet]}, batch_size=len(ctx), output_type="np")
        return images_01_to_uint8(images)


class LatentUncond(DiffusersAdapter):
    """LDMPipeline: unconditional latent diffusion with a VQ autoencoder (Rombach et al. 2022)."""

    def stages(self):
        return (StageInfo("base", "denoiser", self.pipe.unet.config.sample_size),
                StageInfo("decoder", "decoder", self.native_resolution()))

    def native_resolution(self) -> int:
        return int(self.pipe.unet.config.sample_size * _vae_factor(self.pipe.vqvae))

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        images = self.call(ctx, "base", counted={"base": [self.pipe.unet]},
                           timed={"decoder": _decoders(self.pipe.vqvae)}, batch_size=len(ctx), output_type="np")
        return images_01_to_uint8(images)


class LatentText(DiffusersAdapter):
    """LDMTextToImagePipeline: text-to-image latent diffusion with an LDMBert encoder."""
    conditioning = "text"
    scales_model_input = False
    resizable = True

    def stages(self):
        return (StageInfo("text_encoder", "text_encoder"), StageInfo("base", "denoiser", self.pipe.unet.config.sample_size),
                StageInfo("decoder", "decoder", self.resolution_override or self.native_resolution()))

    def native_resolution(self) -> int:
        return int(self.pipe.unet.config.sample_size * _vae_factor(self.pipe.vqvae))

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        kwargs = {"prompt": list(ctx.prompts or [])}
        if self.resolution_override:
            kwargs.update(height=self.resolution_override, width=self.resolution_override)
        images = self.call(ctx, "base", counted={"base": [self.pipe.unet]},
                           timed={"text_encoder": [self.pipe.bert], "decoder": _decoders(self.pipe.vqvae)},
                           guidance_scale=ctx.settings("base").guidance_scale, output_type="np", **kwargs)
        return images_01_to_uint8(images)


class StableDiffusion(DiffusersAdapter):
    """StableDiffusionPipeline (any checkpoint of that architecture): CLIP text encoder, UNet
    with cross-attention in a KL-autoencoder latent space, classifier-free guidance."""
    conditioning = "text"
    resizable = True

    def stages(self):
        return (StageInfo("text_encoder", "text_encoder"), StageInfo("base", "denoiser", self.latent_resolution()),
                StageInfo("decoder", "decoder", self.resolution_override or self.native_resolution()))

    def latent_resolution(self) -> int:
        return (self.resolution_override or self.native_resolution()) // self.pipe.vae_scale_factor

    def native_resolution(self) -> int:
        return int(self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor)

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        res = self.info.resolution
        images = self.call(ctx, "base", counted={"base": [self.pipe.unet]},
                           timed={"text_encoder": [self.pipe.text_encoder], "decoder": _decoders(self.pipe.vae)},
                           guidance_scale=ctx.settings("base").guidance_scale, height=res, width=res,
                           output_type="np", **self.text_kwargs(ctx))
        return images_01_to_uint8(images)


class DiT(DiffusersAdapter):
    """DiTPipeline: class-conditional latent transformer (Peebles & Xie 2023). Its loop steps
    the CFG-doubled batch without a generator; `SeededSteps` seeds it per sample."""
    conditioning = "class"

    def stages(self):
        return (StageInfo("base", "denoiser", self.pipe.transformer.config.sample_size),
                StageInfo("decoder", "decoder", self.native_resolution()))

    def native_resolution(self) -> int:
        return int(self.pipe.transformer.config.sample_size * _vae_factor(self.pipe.vae))

    def num_classes(self) -> int:
        return int(self.pipe.transformer.config.num_embeds_ada_norm)

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        images = self.call(ctx, "base", counted={"base": [self.pipe.transformer]},
                           timed={"decoder": _decoders(self.pipe.vae)}, class_labels=ctx.labels.tolist(),
                           guidance_scale=ctx.settings("base").guidance_scale, output_type="np")
        return images_01_to_uint8(images)


class UnCLIP(DiffusersAdapter):
    """UnCLIPPipeline (Ramesh et al. 2022): text -> CLIP image-embedding prior -> decoder ->
    super-resolution, in one diffusers call; its UnCLIPScheduler steps need `prev_timestep`,
    so it runs only as saved (`scheduler: saved`) and the request's sampler is unused."""
    conditioning = "text"
    pixel_space = True
    scheduler_attribute = None       # prior/decoder/super_res schedulers; every step gets the generators

    def __init__(self, name: str, pipe: Any, *, scheduler: str = "saved", **options: Any) -> None:
        if scheduler_mode(scheduler, name) != "saved":
            raise ValueError(unclip_refusal(name))
        super().__init__(name, pipe, scheduler=scheduler, **options)

    def saved_schedulers(self) -> dict[str, Any]:
        return {"prior": self.pipe.prior_scheduler, "decoder": self.pipe.decoder_scheduler,
                "sr1": self.pipe.super_res_scheduler}

    def stages(self):
        return (StageInfo("text_encoder", "text_encoder"), StageInfo("prior", "prior"),
                StageInfo("decoder", "denoiser", self.pipe.decoder.config.sample_size),
                StageInfo("sr1", "super_resolution", self.native_resolution()))

    def native_resolution(self) -> int:
        return int(self.pipe.super_res_first.config.sample_size)

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        p = self.pipe
        prior, decoder, sr = ctx.settings("prior"), ctx.settings("decoder"), ctx.settings("sr1")
        images = self.call(
            ctx, "decoder", steps_argument=None,
            counted={"prior": [p.prior], "decoder": [p.decoder], "sr1": [p.super_res_first, p.super_res_last]},
            timed={"text_encoder": [p.text_encoder], "prior": [p.prior], "sr1": [p.super_res_first, p.super_res_last]},
            prompt=list(ctx.prompts or []), prior_num_inference_steps=prior.steps,
            decoder_num_inference_steps=decoder.steps, super_res_num_inference_steps=sr.steps,
            prior_guidance_scale=prior.guidance_scale, decoder_guidance_scale=decoder.guidance_scale, output_type="np")
        return images_01_to_uint8(images)


class IFCascade(DiffusersAdapter):
    """DeepFloyd IF as an Imagen-style cascade (Saharia et al. 2022): IFPipeline (base) then
    IFSuperResolutionPipeline stages (sr1, sr2, ...), sharing stage I's T5 prompt embeddings.
    Each stage takes its own steps / guidance / sampler / noise_aug from the request."""
    conditioning = "text"
    pixel_space = True

    def __init__(self, name: str, pipes: Sequence[Any], **options: Any) -> None:
        names = [type(p).__name__ for p in pipes]
        if not pipes or not any(c.__name__ == "IFPipeline" for c in type(pipes[0]).__mro__) or \
                any("IFSuperResolutionPipeline" not in [c.__name__ for c in type(p).__mro__] for p in pipes[1:]):
            raise ValueError(f"diffusers IF cascade {name!r}: stages must be IFPipeline then IFSuperResolutionPipeline "
                             f"stages, got {names}")
        self.pipes = list(pipes)
        for pipe in self.pipes[1:]:
            _prepare(pipe)
        super().__init__(name, self.pipes[0], **options)
        self.provenance["stages"] = {stage: describe_pipeline(pipe, options.get("revision"))
                                     for stage, pipe in zip(self.stage_names[1:], self.pipes[1:])}

    def saved_schedulers(self) -> dict[str, Any]:
        return {name: pipe.scheduler for name, pipe in zip(self.stage_names, self.pipes)}

    @property
    def stage_names(self) -> list[str]:
        return ["base"] + [f"sr{k}" for k in range(1, len(self.pipes))]

    def stages(self):
        kinds = ["denoiser"] + ["super_resolution"] * (len(self.pipes) - 1)
        return (StageInfo("text_encoder", "text_encoder"),) + tuple(
            StageInfo(name, kind, int(p.unet.config.sample_size)) for name, kind, p in zip(self.stage_names, kinds, self.pipes))

    def native_resolution(self) -> int:
        return int(self.pipes[-1].unet.config.sample_size)

    def networks(self) -> dict[str, torch.nn.Module]:
        found: dict[str, torch.nn.Module] = {}
        for name, pipe in zip(self.stage_names, self.pipes):
            found.update(_modules(pipe, prefix=f"{name}."))
        return found

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> "IFCascade":
        super().to(device, dtype)
        for pipe in self.pipes[1:]:
            _move(pipe, self.device, self.dtype)
        return self

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        guided = any(ctx.settings(name).guidance_scale > 1 for name in self.stage_names)
        with ctx.stage("text_encoder"):
            embeds, negative = self.pipe.encode_prompt(
                list(ctx.prompts or []), do_classifier_free_guidance=guided, device=self.device,
                negative_prompt=self.negative_prompt, clean_caption=False)
        images = None
        for k, (name, pipe) in enumerate(zip(self.stage_names, self.pipes)):
            settings = ctx.settings(name)
            kwargs: dict[str, Any] = dict(prompt_embeds=embeds, guidance_scale=settings.guidance_scale,
                                          negative_prompt_embeds=negative if settings.guidance_scale > 1 else None,
                                          output_type="pt", clean_caption=False)
            if k > 0:
                kwargs["image"] = images
                if settings.noise_aug is not None:
                    steps = pipe.image_noising_scheduler.config.num_train_timesteps
                    kwargs["noise_level"] = min(steps - 1, max(0, round(settings.noise_aug * steps)))
            images = self.call(ctx, name, pipe, counted={name: [pipe.unet]}, **kwargs)
            if k < len(self.pipes) - 1:
                ctx.keep(name, images.clamp(-1, 1))
        return images.clamp(-1, 1)


ADAPTERS: dict[str, type[DiffusersAdapter]] = {
    "DDPMPipeline": PixelUncond, "DDIMPipeline": PixelUncond, "LDMPipeline": LatentUncond,
    "LDMTextToImagePipeline": LatentText, "StableDiffusionPipeline": StableDiffusion, "DiTPipeline": DiT,
    "UnCLIPPipeline": UnCLIP,
}


def wrap_diffusers(pipe: Any, name: str, **options: Any) -> DiffusersAdapter:
    """A diffusers pipeline (or a list of IF stage pipelines) as a diffbench Pipeline."""
    if isinstance(pipe, (list, tuple)):
        return IFCascade(name, pipe, **options)
    for cls in type(pipe).__mro__:
        if cls.__name__ == "IFPipeline":
            return IFCascade(name, [pipe], **options)
        if cls.__name__ in ADAPTERS:
            return ADAPTERS[cls.__name__](name, pipe, **options)
    raise ValueError(f"diffusers pipeline {name!r}: no adapter for {type(pipe).__name__}; supported: "
                     f"{sorted(ADAPTERS) + ['IFPipeline (+ IFSuperResolutionPipeline stages)']}")


def load_diffusers(source: str, **kwargs: Any) -> Any:
    diffusers = require_diffusers()
    if os.environ.get("DIFFBENCH_QUIET"):
        diffusers.utils.logging.disable_progress_bar()
    if looks_like_path(source) and not Path(source).expanduser().is_dir():   # a path, not a model id (issue 26)
        raise FileNotFoundError(f"diffusers model folder {source} does not exist; give a folder saved with "
                                "save_pretrained(), or a Hugging Face model id (org/name)")
    try:
        return diffusers.DiffusionPipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        if looks_like_path(source):
            raise FileNotFoundError(f"cannot load the diffusers model folder {source}: {err}. Give a folder saved "
                                    "with save_pretrained() (it holds model_index.json)") from None
        raise FileNotFoundError(
            f"cannot load diffusers pipeline from model id {source!r}: {err}. Give a folder saved with "
            "save_pretrained(), or a Hugging Face model id that is cached (offline: HF_HUB_OFFLINE=1) or reachable"
        ) from None


def build_diffusers(name: str, model: str | None = None, stages: Sequence[str] | None = None,
                    variant: str | None = None, revision: str | None = None, **options: Any) -> DiffusersAdapter:
    """From config: `model` (an id or a local folder), or `stages` (IF I, II, ...) for a cascade.
    A shipped option's name (OPTION_NAMES) becomes the model's own name (`model_label`); any
    other pipeline.name, given by the user, is kept."""
    require_diffusers()
    lora, lora_scale = options.pop("lora", None), options.pop("lora_scale", None)
    allowed = {"scheduler", "negative_prompt", "resolution"}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"diffusers pipeline {name!r}: unknown params {sorted(unknown)}; allowed: "
                         f"{sorted(allowed | {'model', 'stages', 'variant', 'revision', 'source', 'lora', 'lora_scale'})}")
    if (model is None) == (not stages):
        raise ValueError(f"diffusers pipeline {name!r}: set exactly one of params.model (a model id or folder) "
                         "and params.stages (IF cascade: [stage I, stage II, ...])")
    if name in OPTION_NAMES:
        label = model_label(model, stages)
        log.info("pipeline %s: rows are labelled %r, after the model (set pipeline.name to choose a label)", name, label)
        name = label
    load = dict(variant=variant, revision=revision)
    if stages and (lora is not None or lora_scale is not None):
        raise ValueError(f"diffusers pipeline {name!r}: params.lora applies to one pipeline (params.model), "
                         "not to an IF cascade (params.stages)")
    if stages:
        pipes = [load_diffusers(stages[0], **load)] + [load_diffusers(s, text_encoder=None, **load) for s in stages[1:]]
        return IFCascade(name, pipes, revision=revision, **options)
    pipe = load_diffusers(model, **load)
    record = load_lora(pipe, name, lora, lora_scale) if lora is not None or lora_scale is not None else None
    adapter = wrap_diffusers(pipe, name, revision=revision, **options)
    if record is not None:
        adapter.provenance["lora"] = record
    return adapter



__all__ = ["ADAPTERS", "INSTALL_HINT", "OPTION_NAMES", "SCHEDULER_MODES", "DiffusersAdapter", "build_diffusers",
           "describe_pipeline", "model_label", "wrap_diffusers"]
