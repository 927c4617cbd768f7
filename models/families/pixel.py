"""Family `pixel`: a DDPM-style UNet denoising in pixel space (Ho et al. 2020; Dhariwal & Nichol
2021), optionally class-conditional with a null label for classifier-free guidance.

Checkpoint config.json (see models/core/checkpoint.py):
  {"family": "pixel", "resolution": 32, "num_classes": 4, "class_names": [...],
   "networks": {"base": {"type": "unet", "config": {...UNetConfig}}},
   "diffusion": {"base": {"schedule": "linear", "num_timesteps": 1000, "prediction": "eps"}}}

Sampling runs through the shared stage loop (`models.sampling.stage`); training lives in
`bench.training.families.pixel`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from models.core.interface import BatchContext, Pipeline, PipelineInfo, RequestError, SampleRequest, StageInfo
from models.core.registry import register_family
from models.families.base import load_family_networks
from models.networks.unet import unet_config
from models.sampling.diffusion import DiffusionSpec
from models.sampling.repaint import repaint_stage
from models.sampling.stage import label_conditioning, sample_stage

# Architecture params accepted when no checkpoint is given (random initialisation).
ARCH_PARAMS = ("resolution", "num_classes", "class_names", "preset", "unet", "schedule", "num_timesteps", "prediction")


class PixelPipeline(Pipeline):
    inpaints_by_resampling = True   # task "inpaint" is RePaint, with its jump_length / jump_n_sample

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

    @property
    def supported_tasks(self) -> frozenset[str]:
        return frozenset({"generate", "inpaint"})   # inpainting training-free, by RePaint

    def check_request(self, request: SampleRequest) -> None:
        super().check_request(request)
        if request.task == "inpaint":
            want = (self.unet.config.out_channels, self.info.resolution, self.info.resolution)
            if tuple(request.input_images.shape[1:]) != want:
                raise RequestError(f"pipeline {self.info.name!r} inpaints {want[1]}x{want[2]} images with {want[0]} "
                                   f"channels; input_images are {tuple(request.input_images.shape[1:])}: resize them "
                                   "or use data at the pipeline's resolution")
            sampler = request.settings_for("base").sampler
            if sampler != "ddpm":
                raise RequestError(f"pipeline {self.info.name!r} inpaints by RePaint, which resamples with ancestral "
                                   f"DDPM steps: the request asks for sampler={sampler}; use sampler=ddpm")

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        cond, uncond = label_conditioning(ctx, self.num_classes)
        channels = self.unet.config.out_channels
        if ctx.request.task == "inpaint":
            with ctx.stage("base"):
                return repaint_stage(ctx, "base", self.unet, self.schedule, prediction=self.spec.prediction,
                                     shape=(channels, self.info.resolution, self.info.resolution),
                                     known=ctx.input_images, mask=ctx.masks, cond=cond, uncond=uncond)
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


@register_family("pixel")
def build(name: str, checkpoint: Path | None, **params: Any) -> PixelPipeline:
    config, networks = load_family_networks("pixel", checkpoint, dict(params), pixel_config, ARCH_PARAMS)
    return PixelPipeline(name, config, networks)
