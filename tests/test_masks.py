"""Inpainting masks (bench/data/masks.py): reproducible from the seed, area ratio as configured
(within 2%, the issue's check; exact to one pixel by construction), kinds that differ in shape."""
from __future__ import annotations

import pytest
import torch

from bench.data.masks import MASK_KINDS, area_ratio, make_mask, make_masks


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5])
@pytest.mark.parametrize("resolution", [32, 64])
def test_area_ratio_matches_the_config_within_two_percent(kind, ratio, resolution):
    masks = make_masks(kind, ratio, resolution, seed=3, indices=range(6))
    assert masks.dtype == torch.uint8 and masks.shape == (6, 1, resolution, resolution)
    assert set(masks.unique().tolist()) <= {0, 1}
    ratios = area_ratio(masks)
    assert torch.all((ratios - ratio).abs() <= 0.02), ratios
    assert torch.all((ratios - ratio).abs() <= 1 / resolution ** 2), ratios   # exact to one pixel


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_masks_are_reproducible_from_the_seed_and_independent_of_the_subset(kind):
    a = make_masks(kind, 0.3, 32, seed=7, indices=range(5))
    assert torch.equal(a, make_masks(kind, 0.3, 32, seed=7, indices=range(5)))
    assert torch.equal(a[3], make_mask(kind, 0.3, 32, seed=7, index=3))     # mask i depends on (seed, i) only
    assert not torch.equal(a, make_masks(kind, 0.3, 32, seed=8, indices=range(5)))
    assert not torch.equal(a[0], a[1])


def test_edge_ratios_and_shapes():
    assert make_mask("thick", 0.0, 32, 0, 0).sum() == 0
    assert make_mask("box", 1.0, 32, 0, 0).sum() == 32 * 32
    box = make_mask("box", 0.25, 32, 0, 0)[0]
    rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
    bbox = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert bbox - box.sum() < 32          # a box: its bounding box, but for a partial last column
    thin = make_mask("thin", 0.25, 32, 0, 0)[0]
    thin_rows = thin.any(1).nonzero()
    assert (thin_rows.max() - thin_rows.min()) > 10   # strokes spread across the image


def test_bad_specs_are_refused_naming_them():
    with pytest.raises(ValueError, match="mask kind 'circle'"):
        make_mask("circle", 0.2, 32, 0, 0)
    with pytest.raises(ValueError, match="area ratio"):
        make_mask("box", 1.5, 32, 0, 0)
