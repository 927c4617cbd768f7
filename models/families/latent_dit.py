"""Family `latent_dit`: a Diffusion Transformer on autoencoder latents (Peebles & Xie 2023).

The DiT (models/networks/dit.py) patchifies the c x H/f x W/f latents with patch size p, conditions its
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

from models.networks.autoencoder import Autoencoder
from models.sampling.diffusion import DiffusionSpec
from models.networks.dit import dit_config, gflops
from models.core.interface import BatchContext
from models.families.latent import (LatentPipeline, build_latent_networks, frozen_autoencoder,
                                  latent_base_config)
from models.core.registry import register_family

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
