"""Family `imagen` (Saharia et al. 2022, "Photorealistic Text-to-Image Diffusion Models with
Deep Language Understanding"): a frozen language-model text encoder, a text-conditioned base
model and text-conditioned super-resolution stages with noise conditioning augmentation,
classifier-free guidance with dynamic thresholding at every stage, and the Efficient U-Net.

- Text (sec. 2.1): a frozen pretrained LM from `models.networks.text_encoders` (offline: all-MiniLM-L6-v2
  from its wheel; online any T5 encoder, Imagen used T5-XXL), or a small trainable encoder.
  The token states (padding zeroed) are the cross-attention context; their pooled vector is
  added to the timestep embedding (Appendix B: "pooled embedding vector ... added to the
  diffusion timestep embedding"). The null condition for CFG is the empty prompt.
- Cascade (sec. 2.4): base at resolutions[0], SR stages conditioned on the upsampled image of
  the stage below, corrupted by noise augmentation whose level is fed to the model
  (models/sampling/augment.py, shared with the cascaded family); at sampling time the level is the
  stage's `noise_aug` setting (default: the checkpoint's `default_noise_aug`).
- Guidance and thresholding (sec. 2.2-2.3): every stage samples through the shared
  `models.families.pixel.sample_stage`, so the request's guidance scale and thresholding (dynamic:
  percentile p of |x0|, clip to [-s, s], divide by s) apply to every stage, with per-stage
  overrides ("base", "sr1", ...).
- Networks: `unet_type: efficient_unet` (models/networks/efficient_unet.py, the three Efficient U-Net
  switches as config) or `unet` (the shared UNet).
Training: bench/training/families/imagen.py (`make_trainable`, used by `python -m bench.train`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from models.sampling.augment import LEVEL_EMBED_DIM, ConditioningAugmentation, level_embedding, noise_aug_sigma
from models.core.checkpoint import build_networks, load_checkpoint
from models.sampling.diffusion import DiffusionSpec
from models.networks.efficient_unet import efficient_unet_config
from models.core.interface import BatchContext, Pipeline, PipelineInfo, StageInfo
from models.sampling.stage import sample_stage
from models.core.registry import register_family
from models.networks.text_encoders import TextEncoder, build_text_encoder
from models.networks.unet import unet_config

NULL_PROMPT = ""
DEFAULT_TEXT_ENCODER = {"kind": "hf", "name": "minilm", "max_length": 24}


def stage_names(count: int) -> list[str]:
    return ["base"] + [f"sr{k}" for k in range(1, count)]


def text_dimensions(spec: Mapping[str, Any]) -> tuple[int, int]:
    """(token dim, max length) of a text-encoder spec, without loading a pretrained model's weights
    where they are known (MiniLM: 384)."""
    if spec.get("kind") == "hf" and spec.get("name", "minilm") in ("minilm", "all-MiniLM-L6-v2",
                                                                     "sentence-transformers/all-MiniLM-L6-v2"):
        return 384, int(spec.get("max_length", 24))
    encoder = build_text_encoder(spec)
    return int(encoder.dim), int(encoder.max_length)


def imagen_config(resolutions: Sequence[int] = (16, 32), text_encoder: Mapping[str, Any] | None = None,
                  unet_type: str = "efficient_unet", switches: str | None = "efficient_unet",
                  unet: Mapping[str, Any] | None = None, sr_unet: Mapping[str, Any] | None = None,
                  augmentation: Mapping[str, Any] | None = None, default_noise_aug: float = 0.1,
                  schedule: str = "cosine", num_timesteps: int = 1000, prediction: str = "v") -> dict[str, Any]:
    """A checkpoint config for a fresh Imagen-style cascade."""
    resolutions = [int(r) for r in resolutions]
    if not resolutions or any(b <= a for a, b in zip(resolutions, resolutions[1:])):
        raise ValueError(f"imagen resolutions must be increasing sizes, got {resolutions}")
    if unet_type not in ("efficient_unet", "unet"):
        raise ValueError(f"imagen unet_type {unet_type!r} is unknown; choose 'efficient_unet' or 'unet'")
    text = dict(text_encoder or DEFAULT_TEXT_ENCODER)
    text_dim, text_length = text_dimensions(text)
    aug = dict(augmentation or {"kind": "noise", "max_level": 0.5})
    ConditioningAugmentation(**aug)
    noise_aug_sigma(default_noise_aug)
    names = stage_names(len(resolutions))
    networks: dict[str, Any] = {}
    for k, (name, res) in enumerate(zip(names, resolutions)):
        values = {"resolution": res, "context_dim": text_dim,
                  "extra_embed_dim": text_dim + (LEVEL_EMBED_DIM if k else 0), **dict(unet or {}),
                  **({"cond_channels": 3, **dict(sr_unet or {})} if k else {})}
        if unet_type == "efficient_unet":
            net = efficient_unet_config(switches, **values)
        else:
            net = unet_config("tiny", **values)
        networks[name] = {"type": unet_type, "config": net.to_dict()}
    if text.get("kind") == "trainable":
        networks["text_encoder"] = {"type": "text_encoder", "config": text}
    return {"family": "imagen", "resolutions": resolutions, "resolution": resolutions[-1], "text_encoder": text,
            "text_dim": text_dim, "text_length": text_length, "augmentation": [aug] * (len(resolutions) - 1),
            "default_noise_aug": [float(default_noise_aug)] * (len(resolutions) - 1), "networks": networks,
            "diffusion": {n: DiffusionSpec(schedule, num_timesteps, prediction).to_dict() for n in names}}


def text_conditions(encoder: TextEncoder, prompts: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(cond, null) UNet inputs: context = token states with padding zeroed, pooled = extra;
    the null condition is the empty prompt (one encoder call for both)."""
    enc = encoder.encode(prompts + [NULL_PROMPT])
    context = enc.sequence * enc.mask.unsqueeze(-1).to(enc.sequence.dtype)
    n = len(prompts)
    return ({"context": context[:n], "pooled": enc.pooled[:n]},
            {"context": context[n:].expand(n, -1, -1), "pooled": enc.pooled[n:].expand(n, -1)})


def stage_inputs(text: Mapping[str, torch.Tensor], level: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """UNet kwargs of a stage: context, and extra = pooled text (+ the augmentation level's features for SR)."""
    extra = text["pooled"]
    if level is not None:
        extra = torch.cat([extra, level_embedding(level).to(extra)], dim=1)
    return {"context": text["context"], "extra": extra}


class ImagenPipeline(Pipeline):
    def __init__(self, name: str, config: Mapping[str, Any], networks: nn.ModuleDict,
                 text_encoder: TextEncoder) -> None:
        self.config = dict(config)
        self.nets, self.text_encoder = networks, text_encoder
        self.resolutions = [int(r) for r in self.config["resolutions"]]
        self.names = stage_names(len(self.resolutions))
        self.specs = {n: DiffusionSpec.from_dict(self.config["diffusion"][n]) for n in self.names}
        self.schedules = {n: spec.build() for n, spec in self.specs.items()}
        self.augs = [ConditioningAugmentation(**a) for a in self.config["augmentation"]]
        self.default_levels = [float(v) for v in self.config["default_noise_aug"]]
        stages = [StageInfo("text_encoder", "text_encoder")] + [
            StageInfo(n, "denoiser" if k == 0 else "super_resolution", r)
            for k, (n, r) in enumerate(zip(self.names, self.resolutions))]
        self.info = PipelineInfo(name=name, family="imagen", resolution=self.resolutions[-1],
                                 conditioning="text", stages=tuple(stages))

    def networks(self) -> Mapping[str, nn.Module]:
        return {"text_encoder": self.text_encoder, **{n: self.nets[n] for n in self.names}}

    def aug_level(self, ctx: BatchContext, k: int) -> float:
        level = ctx.settings(self.names[k]).noise_aug
        level = self.default_levels[k - 1] if level is None else float(level)
        noise_aug_sigma(level)
        return level

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        with ctx.stage("text_encoder"):
            cond, null = text_conditions(self.text_encoder, list(ctx.prompts or []))
        images = None
        for k, (name, res) in enumerate(zip(self.names, self.resolutions)):
            net = self.nets[name]
            with ctx.stage(name):
                if k == 0:
                    stage_cond, stage_null = stage_inputs(cond), stage_inputs(null)
                else:
                    level = self.aug_level(ctx, k)
                    levels = torch.full((len(ctx),), level, device=ctx.device)
                    low = images.clamp(-1, 1)
                    aug = self.augs[k - 1]
                    eps = ctx.noise(f"{name}:aug").randn_like(low) if aug.kind == "noise" else None
                    cond_image = aug.condition(low, levels, res, eps)
                    stage_cond = {**stage_inputs(cond, levels), "cond_image": cond_image}
                    stage_null = {**stage_inputs(null, levels), "cond_image": cond_image}
                images, _ = sample_stage(ctx, name, net, self.schedules[name], prediction=self.specs[name].prediction,
                                         shape=(3, res, res), cond=stage_cond, uncond=stage_null)
            if k + 1 < len(self.names):
                ctx.keep(name, images)
        return images


ARCH_PARAMS = ("resolutions", "text_encoder", "unet_type", "switches", "unet", "sr_unet", "augmentation",
               "default_noise_aug", "schedule", "num_timesteps", "prediction")


def load_text_encoder(config: Mapping[str, Any], networks: nn.ModuleDict) -> TextEncoder:
    """The trainable encoder stored in the checkpoint, or the frozen pretrained one it names."""
    if "text_encoder" in networks:
        return networks["text_encoder"]
    return build_text_encoder(config["text_encoder"])


def build_config_and_networks(checkpoint: Path | None, params: dict[str, Any]) -> tuple[dict[str, Any], nn.ModuleDict]:
    seed = int(params.pop("init_seed", 0))
    untrained = bool(params.pop("untrained", False))
    torch.manual_seed(seed)
    if checkpoint is None:
        unknown = set(params) - set(ARCH_PARAMS)
        if unknown:
            raise ValueError(f"imagen params {sorted(unknown)} are unknown; known: {list(ARCH_PARAMS)}")
        config = imagen_config(**params)
        return config, build_networks(config)
    if params:
        raise ValueError(f"imagen params {sorted(params)} cannot be combined with checkpoint {checkpoint}: the "
                         f"architecture comes from its config.json; allowed: untrained, init_seed")
    config, networks = load_checkpoint(checkpoint, weights=not untrained)
    if config.get("family") != "imagen":
        raise ValueError(f"checkpoint {checkpoint} is for family {config.get('family')!r}, not 'imagen'")
    return config, networks


@register_family("imagen")
def build(name: str, checkpoint: Path | None, **params: Any) -> ImagenPipeline:
    config, networks = build_config_and_networks(checkpoint, dict(params))
    return ImagenPipeline(name, config, networks, load_text_encoder(config, networks))
