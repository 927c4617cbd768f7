"""`natural`: seeded random crops of the colour photographs bundled inside scikit-image and
scikit-learn, for reconstruction metrics on real image statistics. Offline: only images that
ship in the wheels are used (scikit-image's pooch-downloaded ones are not).

Split rule: train and test use DISJOINT SOURCE PHOTOGRAPHS (below), so a model fitted on train
crops is scored on photographs it never saw; the stereo pair motorcycle_left/right stays
together. Item i of (seed, split) is drawn from `default_rng([seed, split_id, i, 0])`:
a source photograph (uniform), a square crop whose side is uniform in [0.35, 1] of the
photograph's shorter side, a uniform position, and is resized to the resolution with PIL
LANCZOS (antialiased; reducing_gap=3). The crop region does not depend on the resolution, so
every resolution views the same crop. The val split reuses the test photographs with its own
crop stream. Labels: none. Captions: the source photograph's name.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.data.base import ImageSource
from bench.data.prompts import ATTRIBUTE_STREAM, item_rng, split_id

RECIPE_VERSION = 1
MIN_CROP_FRACTION = 0.35
# name -> (package, file inside it, official loader). All RGB photographs; synthetic images
# (logo, colorwheel, ...), grayscale ones and the pooch-downloaded ones are left out. The file
# is decoded with PIL directly (importing sklearn.datasets alone takes seconds); the package's
# own loader is the fallback should a release move the file.
PHOTOGRAPHS = {
    "astronaut": ("skimage", "data/astronaut.png", "astronaut"),
    "chelsea": ("skimage", "data/chelsea.png", "chelsea"),
    "coffee": ("skimage", "data/coffee.png", "coffee"),
    "rocket": ("skimage", "data/rocket.jpg", "rocket"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg", "hubble_deep_field"),
    "immunohistochemistry": ("skimage", "data/ihc.png", "immunohistochemistry"),
    "retina": ("skimage", "data/retina.jpg", "retina"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png", "stereo_motorcycle"),
    "motorcycle_right": ("skimage", "data/motorcycle_right.png", "stereo_motorcycle"),
    "china": ("sklearn", "datasets/images/china.jpg", "china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg", "flower.jpg"),
}
SPLIT_PHOTOGRAPHS = {
    "test": ("astronaut", "chelsea", "coffee", "china"),
    "train": ("rocket", "hubble_deep_field", "immunohistochemistry", "retina",
              "motorcycle_left", "motorcycle_right", "flower"),
}
SPLIT_PHOTOGRAPHS["val"] = SPLIT_PHOTOGRAPHS["test"]  # too few photographs for a third set


def _package_file(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)   # locates the package without importing it
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return path if path.is_file() else None


def _official_loader(name: str, package: str, key: str) -> np.ndarray:
    if package == "skimage":
        import skimage.data  # here, not at the top: slow imports only this data set needs
        image = getattr(skimage.data, key)()
        if key == "stereo_motorcycle":
            image = image[0] if name == "motorcycle_left" else image[1]
        return image
    from sklearn.datasets import load_sample_image  # (as above)
    return load_sample_image(key)


@functools.lru_cache(maxsize=None)
def load_photograph(name: str) -> np.ndarray:
    """One bundled photograph as HxWx3 uint8 (cached per process; ~20 MB for all of them)."""
    package, relative, key = PHOTOGRAPHS[name]
    try:
        path = _package_file(package, relative)
        if path is not None:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"))
        else:
            array = np.asarray(_official_loader(name, package, key))
    except Exception as err:  # a broken install or a version that no longer bundles it
        raise RuntimeError(f"natural data: cannot load the bundled photograph {name!r} from {package} "
                           f"({type(err).__name__}: {err}); reinstall scikit-image / scikit-learn") from err
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise RuntimeError(f"natural data: photograph {name!r} is {array.dtype} {array.shape}, expected uint8 HxWx3")
    return array


@functools.lru_cache(maxsize=None)
def _photograph_image(name: str) -> Image.Image:
    return Image.fromarray(load_photograph(name))


@functools.lru_cache(maxsize=None)
def photograph_sha256(name: str) -> str:
    return hashlib.sha256(load_photograph(name).tobytes()).hexdigest()


def crop_box(seed: int, split: str, index: int) -> tuple[str, tuple[int, int, int]]:
    """(photograph name, (top, left, side)) of item `index`."""
    rng = item_rng(seed, split, index, ATTRIBUTE_STREAM)
    names = SPLIT_PHOTOGRAPHS[split]
    name = names[int(rng.integers(len(names)))]
    height, width = load_photograph(name).shape[:2]
    short = min(height, width)
    side = int(round(short * rng.uniform(MIN_CROP_FRACTION, 1.0)))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    return name, (top, left, side)


class NaturalSource(ImageSource):
    name = "natural"
    has_captions = True

    def __init__(self, resolution: int, n: int, seed: int = 0, split: str = "test") -> None:
        super().__init__()
        split_id(split)
        if resolution < 1 or n < 0:
            raise ValueError(f"natural: resolution must be >= 1 and n >= 0, got {resolution}, {n}")
        self.resolution, self.n, self.seed, self.split = resolution, n, seed, split
        for name in SPLIT_PHOTOGRAPHS[split]:   # load now, so forked DataLoader workers share them
            _photograph_image(name)

    def __len__(self) -> int:
        return self.n

    def _crop(self, index: int) -> tuple[str, tuple[int, int, int]]:
        if not 0 <= index < self.n:
            raise IndexError(f"natural: index {index} out of range for n={self.n}")
        return crop_box(self.seed, self.split, index)

    def load_item(self, index: int) -> tuple[np.ndarray, None, str]:
        name, (top, left, side) = self._crop(index)
        if side == self.resolution:
            return np.ascontiguousarray(load_photograph(name)[top:top + side, left:left + side]), None, name
        # reducing_gap: box-reduce by an integer factor first, then LANCZOS over the last <= 3x
        # (Pillow's documented speed-up; several times faster on 1000 px crops, visually identical).
        crop = _photograph_image(name).resize((self.resolution, self.resolution), Image.LANCZOS,
                                              box=(left, top, left + side, top + side), reducing_gap=3.0)
        return np.asarray(crop, dtype=np.uint8), None, name

    def load_image(self, index: int) -> np.ndarray:
        return self.load_item(index)[0]

    def caption(self, index: int) -> str:
        return self._crop(index)[0]

    def fingerprint_fields(self) -> dict[str, Any]:
        photos = {name: photograph_sha256(name) for name in SPLIT_PHOTOGRAPHS[self.split]}
        return {"n": self.n, "seed": self.seed, "split": self.split, "recipe": RECIPE_VERSION, "photographs": photos}
