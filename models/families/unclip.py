"""Family `unclip` (Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation with
CLIP Latents"): text -> CLIP text embedding -> diffusion prior P(z_i | y) -> decoder P(x | z_i, y)
-> super-resolution.

- Prior (sec. 2.1, "diffusion prior"): a transformer over [text tokens, CLIP text embedding,
  timestep, noised image embedding, a final query token]; the query's output predicts the
  *clean* image embedding (x0 prediction, MSE). Embeddings are scaled by sqrt(D) so each
  coordinate has about unit variance. Classifier-free guidance: the null text is "".
- Decoder (sec. 2.1, GLIDE-style): the shared pixel UNet (models/networks/unet.py) with the image
  embedding projected to `image_tokens` extra context tokens (concatenated with the CLIP
  text tokens) and added to the timestep embedding (UNet `extra`). Null condition: a zero
  image embedding and the empty prompt.
- Super-resolution: the SR stages of a `cascaded` checkpoint, run by the cascaded family's
  own code (conditioning image, augmentation level = the stage's `noise_aug` setting).

Stages: "text_encoder", "prior", "decoder", "sr1", ... Guidance scale, steps, sampler and
thresholding are set per stage through the request's `stage_overrides` ("prior", "decoder",
"sr1"). The prior is never thresholded unless its stage override asks for it (thresholding
is defined on images in [-1, 1], not on embeddings).

The CLIP is named in config.json ("clip": {"name": "shapes-clip"} offline, or an open_clip
model + pretrained tag); its weights are not copied, and the reference CLIP's sha256 is
checked when the checkpoint loads. Training: bench/training/families/unclip.py.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from models.core.checkpoint import build_networks, load_checkpoint
from models.sampling.diffusion import DiffusionSpec
from models.core.interface import BatchContext, Pipeline, PipelineInfo, StageInfo, StageSettings
from models.sampling.stage import sample_stage
from models.networks.reference_clip import REFERENCE_CLIP_NAME, ClipEmbedder, ReferenceClip, ReferenceClipEmbedder, build_clip_embedder
from models.core.registry import register_family, resolve_checkpoint
from models.networks.unet import unet_config
from models.families.cascaded import build as build_cascaded
from models.sampling.augment import level_embedding

NULL_PROMPT = ""


def unclip_config(*, clip: Mapping[str, Any], embed_dim: int, text_dim: int, text_length: int,
                  decoder_resolution: int = 16, resolution: int | None = None,
                  prior: Mapping[str, Any] | None = None, decoder: Mapping[str, Any] | None = None,
                  image_tokens: int = 4, decoder_text: bool = True, context_dim: int = 64,
                  super_resolution: Mapping[str, Any] | None = None, schedule: str = "cosine",
                  num_timesteps: int = 1000, decoder_prediction: str = "v") -> dict[str, Any]:
    """A checkpoint config for a fresh unCLIP (dimensions come from the chosen CLIP). The decoder
    predicts v by default (Salimans & Ho 2022): an eps-predicting 16 px decoder saturated under
    guidance 3, because x0 = (x - sigma eps) / alpha amplifies eps errors at high noise."""
    prior_cfg = {"embed_dim": embed_dim, "text_dim": text_dim, "text_length": text_length,
                 "width": 128, "layers": 2, "heads": 4, **dict(prior or {})}
    unet = unet_config("tiny", **{"resolution": decoder_resolution, "context_dim": context_dim,
                                  "extra_embed_dim": embed_dim, **dict(decoder or {})})
    return {
        "family": "unclip", "clip": dict(clip), "embed_dim": embed_dim, "text_dim": text_dim,
        "text_length": text_length, "decoder_resolution": decoder_resolution,
        "resolution": int(resolution or decoder_resolution), "super_resolution": dict(super_resolution or {}),
        "networks": {
            "prior": {"type": "unclip_prior", "config": prior_cfg},
            "decoder_cond": {"type": "unclip_decoder_conditioner", "config": {
                "embed_dim": embed_dim, "text_dim": text_dim, "context_dim": context_dim,
                "image_tokens": image_tokens, "use_text": decoder_text}},
            "decoder": {"type": "unet", "config": unet.to_dict()},
        },
        "diffusion": {"prior": DiffusionSpec(schedule, num_timesteps, "x0").to_dict(),
                      "decoder": DiffusionSpec(schedule, num_timesteps, decoder_prediction).to_dict()},
    }


def load_clip(spec: Mapping[str, Any], device: str | torch.device = "cpu") -> ClipEmbedder:
    """The CLIP a checkpoint names: {"name": "shapes-clip", "sha256": ...}, an open_clip
    {"name", "pretrained"}, or {"random": ReferenceClip config, "seed": s} (tests)."""
    if "random" in spec:
        torch.manual_seed(int(spec.get("seed", 0)))
        return ReferenceClipEmbedder(ReferenceClip(spec["random"]), name="random-reference-clip")
    embedder = build_clip_embedder(spec.get("name", REFERENCE_CLIP_NAME), spec.get("pretrained"), device,
                                   spec.get("checkpoint"))
    expected, found = spec.get("sha256"), getattr(embedder, "sha256", None)
    if expected and found and expected != found:
        raise ValueError(f"this unCLIP checkpoint was trained on CLIP weights sha256={expected[:12]}..., but "
                         f"{spec.get('name')} now has sha256={found[:12]}...; its embeddings are a different space. "
                         f"Retrain the unCLIP checkpoint or restore the matching CLIP checkpoint")
    return embedder


def build_super_resolution(spec: Mapping[str, Any]) -> Any:
    """A `cascaded` pipeline whose SR stages this unCLIP runs: {"checkpoint": name or dir} or
    {"params": cascaded architecture params} (random weights, for tests)."""
    if not spec:
        return None
    if "checkpoint" in spec:
        return build_cascaded("unclip-sr", resolve_checkpoint(spec["checkpoint"]))
    return build_cascaded("unclip-sr", None, **dict(spec.get("params", {})))


class UnclipPipeline(Pipeline):
    def __init__(self, name: str, config: Mapping[str, Any], networks: nn.ModuleDict, clip: ClipEmbedder,
                 cascade: Any = None) -> None:
        self.config = dict(config)
        self.nets, self.clip, self.cascade = networks, clip, cascade
        self.specs = {k: DiffusionSpec.from_dict(v) for k, v in self.config["diffusion"].items()}
        self.schedules = {k: spec.build() for k, spec in self.specs.items()}
        self.scale = math.sqrt(int(self.config["embed_dim"]))
        self.decoder_resolution = int(self.config["decoder_resolution"])
        stages = [StageInfo("text_encoder", "text_encoder"), StageInfo("prior", "prior"),
                  StageInfo("decoder", "denoiser", self.decoder_resolution)]
        self.sr_names: list[str] = []
        if cascade is not None:
            if cascade.resolutions[0] != self.decoder_resolution:
                raise ValueError(f"unCLIP decoder makes {self.decoder_resolution} px images but the super-resolution "
                                 f"cascade starts from {cascade.resolutions[0]} px; pick a cascade whose first "
                                 f"resolution is {self.decoder_resolution}")
            self.sr_names = cascade.names[1:]
            stages += [StageInfo(n, "super_resolution", r) for n, r in zip(self.sr_names, cascade.resolutions[1:])]
        resolution = cascade.resolutions[-1] if cascade is not None else self.decoder_resolution
        self.info = PipelineInfo(name=name, family="unclip", resolution=resolution, conditioning="text",
                                 stages=tuple(stages))

    def networks(self) -> Mapping[str, nn.Module]:
        nets = dict(self.nets.items())
        model = getattr(self.clip, "model", None)
        if isinstance(model, nn.Module):
            nets["clip"] = model
        if self.cascade is not None:
            nets.update({f"sr:{n}": self.cascade.nets[n] for n in self.sr_names})
        return nets

    def encode_text(self, prompts: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Prior conditioning for the prompts and for the null prompt: CLIP text tokens, their
        mask and the unit CLIP text embedding (one text-encoder call for both)."""
        enc = self.clip.text_encoder.encode(prompts + [NULL_PROMPT])
        embed = torch.nn.functional.normalize(enc.pooled.float(), dim=-1).to(enc.sequence.dtype)
        parts = {"text_tokens": enc.sequence, "text_mask": enc.mask, "text_embed": embed}
        n = len(prompts)
        return ({k: v[:n] for k, v in parts.items()},
                {k: v[n:].expand(n, *v.shape[1:]) for k, v in parts.items()})

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        prompts = list(ctx.prompts or [])
        staged = StageDefaults(ctx, {"prior": {"thresholding": "none"},
                                     **{n: {"guidance_scale": 1.0} for n in self.sr_names}})
        with ctx.stage("text_encoder"):
            cond, null = self.encode_text(prompts)
        with ctx.stage("prior"):
            embed, _ = sample_stage(staged, "prior", self.nets["prior"], self.schedules["prior"],
                                    prediction=self.specs["prior"].prediction,
                                    shape=(int(self.config["embed_dim"]),), cond=cond, uncond=null)
            image_embed = torch.nn.functional.normalize(embed.float(), dim=-1).to(ctx.dtype)
        with ctx.stage("decoder"):
            dec_cond, dec_null = self.decoder_conditions(image_embed, cond["text_tokens"], null["text_tokens"])
            images, _ = sample_stage(staged, "decoder", self.nets["decoder"], self.schedules["decoder"],
                                     prediction=self.specs["decoder"].prediction,
                                     shape=(3, self.decoder_resolution, self.decoder_resolution),
                                     cond=dec_cond, uncond=dec_null)
        return self.super_resolve(staged, images)

    def decoder_conditions(self, image_embed: torch.Tensor, text: torch.Tensor, null_text: torch.Tensor
                           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Context tokens and extra vector from z_i (scaled by sqrt(D)); null: z_i = 0, empty prompt."""
        scaled = image_embed * self.scale
        zero = torch.zeros_like(scaled)
        conditioner = self.nets["decoder_cond"]
        return ({"context": conditioner(scaled, text), "extra": scaled},
                {"context": conditioner(zero, null_text), "extra": zero})

    def super_resolve(self, ctx: "StageDefaults", images: torch.Tensor) -> torch.Tensor:
        """The cascade's SR stages, driven by the cascaded family's own conditioning code. They are
        not text-conditioned (as in unCLIP); a class-conditional cascade gets its null label, and
        guidance defaults to 1 there (a request may still override it per stage)."""
        if self.cascade is None:
            return images
        cascade = self.cascade
        null_label = {} if cascade.num_classes is None else {
            "y": torch.full((len(ctx),), -1, dtype=torch.long, device=ctx.device)}
        for k, name in enumerate(self.sr_names, start=1):
            ctx.keep("decoder" if k == 1 else self.sr_names[k - 2], images)
            net, res = cascade.nets[name], cascade.resolutions[k]
            with ctx.stage(name):
                level = cascade.aug_level(ctx, k)
                cond = {**null_label, "cond_image": cascade.condition_image(ctx, k, (images, 0.0), level),
                        "extra": level_embedding(torch.full((len(ctx),), level, device=ctx.device)).to(ctx.dtype)}
                images, _ = sample_stage(ctx, name, net, cascade.schedules[name], prediction=cascade.specs[name].prediction,
                                         shape=(net.config.out_channels, res, res), cond=cond, uncond=None)
        return images


class StageDefaults:
    """A BatchContext whose stages get family-specific defaults for settings the request did not
    set for that stage explicitly (e.g. no thresholding of the prior's embeddings)."""

    def __init__(self, ctx: BatchContext, defaults: Mapping[str, Mapping[str, Any]]) -> None:
        self._ctx, self._defaults = ctx, defaults

    def settings(self, stage: str) -> StageSettings:
        settings = self._ctx.settings(stage)
        explicit = self._ctx.request.stage_overrides.get(stage, {})
        changes = {k: v for k, v in self._defaults.get(stage, {}).items() if k not in explicit}
        return replace(settings, **changes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def __len__(self) -> int:
        return len(self._ctx)


ARCH_PARAMS = ("clip", "decoder_resolution", "prior", "decoder", "image_tokens", "decoder_text", "context_dim",
               "super_resolution", "schedule", "num_timesteps", "decoder_prediction")


def clip_dimensions(clip: ClipEmbedder) -> dict[str, int]:
    return {"embed_dim": int(clip.embed_dim), "text_dim": int(clip.text_encoder.dim),
            "text_length": int(clip.text_encoder.max_length)}


def new_config(params: dict[str, Any], seed: int) -> tuple[dict[str, Any], Any]:
    """(config, clip) of a fresh unCLIP from ARCH_PARAMS; the CLIP (default shapes-clip) is
    recorded with its sha256. Seeds torch for the network initialisation that follows."""
    unknown = set(params) - set(ARCH_PARAMS)
    if unknown:
        raise ValueError(f"unclip params {sorted(unknown)} are unknown; known: {list(ARCH_PARAMS)}")
    clip_spec = dict(params.pop("clip", {"name": REFERENCE_CLIP_NAME}))
    clip = load_clip(clip_spec)
    if getattr(clip, "sha256", None):
        clip_spec["sha256"] = clip.sha256
    torch.manual_seed(seed)
    return unclip_config(clip=clip_spec, **clip_dimensions(clip), **params), clip


@register_family("unclip")
def build(name: str, checkpoint: Path | None, **params: Any) -> UnclipPipeline:
    """With a checkpoint: its config (params: `untrained`, `init_seed`, `super_resolution` to swap
    the SR cascade). Without: a random unCLIP from ARCH_PARAMS (clip defaults to shapes-clip)."""
    params = dict(params)
    seed = int(params.pop("init_seed", 0))
    if checkpoint is not None:
        allowed = {"untrained", "super_resolution"}
        unknown = set(params) - allowed
        if unknown:
            raise ValueError(f"unclip params {sorted(unknown)} cannot be combined with checkpoint {checkpoint}; "
                             f"allowed: {sorted(allowed)} (the architecture comes from its config.json)")
        torch.manual_seed(seed)
        config, networks = load_checkpoint(checkpoint, weights=not params.get("untrained", False))
        if config.get("family") != "unclip":
            raise ValueError(f"checkpoint {checkpoint} is for family {config.get('family')!r}, not 'unclip'")
        if "super_resolution" in params:
            config["super_resolution"] = dict(params["super_resolution"] or {})
        clip = load_clip(config["clip"])
    else:
        params.pop("untrained", None)
        config, clip = new_config(params, seed)
        networks = build_networks(config)
    cascade = build_super_resolution(config.get("super_resolution") or {})
    return UnclipPipeline(name, config, networks, clip, cascade)
