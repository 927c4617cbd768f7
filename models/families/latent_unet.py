"""Family `latent_unet`: latent diffusion with a UNet (Rombach et al. 2022, "LDM").

The shared UNet (models/networks/unet.py) runs on the autoencoder's c x H/f x W/f latents. Conditions
reach it through LDM's spatial transformers (norm, 1x1 project in, self-attention,
cross-attention to tau_theta(y), feed-forward, 1x1 project out; `models.networks.unet.SpatialTransformer`)
at `unet.attention_resolutions` and in the middle block; tau_theta is a class embedding or a
text encoder (models/networks/conditioning.py), its null condition used for classifier-free guidance.

Params without a checkpoint (architecture): autoencoder (a calibrated checkpoint name/dir, or an
AutoencoderConfig mapping for a random one), resolution, conditioning (none | class | text),
num_classes, class_names, preset (UNET_PRESETS), unet (UNetConfig overrides), context_dim,
text_encoder (models.networks.text_encoders spec), schedule, num_timesteps, prediction.
With a checkpoint: untrained, init_seed. Training (`bench.train`): the same architecture params,
or `stage: autoencoder` to train the first stage (bench/training/families/autoencoder.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


import models.networks.conditioning  # noqa: F401 - registers the conditioner network types
from models.networks.autoencoder import Autoencoder
from models.networks.conditioning import ClassConditioner, TextConditioner
from models.sampling.diffusion import DiffusionSpec
from models.core.interface import BatchContext
from models.families.latent import (LatentPipeline, build_latent_networks, frozen_autoencoder,
                                  latent_base_config)
from models.core.registry import register_family
from models.networks.unet import unet_config

FAMILY = "latent_unet"
DEFAULT_TEXT_ENCODER = {"kind": "trainable", "tokenizer": {"kind": "byte"}, "width": 64, "layers": 2,
                        "heads": 4, "max_length": 64}


def latent_unet_config(autoencoder: str | Mapping[str, Any], resolution: int = 32, conditioning: str | None = None,
                       num_classes: int | None = None, class_names: list[str] | None = None,
                       preset: str = "tiny", unet: Mapping[str, Any] | None = None, context_dim: int | None = None,
                       text_encoder: Mapping[str, Any] | None = None, schedule: str = "linear",
                       num_timesteps: int = 1000, prediction: str = "eps") -> tuple[dict[str, Any], Autoencoder]:
    """A checkpoint config for a fresh latent UNet, and the autoencoder it runs on."""
    conditioning = conditioning or ("class" if num_classes else "none")
    if conditioning == "class" and not num_classes:
        raise ValueError("latent_unet with conditioning=class needs num_classes (class-labelled data)")
    if conditioning not in ("none", "class", "text"):
        raise ValueError(f"latent_unet conditioning {conditioning!r} is not one of ['none', 'class', 'text']")
    ae, provenance = frozen_autoencoder(autoencoder)
    c, h, _ = ae.latent_shape(resolution)
    config = latent_base_config(FAMILY, resolution=resolution, autoencoder=ae, provenance=provenance,
                                conditioning=conditioning, num_classes=num_classes, class_names=class_names,
                                diffusion=DiffusionSpec(schedule, num_timesteps, prediction))
    overrides = dict(unet or {})
    if conditioning == "class":
        dim = int(context_dim or 4 * unet_config(preset, **overrides).base_channels)
        conditioner = {"type": "class_conditioner", "config": {"num_classes": int(num_classes), "dim": dim}}
    elif conditioning == "text":
        spec = dict(text_encoder or DEFAULT_TEXT_ENCODER)
        dim = TextConditioner(spec).dim
        conditioner = {"type": "text_conditioner", "config": {"encoder": spec}}
    else:
        dim, conditioner = None, None
    net = unet_config(preset, **{"resolution": h, "in_channels": c, "out_channels": c, "num_classes": None,
                                 "context_dim": dim, **overrides})
    config["networks"]["denoiser"] = {"type": "unet", "config": net.to_dict()}
    if conditioner is not None:
        config["networks"]["conditioner"] = conditioner
    return config, ae


class LatentUNetPipeline(LatentPipeline):
    family = FAMILY

    def conditioning_kwargs(self, ctx: BatchContext) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Cross-attention contexts tau_theta(y) and tau_theta(null), computed once per batch."""
        if self.conditioner is None:
            return {}, None
        if isinstance(self.conditioner, ClassConditioner):
            labels = ctx.labels.to(self.device)
            cond, uncond = self.conditioner.pair(labels)
        else:
            cond, uncond = self.conditioner.pair(ctx.prompts)
        return {"context": cond.to(self.dtype)}, {"context": uncond.to(self.dtype)}


@register_family(FAMILY)
def build(name: str, checkpoint: Path | None, **params: Any) -> LatentUNetPipeline:
    config, networks = build_latent_networks(FAMILY, checkpoint, dict(params), latent_unet_config)
    return LatentUNetPipeline(name, config, networks)
