"""Family `cascaded` (Ho et al. 2022, "Cascaded Diffusion Models for High Fidelity Image
Generation"): a base model at low resolution, then super-resolution (SR) models that denoise
at a higher resolution conditioned on the upsampled lower-resolution image (concatenated as
extra input channels). Conditioning augmentation (models/sampling/augment.py) corrupts that image during
training, and its level is given to the SR model; at sampling time the level is the SR stage's
`noise_aug` setting of the request (default: the checkpoint's `default_noise_aug`).

Stages are "base", "sr1", "sr2", ...; each stage's time and NFE are measured separately and the
intermediate images are exposed through `SampleBatch.stage_outputs`.

Checkpoint config.json: {"family": "cascaded", "resolutions": [16, 32], "resolution": 32,
 "num_classes", "class_names", "augmentation": [{"kind", "max_level"}, ...one per SR stage],
 "default_noise_aug": [0.1, ...], "networks": {"base": unet, "sr1": unet(cond_channels=3,
 extra_embed_dim=32)}, "diffusion": {"base": {...}, "sr1": {...}}}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from models.sampling.augment import (LEVEL_EMBED_DIM, ConditioningAugmentation, level_embedding,
                            noise_aug_sigma, upsample)
from models.sampling.diffusion import DiffusionSpec
from models.core.interface import BatchContext, Pipeline, PipelineInfo, RequestError, SampleRequest, StageInfo
from models.families.base import load_family_networks
from models.sampling.stage import label_conditioning, sample_stage
from models.core.registry import register_family
from models.networks.unet import unet_config


def stage_names(count: int) -> list[str]:
    return ["base"] + [f"sr{k}" for k in range(1, count)]


def cascade_config(resolutions: Sequence[int] = (16, 32), num_classes: int | None = None,
                   class_names: list[str] | None = None, preset: str = "tiny",
                   unet: Mapping[str, Any] | None = None, sr_unet: Mapping[str, Any] | None = None,
                   schedule: str = "linear", num_timesteps: int = 1000, prediction: str = "eps",
                   augmentation: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
                   default_noise_aug: float | Sequence[float] = 0.1) -> dict[str, Any]:
    """A checkpoint config for a fresh cascade (the architecture params of the family)."""
    resolutions = [int(r) for r in resolutions]
    if len(resolutions) < 2 or any(b <= a for a, b in zip(resolutions, resolutions[1:])):
        raise ValueError(f"cascade resolutions must be >= 2 increasing sizes, got {resolutions}")
    n_sr = len(resolutions) - 1
    augs = [dict(augmentation or {})] * n_sr if not isinstance(augmentation, Sequence) else [dict(a) for a in augmentation]
    levels = [float(default_noise_aug)] * n_sr if isinstance(default_noise_aug, (int, float)) else list(default_noise_aug)
    if len(augs) != n_sr or len(levels) != n_sr:
        raise ValueError(f"a cascade over {resolutions} has {n_sr} SR stages: give one augmentation and one "
                         f"default_noise_aug per SR stage (or a single one for all)")
    for aug, level in zip(augs, levels):
        aug.pop("truncated", None)                 # a sampling-time choice: the `truncated` pipeline param
        ConditioningAugmentation(**aug)           # validate now
        noise_aug_sigma(level)
    names = stage_names(len(resolutions))
    networks, diffusion = {}, {}
    for k, (name, res) in enumerate(zip(names, resolutions)):
        extra = {} if k == 0 else {"cond_channels": 3, "extra_embed_dim": LEVEL_EMBED_DIM, **dict(sr_unet or {})}
        net = unet_config(preset, **{"resolution": res, "num_classes": num_classes, **dict(unet or {}), **extra})
        networks[name] = {"type": "unet", "config": net.to_dict()}
        diffusion[name] = DiffusionSpec(schedule, num_timesteps, prediction).to_dict()
    return {"family": "cascaded", "resolutions": resolutions, "resolution": resolutions[-1],
            "num_classes": num_classes, "class_names": list(class_names) if class_names else None,
            "augmentation": augs, "default_noise_aug": levels, "networks": networks, "diffusion": diffusion}


class CascadedPipeline(Pipeline):
    def __init__(self, name: str, config: Mapping[str, Any], networks: nn.ModuleDict, truncated: bool = False) -> None:
        self.config = dict(config)
        self.resolutions = [int(r) for r in self.config["resolutions"]]
        self.names = stage_names(len(self.resolutions))
        self.nets = networks
        self.specs = {n: DiffusionSpec.from_dict(self.config["diffusion"][n]) for n in self.names}
        self.schedules = {n: spec.build() for n, spec in self.specs.items()}
        self.augs = [ConditioningAugmentation(**a, truncated=truncated) for a in self.config["augmentation"]]
        self.default_levels = [float(v) for v in self.config["default_noise_aug"]]
        self.num_classes = self.config.get("num_classes")
        self.info = PipelineInfo(
            name=name, family="cascaded", resolution=self.resolutions[-1],
            conditioning="class" if self.num_classes else "none",
            stages=tuple(StageInfo(n, "denoiser" if k == 0 else "super_resolution", r)
                         for k, (n, r) in enumerate(zip(self.names, self.resolutions))),
            num_classes=self.num_classes)

    def networks(self) -> Mapping[str, nn.Module]:
        return dict(self.nets.items())

    @property
    def supported_tasks(self) -> frozenset[str]:
        """"superres": the SR stages alone, from a given low-resolution image (issue 21)."""
        return frozenset({"generate", "superres"})

    @property
    def superres_input_sizes(self) -> tuple[int, ...]:
        """Its SR stages' input sizes: every stage's resolution but the last."""
        return tuple(self.resolutions[:-1])

    def check_request(self, request: SampleRequest) -> None:
        super().check_request(request)
        if request.task == "superres":
            size = tuple(request.input_images.shape[1:])
            starts = [(3, r, r) for r in self.resolutions[:-1]]
            if size not in starts:
                raise RequestError(f"pipeline {self.info.name!r} super-resolves 3-channel images of "
                                   f"{[r for _, r, _ in starts]} px (its SR stages' inputs); input_images are {size}")

    def first_stage(self, ctx: BatchContext) -> int:
        """The first stage to run: 0 (base) to generate, else the SR stage that takes the input's size."""
        if ctx.request.task != "superres":
            return 0
        return self.resolutions.index(int(ctx.input_images.shape[-1])) + 1

    def aug_level(self, ctx: BatchContext, k: int) -> float:
        """The conditioning-augmentation level of SR stage k (1-based): request setting or default."""
        level = ctx.settings(self.names[k]).noise_aug
        level = self.default_levels[k - 1] if level is None else float(level)
        noise_aug_sigma(level)   # validates the range
        return level

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        cond, uncond = label_conditioning(ctx, self.num_classes)
        images = None
        first = self.first_stage(ctx)
        if first > 0:                 # super-resolution alone: the given image stands for stage first-1's output
            images = (ctx.input_images, 0.0)
        for k, (name, res) in enumerate(zip(self.names, self.resolutions)):
            if k < first:
                continue
            net = self.nets[name]
            truncated_next = k + 1 < len(self.names) and self.augs[k].truncated
            stop = noise_aug_sigma(self.aug_level(ctx, k + 1)) if truncated_next else 0.0
            with ctx.stage(name):
                stage_cond, stage_uncond = dict(cond), None if uncond is None else dict(uncond)
                if k > 0:
                    level = self.aug_level(ctx, k)
                    extra = {"cond_image": self.condition_image(ctx, k, images, level),
                             "extra": level_embedding(torch.full((len(ctx),), level, device=ctx.device)).to(ctx.dtype)}
                    stage_cond.update(extra)
                    if stage_uncond is not None:
                        stage_uncond.update(extra)
                x, x0 = sample_stage(ctx, name, net, self.schedules[name], prediction=self.specs[name].prediction,
                                     shape=(net.config.out_channels, res, res), cond=stage_cond,
                                     uncond=stage_uncond, stop_sigma=stop)
            if k + 1 < len(self.names):
                ctx.keep(name, x0)
            images = (x, stop)
        return images[0]

    def condition_image(self, ctx: BatchContext, k: int, previous: tuple[torch.Tensor, float], level: float
                        ) -> torch.Tensor:
        """SR stage k's conditioning image from the stage below's output. Truncated: that output is
        already z_s in VE coordinates, so z_s(VP) = x / sqrt(1 + sigma_s^2). Otherwise: clip the
        finished image and corrupt it to `level` with this stage's own per-sample noise stream."""
        x, stop = previous
        aug, res = self.augs[k - 1], self.resolutions[k]
        if stop > 0:
            return upsample(x / (1 + stop ** 2) ** 0.5, res)
        low = x.clamp(-1, 1)
        eps = ctx.noise(f"{self.names[k]}:aug").randn_like(low) if aug.kind == "noise" else None
        return aug.condition(low, torch.full((len(ctx),), level, device=ctx.device), res, eps)


CASCADE_ARCH_PARAMS = ("resolutions", "num_classes", "class_names", "preset", "unet", "sr_unet", "schedule",
                       "num_timesteps", "prediction", "augmentation", "default_noise_aug")


@register_family("cascaded")
def build(name: str, checkpoint: Path | None, **params: Any) -> CascadedPipeline:
    """`truncated` (a sampling-time choice, Ho et al. 2022 sec. 4.3) is accepted with or without a checkpoint."""
    params = dict(params)
    truncated = bool(params.pop("truncated", False))
    config, networks = load_family_networks("cascaded", checkpoint, params, cascade_config, CASCADE_ARCH_PARAMS)
    return CascadedPipeline(name, config, networks, truncated=truncated)
