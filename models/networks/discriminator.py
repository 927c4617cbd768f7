"""The patch discriminator of the autoencoders' adversarial loss (Esser et al. 2021, VQGAN;
Rombach et al. 2022 train their first stages the same way)."""
from __future__ import annotations

import math

import torch
from torch import nn

from models.core.checkpoint import register_network_type


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix's NLayerDiscriminator). GroupNorm instead of BatchNorm: real and fake
    batches pass separately, and tiny CPU batches make batch statistics noisy."""

    def __init__(self, in_channels: int = 3, channels: int = 32, layers: int = 2) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, layers + 1):
            out = channels * min(2 ** i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(ch, out, 4, stride, 1, bias=False), nn.GroupNorm(math.gcd(32, out), out),
                     nn.LeakyReLU(0.2)]
            ch = out
        mods.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)
        self.spec = {"in_channels": in_channels, "channels": channels, "layers": layers}
        # Training steps seen: the GAN warm-up clock, saved and restored with the weights.
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_network_type("patch_discriminator")
def build_patch_discriminator(config: dict) -> PatchDiscriminator:
    return PatchDiscriminator(**dict(config))
