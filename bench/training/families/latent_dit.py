"""Training the latent_dit family (bench.train): `stage: autoencoder` trains the first stage,
otherwise the latent DiT on the frozen autoencoder's latents."""
from __future__ import annotations

from typing import Any, Mapping

from bench.training.families.autoencoder import AutoencoderTrainable
from bench.training.families.latent import LatentTrainable, make_latent_trainable
from models.families.latent_dit import FAMILY, latent_dit_config


class LatentDiTTrainable(LatentTrainable):
    def denoiser_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        return {"y": batch["label"]} if self.networks["denoiser"].config.num_classes is not None else {}


def make_trainable(name: str, params: Mapping[str, Any], *, resolution: int, num_classes: int | None,
                   class_names: list[str] | None) -> AutoencoderTrainable | LatentDiTTrainable:
    return make_latent_trainable(FAMILY, params, resolution=resolution, num_classes=num_classes,
                                 class_names=class_names, make_config=latent_dit_config, trainable=LatentDiTTrainable)
