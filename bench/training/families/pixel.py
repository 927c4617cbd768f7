"""Training the pixel family (bench.train): a UNet's denoising loss on image batches."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from models.families.base import load_family_networks
from models.families.pixel import ARCH_PARAMS, pixel_config
from models.networks.unet import UNet
from models.sampling.diffusion import DiffusionSpec, training_loss


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
    config, networks = load_family_networks("pixel", None, params, pixel_config, ARCH_PARAMS)
    return PixelTrainable(config, networks)
