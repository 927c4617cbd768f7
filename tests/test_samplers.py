"""Sampler maths, tested with the exact optimal denoiser of known data distributions (no network).

For data x0 ~ N(mu, s^2) per coordinate and x = x0 + sigma n, the optimal denoiser is
E[x0 | x] = mu + s^2 / (s^2 + sigma^2) (x - mu); for a mixture of Gaussians it is the
responsibility-weighted sum of the components' posterior means. Each sampler must reproduce the
data distribution as its number of steps grows.
"""
from __future__ import annotations

import math

import pytest
import torch

from models.sampling.diffusion import VPSchedule, karras_sigmas
from models.sampling.samplers import SAMPLERS, prior_sample, sample_ddim, sample_ddpm, sampling_sigmas

SCHEDULE = VPSchedule.from_name("linear", 1000)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FastNoise:
    """A single-generator stand-in for models.core.seeding.NoiseSource (same methods the samplers use);
    the per-sample streams are tested through Pipeline.sample in test_pixel.py."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype)


class GaussianDenoiser:
    def __init__(self, mu: float, s: float) -> None:
        self.mu, self.s, self.calls = mu, s, 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        return self.mu + self.s ** 2 / (self.s ** 2 + sigma ** 2) * (x - self.mu)


class MixtureDenoiser:
    """1-D mixture sum_k w_k N(mu_k, s_k^2) per coordinate."""

    def __init__(self, weights, means, stds) -> None:
        self.w, self.mu, self.s = (torch.tensor(v) for v in (weights, means, stds))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        # Component-major (K, B, ...) layout: reductions over a leading dim are ~4x faster on CPU.
        comp = (-1,) + (1,) * x.ndim
        mu, s, log_w = self.mu.reshape(comp), self.s.reshape(comp), self.w.log().reshape(comp)
        var = s ** 2 + sigma.reshape(1, -1, *([1] * (x.ndim - 1))) ** 2
        r = torch.softmax(log_w - 0.5 * (x - mu) ** 2 / var - 0.5 * var.log(), dim=0)
        return (r * (mu + s ** 2 / var * (x - mu))).sum(0).to(x.dtype)


def run(name: str, denoise, steps: int, *, n: int = 8192, seed: int = 0, eta: float = 0.0) -> torch.Tensor:
    sigmas = sampling_sigmas(SCHEDULE, name, steps)
    noise = FastNoise(seed)
    x = prior_sample(noise, (n, 2), float(sigmas[0]))
    return SAMPLERS[name](denoise, x, sigmas, noise=noise, eta=eta)


def moment_errors(samples: torch.Tensor, mu: float, s: float) -> tuple[float, float]:
    return abs(samples.mean().item() - mu), abs(samples.std().item() / s - 1)


@pytest.mark.parametrize("name,steps", [("ddpm", 500), ("ddim", 200), ("dpmpp_2m", 50), ("heun", 50)])
def test_gaussian_target_is_reproduced(name: str, steps: int) -> None:
    mu, s = 0.3, 0.5
    out = run(name, GaussianDenoiser(mu, s), steps)
    mean_err, std_err = moment_errors(out, mu, s)
    # 16384 values of std 0.5: standard error of the mean 0.004, of the std ~0.6 %.
    assert mean_err < 0.015, (name, mean_err)
    assert std_err < 0.03, (name, std_err)


@pytest.mark.parametrize("name,few,many", [("ddpm", 5, 250), ("ddim", 3, 100), ("dpmpp_2m", 2, 30), ("heun", 2, 30)])
def test_error_shrinks_as_steps_grow(name: str, few: int, many: int) -> None:
    mu, s = 0.3, 0.5
    coarse = sum(moment_errors(run(name, GaussianDenoiser(mu, s), few), mu, s))
    fine = sum(moment_errors(run(name, GaussianDenoiser(mu, s), many), mu, s))
    assert fine < coarse, (name, coarse, fine)
    assert coarse > 0.05, f"{name} with {few} steps should be visibly off, got total error {coarse}"


@pytest.mark.parametrize("name,steps", [("ddpm", 250), ("ddim", 100), ("dpmpp_2m", 40), ("heun", 40)])
def test_mixture_of_gaussians_modes_and_widths(name: str, steps: int) -> None:
    weights, means, stds = [0.3, 0.7], [-0.6, 0.5], [0.08, 0.15]
    out = run(name, MixtureDenoiser(weights, means, stds), steps).flatten()
    left, right = out[out < 0], out[out >= 0]
    assert abs(len(left) / out.numel() - 0.3) < 0.02
    assert abs(left.mean().item() + 0.6) < 0.02 and abs(right.mean().item() - 0.5) < 0.02
    assert abs(left.std().item() / 0.08 - 1) < 0.15 and abs(right.std().item() / 0.15 - 1) < 0.1


def test_ddim_eta0_is_deterministic_and_ignores_noise() -> None:
    sigmas = SCHEDULE.timestep_sigmas(20)
    x = prior_sample(FastNoise(1), (64, 3), float(sigmas[0]))
    den = MixtureDenoiser([0.5, 0.5], [-0.5, 0.5], [0.1, 0.1])
    a = sample_ddim(den, x.clone(), sigmas, noise=FastNoise(2), eta=0.0)
    b = sample_ddim(den, x.clone(), sigmas, noise=FastNoise(3), eta=0.0)
    c = sample_ddim(den, x.clone(), sigmas, noise=None, eta=0.0)
    assert torch.equal(a, b) and torch.equal(a, c)
    stochastic = sample_ddim(den, x.clone(), sigmas, noise=FastNoise(2), eta=1.0)
    assert not torch.allclose(a, stochastic)


def mixture_cdf(x: torch.Tensor, weights, means, stds) -> torch.Tensor:
    w, mu, s = (torch.tensor(v) for v in (weights, means, stds))
    return (w * 0.5 * (1 + torch.erf((x[:, None] - mu) / (s * math.sqrt(2))))).sum(-1)


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    grid = torch.linspace(-1.2, 1.2, 481)
    cdf = lambda v: (v.flatten()[None] <= grid[:, None]).float().mean(1)  # noqa: E731
    return (cdf(a) - cdf(b)).abs().max().item()


def test_ddim_eta1_with_1000_steps_matches_ddpm_ancestral() -> None:
    """DDIM eq. 12 with eta = 1 is the DDPM posterior (Song et al. sec. 4.1); the two
    implementations (VE form vs Ho et al.'s VP posterior) agree in distribution, and, driven by
    the same noise, sample by sample."""
    mix = ([0.4, 0.6], [-0.5, 0.4], [0.1, 0.2])
    den = MixtureDenoiser(*mix)
    ddim = run("ddim", den, 1000, eta=1.0, n=4096, seed=5)
    ddpm = run("ddpm", den, 1000, n=4096, seed=5)
    assert (ddim - ddpm).abs().max().item() < 1e-3
    independent = run("ddpm", den, 1000, n=4096, seed=6)
    # Two-sample Kolmogorov-Smirnov distance, 8192 values each: 5 % critical value ~0.021.
    assert ks_distance(ddim, independent) < 0.03
    grid = torch.linspace(-1.2, 1.2, 481)
    target = mixture_cdf(grid, *mix)
    for out in (ddim, independent):
        empirical = (out.flatten()[None] <= grid[:, None]).float().mean(1)
        assert (empirical - target).abs().max().item() < 0.025


def test_heun_counts_2n_minus_1_evaluations_and_others_n() -> None:
    for name, expected in [("heun", 2 * 10 - 1), ("ddim", 10), ("dpmpp_2m", 10), ("ddpm", 10)]:
        den = GaussianDenoiser(0.0, 0.5)
        run(name, den, 10, n=8)
        assert den.calls == expected, name


def test_truncated_grid_returns_x_at_last_sigma() -> None:
    """A grid ending above 0 stops the reverse process there: x ~ data + sigma_end noise."""
    mu, s, stop = 0.2, 0.3, 0.5
    sigmas = SCHEDULE.timestep_sigmas(200)
    sigmas = torch.cat([sigmas[sigmas > stop], torch.tensor([stop])])
    noise = FastNoise(0)
    out = sample_ddpm(GaussianDenoiser(mu, s), prior_sample(noise, (16384, 2), float(sigmas[0])), sigmas, noise=noise)
    assert abs(out.mean().item() - mu) < 0.02
    assert abs(out.std().item() / math.sqrt(s ** 2 + stop ** 2) - 1) < 0.03


def test_bad_inputs_are_named() -> None:
    den = GaussianDenoiser(0.0, 1.0)
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="decreasing"):
        sample_ddim(den, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="noise"):
        sample_ddpm(den, x, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="no eta"):
        SAMPLERS["heun"](den, x, torch.tensor([1.0, 0.0]), eta=0.5)
    with pytest.raises(ValueError, match="unknown"):
        sampling_sigmas(SCHEDULE, "euler", 10)
    assert set(SAMPLERS) == {"ddpm", "ddim", "dpmpp_2m", "heun"}
    ks = karras_sigmas(5, 0.01, 80.0)
    assert ks[0].item() == pytest.approx(80.0) and ks[-2].item() == pytest.approx(0.01) and ks[-1] == 0


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_thresholded_x0_seen_by_every_sampler_stays_in_range(name: str, mode: str) -> None:
    """Data far outside [-1, 1] (N(0, 3^2)): every x0_hat the sampler sees, and so the final
    sample, is inside [-1, 1] once thresholded (Imagen sec. 2.3)."""
    from models.sampling.guidance import Thresholded
    seen: list[torch.Tensor] = []
    sigmas = sampling_sigmas(SCHEDULE, name, 12)
    noise = FastNoise(3)
    x = prior_sample(noise, (256, 8), float(sigmas[0]))
    out = SAMPLERS[name](Thresholded(GaussianDenoiser(0.5, 3.0), mode, 0.9), x, sigmas, noise=noise,
                         eta=1.0 if name == "ddim" else 0.0, callback=lambda i, xi, x0: seen.append(x0))
    assert len(seen) == 12
    assert max(x0.abs().max().item() for x0 in seen) <= 1.0 + 1e-6
    assert out.abs().max().item() <= 1.0 + 1e-5
    # Without thresholding the same denoiser's x0_hat leaves the range (the test can fail).
    raw = SAMPLERS[name](GaussianDenoiser(0.5, 3.0), prior_sample(FastNoise(3), (256, 8), float(sigmas[0])), sigmas,
                         noise=FastNoise(4), eta=1.0 if name == "ddim" else 0.0)
    assert raw.abs().max().item() > 2


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_any_number_of_steps_including_one(name: str) -> None:
    """steps = 1 is one denoiser call from the prior straight to x0_hat = D(x_prior; sigma_max)."""
    den = GaussianDenoiser(0.3, 0.5)
    out = run(name, den, 1, n=64)
    assert den.calls == 1
    sigmas = sampling_sigmas(SCHEDULE, name, 1)
    x = prior_sample(FastNoise(0), (64, 2), float(sigmas[0]))
    # (heun: x + (0 - sigma) (x - x0) / sigma, float32 rounding of |x| ~ 150)
    assert torch.allclose(out, GaussianDenoiser(0.3, 0.5)(x, sigmas[:1].expand(64)), atol=1e-4)
    for steps in (2, 7, 33):
        assert torch.isfinite(run(name, GaussianDenoiser(0.3, 0.5), steps, n=16)).all()


class LearnedVarianceDenoiser(GaussianDenoiser):
    """The exact Gaussian denoiser plus a fixed learned-variance fraction (Nichol & Dhariwal eq. 15)."""

    def __init__(self, mu: float, s: float, frac: float) -> None:
        super().__init__(mu, s)
        self.frac = frac
        self.variance_frac: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.variance_frac = torch.full_like(x, self.frac)
        return super().__call__(x, sigma)


def test_ddpm_learned_variance_interpolates_between_beta_tilde_and_beta() -> None:
    """frac = 0 is exactly the fixed beta_tilde sampler; frac = 1 uses the larger beta, which with
    few steps (where beta >> beta_tilde) visibly widens the samples; with many steps both match."""
    mu, s = 0.3, 0.5
    fixed = run("ddpm", GaussianDenoiser(mu, s), 10, seed=7)
    low = run("ddpm", LearnedVarianceDenoiser(mu, s, 0.0), 10, seed=7)
    high = run("ddpm", LearnedVarianceDenoiser(mu, s, 1.0), 10, seed=7)
    assert torch.allclose(fixed, low, atol=1e-6)
    assert high.std().item() > low.std().item() * 1.05
    fine = run("ddpm", LearnedVarianceDenoiser(mu, s, 1.0), 500, seed=7)
    assert moment_errors(fine, mu, s)[1] < 0.03
