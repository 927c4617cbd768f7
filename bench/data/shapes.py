"""`shapes`: procedurally rendered coloured geometric shapes, any N, any resolution, no files.

Each item is one shape (8 kinds, 8 colours, 3 sizes, 9 positions on a 3x3 grid) on a plain
background (4 colours), with a small per-item jitter of position (+-2% of the side) and of
rotation (+-15 degrees; any rotation for hexagons). Its label is the shape-kind index and its
caption comes from the grammar in `bench.data.prompts` ("a small red circle at the top left on
a white background").

Determinism: attributes come from the RNG `default_rng([seed, split_id, i, 0])`, geometry
jitter from `[seed, split_id, i, 1]` (see `prompts.item_rng`), so item i depends only on
(seed, split, i); the train, test and val splits are different streams.

Rendering: geometry lives in [0, 1] coordinates. Every view is drawn with PIL on one
master canvas of 2 x 256 px (2x supersampled; 2 x resolution above 256) and reduced to the
requested resolution with PIL's BOX filter, which is exact area averaging (antialiased), so
the 16, 32, 64 and 128 px views of an item are area-downsamplings of the same picture and
agree with each other (a 128 px view box-reduced to 32 px equals the 32 px view up to uint8
rounding).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from bench.data.base import ImageSource
from bench.data.prompts import (BACKGROUNDS, COLOURS, GEOMETRY_STREAM, KINDS, POSITIONS, SIZES,
                                caption_for, item_rng, sample_attributes, split_id)

RECIPE_VERSION = 1          # bump when the rendering changes: it enters the fingerprint
MASTER_RESOLUTION = 256
SUPERSAMPLE = 2
COLOUR_RGB = {
    "red": (220, 40, 40), "orange": (245, 140, 20), "yellow": (240, 215, 30), "green": (40, 165, 60),
    "cyan": (40, 195, 215), "blue": (40, 80, 220), "purple": (135, 55, 190), "pink": (245, 125, 185),
}
BACKGROUND_RGB = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128),
                  "beige": (230, 215, 180)}
RADIUS = {"small": 0.075, "medium": 0.11, "large": 0.145}  # fraction of the side; fits any grid cell
MARGIN = 0.005                                              # shapes never touch the border
JITTER = 0.02                                               # centre jitter, fraction of the side
MAX_TILT = 15.0                                             # degrees


def item_geometry(seed: int, split: str, index: int, attributes: dict[str, str]) -> dict[str, float]:
    """Centre (cx, cy) and radius r in [0, 1] units, rotation in degrees."""
    rng = item_rng(seed, split, index, GEOMETRY_STREAM)
    dx, dy = rng.uniform(-JITTER, JITTER, size=2)
    tilt = rng.uniform(0.0, 60.0) if attributes["kind"] == "hexagon" else rng.uniform(-MAX_TILT, MAX_TILT)
    row, col = divmod(POSITIONS.index(attributes["position"]), 3)
    r = RADIUS[attributes["size"]]
    low, high = r + MARGIN, 1 - r - MARGIN
    return {"cx": float(np.clip((2 * col + 1) / 6 + dx, low, high)),
            "cy": float(np.clip((2 * row + 1) / 6 + dy, low, high)), "r": r, "rotation": float(tilt)}


def _regular(cx: float, cy: float, radii: list[float], start_deg: float) -> list[tuple[float, float]]:
    """Vertices at equal angular steps starting at start_deg (y grows downwards)."""
    step = 360.0 / len(radii)
    return [(cx + rad * math.cos(math.radians(start_deg + k * step)),
             cy + rad * math.sin(math.radians(start_deg + k * step))) for k, rad in enumerate(radii)]


def _cross(cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    w = 0.3 * r   # arm half-width
    local = [(w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w), (-w, -r)]
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in local]


def _heart(cx: float, cy: float, r: float, rotation: float, points: int = 48) -> list[tuple[float, float]]:
    """The classic heart curve x = 16 sin^3 t, y = 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t, scaled to radius r."""
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    out = []
    for k in range(points):
        t = 2 * math.pi * k / points
        x = 16 * math.sin(t) ** 3 / 17 * r
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t) - 2.5) / 17 * r
        out.append((cx + x * c - y * s, cy + x * s + y * c))
    return out


def render(attributes: dict[str, str], geometry: dict[str, float], resolution: int) -> np.ndarray:
    """One item -> resolution x resolution x 3 uint8.

    The shape is drawn as a coverage mask on the supersampled master canvas; the mask is
    area-averaged (BOX) to the resolution and the two flat colours mixed by coverage. This is
    the same picture as box-reducing an RGB canvas (averaging is linear), at a third of the cost.
    """
    side = SUPERSAMPLE * max(MASTER_RESOLUTION, resolution)
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r, rot = geometry["cx"] * side, geometry["cy"] * side, geometry["r"] * side, geometry["rotation"]
    kind = attributes["kind"]
    if kind in ("circle", "ring"):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        if kind == "ring":
            inner = 0.55 * r
            draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif kind == "square":
        draw.polygon(_regular(cx, cy, [r] * 4, 45 + rot), fill=255)
    elif kind == "diamond":
        draw.polygon(_regular(cx, cy, [r] * 4, -90 + 0.6 * rot), fill=255)  # +-9 deg: stays a diamond
    elif kind == "triangle":
        draw.polygon(_regular(cx, cy, [r] * 3, -90 + rot), fill=255)
    elif kind == "hexagon":
        draw.polygon(_regular(cx, cy, [r] * 6, rot), fill=255)
    elif kind == "star":
        draw.polygon(_regular(cx, cy, [r, 0.45 * r] * 5, -90 + rot), fill=255)
    elif kind == "cross":
        draw.polygon(_cross(cx, cy, r, rot), fill=255)
    elif kind == "heart":
        draw.polygon(_heart(cx, cy, r, rot), fill=255)
    else:  # pragma: no cover - KINDS and this function are kept in step
        raise ValueError(f"no renderer for shape kind {kind!r}")
    # reduce(k) is the same box average as resize(BOX) for an integer factor k, and faster.
    small = mask.reduce(side // resolution) if side % resolution == 0 else mask.resize((resolution, resolution), Image.BOX)
    coverage = np.asarray(small, dtype=np.float32)[:, :, None] / 255.0
    background = np.asarray(BACKGROUND_RGB[attributes["background"]], dtype=np.float32)
    colour = np.asarray(COLOUR_RGB[attributes["colour"]], dtype=np.float32)
    return np.rint(background + (colour - background) * coverage).astype(np.uint8)


class ShapesSource(ImageSource):
    name = "shapes"
    num_classes = len(KINDS)
    class_names = KINDS
    has_captions = True

    def __init__(self, resolution: int, n: int, seed: int = 0, split: str = "test") -> None:
        super().__init__()
        if resolution < 1 or n < 0:
            raise ValueError(f"shapes: resolution must be >= 1 and n >= 0, got {resolution}, {n}")
        split_id(split)  # validates the split name
        self.resolution, self.n, self.seed, self.split = resolution, n, seed, split

    def __len__(self) -> int:
        return self.n

    def _check(self, index: int) -> None:
        if not 0 <= index < self.n:
            raise IndexError(f"shapes: index {index} out of range for n={self.n}")

    def item_attributes(self, index: int) -> dict[str, str]:
        """{kind, colour, size, position, background} of item `index` (for prompt-alignment checks)."""
        self._check(index)
        return sample_attributes(self.seed, self.split, index)

    def load_image(self, index: int) -> np.ndarray:
        attributes = self.item_attributes(index)
        return render(attributes, item_geometry(self.seed, self.split, index, attributes), self.resolution)

    def label(self, index: int) -> int:
        return KINDS.index(self.item_attributes(index)["kind"])

    def caption(self, index: int) -> str:
        return caption_for(self.item_attributes(index))

    def load_item(self, index: int) -> tuple[np.ndarray, int, str]:
        attributes = self.item_attributes(index)
        image = render(attributes, item_geometry(self.seed, self.split, index, attributes), self.resolution)
        return image, KINDS.index(attributes["kind"]), caption_for(attributes)

    def fingerprint_fields(self) -> dict[str, Any]:
        return {"n": self.n, "seed": self.seed, "split": self.split, "recipe": RECIPE_VERSION,
                "vocabulary": [KINDS, COLOURS, SIZES, POSITIONS, BACKGROUNDS]}


# --------------------------------------------------------------------------- concept sets
CONCEPT_KINDS = ("heart",)   # shape kinds outside KINDS: no shipped model has seen them


def concept_caption(attributes: dict[str, str]) -> str:
    """The shapes grammar with a concept kind: "a small red heart at the top left on a white background"."""
    a = attributes
    return f"a {a['size']} {a['colour']} {a['kind']} at the {a['position']} on a {a['background']} background"


class ConceptSource(ShapesSource):
    """`concept`: shapes items whose kind is replaced by a concept kind (default "heart"), for adapter
    fine-tuning (LoRA and variants) on a concept none of the shipped models saw. Item i takes the
    colour, size, position, background and jitter of shapes item i of the same (seed, split), so the
    held-out images are `split=test`. Unlabelled (a new kind has no class index); captioned."""

    name = "concept"
    num_classes = None
    class_names = None

    def __init__(self, resolution: int, n: int, seed: int = 0, split: str = "test", kind: str = "heart") -> None:
        super().__init__(resolution, n, seed, split)
        if kind not in CONCEPT_KINDS:
            raise ValueError(f"concept kind {kind!r} is unknown; choose one of {list(CONCEPT_KINDS)}")
        self.kind = kind

    def item_attributes(self, index: int) -> dict[str, str]:
        return {**super().item_attributes(index), "kind": self.kind}

    def label(self, index: int) -> None:
        return None

    def caption(self, index: int) -> str:
        return concept_caption(self.item_attributes(index))

    def load_item(self, index: int) -> tuple[np.ndarray, None, str]:
        attributes = self.item_attributes(index)
        image = render(attributes, item_geometry(self.seed, self.split, index, attributes), self.resolution)
        return image, None, concept_caption(attributes)

    def fingerprint_fields(self) -> dict[str, Any]:
        return {**super().fingerprint_fields(), "concept": self.kind}
