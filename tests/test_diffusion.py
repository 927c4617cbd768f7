"""Diffusion maths: schedules, q(x_t|x_0), parameterisations, posterior, learned variance."""
from __future__ import annotations

import math

import pytest
import torch

from models.sampling.diffusion import (DiffusionSpec, VPDenoiser, VPSchedule, cosine_betas, linear_betas, predict_x0,
                              training_loss, training_target, vlb_terms)


def test_linear_schedule_matches_ho_et_al() -> None:
    betas = linear_betas(1000)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert torch.all(betas[1:] > betas[:-1])
    # Rescaled for other T so that the total noise stays comparable.
    assert linear_betas(250)[-1].item() == pytest.approx(0.08)


def test_cosine_schedule_abar_follows_eq_17() -> None:
    t_total, s = 1000, 0.008
    abar = torch.cumprod(1 - cosine_betas(t_total), 0)
    f = lambda t: math.cos((t / t_total + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 500, 900):
        assert abar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-6)
    assert cosine_betas(t_total).max().item() <= 0.999


def test_q_sample_has_the_closed_form_moments() -> None:
    sched = VPSchedule.from_name("cosine", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 0.7)
    t = torch.full((20000,), 400)
    xt = sched.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    abar = sched.alphas_cumprod[400].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=0.02)
    assert xt.var().item() == pytest.approx(1 - abar, rel=0.03)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_parameterisations_round_trip(prediction: str) -> None:
    sched = VPSchedule.from_name("linear", 1000)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(6, 3, 4, 4, generator=g), torch.randn(6, 3, 4, 4, generator=g)
    t = torch.tensor([0, 10, 200, 500, 900, 999])
    a, b = sched.coefficients(t, 4)
    xt = a * x0 + b * noise
    target = training_target(x0, noise, a, b, prediction)
    assert torch.allclose(predict_x0(target, xt, a, b, prediction), x0, atol=1e-3)


def test_posterior_matches_bayes_rule_numerically() -> None:
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): compare mean and variance to a brute-force
    evaluation of that product on a grid."""
    sched = VPSchedule.from_name("linear", 1000)
    t, x0, xt = 300, 0.4, 0.1
    beta, abar_prev = sched.betas[t].item(), sched.alphas_cumprod_prev[t].item()
    grid = torch.linspace(-4, 4, 200001, dtype=torch.float64)
    log_p = (-(xt - math.sqrt(1 - beta) * grid) ** 2 / (2 * beta)
             - (grid - math.sqrt(abar_prev) * x0) ** 2 / (2 * (1 - abar_prev)))
    w = torch.softmax(log_p, 0)
    mean_bf = (w * grid).sum().item()
    var_bf = (w * (grid - mean_bf) ** 2).sum().item()
    mean, var, log_var = sched.q_posterior(torch.tensor([[x0]]), torch.tensor([[xt]]), torch.tensor([t]))
    assert mean.item() == pytest.approx(mean_bf, abs=1e-5)
    assert var.item() == pytest.approx(var_bf, rel=1e-3)
    assert log_var.exp().item() == pytest.approx(var.item(), rel=1e-6)


def test_sigma_and_t_conversions_invert_each_other() -> None:
    sched = VPSchedule.from_name("linear", 1000)
    t = torch.tensor([0.0, 1.5, 17.25, 500.0, 998.9])
    assert torch.allclose(sched.sigma_to_t(sched.t_to_sigma(t)), t, atol=1e-3)
    assert torch.allclose(sched.t_to_sigma(torch.tensor([250.0])), sched.sigmas[250].float())
    grid = sched.timestep_sigmas(10)
    assert grid[0].item() == pytest.approx(sched.sigma_max) and grid[-1] == 0 and len(grid) == 11


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_vp_denoiser_recovers_x0_from_a_perfect_network(prediction: str) -> None:
    sched = VPSchedule.from_name("cosine", 1000)
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    sigma = torch.tensor([0.05, 0.8, 3.0, 40.0])

    def perfect(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = (1 / (1 + sigma ** 2).sqrt()).reshape(-1, 1, 1, 1)
        b = sigma.reshape(-1, 1, 1, 1) * a
        assert torch.allclose(xt, a * x0 + b * noise, atol=1e-5)     # the network sees the VP x_t
        assert torch.allclose(t, sched.sigma_to_t(sigma))
        return training_target(x0, noise, a, b, prediction)

    den = VPDenoiser(perfect, sched, prediction)
    x = x0 + sigma.reshape(-1, 1, 1, 1) * noise
    assert torch.allclose(den(x, sigma), x0, atol=1e-3 if prediction != "eps" else 2e-2)


def test_learned_variance_vlb_trains_only_the_variance() -> None:
    """L_hybrid: the L_vlb term reaches the variance channels and, through stop-gradient, not the mean."""
    sched = VPSchedule.from_name("linear", 100)
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(8, 3, 4, 4, generator=g) * 2 - 1
    xt = sched.q_sample(x0, torch.full((8,), 50), torch.randn(x0.shape, generator=g))
    x0_pred = x0.clone().requires_grad_(False)
    frac = torch.full(x0.shape, 0.5, requires_grad=True)
    terms = vlb_terms(sched, x0, xt, torch.full((8,), 50), x0_pred, frac)
    terms.mean().backward()
    assert frac.grad is not None and frac.grad.abs().sum() > 0
    # The t = 0 term is the discretised decoder NLL: positive bits per dim.
    nll = vlb_terms(sched, x0, xt, torch.zeros(8, dtype=torch.long), x0, frac.detach())
    assert torch.all(nll > 0)

    weights = torch.zeros(6, 3, 1, 1, requires_grad=True)

    def network(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(xt, weights)            # 3 eps channels + 3 variance channels

    loss = training_loss(network, x0, sched, learn_sigma=True, vlb_weight=1.0, generator=g)
    loss.backward()
    assert torch.isfinite(loss) and weights.grad[3:].abs().sum() > 0


def test_diffusion_spec_validates_and_round_trips() -> None:
    spec = DiffusionSpec("cosine", 500, "v")
    assert DiffusionSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()
    assert spec.build().num_timesteps == 500
    with pytest.raises(ValueError, match="prediction"):
        DiffusionSpec(prediction="score")
    with pytest.raises(ValueError, match="schedule"):
        DiffusionSpec(schedule="sigmoid")
