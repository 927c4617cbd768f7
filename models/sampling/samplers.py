"""Samplers: pure functions over a denoiser, one signature (the k-diffusion / EDM pattern).

Convention (Karras et al. 2022, "EDM", sec. 2):
- A *denoiser* is a callable `denoise(x, sigma) -> x0_hat` where x = x_0 + sigma * n is in
  variance-exploding coordinates and `sigma` is a (B,) tensor of noise levels. It returns the
  estimate of the clean data x_0 (any extra conditioning is bound in by a wrapper such as
  `models.sampling.guidance.ClassifierFreeGuidance`). `models.sampling.diffusion.VPDenoiser` turns an eps-, v- or
  x0-predicting network trained on a VP schedule into one; thresholding wraps x0_hat.
- `sigmas` is a decreasing 1-D tensor of steps + 1 noise levels ending with 0 (see
  `VPSchedule.timestep_sigmas` and `karras_sigmas`). The start `x` is prior noise at
  sigmas[0] (see `prior_sample`); every sampler returns x at sigmas[-1]: the x_0 estimate when
  that is 0, or the partly denoised x at a level > 0 (a truncated reverse process, as cascaded
  models' truncated conditioning augmentation needs, Ho et al. 2022 sec. 4.3).
- Every sampler has the signature
      sampler(denoise, x, sigmas, *, noise=None, eta=0.0, callback=None) -> Tensor
  Fresh per-step noise comes only from `noise`, a `models.core.seeding.NoiseSource` (per-sample
  streams), so sample i is the same whatever the batch size. `callback(i, x, x0_hat)` sees
  every step.
- NFE: ddpm and ddim 1 per step, dpmpp_2m 1 per step, heun 2 per step except the last (2N - 1);
  counting happens where the network is called (`BatchContext.counted`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Protocol

import torch

from models.core.names import SAMPLER_NAMES
from models.core.seeding import NoiseSource

Callback = Optional[Callable[[int, torch.Tensor, torch.Tensor], None]]


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...


def prior_sample(noise: NoiseSource, shape: tuple[int, ...], sigma_max: float) -> torch.Tensor:
    """x at sigma_max: N(0, (1 + sigma_max^2) I), i.e. the VP prior N(0, I) in VE coordinates
    (for data of unit scale this is the marginal at sigma_max, whatever the schedule)."""
    return noise.randn(*shape) * (1.0 + sigma_max ** 2) ** 0.5


def _check_sigmas(sigmas: torch.Tensor) -> None:
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D tensor of steps + 1 >= 2 noise levels, got shape {tuple(sigmas.shape)}")
    if not bool((sigmas[:-1] > sigmas[1:]).all()) or float(sigmas[-1]) < 0:
        raise ValueError("sigmas must be strictly decreasing and non-negative (usually ending with 0)")


def _need_noise(noise: NoiseSource | None, sampler: str) -> NoiseSource:
    if noise is None:
        raise ValueError(f"sampler {sampler!r} draws fresh noise every step: pass noise=ctx.noise(stream)")
    return noise


def _deterministic(eta: float, sampler: str) -> None:
    if eta != 0:
        raise ValueError(f"sampler {sampler!r} is a deterministic ODE solver and has no eta; got eta={eta}. "
                         "Use eta=0, or sampler=ddim for eta > 0 (ddpm is always fully stochastic)")


def _sigma(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return s.to(device=x.device, dtype=torch.float32).expand(x.shape[0])


@torch.no_grad()
def sample_ddpm(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSource | None = None,
                eta: float = 0.0, callback: Callback = None) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2): x_s ~ q(x_s | x_t, x0_hat), the posterior of
    eqs. 6-7 between consecutive levels of `sigmas` (respaced betas, Nichol & Dhariwal sec. 4).
    Computed in VP coordinates x_vp = x / sqrt(1 + sigma^2) with abar = 1 / (1 + sigma^2).
    A denoiser exposing `variance_frac` (learned variance) sets the variance by interpolating
    log beta and log beta_tilde (Nichol & Dhariwal eq. 15); otherwise beta_tilde is used."""
    _check_sigmas(sigmas)
    noise = _need_noise(noise, "ddpm")
    for i in range(len(sigmas) - 1):
        s_t, s_s = sigmas[i].double(), sigmas[i + 1].double()
        x0 = denoise(x, _sigma(sigmas[i], x))
        if callback is not None:
            callback(i, x, x0)
        abar_t, abar_s = 1 / (1 + s_t ** 2), 1 / (1 + s_s ** 2)
        alpha = abar_t / abar_s
        beta = 1 - alpha
        coef_x0 = (abar_s.sqrt() * beta / (1 - abar_t)).float()
        coef_xt = (alpha.sqrt() * (1 - abar_s) / (1 - abar_t)).float()
        x_vp = x / (1 + s_t ** 2).sqrt().float()
        mean = coef_x0 * x0 + coef_xt * x_vp
        beta_tilde = beta * (1 - abar_s) / (1 - abar_t)
        if float(s_s) == 0:
            x = mean                                      # last step: no noise (Ho et al. Alg. 2, t = 1)
            continue
        frac = getattr(denoise, "variance_frac", None)
        if frac is not None:
            log_var = frac * float(beta.log()) + (1 - frac) * float(beta_tilde.log())
            std = (0.5 * log_var).exp().to(x.dtype)
        else:
            std = float(beta_tilde.sqrt())
        x = (mean + std * noise.randn_like(x)) * float((1 + s_s ** 2).sqrt())
    return x


@torch.no_grad()
def sample_ddim(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSource | None = None,
                eta: float = 0.0, callback: Callback = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) with sigma_t(eta) of eq. 16, written in VE coordinates:
    x_s = x0_hat + sigma_down eps_hat + sigma_up z, with eps_hat = (x_t - x0_hat) / sigma_t,
    sigma_up = eta sigma_s sqrt(1 - sigma_s^2 / sigma_t^2), sigma_down = sqrt(sigma_s^2 - sigma_up^2).
    (eq. 16's VP variance divided by abar_s is exactly sigma_up^2.) eta = 0 is deterministic;
    eta = 1 is the DDPM posterior."""
    _check_sigmas(sigmas)
    if eta < 0:
        raise ValueError(f"ddim: eta must be >= 0, got {eta}")
    if eta > 0:
        noise = _need_noise(noise, "ddim")
    for i in range(len(sigmas) - 1):
        s_t, s_s = float(sigmas[i]), float(sigmas[i + 1])
        x0 = denoise(x, _sigma(sigmas[i], x))
        if callback is not None:
            callback(i, x, x0)
        eps = (x - x0) / s_t
        s_up = min(s_s, eta * s_s * max(0.0, 1 - s_s ** 2 / s_t ** 2) ** 0.5)
        s_down = max(0.0, s_s ** 2 - s_up ** 2) ** 0.5
        x = x0 + s_down * eps
        if s_up > 0:
            x = x + s_up * noise.randn_like(x)
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSource | None = None,
                    eta: float = 0.0, callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), data prediction, multistep.
    With alpha = 1 (VE), lambda = -log sigma and h_i = lambda_{i+1} - lambda_i:
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i - (e^{-h_i} - 1) D_i, where D_i = x0_hat_i on the first
    step (and the last, into sigma = 0) and (1 + 1/(2 r_i)) x0_hat_i - 1/(2 r_i) x0_hat_{i-1}
    with r_i = h_{i-1} / h_i otherwise."""
    _check_sigmas(sigmas)
    _deterministic(eta, "dpmpp_2m")
    previous: torch.Tensor | None = None
    h_previous = 0.0
    for i in range(len(sigmas) - 1):
        s_t, s_s = float(sigmas[i]), float(sigmas[i + 1])
        x0 = denoise(x, _sigma(sigmas[i], x))
        if callback is not None:
            callback(i, x, x0)
        if s_s == 0:
            x = x0
            break
        h = math.log(s_t / s_s)
        if previous is None:
            d = x0
        else:
            r = h_previous / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous
        x = (s_s / s_t) * x - math.expm1(-h) * d
        previous, h_previous = x0, h
    return x


@torch.no_grad()
def sample_heun(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, noise: NoiseSource | None = None,
                eta: float = 0.0, callback: Callback = None) -> torch.Tensor:
    """Heun's 2nd-order method on the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma
    (Karras et al. 2022, Alg. 1, deterministic): an Euler step, then the trapezoidal correction
    except on the last step into sigma = 0."""
    _check_sigmas(sigmas)
    _deterministic(eta, "heun")
    for i in range(len(sigmas) - 1):
        s_t, s_s = float(sigmas[i]), float(sigmas[i + 1])
        x0 = denoise(x, _sigma(sigmas[i], x))
        if callback is not None:
            callback(i, x, x0)
        d = (x - x0) / s_t
        x_next = x + (s_s - s_t) * d
        if s_s > 0:
            d_next = (x_next - denoise(x_next, _sigma(sigmas[i + 1], x))) / s_s
            x_next = x + (s_s - s_t) * 0.5 * (d + d_next)
        x = x_next
    return x


Sampler = Callable[..., torch.Tensor]

# Each sampler name (their list lives torch-free in models.core.names.SAMPLER_NAMES, which the
# config checks before torch loads) -> its function.
SAMPLERS: dict[str, Sampler] = dict(zip(SAMPLER_NAMES, (sample_ddpm, sample_ddim, sample_dpmpp_2m, sample_heun)))

# Which noise-level grid each sampler is usually run on: the model's own timesteps for the
# DDPM/DDIM lineage, Karras et al.'s rho = 7 spacing for the ODE solvers (EDM sec. 3).
SIGMA_SPACING: dict[str, str] = {"ddpm": "timesteps", "ddim": "timesteps", "dpmpp_2m": "karras", "heun": "karras"}


def get_sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"sampler {name!r} is unknown; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def sampling_sigmas(schedule: Any, sampler: str, steps: int) -> torch.Tensor:
    """The sigma grid for `sampler` with `steps` steps on a `models.sampling.diffusion.VPSchedule`.
    `steps` >= 1 is checked once, where it is given: `SampleRequest` (every stage's steps) and, at
    start-up, `sampler.steps` in the config."""
    get_sampler(sampler)
    if SIGMA_SPACING[sampler] == "karras":
        return schedule.karras_sigmas(steps)
    return schedule.timestep_sigmas(steps)
