"""Inpainting masks generated from a seed (issue 21): boxes, and LaMa-style free-form strokes,
thin and thick (Suvorov et al. 2022, "LaMa", sec. 3 / their `gen_mask` irregular strokes: random
polylines drawn with a round brush), each at a stated area ratio.

Conventions: a mask is uint8 (1, H, W) with 1 = unknown (to inpaint) and 0 = known, as
`models.core.interface.SampleRequest.masks`. Mask i of a set depends only on (seed, kind, ratio,
resolution, i): numpy's SeedSequence over those, so any subset or batch size gives the same masks.
The area is exact: round(ratio * H * W) pixels (the last brush stamp, or the box's last column,
is applied only in part), so the measured ratio matches the configured one to 1 / (H * W).
"""
from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np
import torch

from models.core.images import MappedImages

MASK_KINDS = ("box", "thin", "thick")
# Brush radius ranges in pixels at 32 px, scaled with the resolution (LaMa's thin masks use
# brushes a few times narrower than its thick ones).
BRUSH_RADIUS = {"thin": (0.5, 1.2), "thick": (2.0, 3.5)}


def _rng(seed: int, kind: str, ratio: float, resolution: int, index: int) -> np.random.Generator:
    tag = int.from_bytes(hashlib.sha256(f"{kind}:{ratio!r}:{resolution}".encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed) & (2 ** 63 - 1), tag, int(index)]))


def target_pixels(ratio: float, resolution: int) -> int:
    return int(round(ratio * resolution * resolution))


def check_mask_spec(kind: str, ratio: float, key: str = "mask") -> None:
    """ValueError naming `key` when the kind is unknown or the ratio is outside [0, 1]."""
    if kind not in MASK_KINDS:
        raise ValueError(f"{key}: mask kind {kind!r} is not one of {MASK_KINDS}")
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
        raise ValueError(f"{key}: area ratio must be a number in [0, 1], got {ratio!r}")


def box_mask(rng: np.random.Generator, resolution: int, area: int) -> np.ndarray:
    """One axis-aligned box of `area` pixels (aspect ratio drawn in [1/2, 2]); the last column is
    filled only partly when area is not a product h * w."""
    mask = np.zeros((resolution, resolution), dtype=np.uint8)
    if area == 0:
        return mask
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    h = min(resolution, max(1, round(math.sqrt(area * aspect))))
    w = min(resolution, math.ceil(area / h))
    if h * w < area:                 # the box would not fit: grow the height to the image's
        h = resolution
        w = math.ceil(area / h)
    top = int(rng.integers(0, resolution - h + 1))
    left = int(rng.integers(0, resolution - w + 1))
    mask[top:top + h, left:left + w - 1] = 1
    mask[top:top + area - h * (w - 1), left + w - 1] = 1   # the last column, partly
    return mask


def stroke_mask(rng: np.random.Generator, resolution: int, area: int, kind: str) -> np.ndarray:
    """Free-form strokes (random polylines of 4-9 segments, round brush of a drawn radius) until
    `area` pixels are covered; the final stamp adds only its pixels nearest its centre."""
    mask = np.zeros((resolution, resolution), dtype=np.uint8)
    if area == 0:
        return mask
    scale = resolution / 32.0
    r_lo, r_hi = BRUSH_RADIUS[kind]
    yy, xx = np.mgrid[0:resolution, 0:resolution]
    covered = 0
    while True:
        radius = rng.uniform(r_lo, r_hi) * scale
        y, x = rng.uniform(0, resolution, size=2)
        for _ in range(int(rng.integers(4, 10))):
            angle = rng.uniform(0, 2 * math.pi)
            length = rng.uniform(0.1, 0.35) * resolution
            steps = max(1, int(length / 0.5))
            for s in range(1, steps + 1):
                cy = float(np.clip(y + math.sin(angle) * length * s / steps, 0, resolution - 1))
                cx = float(np.clip(x + math.cos(angle) * length * s / steps, 0, resolution - 1))
                d2 = (yy - cy) ** 2 + (xx - cx) ** 2
                new = (d2 <= radius ** 2 + 0.25) & (mask == 0)
                count = int(new.sum())
                if covered + count >= area:          # the last stamp, in part: its nearest pixels
                    ys, xs = np.nonzero(new)
                    order = np.lexsort((xs, ys, d2[ys, xs]))[:area - covered]
                    mask[ys[order], xs[order]] = 1
                    return mask
                mask[new] = 1
                covered += count
            y, x = cy, cx


def make_mask(kind: str, ratio: float, resolution: int, seed: int, index: int) -> torch.Tensor:
    """Mask `index` of the set (kind, ratio, resolution, seed): uint8 (1, H, W), 1 = to inpaint."""
    check_mask_spec(kind, ratio)
    rng = _rng(seed, kind, ratio, resolution, index)
    area = target_pixels(ratio, resolution)
    grid = box_mask(rng, resolution, area) if kind == "box" else stroke_mask(rng, resolution, area, kind)
    return torch.from_numpy(grid)[None]


def make_masks(kind: str, ratio: float, resolution: int, seed: int, indices: Sequence[int]) -> torch.Tensor:
    """Masks for `indices`, uint8 (N, 1, H, W)."""
    return torch.stack([make_mask(kind, ratio, resolution, seed, i) for i in indices])


def mask_sequence(kind: str, ratio: float, resolution: int, seed: int, n: int) -> MappedImages:
    """Masks 0..n-1 as an ImageSequence, made a batch at a time when read."""
    return MappedImages(None, lambda _, idx: make_masks(kind, ratio, resolution, seed, idx), (1, resolution, resolution),
                        f"masks[{kind},{ratio!r},{resolution},seed={seed}]", n=n)


def area_ratio(masks: torch.Tensor) -> torch.Tensor:
    """Each mask's fraction of pixels to inpaint, (N,) float64."""
    return masks.to(torch.float64).flatten(1).mean(dim=1)
