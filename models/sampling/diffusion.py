"""Gaussian diffusion maths in one place (variance-preserving, discrete time).

- Beta schedules: linear (Ho et al. 2020) and cosine (Nichol & Dhariwal 2021, eq. 17).
- q(x_t | x_0) in closed form, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.
- Parameterisations: eps (Ho et al.), v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho
  2022), x_0; conversions between them.
- The posterior q(x_{t-1} | x_t, x_0) (Ho et al. eqs. 6-7).
- Learned variance and L_hybrid = L_simple + lambda L_vlb (Nichol & Dhariwal sec. 3.1).
- `VPDenoiser`: wraps an eps/v/x0 network into the sampler convention of `models.sampling.samplers`,
  a denoiser D(x; sigma) -> x_0 over VE coordinates x = x_0 + sigma n, with
  sigma_t = sqrt((1 - abar_t) / abar_t) (Karras et al. 2022, sec. 2 and Table 1; k-diffusion).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

PREDICTIONS = ("eps", "v", "x0")


def linear_betas(num_timesteps: int, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """Ho et al. 2020: betas linear from 1e-4 to 0.02 for T = 1000 (rescaled for other T)."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * start, scale * end, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021 eq. 17: abar(t) = cos^2(((t/T + s) / (1 + s)) pi / 2), betas clipped."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


BETA_SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {"linear": linear_betas, "cosine": cosine_betas}


def _gather(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] reshaped to broadcast over a (B, ...) tensor of `ndim` dims."""
    return values.to(t.device)[t].float().reshape(-1, *([1] * (ndim - 1)))


class VPSchedule:
    """A discrete variance-preserving schedule: betas, abar, and the matching VE sigmas."""

    def __init__(self, betas: torch.Tensor, name: str = "custom") -> None:
        betas = betas.to(torch.float64)
        if betas.ndim != 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a 1-D tensor with every value in (0, 1)")
        self.name = name
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()
        self.log_sigmas = self.sigmas.log()
        # Posterior q(x_{t-1} | x_t, x_0), Ho et al. eq. 7.
        self.posterior_variance = betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        # log(beta_tilde_0) = log(0): use beta_tilde_1 instead, as Nichol & Dhariwal do.
        self.posterior_log_variance = torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]).log()
        self.posterior_coef_x0 = betas * self.alphas_cumprod_prev.sqrt() / (1 - self.alphas_cumprod)
        self.posterior_coef_xt = (1 - self.alphas_cumprod_prev) * (1 - betas).sqrt() / (1 - self.alphas_cumprod)

    @classmethod
    def from_name(cls, name: str = "linear", num_timesteps: int = 1000) -> "VPSchedule":
        if name not in BETA_SCHEDULES:
            raise ValueError(f"beta schedule {name!r} is unknown; choose one of {sorted(BETA_SCHEDULES)}")
        if num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {num_timesteps}")
        return cls(BETA_SCHEDULES[name](num_timesteps), name=name)

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.numel())

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    # -- forward process ---------------------------------------------------------------------
    def coefficients(self, t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(abar_t), sqrt(1 - abar_t)) for integer timesteps t, broadcastable over ndim dims."""
        abar = _gather(self.alphas_cumprod, t, ndim)
        return abar.sqrt(), (1 - abar).sqrt()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (Ho et al. eq. 4)."""
        a, b = self.coefficients(t, x0.ndim)
        return a * x0 + b * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. eqs. 6-7)."""
        mean = _gather(self.posterior_coef_x0, t, xt.ndim) * x0 + _gather(self.posterior_coef_xt, t, xt.ndim) * xt
        return mean, _gather(self.posterior_variance, t, xt.ndim), _gather(self.posterior_log_variance, t, xt.ndim)

    # -- noise level <-> timestep (continuous t by interpolation in log sigma, as k-diffusion) --
    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.to(torch.float64).clamp(min=1e-20).log()
        idx = torch.searchsorted(log_sigmas, log_sigma).clamp(1, self.num_timesteps - 1)
        lo, hi = log_sigmas[idx - 1], log_sigmas[idx]
        w = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
        return (idx - 1 + w).float()

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64).clamp(0, self.num_timesteps - 1)
        lo = t.floor().long()
        hi = t.ceil().long()
        w = t - lo
        log_sigmas = self.log_sigmas.to(t.device)
        return ((1 - w) * log_sigmas[lo] + w * log_sigmas[hi]).exp().float()

    def timestep_sigmas(self, steps: int) -> torch.Tensor:
        """steps + 1 decreasing sigmas at evenly spaced timesteps T-1 ... 0, then 0 (the DDPM/DDIM
        grid; with steps = T this is every training timestep)."""
        t = torch.linspace(self.num_timesteps - 1, 0, steps, dtype=torch.float64).round().long()
        return torch.cat([self.sigmas[t], torch.zeros(1, dtype=torch.float64)]).float()

    def karras_sigmas(self, steps: int, rho: float = 7.0) -> torch.Tensor:
        return karras_sigmas(steps, self.sigma_min, self.sigma_max, rho)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 eq. 5: sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, then 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]).float()


# -- parameterisations ---------------------------------------------------------------------
def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction {prediction!r} is unknown; choose one of {PREDICTIONS}")


def predict_x0(output: torch.Tensor, xt: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
               prediction: str) -> torch.Tensor:
    """x_0 from a network output, with x_t = a x_0 + b eps (a = sqrt(abar), b = sqrt(1 - abar))."""
    if prediction == "eps":
        return (xt - b * output) / a
    if prediction == "v":
        return a * xt - b * output
    if prediction == "x0":
        return output
    raise ValueError(f"prediction {prediction!r} is unknown; choose one of {PREDICTIONS}")


def training_target(x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                    prediction: str) -> torch.Tensor:
    if prediction == "eps":
        return noise
    if prediction == "v":
        return a * noise - b * x0
    if prediction == "x0":
        return x0
    raise ValueError(f"prediction {prediction!r} is unknown; choose one of {PREDICTIONS}")


# -- learned variance (Nichol & Dhariwal sec. 3.1) --------------------------------------------
def interpolate_log_variance(frac: torch.Tensor, log_beta: torch.Tensor, log_beta_tilde: torch.Tensor
                             ) -> torch.Tensor:
    """log Sigma = frac log beta_t + (1 - frac) log beta_tilde_t, frac = (v + 1) / 2 in [0, 1]."""
    return frac * log_beta + (1 - frac) * log_beta_tilde


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2) ** 2 * (-logvar2).exp())


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log p(x) of 8-bit data in [-1, 1] under a Gaussian discretised into 256 bins (Ho et al. sec. 3.3)."""
    centered = x - mean
    inv_std = (-log_scale).exp()
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_min = (1.0 - cdf_min).clamp(min=1e-12).log()
    cdf_delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, cdf_delta.clamp(min=1e-12).log()))


def vlb_terms(schedule: VPSchedule, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
              x0_pred: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """Per-example L_t in bits/dim: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0 and the
    discretised decoder NLL at t = 0 (Ho et al. eq. 5)."""
    true_mean, _, true_logvar = schedule.q_posterior(x0, xt, t)
    pred_mean, _, _ = schedule.q_posterior(x0_pred, xt, t)
    log_beta = _gather(schedule.betas.log(), t, xt.ndim)
    pred_logvar = interpolate_log_variance(frac, log_beta, true_logvar)
    dims = list(range(1, x0.ndim))
    kl = normal_kl(true_mean, true_logvar, pred_mean, pred_logvar).mean(dim=dims) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, pred_mean, 0.5 * pred_logvar).mean(dim=dims) / math.log(2.0)
    return torch.where(t == 0, nll, kl)


def training_loss(model: Callable[..., torch.Tensor], x0: torch.Tensor, schedule: VPSchedule, *,
                  prediction: str = "eps", learn_sigma: bool = False, vlb_weight: float = 1e-3,
                  generator: torch.Generator | None = None, **model_kwargs: Any) -> torch.Tensor:
    """L_simple (Ho et al. eq. 14, MSE on the chosen target at uniform t), plus lambda L_vlb with the
    mean detached when the model learns its variance (L_hybrid, Nichol & Dhariwal eq. 16)."""
    check_prediction(prediction)
    batch = x0.shape[0]
    t = torch.randint(0, schedule.num_timesteps, (batch,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    xt = schedule.q_sample(x0, t, noise)
    output = model(xt, t.float(), **model_kwargs)
    if learn_sigma:
        output, var_out = output.chunk(2, dim=1)
    a, b = schedule.coefficients(t, x0.ndim)
    loss = F.mse_loss(output.float(), training_target(x0, noise, a, b, prediction).float())
    if learn_sigma:
        frac = (var_out.float() + 1) / 2
        x0_pred = predict_x0(output.detach().float(), xt.float(), a, b, prediction)
        loss = loss + vlb_weight * vlb_terms(schedule, x0.float(), xt.float(), t, x0_pred, frac).mean()
    return loss


class VPDenoiser:
    """D(x; sigma) -> x_0 for a network trained on a VP schedule (the sampler convention).

    x is in VE coordinates (x = x_0 + sigma n); the network sees x_t = x / sqrt(1 + sigma^2)
    at the continuous timestep t(sigma). Conditioning keyword arguments pass through to the
    network. For learned-variance networks the variance channel's frac = (v + 1) / 2 of the last
    call is kept in `variance_frac` for the DDPM sampler (Nichol & Dhariwal sec. 3.1)."""

    def __init__(self, network: Callable[..., torch.Tensor], schedule: VPSchedule,
                 prediction: str = "eps", learn_sigma: bool = False, dtype: torch.dtype | None = None) -> None:
        check_prediction(prediction)
        self.network = network
        self.dtype = dtype          # the network's input dtype (e.g. bf16); the sampler state stays as given
        self.schedule = schedule
        self.prediction = prediction
        self.learn_sigma = learn_sigma
        self.variance_frac: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond: Any) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32).expand(x.shape[0])
        shape = (-1,) + (1,) * (x.ndim - 1)
        a = (1 / (1 + sigma ** 2).sqrt()).reshape(shape)     # sqrt(abar)
        b = (sigma.reshape(shape) * a)                        # sqrt(1 - abar)
        xt = x.float() * a
        output = self.network(xt.to(self.dtype or x.dtype), self.schedule.sigma_to_t(sigma), **cond)
        if self.learn_sigma:
            output, var_out = output.chunk(2, dim=1)
            self.variance_frac = (var_out.float() + 1) / 2
        return predict_x0(output.float(), xt, a, b, self.prediction).to(x.dtype)


class DiffusionSpec:
    """How a network was trained: beta schedule, number of timesteps, prediction target."""

    def __init__(self, schedule: str = "linear", num_timesteps: int = 1000, prediction: str = "eps") -> None:
        check_prediction(prediction)
        if schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta schedule {schedule!r} is unknown; choose one of {sorted(BETA_SCHEDULES)}")
        self.schedule, self.num_timesteps, self.prediction = schedule, int(num_timesteps), prediction

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DiffusionSpec":
        unknown = set(values) - {"schedule", "num_timesteps", "prediction"}
        if unknown:
            raise ValueError(f"unknown diffusion keys {sorted(unknown)}; known: schedule, num_timesteps, prediction")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "num_timesteps": self.num_timesteps, "prediction": self.prediction}

    def build(self) -> VPSchedule:
        return VPSchedule.from_name(self.schedule, self.num_timesteps)
