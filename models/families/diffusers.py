"""diffusers pipelines behind the one interface (family `external`, `params.source: diffusers`).

    pipeline: {family: external, params: {source: diffusers, model: MODEL_ID_OR_PATH}}
    pipeline: {family: external, params: {source: diffusers, stages: [IF_I, IF_II]}}   # IF cascade

Adapters: DDPMPipeline / DDIMPipeline, LDMPipeline, LDMTextToImagePipeline,
StableDiffusionPipeline, DiTPipeline, UnCLIPPipeline, and IFPipeline followed by
IFSuperResolutionPipeline stages as a cascade. `wrap_diffusers(pipe_or_stages, name)` wraps
pipelines already in memory (e.g. built from config, as the tests do).

What each request setting becomes:
- seeds: one CPU `torch.Generator` per sample, seeded `derive_seed(seed, i, stage)` and passed
  as diffusers' list of generators, so sample i is the same whatever its batch;
- sampler / eta / thresholding: a scheduler built `from_config` of the model's own (its noise
  schedule and prediction type are kept); `params.scheduler: native` keeps the model's
  scheduler and ignores the request's sampler (UnCLIP only works that way);
- steps, guidance scale: per stage (`stage_overrides`), onto each call's arguments; IF's
  super-resolution `noise_level` = round(noise_aug * 1000) when the stage sets `noise_aug`;
- timing and NFE: `models.families.diffusers_common.measured`.
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

from models.families.diffusers_common import (INSTALL_HINT, SeededSteps, images_01_to_uint8, make_scheduler, measured,
                                     require_diffusers, sample_generators, scheduler_swapped)
from models.core.interface import BatchContext, Pipeline, PipelineInfo, RequestError, SampleRequest, StageInfo

log = logging.getLogger(__name__)
SCHEDULER_MODES = ("request", "native")


class DiffusersAdapter(Pipeline):
    """One diffusers pipeline. Subclasses name its stages and map a batch onto its `__call__`."""

    conditioning = "none"
    pixel_space = False           # thresholding applies (x0 is an image, not a latent)
    scales_model_input = True     # its loop calls scheduler.scale_model_input (Heun/Karras sigmas need it)
    scheduler_attribute: str | None = "scheduler"   # None: the pipeline has several (UnCLIP) and keeps them
    resizable = False             # its __call__ takes height/width (params.resolution)

    def __init__(self, name: str, pipe: Any, *, scheduler: str = "request", negative_prompt: str | None = None,
                 resolution: int | None = None) -> None:
        if scheduler not in SCHEDULER_MODES:
            raise ValueError(f"diffusers pipeline {name!r}: params.scheduler={scheduler!r}; choose one of {SCHEDULER_MODES}")
        if resolution is not None and not self.resizable:
            raise ValueError(f"diffusers pipeline {name!r}: {type(pipe).__name__} generates at its model's own size; "
                             "remove params.resolution")
        self.pipe = pipe
        self.scheduler_mode = scheduler
        self.negative_prompt = negative_prompt
        self.resolution_override = resolution
        _prepare(pipe)
        if scheduler == "native":
            log.warning("diffusers pipeline %s keeps its own scheduler (params.scheduler=native): the request's "
                        "sampler and thresholding are not used", name)
        # what was loaded, for the run manifest
        self.provenance = {"source": "diffusers", "class": type(pipe).__name__,
                           "model": str(getattr(pipe.config, "_name_or_path", "") or "(in memory)"),
                           "diffusers": require_diffusers().__version__}
        self.info = PipelineInfo(name=name, family="external", resolution=resolution or self.native_resolution(),
                                 conditioning=self.conditioning, stages=self.stages(),
                                 num_classes=self.num_classes())

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

    def check_request(self, request: SampleRequest) -> None:
        """Also refuse, before any sampling, settings the diffusers schedulers cannot honour."""
        super().check_request(request)
        if self.scheduler_mode != "request":
            return
        for stage in self.info.stages:
            if stage.kind not in ("denoiser", "super_resolution"):
                continue
            settings = request.settings_for(stage.name)
            if settings.sampler == "heun" and not self.scales_model_input:
                raise RequestError(f"pipeline {self.info.name!r}: diffusers' {type(self.pipe).__name__} loop does not "
                                   "scale model inputs by the sampler's sigmas, which heun (Karras sigmas) needs; "
                                   "use sampler ddpm, ddim or dpmpp_2m")
            make_scheduler(getattr(self.pipe, self.scheduler_attribute), settings, pixel_space=self.pixel_space,
                           pipeline=self.info.name)

    # -- one diffusers call, seeded and measured -------------------------------------------
    def call(self, ctx: BatchContext, stage: str, pipe: Any = None, *, counted: Mapping[str, Sequence[Any]],
             timed: Mapping[str, Sequence[Any]] | None = None, steps_argument: str | None = "num_inference_steps",
             **kwargs: Any) -> Any:
        pipe = self.pipe if pipe is None else pipe
        settings = ctx.settings(stage)
        generators = sample_generators(ctx, stage)
        swap: Any = contextlib.nullcontext()
        if self.scheduler_attribute is not None:
            native = getattr(pipe, self.scheduler_attribute)
            scheduler = native if self.scheduler_mode == "native" else make_scheduler(
                native, settings, pixel_space=self.pixel_space, pipeline=self.info.name)
            swap = scheduler_swapped(pipe, self.scheduler_attribute, SeededSteps(scheduler, generators, settings.eta))
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
    so it keeps its own schedulers (`scheduler: native`) and the request's sampler is unused."""
    conditioning = "text"
    pixel_space = True
    scheduler_attribute = None       # prior/decoder/super_res schedulers; every step gets the generators

    def __init__(self, name: str, pipe: Any, *, scheduler: str = "native", **options: Any) -> None:
        if scheduler != "native":
            raise ValueError(f"diffusers pipeline {name!r}: UnCLIP runs only with its own UnCLIPScheduler "
                             "(its steps take prev_timestep); set params.scheduler=native")
        super().__init__(name, pipe, scheduler=scheduler, **options)

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
    try:
        return diffusers.DiffusionPipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        where = "local folder" if Path(source).expanduser().exists() else "model id"
        raise FileNotFoundError(
            f"cannot load diffusers pipeline from {where} {source!r}: {err}. Give a folder saved with "
            "save_pretrained(), or a Hugging Face model id that is cached (offline: HF_HUB_OFFLINE=1) or reachable"
        ) from None


def build_diffusers(name: str, model: str | None = None, stages: Sequence[str] | None = None,
                    variant: str | None = None, revision: str | None = None, **options: Any) -> DiffusersAdapter:
    """From config: `model` (an id or a local folder), or `stages` (IF I, II, ...) for a cascade."""
    require_diffusers()
    allowed = {"scheduler", "negative_prompt", "resolution"}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"diffusers pipeline {name!r}: unknown params {sorted(unknown)}; allowed: "
                         f"{sorted(allowed | {'model', 'stages', 'variant', 'revision', 'source'})}")
    if (model is None) == (not stages):
        raise ValueError(f"diffusers pipeline {name!r}: set exactly one of params.model (a model id or folder) "
                         "and params.stages (IF cascade: [stage I, stage II, ...])")
    load = dict(variant=variant, revision=revision)
    if stages:
        pipes = [load_diffusers(stages[0], **load)] + [load_diffusers(s, text_encoder=None, **load) for s in stages[1:]]
        return IFCascade(name, pipes, **options)
    return wrap_diffusers(load_diffusers(model, **load), name, **options)


__all__ = ["ADAPTERS", "INSTALL_HINT", "DiffusersAdapter", "build_diffusers", "wrap_diffusers"]
