"""Family `pixel`: a DDPM-style UNet denoising in pixel space (Ho et al. 2020; Dhariwal & Nichol
2021), optionally class-conditional with a null label for classifier-free guidance.

Checkpoint config.json (see models/checkpoint.py):
  {"family": "pixel", "resolution": 32, "num_classes": 4, "class_names": [...],
   "networks": {"base": {"type": "unet", "config": {...UNetConfig}}},
   "diffusion": {"base": {"schedule": "linear", "num_timesteps": 1000, "prediction": "eps"}}}

`sample_stage` is the one sampling loop every UNet stage (pixel, cascaded, latent) can reuse:
request settings -> sigma grid -> VP denoiser -> CFG -> thresholding -> sampler, with NFE and
noise taken from the `BatchContext`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from models.checkpoint import build_networks, load_checkpoint
from models.diffusion import DiffusionSpec, VPDenoiser, VPSchedule, training_loss
from models.guidance import guided_denoiser
from models.interface import BatchContext, Pipeline, PipelineInfo, StageInfo
from models.registry import register_family
from models.samplers import get_sampler, prior_sample, sampling_sigmas
from models.unet import UNet, unet_config

# Architecture params accepted when no checkpoint is given (random initialisation).
ARCH_PARAMS = ("resolution", "num_classes", "class_names", "preset", "unet", "schedule", "num_timesteps", "prediction")
# Params accepted with a checkpoint: untrained=true keeps its config but not its weights.
CHECKPOINT_PARAMS = ("untrained", "init_seed")


def sample_stage(ctx: BatchContext, stage: str, network: nn.Module, schedule: VPSchedule, *,
                 shape: tuple[int, ...], prediction: str = "eps", cond: Mapping[str, Any] | None = None,
                 uncond: Mapping[str, Any] | None = None, stop_sigma: float = 0.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one diffusion stage for ctx's batch. Returns (x at the last sigma, last x0 estimate);
    they are equal unless stop_sigma > 0 (a truncated reverse process)."""
    settings = ctx.settings(stage)
    learn_sigma = bool(getattr(getattr(network, "config", None), "learn_sigma", False))
    denoise = guided_denoiser(
        VPDenoiser(ctx.counted(stage, network), schedule, prediction, learn_sigma, dtype=ctx.dtype),
        scale=settings.guidance_scale, cond=cond or {}, uncond=uncond,
        thresholding=settings.thresholding, percentile=settings.dynamic_threshold_percentile)
    sigmas = sampling_sigmas(schedule, settings.sampler, settings.steps).to(ctx.device)
    if stop_sigma > 0:
        if stop_sigma >= float(sigmas[0]):
            raise ValueError(f"stage {stage!r}: truncation level sigma={stop_sigma:.3g} is not below the "
                             f"start sigma {float(sigmas[0]):.3g}; lower the noise_aug level")
        sigmas = torch.cat([sigmas[sigmas > stop_sigma], sigmas.new_tensor([stop_sigma])])
    noise = ctx.noise(stage)
    x = prior_sample(noise, shape, float(sigmas[0])).float()   # sampler state in float32 whatever the net dtype
    last: dict[str, torch.Tensor] = {}
    x = get_sampler(settings.sampler)(denoise, x, sigmas, noise=noise, eta=settings.eta,
                                      callback=lambda i, xi, x0: last.__setitem__("x0", x0))
    return x, last["x0"]


def label_conditioning(ctx: BatchContext, num_classes: int | None
                       ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(cond, uncond) network kwargs for class conditioning; the null label is -1."""
    if num_classes is None:
        return {}, None
    labels = ctx.labels if ctx.labels is not None else torch.full((len(ctx),), -1, dtype=torch.long)
    labels = labels.to(ctx.device)
    return {"y": labels}, {"y": torch.full_like(labels, -1)}


class PixelPipeline(Pipeline):
    def __init__(self, name: str, config: Mapping[str, Any], networks: nn.ModuleDict) -> None:
        self.config = dict(config)
        self.unet = networks["base"]
        self.spec = DiffusionSpec.from_dict(self.config["diffusion"]["base"])
        self.schedule = self.spec.build()
        self.num_classes = self.config.get("num_classes")
        resolution = int(self.config["resolution"])
        self.info = PipelineInfo(
            name=name, family="pixel", resolution=resolution,
            conditioning="class" if self.num_classes else "none",
            stages=(StageInfo("base", "denoiser", resolution),), num_classes=self.num_classes)

    def networks(self) -> Mapping[str, nn.Module]:
        return {"base": self.unet}

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        cond, uncond = label_conditioning(ctx, self.num_classes)
        channels = self.unet.config.out_channels
        with ctx.stage("base"):
            images, _ = sample_stage(ctx, "base", self.unet, self.schedule, prediction=self.spec.prediction,
                                     shape=(channels, self.info.resolution, self.info.resolution),
                                     cond=cond, uncond=uncond)
        return images


def pixel_config(resolution: int = 32, num_classes: int | None = None, class_names: list[str] | None = None,
                 preset: str = "tiny", unet: Mapping[str, Any] | None = None, schedule: str = "linear",
                 num_timesteps: int = 1000, prediction: str = "eps") -> dict[str, Any]:
    """A checkpoint config for a fresh pixel model (the architecture params of the family)."""
    net = unet_config(preset, **{"resolution": resolution, "num_classes": num_classes, **dict(unet or {})})
    return {
        "family": "pixel", "resolution": resolution, "num_classes": num_classes,
        "class_names": list(class_names) if class_names else None,
        "networks": {"base": {"type": "unet", "config": net.to_dict()}},
        "diffusion": {"base": DiffusionSpec(schedule, num_timesteps, prediction).to_dict()},
    }


def load_family_networks(family: str, checkpoint: Path | None, params: dict[str, Any],
                         make_config: Any, arch_params: tuple[str, ...] = ARCH_PARAMS
                         ) -> tuple[dict[str, Any], nn.ModuleDict]:
    """Config + networks for a family builder: from a checkpoint (optionally untrained, i.e. its
    architecture with fresh weights) or, without one, from architecture params."""
    seed = int(params.pop("init_seed", 0))
    if checkpoint is None:
        unknown = set(params) - set(arch_params) - {"untrained"}
        if unknown:
            raise ValueError(f"{family} pipeline params {sorted(unknown)} are unknown; known: "
                             f"{list(arch_params) + list(CHECKPOINT_PARAMS)}")
        params.pop("untrained", None)
        torch.manual_seed(seed)
        config = make_config(**params)
        return config, build_networks(config)
    unknown = set(params) - set(CHECKPOINT_PARAMS)
    if unknown:
        raise ValueError(f"{family} pipeline params {sorted(unknown)} cannot be combined with checkpoint "
                         f"{checkpoint}: the architecture comes from its config.json. Allowed: {list(CHECKPOINT_PARAMS)}")
    untrained = bool(params.pop("untrained", False))
    torch.manual_seed(seed)
    config, networks = load_checkpoint(checkpoint, weights=not untrained)
    if config.get("family") != family:
        raise ValueError(f"checkpoint {checkpoint} is for family {config.get('family')!r}, not {family!r}")
    return config, networks


@register_family("pixel")
def build(name: str, checkpoint: Path | None, **params: Any) -> PixelPipeline:
    config, networks = load_family_networks("pixel", checkpoint, dict(params), pixel_config)
    return PixelPipeline(name, config, networks)


class PixelTrainable:
    """What `bench.train` needs: the networks and a loss on a batch (see bench/training/trainable.py)."""

    def __init__(self, config: dict[str, Any], networks: nn.ModuleDict) -> None:
        self.config = config
        self.networks = networks
        self.spec = DiffusionSpec.from_dict(config["diffusion"]["base"])
        self.schedule = self.spec.build()

    def training_loss(self, batch: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor:
        unet: UNet = self.networks["base"]
        kwargs = {"y": batch["label"]} if unet.config.num_classes is not None else {}
        return training_loss(unet, batch["image"], self.schedule, prediction=self.spec.prediction,
                             learn_sigma=unet.config.learn_sigma, generator=generator, **kwargs)

    def checkpoint_config(self) -> dict[str, Any]:
        return self.config


def make_trainable(name: str, params: Mapping[str, Any], *, resolution: int, num_classes: int | None,
                   class_names: list[str] | None) -> PixelTrainable:
    """Training entry (bench.train): architecture params, with resolution and classes from the data
    unless the params set them (class conditioning is on when the data has classes)."""
    params = dict(params)
    params.setdefault("resolution", resolution)
    params.setdefault("num_classes", num_classes)
    params.setdefault("class_names", class_names)
    config, networks = load_family_networks("pixel", None, params, pixel_config)
    return PixelTrainable(config, networks)
