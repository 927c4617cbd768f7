"""RePaint (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic
Models"): training-free inpainting with any unconditional or class-conditional DDPM.

Each reverse step (Alg. 1) combines the known region, noised to the step's level from the input
image, with the model's ancestral DDPM step in the unknown region:
    x_s = m * x_s^unknown + (1 - m) * x_s^known,  x_s^known = x_0 + sigma_s n  (VE coordinates),
and the resampling schedule (sec. 4.2, their `get_schedule_jump`) walks back `jump_length` steps
by the forward process, `jump_n_sample` times per block, to harmonise the two regions. In VE
coordinates one forward step from sigma_a up to sigma_b is x_b = x_a + sqrt(sigma_b^2 - sigma_a^2) n.

Designed to reduce exactly to the pipeline's own ancestral sampling: the unknown region's step is
`sample_ddpm` itself on the two-level grid (sigma_t, sigma_s), drawing from the stage's own noise
stream after the same prior draw as `models.sampling.stage.sample_stage`; the known region and the
jumps draw from streams of their own ("<stage>:known", "<stage>:jump"). So with jump_n_sample = 1
and a mask of ones, the images equal `sampler=ddpm` sampling at the same seed, bit for bit. At the
last level (sigma = 0) the known region is the input itself: the final paste is exact.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from models.core.interface import BatchContext, RequestError
from models.sampling.diffusion import VPDenoiser, VPSchedule
from models.sampling.guidance import guided_denoiser
from models.sampling.samplers import prior_sample, sample_ddpm, sampling_sigmas


def repaint_schedule(steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """RePaint's time walk over step indices steps-1 (noisiest) ... 0, ending with -1 (clean):
    after reaching t = j (j = 0, L, 2L, ... < steps - L) it goes back up L steps, r - 1 times.
    Consecutive pairs: down = a reverse (denoising) step, up = a forward (noising) step."""
    if steps < 1 or jump_length < 1 or jump_n_sample < 1:
        raise ValueError(f"RePaint schedule needs steps, jump_length and jump_n_sample >= 1, got "
                         f"{steps}, {jump_length}, {jump_n_sample}")
    jumps = {j: jump_n_sample - 1 for j in range(0, steps - jump_length, jump_length)}
    t, walk = steps, []
    while t >= 1:
        t -= 1
        walk.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                walk.append(t)
    return walk + [-1]


def repaint_stage(ctx: BatchContext, stage: str, network: nn.Module, schedule: VPSchedule, *,
                  shape: tuple[int, ...], known: torch.Tensor, mask: torch.Tensor, prediction: str = "eps",
                  cond: Mapping[str, Any] | None = None, uncond: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Inpaint `known` ([-1, 1], N C H W) where `mask` (N 1 H W) is 1; returns x at sigma = 0."""
    settings = ctx.settings(stage)
    if settings.sampler != "ddpm":
        raise RequestError(f"inpainting (RePaint) resamples with ancestral DDPM steps: stage {stage!r} asks for "
                           f"sampler={settings.sampler}; use sampler=ddpm")
    learn_sigma = bool(getattr(getattr(network, "config", None), "learn_sigma", False))
    denoise = guided_denoiser(
        VPDenoiser(ctx.counted(stage, network), schedule, prediction, learn_sigma, dtype=ctx.dtype),
        scale=settings.guidance_scale, cond=cond or {}, uncond=uncond,
        thresholding=settings.thresholding, percentile=settings.dynamic_threshold_percentile)
    sigmas = sampling_sigmas(schedule, "ddpm", settings.steps)    # levels at positions 0 (noisiest) .. steps (0)
    noise, known_noise, jump_noise = ctx.noise(stage), ctx.noise(f"{stage}:known"), ctx.noise(f"{stage}:jump")
    x = prior_sample(noise, shape, float(sigmas[0])).float()
    known, unknown = known.float(), mask.to(torch.bool).expand_as(known)
    walk = repaint_schedule(settings.steps, settings.jump_length, settings.jump_n_sample)
    steps = settings.steps
    for t_now, t_next in zip(walk, walk[1:]):
        p_now, p_next = steps - 1 - t_now, steps - 1 - t_next      # walk index -> grid position
        if t_next < t_now:                                          # reverse step, Alg. 1 lines 4-8
            s_next = float(sigmas[p_next])
            x_unknown = sample_ddpm(denoise, x, sigmas[p_now:p_next + 1], noise=noise)
            x_known = known if s_next == 0 else known + s_next * known_noise.randn_like(known)
            x = torch.where(unknown, x_unknown, x_known)
        else:                                                       # forward step (a jump back)
            s_now, s_next = float(sigmas[p_now]), float(sigmas[p_next])
            x = x + (s_next ** 2 - s_now ** 2) ** 0.5 * jump_noise.randn_like(x)
    return x
