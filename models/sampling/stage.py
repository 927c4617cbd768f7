"""The one sampling loop every UNet stage (pixel, cascaded, latent, imagen, unclip) reuses:
request settings -> sigma grid -> VP denoiser -> CFG -> thresholding -> sampler, with NFE and
noise taken from the `BatchContext` (samplers as pure functions over a denoiser, as in
k-diffusion and EDM)."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from models.core.interface import BatchContext
from models.sampling.diffusion import VPDenoiser, VPSchedule
from models.sampling.guidance import guided_denoiser
from models.sampling.samplers import get_sampler, prior_sample, sampling_sigmas


def sample_stage(ctx: BatchContext, stage: str, network: nn.Module, schedule: VPSchedule, *,
                 shape: tuple[int, ...], prediction: str = "eps", cond: Mapping[str, Any] | None = None,
                 uncond: Mapping[str, Any] | None = None, stop_sigma: float = 0.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one diffusion stage for ctx's batch. Returns (x at the last sigma, last x0 estimate);
    they are equal unless stop_sigma > 0 (a truncated reverse process)."""
    settings = ctx.settings(stage)
    learn_sigma = bool(getattr(getattr(network, "config", None), "learn_sigma", False))
    denoise = guided_denoiser(
        VPDenoiser(ctx.counted(stage, network), schedule, prediction, learn_sigma, dtype=ctx.dtype),
        scale=settings.guidance_scale, cond=cond or {}, uncond=uncond,
        thresholding=settings.thresholding, percentile=settings.dynamic_threshold_percentile)
    # The grid stays on the CPU: samplers read its levels as Python floats every step, and on CUDA
    # each such read would be a device sync (the denoiser gets each level moved with x).
    sigmas = sampling_sigmas(schedule, settings.sampler, settings.steps)
    if stop_sigma > 0:
        if stop_sigma >= float(sigmas[0]):
            raise ValueError(f"stage {stage!r}: truncation level sigma={stop_sigma:.3g} is not below the "
                             f"start sigma {float(sigmas[0]):.3g}; lower the noise_aug level")
        sigmas = torch.cat([sigmas[sigmas > stop_sigma], sigmas.new_tensor([stop_sigma])])
    noise = ctx.noise(stage)
    x = prior_sample(noise, shape, float(sigmas[0])).float()   # sampler state in float32 whatever the net dtype
    last: dict[str, torch.Tensor] = {}
    x = get_sampler(settings.sampler)(denoise, x, sigmas, noise=noise, eta=settings.eta,
                                      callback=lambda i, xi, x0: last.__setitem__("x0", x0))
    return x, last["x0"]


def label_conditioning(ctx: BatchContext, num_classes: int | None
                       ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(cond, uncond) network kwargs for class conditioning; the null label is -1."""
    if num_classes is None:
        return {}, None
    labels = ctx.labels if ctx.labels is not None else torch.full((len(ctx),), -1, dtype=torch.long)
    labels = labels.to(ctx.device)
    return {"y": labels}, {"y": torch.full_like(labels, -1)}
