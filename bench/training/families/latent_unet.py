"""Training the latent_unet family (bench.train): `stage: autoencoder` trains the first stage,
otherwise the latent UNet on the frozen autoencoder's latents."""
from __future__ import annotations

from typing import Any, Mapping

from bench.training.families.autoencoder import AutoencoderTrainable
from bench.training.families.latent import LatentTrainable, make_latent_trainable
from models.families.latent_unet import FAMILY, latent_unet_config
from models.networks.conditioning import ClassConditioner


class LatentUNetTrainable(LatentTrainable):
    def denoiser_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        conditioner = self.networks["conditioner"] if "conditioner" in self.networks else None
        if conditioner is None:
            return {}
        if isinstance(conditioner, ClassConditioner):
            return {"context": conditioner(batch["label"])}   # -1 (dropped for CFG) -> null class
        return {"context": conditioner(batch["caption"])}     # "" -> the null prompt


def make_trainable(name: str, params: Mapping[str, Any], *, resolution: int, num_classes: int | None,
                   class_names: list[str] | None) -> AutoencoderTrainable | LatentUNetTrainable:
    return make_latent_trainable(FAMILY, params, resolution=resolution, num_classes=num_classes,
                                 class_names=class_names, make_config=latent_unet_config, trainable=LatentUNetTrainable)
