"""Family `latent_dit`: a Diffusion Transformer on autoencoder latents (Peebles & Xie 2023).

The DiT (models/dit.py) patchifies the c x H/f x W/f latents with patch size p, conditions its
blocks on t + class by adaLN-Zero (or the paper's alternatives: `dit.block`), and predicts the
noise and a diagonal covariance (L_hybrid training, as the paper). Class labels go straight to
the DiT's label embedding; -1 is its null label for classifier-free guidance.

Params without a checkpoint (architecture): autoencoder (calibrated checkpoint name/dir, or an
AutoencoderConfig mapping for a random one), resolution, num_classes, class_names, preset
(DIT_PRESETS: tiny, DiT-S/2 ... DiT-XL/8), dit (DiTConfig overrides), schedule, num_timesteps,
prediction. With a checkpoint: untrained, init_seed. Training (`bench.train`): the same, or
`stage: autoencoder` for the first stage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from models.autoencoder import Autoencoder
from models.autoencoder_training import AutoencoderTrainable
from models.diffusion import DiffusionSpec
from models.dit import dit_config, gflops
from models.interface import BatchContext
from models.latent_common import (LatentPipeline, LatentTrainable, build_latent_networks, frozen_autoencoder,
                                  latent_base_config, training_params)
from models.registry import register_family

FAMILY = "latent_dit"


def latent_dit_config(autoencoder: str | Mapping[str, Any], resolution: int = 32, num_classes: int | None = None,
                      class_names: list[str] | None = None, preset: str = "tiny", dit: Mapping[str, Any] | None = None,
                      schedule: str = "linear", num_timesteps: int = 1000, prediction: str = "eps"
                      ) -> tuple[dict[str, Any], Autoencoder]:
    """A checkpoint config for a fresh latent DiT, and the autoencoder it runs on."""
    ae, provenance = frozen_autoencoder(autoencoder)
    c, h, _ = ae.latent_shape(resolution)
    config = latent_base_config(FAMILY, resolution=resolution, autoencoder=ae, provenance=provenance,
                                conditioning="class" if num_classes else "none", num_classes=num_classes,
                                class_names=class_names, diffusion=DiffusionSpec(schedule, num_timesteps, prediction))
    net = dit_config(preset, **{"input_size": h, "in_channels": c, "num_classes": num_classes, **dict(dit or {})})
    config["networks"]["denoiser"] = {"type": "dit", "config": net.to_dict()}
    return config, ae


class LatentDiTPipeline(LatentPipeline):
    family = FAMILY

    def conditioning_kwargs(self, ctx: BatchContext) -> tuple[dict[str, Any], dict[str, Any] | None]:
        if self.num_classes is None:
            return {}, None
        labels = ctx.labels.to(self.device)
        return {"y": labels}, {"y": torch.full_like(labels, -1)}

    def gflops(self) -> float:
        """Denoiser Gflops per forward pass and image (DiT paper convention: multiply-adds)."""
        return gflops(self.denoiser, self.latent_shape)


@register_family(FAMILY)
def build(name: str, checkpoint: Path | None, **params: Any) -> LatentDiTPipeline:
    config, networks = build_latent_networks(FAMILY, checkpoint, dict(params), latent_dit_config)
    return LatentDiTPipeline(name, config, networks)


class LatentDiTTrainable(LatentTrainable):
    def denoiser_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return {"y": batch["label"]} if self.networks["denoiser"].config.num_classes is not None else {}


def make_trainable(name: str, params: Mapping[str, Any], *, resolution: int, num_classes: int | None,
                   class_names: list[str] | None) -> AutoencoderTrainable | LatentDiTTrainable:
    """`bench.train` entry: `stage: autoencoder` trains the first stage, otherwise the latent DiT."""
    params = dict(params)
    if params.get("stage") == "autoencoder":
        return AutoencoderTrainable(params, resolution=resolution)
    if params.pop("stage", "denoiser") != "denoiser":
        raise ValueError("latent_dit training param `stage` must be 'autoencoder' or 'denoiser'")
    config, networks = build_latent_networks(FAMILY, None, training_params(
        params, resolution=resolution, num_classes=num_classes, class_names=class_names), latent_dit_config)
    return LatentDiTTrainable(config, nn.ModuleDict(dict(networks)))
