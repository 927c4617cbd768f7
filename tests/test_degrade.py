"""Super-resolution degradations (bench/data/degrade.py): sizes, reproducible noise per index,
bicubic downsampling of a constant image is the constant, blur + noise differs from bicubic."""
from __future__ import annotations

import pytest
import torch

from bench.data.degrade import degrade, upscale


def images(n=4, size=32, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("kind", ["bicubic", "blur_noise"])
def test_sizes_and_reproducibility(factor, kind):
    x = images()
    low = degrade(x, factor, kind, seed=1)
    assert low.dtype == torch.uint8 and low.shape == (4, 3, 32 // factor, 32 // factor)
    assert torch.equal(low, degrade(x, factor, kind, seed=1))
    # image i's noise depends on (seed, i) only: a subset with its indices gives the same rows
    assert torch.equal(low[2:], degrade(x[2:], factor, kind, seed=1, indices=[2, 3]))


def test_bicubic_keeps_a_constant_image_and_noise_depends_on_the_seed():
    flat = torch.full((2, 3, 32, 32), 100, dtype=torch.uint8)
    assert torch.equal(degrade(flat, 2, "bicubic"), torch.full((2, 3, 16, 16), 100, dtype=torch.uint8))
    noisy = degrade(flat, 2, "blur_noise", seed=0, noise_std=0.05)
    assert 0.03 < (noisy.float() / 255 - 100 / 255).std() < 0.07
    assert not torch.equal(noisy, degrade(flat, 2, "blur_noise", seed=1, noise_std=0.05))
    x = images()
    assert not torch.equal(degrade(x, 2, "bicubic"), degrade(x, 2, "blur_noise", noise_std=0.0))  # blurred


def test_upscale_baselines():
    low = images(2, 8)
    near = upscale(low, 16, "nearest")
    assert torch.equal(near[..., ::2, ::2], low)      # nearest repeats each pixel
    assert upscale(low, 16, "bicubic").shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="upscale mode"):
        upscale(low, 16, "lanczos")


def test_bad_degradations_name_the_problem():
    with pytest.raises(ValueError, match="degradation 'jpeg'"):
        degrade(images(), 2, "jpeg")
    with pytest.raises(ValueError, match="factor 3"):
        degrade(images(), 3)
    with pytest.raises(ValueError, match="cannot be downsampled"):
        degrade(images(2, 12), 4)
