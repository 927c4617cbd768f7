"""Training the second stage of the latent families (bench.train): the denoiser learns on the
frozen autoencoder's latents (Rombach et al. 2022 sec. 3-4). `stage: autoencoder` trains the
first stage instead (bench.training.families.autoencoder)."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from bench.training.families.autoencoder import AutoencoderTrainable
from models.families.latent import build_latent_networks
from models.networks.autoencoder import Autoencoder
from models.sampling.diffusion import DiffusionSpec, training_loss


class LatentTrainable:
    """`bench.training` plug-in for the second stage: the frozen autoencoder encodes each batch
    (posterior mode / pre-quantisation latents, times the scale factor) and the denoiser learns
    L_simple (+ L_vlb with learned variance) on the latents."""

    def __init__(self, config: dict[str, Any], networks: nn.ModuleDict) -> None:
        self.config = config
        self.networks = networks
        self.spec = DiffusionSpec.from_dict(config["diffusion"]["denoiser"])
        self.schedule = self.spec.build()

    def denoiser_kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def training_loss(self, batch: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor:
        autoencoder: Autoencoder = self.networks["autoencoder"].eval()
        with torch.no_grad():
            latents = autoencoder.encode(batch["image"])
        denoiser = self.networks["denoiser"]
        learn_sigma = bool(getattr(denoiser.config, "learn_sigma", False))
        return training_loss(denoiser, latents, self.schedule, prediction=self.spec.prediction,
                             learn_sigma=learn_sigma, generator=generator, **self.denoiser_kwargs(batch))

    def checkpoint_config(self) -> dict[str, Any]:
        return self.config


def make_latent_trainable(family: str, params: Mapping[str, Any], *, resolution: int, num_classes: int | None,
                          class_names: list[str] | None, make_config: Callable[..., dict[str, Any]],
                          trainable: type[LatentTrainable]) -> AutoencoderTrainable | LatentTrainable:
    """`bench.train` entry of a latent family: `stage: autoencoder` trains the first stage,
    otherwise the family's denoiser, with resolution and classes from the data unless set."""
    params = dict(params)
    if params.get("stage") == "autoencoder":
        return AutoencoderTrainable(params, resolution=resolution)
    if params.pop("stage", "denoiser") != "denoiser":
        raise ValueError(f"{family} training param `stage` must be 'autoencoder' or 'denoiser'")
    params.setdefault("resolution", resolution)
    params.setdefault("num_classes", num_classes)
    params.setdefault("class_names", class_names)
    config, networks = build_latent_networks(family, None, params, make_config)
    return trainable(config, nn.ModuleDict(dict(networks)))
