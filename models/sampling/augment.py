"""Conditioning augmentation for super-resolution stages (Ho et al. 2022, "Cascaded Diffusion
Models", sec. 3.2 / 4.3): the low-resolution conditioning image is corrupted during training
and the corruption level is given to the model, so at sampling time it tolerates the
imperfect output of the stage below.

- Gaussian noise augmentation (used at low resolution): a VP forward process on the low-res
  image, z_s = sqrt(abar(s)) z_0 + sqrt(1 - abar(s)) eps, with abar(s) = cos^2(pi s / 2) for a
  level s in [0, 1] (s = 0: clean; its VE noise level is sigma(s) = tan(pi s / 2)).
  * non-truncated: the stage below samples to the end (z_0), then z_0 is noised to level s.
  * truncated: the stage below stops its reverse process at sigma(s) and hands z_s over as is.
  Training is the same for both (z_s ~ q(z_s | z_0)); they differ only at sampling time.
- Gaussian blur augmentation (used at high resolution): the upsampled conditioning image is
  blurred with a per-sample Gaussian of std BLUR_SIGMA_PER_LEVEL * s pixels.
The level enters the model as sinusoidal features of 1000 s added to its timestep embedding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.networks.unet import timestep_embedding

AUG_KINDS = ("noise", "blur")
BLUR_SIGMA_PER_LEVEL = 2.0   # pixels of blur std at level 1 (CDM used std 0.4-0.6 px, kernel 3)
LEVEL_EMBED_DIM = 32


def noise_aug_sigma(level: float) -> float:
    """VE noise level of augmentation level s: sqrt((1 - abar) / abar) = tan(pi s / 2)."""
    if not 0 <= level < 1:
        raise ValueError(f"noise augmentation level must be in [0, 1), got {level}")
    return math.tan(math.pi * level / 2)


def apply_noise_aug(images: torch.Tensor, level: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z_s = sqrt(abar(s)) z_0 + sqrt(1 - abar(s)) eps per sample, abar(s) = cos^2(pi s / 2)."""
    angle = (math.pi / 2 * level.float()).reshape(-1, *([1] * (images.ndim - 1))).to(images)
    return torch.cos(angle) * images + torch.sin(angle) * eps


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own Gaussian std sigma[i] (pixels; 0 = unchanged), separable,
    reflect-padded. Kernel radius ceil(3 max sigma)."""
    sigma = sigma.float().to(images.device).reshape(-1)
    radius = max(1, math.ceil(3 * float(sigma.max()))) if sigma.numel() else 1
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    safe = sigma.clamp(min=1e-6)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / safe) ** 2)
    kernel = torch.where(sigma[:, None] > 0, kernel, (offsets[None] == 0).float())
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).to(images.dtype)
    b, c, h, w = images.shape
    x = F.pad(images.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    k = kernel.repeat_interleave(c, dim=0)                          # (b*c, taps)
    x = F.conv2d(x, k[:, None, None, :], groups=b * c)              # horizontal
    x = F.conv2d(x, k[:, None, :, None], groups=b * c)              # vertical
    return x.reshape(b, c, h, w)


def level_embedding(level: torch.Tensor, dim: int = LEVEL_EMBED_DIM) -> torch.Tensor:
    return timestep_embedding(level.float() * 1000.0, dim)


def downsample(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Area (box) downsampling, the same as the low-resolution training data of the stage below."""
    return F.interpolate(images, size=(resolution, resolution), mode="area")


def upsample(images: torch.Tensor, resolution: int) -> torch.Tensor:
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class ConditioningAugmentation:
    kind: str = "noise"           # noise | blur
    max_level: float = 0.5        # training levels ~ U[0, max_level]
    truncated: bool = False       # sampling: stop the stage below at sigma(s) (noise only)

    def __post_init__(self) -> None:
        if self.kind not in AUG_KINDS:
            raise ValueError(f"conditioning augmentation kind {self.kind!r} is unknown; choose one of {AUG_KINDS}")
        if not 0 <= self.max_level < 1:
            raise ValueError(f"conditioning augmentation max_level must be in [0, 1), got {self.max_level}")
        if self.truncated and self.kind != "noise":
            raise ValueError("truncated conditioning augmentation needs kind='noise' (it stops a reverse process)")

    def training_levels(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.rand(batch, generator=generator) * self.max_level

    def condition(self, low_res: torch.Tensor, level: torch.Tensor, resolution: int,
                  eps: torch.Tensor | None) -> torch.Tensor:
        """The conditioning image at `resolution` for clean low-res images at `level` (training,
        and non-truncated sampling). `eps` (low-res shaped) is needed for noise augmentation."""
        if self.kind == "noise":
            if eps is None:
                raise ValueError("noise augmentation needs eps, standard normal noise shaped like the low-res image")
            return upsample(apply_noise_aug(low_res, level, eps), resolution)
        return gaussian_blur(upsample(low_res, resolution), level * BLUR_SIGMA_PER_LEVEL)
