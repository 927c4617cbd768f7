"""Classifier-free guidance (one batched call, scale 1 = one pass) and x0 thresholding."""
from __future__ import annotations

import pytest
import torch

from models.sampling.guidance import (ClassifierFreeGuidance, Thresholded, dynamic_threshold, guided_denoiser,
                             static_threshold)


class RecordingDenoiser:
    """x0_hat = x * (1 + y) per row, so conditional and unconditional rows differ; records calls."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert sigma.shape == (x.shape[0],) and y.shape == (x.shape[0],)
        self.batches.append(x.shape[0])
        return x * (1 + y.float()).reshape(-1, 1)


def test_scale_one_is_one_conditional_pass() -> None:
    den = RecordingDenoiser()
    x, sigma = torch.randn(5, 3), torch.ones(5)
    y, null = torch.full((5,), 2), torch.full((5,), -1)
    out = ClassifierFreeGuidance(den, 1.0, {"y": y}, {"y": null})(x, sigma)
    assert den.batches == [5]
    assert torch.allclose(out, 3 * x)


@pytest.mark.parametrize("scale", [0.0, 2.0, 7.5])
def test_guidance_is_one_doubled_call_with_the_cfg_combination(scale: float) -> None:
    den = RecordingDenoiser()
    x, sigma = torch.randn(4, 3), torch.rand(4)
    y, null = torch.full((4,), 2), torch.zeros(4, dtype=torch.long)   # cond: 3x, uncond: 1x
    out = ClassifierFreeGuidance(den, scale, {"y": y}, {"y": null})(x, sigma)
    assert den.batches == [8]
    assert torch.allclose(out, x + scale * (3 * x - x))


def test_guidance_without_unconditional_input_is_refused() -> None:
    with pytest.raises(ValueError, match="unconditional"):
        ClassifierFreeGuidance(RecordingDenoiser(), 3.0, {"y": torch.zeros(2)}, None)


def test_static_threshold_clips() -> None:
    x = torch.tensor([[-3.0, -0.5, 0.2, 1.7]])
    assert torch.equal(static_threshold(x), torch.tensor([[-1.0, -0.5, 0.2, 1.0]]))


def test_dynamic_threshold_stays_in_range_and_rescales() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 3, 8, 8, generator=g) * torch.linspace(0.2, 4, 16).reshape(-1, 1, 1, 1)
    out = dynamic_threshold(x0, 0.9)
    assert out.abs().max() <= 1.0 + 1e-6
    flat = x0.reshape(16, -1).abs()
    s = torch.quantile(flat, 0.9, dim=1)
    for i in range(16):
        if s[i] > 1:   # Imagen: clip to [-s, s], then divide by s
            expected = x0[i].clamp(-s[i], s[i]) / s[i]
            assert torch.allclose(out[i], expected, atol=1e-6)


def test_dynamic_threshold_is_identity_where_s_le_1() -> None:
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(8, 3, 4, 4, generator=g) * 2 - 1          # every |x0| <= 1, so s <= 1
    assert torch.equal(dynamic_threshold(x0, 0.995), x0)
    assert torch.equal(dynamic_threshold(x0 * 0.3, 1.0), x0 * 0.3)
    # A sample with s <= 1 is untouched even if another sample in the batch needs rescaling.
    mixed = torch.stack([x0[0] * 0.5, x0[1] * 10])
    out = dynamic_threshold(mixed, 0.995)
    assert torch.equal(out[0], mixed[0]) and not torch.equal(out[1], mixed[1])


def test_thresholding_wraps_the_guided_x0() -> None:
    den = RecordingDenoiser()
    x = torch.full((2, 4), 0.5)
    wrapped = guided_denoiser(den, scale=3.0, cond={"y": torch.full((2,), 1)}, uncond={"y": torch.zeros(2)},
                              thresholding="static")
    # uncond 0.5, cond 1.0 -> guided 0.5 + 3 * 0.5 = 2.0, clipped to 1.
    assert torch.equal(wrapped(x, torch.ones(2)), torch.ones(2, 4))
    assert isinstance(wrapped, Thresholded)
    with pytest.raises(ValueError, match="thresholding"):
        Thresholded(den, "soft")


@pytest.mark.parametrize("percentile", [0.5, 0.9, 0.995, 1.0])
def test_dynamic_threshold_never_leaves_the_unit_range(percentile: float) -> None:
    """Heavy tails, single huge outliers, constant and near-boundary images, in one batch."""
    g = torch.Generator().manual_seed(2)
    x0 = torch.cat([
        torch.randn(8, 3, 8, 8, generator=g) * 50,                          # far out of range
        torch.distributions.StudentT(1.0).sample((8, 3, 8, 8)),             # Cauchy tails
        torch.zeros(2, 3, 8, 8),                                            # one huge value (below)
        torch.full((2, 3, 8, 8), -7.0),                                     # constant, outside
        torch.full((2, 3, 8, 8), 1.0),                                      # exactly at the bound
    ])
    x0[-6, 0, 0, 0], x0[-5, 2, 7, 7] = 1e6, -1e6
    out = dynamic_threshold(x0, percentile)
    assert out.abs().max().item() <= 1.0
    assert torch.equal(out[-2:], x0[-2:])                                   # s = 1: identity
    assert torch.allclose(out[-4:-2], torch.full_like(out[-4:-2], -1.0))    # s = 7: -7 / 7


def test_scale_one_needs_no_unconditional_input_and_zero_is_unconditional() -> None:
    den = RecordingDenoiser()
    x, sigma = torch.randn(3, 2), torch.ones(3)
    y, null = torch.full((3,), 2), torch.zeros(3, dtype=torch.long)
    assert torch.allclose(ClassifierFreeGuidance(den, 1.0, {"y": y}, None)(x, sigma), 3 * x)
    assert torch.allclose(ClassifierFreeGuidance(den, 0.0, {"y": y}, {"y": null})(x, sigma), x)
    assert den.batches == [3, 6]
