"""Low-resolution inputs for super-resolution (issue 21), reproducible from a seed.

- "bicubic": antialiased bicubic downsampling by the factor (the degradation of SR3 and of LDM's
  ImageNet 64 -> 256 task, Rombach et al. 2022 sec. 4.4: "bicubic degradation with 4x downsampling").
- "blur_noise": Gaussian blur (sigma = factor / 2) + bicubic downsampling + Gaussian noise of
  standard deviation `noise_std` (in [0, 1] units), the classical degradation of the SR
  literature (e.g. Zhang et al. 2018, SRMD), here a fixed-level instance of it.

Images are uint8 NCHW in and out (the low-resolution image is quantised to 8 bit, as a stored
image would be). The noise of image i depends only on (seed, i): batch-invariant.

`upscale` is the interpolation baselines' upsampler (bicubic, nearest). `degraded` is the lazy
form: an ImageSequence that degrades each batch of its source when read.
"""
from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from models.core.images import ImageSequence, MappedImages

DEGRADATIONS = ("bicubic", "blur_noise")
UPSCALE_MODES = ("bicubic", "nearest")
SR_FACTORS = (2, 4)


def check_degradation(kind: str, factor: int, resolution: int, key: str = "degradation") -> None:
    if kind not in DEGRADATIONS:
        raise ValueError(f"{key}: degradation {kind!r} is not one of {DEGRADATIONS}")
    if factor not in SR_FACTORS:
        raise ValueError(f"{key}: factor {factor!r} is not one of {SR_FACTORS}")
    if resolution % factor or resolution // factor < 4:
        raise ValueError(f"{key}: resolution {resolution} cannot be downsampled x{factor} "
                         "(needs a multiple of the factor, leaving at least 4 px)")


def _unit(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"degradations take uint8 NCHW images, got {images.dtype} {tuple(images.shape)}")
    return images.float() / 255.0


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round().clamp(0, 255).to(torch.uint8)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, reflect-padded, radius ceil(3 sigma)."""
    radius = max(1, math.ceil(3.0 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x)
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _noise(shape: Sequence[int], seed: int, index: int) -> torch.Tensor:
    digest = hashlib.sha256(f"degrade:{int(seed)}:{int(index)}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))
    return torch.randn(tuple(shape), generator=generator)


def degrade(images: torch.Tensor, factor: int, kind: str = "bicubic", *, seed: int = 0,
            indices: Sequence[int] | None = None, noise_std: float = 0.02) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, H / factor, W / factor). `indices`: the images' global
    indices (their noise streams); default 0..N-1."""
    check_degradation(kind, factor, images.shape[-1])
    x = _unit(images)
    if kind == "blur_noise":
        x = gaussian_blur(x, factor / 2.0)
    size = (images.shape[-2] // factor, images.shape[-1] // factor)
    low = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    if kind == "blur_noise":
        indices = range(len(images)) if indices is None else indices
        low = low + noise_std * torch.stack([_noise(low.shape[1:], seed, i) for i in indices])
    return _to_uint8(low.clamp(0, 1))


def degraded(images: torch.Tensor | ImageSequence, factor: int, kind: str = "bicubic", *, seed: int = 0,
             noise_std: float = 0.02) -> MappedImages:
    """`degrade` of `images`, read a batch at a time (image i's noise still from (seed, i))."""
    _, c, h, w = images.shape
    check_degradation(kind, factor, w)
    noise = f",noise_std={noise_std!r}" if kind == "blur_noise" else ""
    return MappedImages(images, lambda batch, idx: degrade(batch, factor, kind, seed=seed, indices=idx,
                                                           noise_std=noise_std),
                        (c, h // factor, w // factor), f"degrade[{kind},x{factor},seed={seed}{noise}]")


def upscale(images: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """The interpolation baselines: uint8 NCHW -> uint8 N C size size."""
    if mode not in UPSCALE_MODES:
        raise ValueError(f"upscale mode {mode!r} is not one of {UPSCALE_MODES}")
    x = _unit(images)
    out = F.interpolate(x, size=(size, size), mode=mode, **({"align_corners": False} if mode == "bicubic" else {}))
    return _to_uint8(out.clamp(0, 1))
