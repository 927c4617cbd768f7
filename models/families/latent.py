"""What the two latent families (`latent_unet`, `latent_dit`) share: a frozen, calibrated
autoencoder around a denoiser that works on its latents (Rombach et al. 2022, sec. 3-4).

Checkpoint config.json (models/core/checkpoint.py format; self-contained: the autoencoder's weights
are stored in it, under the role "autoencoder"):
  {"family": "latent_unet" | "latent_dit", "resolution": 32, "conditioning": "class",
   "num_classes": 8, "class_names": [...], "latent_shape": [c, h, w],
   "networks": {"autoencoder": {...}, "denoiser": {...}, ["conditioner": {...}]},
   "diffusion": {"denoiser": {"schedule": ..., "num_timesteps": ..., "prediction": ...}},
   "autoencoder_source": {"checkpoint": ..., "latent_scale": {...}}}

Sampling has two timed stages: "denoiser" (the reverse diffusion on latents, noise from the
per-sample stream "denoiser") and "decoder" (the autoencoder's decoder; its NFE is 1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from models.networks.autoencoder import Autoencoder, autoencoder_spec, build_autoencoder, load_autoencoder
from models.core.checkpoint import build_networks, load_checkpoint, load_config
from models.sampling.diffusion import DiffusionSpec
from models.core.interface import BatchContext, Pipeline, PipelineInfo, RequestError, SampleRequest, StageInfo
from models.sampling.stage import sample_stage
from models.core.registry import resolve_checkpoint

CHECKPOINT_PARAMS = ("untrained", "init_seed")
TRAINED_ROLES_KEPT_WHEN_UNTRAINED = ("autoencoder",)   # "untrained" re-initialises the second stage only


def frozen_autoencoder(source: str | Mapping[str, Any]) -> tuple[Autoencoder, dict[str, Any]]:
    """A trained, calibrated autoencoder checkpoint (name or directory), or an AutoencoderConfig
    mapping for a randomly initialised one (tests, speed runs). Returns it frozen, with provenance."""
    if isinstance(source, Mapping):
        ae = build_autoencoder(dict(source))
        return ae.requires_grad_(False).eval(), {"checkpoint": None, "latent_scale": None}
    directory = resolve_checkpoint(str(source))
    scale = load_config(directory).get("latent_scale")
    if not scale:
        raise ValueError(f"autoencoder checkpoint {directory} has no latent scale factor yet; compute it with "
                         f"`python -m bench.training.families.autoencoder calibrate {directory} --data <its data>`")
    ae = load_autoencoder(directory)
    return ae.requires_grad_(False).eval(), {"checkpoint": str(source), "latent_scale": scale}


def latent_base_config(family: str, *, resolution: int, autoencoder: Autoencoder, provenance: dict[str, Any],
                       conditioning: str, num_classes: int | None, class_names: list[str] | None,
                       diffusion: DiffusionSpec) -> dict[str, Any]:
    return {
        "family": family, "resolution": resolution, "conditioning": conditioning,
        "num_classes": num_classes if conditioning == "class" else None,
        "class_names": list(class_names) if class_names and conditioning == "class" else None,
        "latent_shape": list(autoencoder.latent_shape(resolution)),
        "networks": {"autoencoder": autoencoder_spec(autoencoder)},
        "diffusion": {"denoiser": diffusion.to_dict()},
        "autoencoder_source": provenance,
    }


def build_latent_networks(family: str, checkpoint: Path | None, params: dict[str, Any],
                          make_config: Callable[..., tuple[dict[str, Any], Autoencoder]]
                          ) -> tuple[dict[str, Any], nn.ModuleDict]:
    """Config + networks from a checkpoint (with untrained=true: its trained autoencoder, a fresh
    second stage) or, without one, from architecture params (`make_config(**params)` returns the
    config and the autoencoder whose weights to use)."""
    seed = int(params.pop("init_seed", 0))
    if checkpoint is None:
        params.pop("untrained", None)
        torch.manual_seed(seed)
        config, autoencoder = make_config(**params)
        networks = build_networks(config)
        networks["autoencoder"] = autoencoder
    else:
        unknown = set(params) - set(CHECKPOINT_PARAMS)
        if unknown:
            raise ValueError(f"{family} pipeline params {sorted(unknown)} cannot be combined with checkpoint "
                             f"{checkpoint}: the architecture comes from its config.json. "
                             f"Allowed: {list(CHECKPOINT_PARAMS)}")
        config, networks = load_checkpoint(checkpoint)
        if config.get("family") != family:
            raise ValueError(f"checkpoint {checkpoint} is for family {config.get('family')!r}, not {family!r}")
        if params.get("untrained"):
            torch.manual_seed(seed)
            fresh = build_networks(config)
            for role in networks:
                if role not in TRAINED_ROLES_KEPT_WHEN_UNTRAINED:
                    networks[role] = fresh[role]
    networks["autoencoder"].requires_grad_(False).eval()
    return config, networks


class LatentPipeline(Pipeline):
    """Reverse diffusion on latents, then the decoder. Subclasses say how conditions reach
    the denoiser (`conditioning_kwargs`)."""

    family = "latent"

    def __init__(self, name: str, config: Mapping[str, Any], networks: nn.ModuleDict) -> None:
        self.config = dict(config)
        self.autoencoder: Autoencoder = networks["autoencoder"]
        self.denoiser: nn.Module = networks["denoiser"]
        self.conditioner: nn.Module | None = networks["conditioner"] if "conditioner" in networks else None
        self.spec = DiffusionSpec.from_dict(self.config["diffusion"]["denoiser"])
        self.schedule = self.spec.build()
        self.latent_shape = tuple(int(v) for v in self.config["latent_shape"])
        resolution = int(self.config["resolution"])
        self.num_classes = self.config.get("num_classes")
        self.info = PipelineInfo(
            name=name, family=self.family, resolution=resolution, conditioning=self.config["conditioning"],
            stages=(StageInfo("denoiser", "denoiser", self.latent_shape[-1]),
                    StageInfo("decoder", "decoder", resolution)),
            num_classes=self.num_classes)

    def networks(self) -> Mapping[str, nn.Module]:
        nets = {"autoencoder": self.autoencoder, "denoiser": self.denoiser}
        if self.conditioner is not None:
            nets["conditioner"] = self.conditioner
        return nets

    def check_request(self, request: SampleRequest) -> None:
        super().check_request(request)
        for stage in self.info.stage_names:
            if request.settings_for(stage).thresholding != "none":
                raise RequestError(f"pipeline {self.info.name!r} denoises scaled latents, which are not bounded "
                                   "to [-1, 1]: x0 thresholding does not apply; use thresholding=none")

    def conditioning_kwargs(self, ctx: BatchContext) -> tuple[dict[str, Any], dict[str, Any] | None]:
        raise NotImplementedError

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        with ctx.stage("denoiser"):
            cond, uncond = self.conditioning_kwargs(ctx)
            latents, _ = sample_stage(ctx, "denoiser", self.denoiser, self.schedule, shape=self.latent_shape,
                                      prediction=self.spec.prediction, cond=cond, uncond=uncond)
        with ctx.stage("decoder"):
            images = self.autoencoder.decode(latents)   # a single pass, not NFE (interface.NFE_CONVENTION)
        return images.clamp(-1.0, 1.0)
