"""The `data` config group's schema, and the checks every config dataclass uses.

They live in the data layer, not in `bench.config`, because the layers below the config layer
build a `DataConfig` themselves (an external pipeline reads its folder or npz through
`bench.data.build_source`). `bench.config` re-exports all of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

DATASETS = ("shapes", "natural", "folder", "npz", "concept")
BUNDLED_DATASETS = ("shapes", "natural")   # rendered or shipped: no data.root, any resolution
CONCEPT_DATASETS = ("concept",)           # rendered like shapes (no data.root); adapter fine-tuning sets
BAD_FILE_POLICIES = ("error", "skip")


class ConfigError(ValueError):
    """A config value that is out of range or not among the allowed choices."""


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {message}")


def choice(value: str, key: str, allowed: tuple[str, ...]) -> None:
    if value == MISSING:  # schema defaults are built before composition fills them in
        return
    require(value in allowed, key, f"{value!r} is not allowed; choose one of {list(allowed)}")


@dataclass
class DataConfig:
    name: str = "shapes"
    resolution: int = 32
    n: int = 1000                  # images in the reference set
    seed: int = 0
    root: Optional[str] = None     # folder / npz path
    captions: Optional[str] = None  # captions or prompts file for folder data
    on_bad_file: str = "error"     # folder data: stop at a corrupt file, or skip and count
    max_pixels: int = 64 * 1024 * 1024   # folder data: larger images are bad files (bench.data.images)

    def __post_init__(self) -> None:
        choice(self.name, "data.name", DATASETS)
        require(self.resolution >= 8, "data.resolution", f"must be >= 8, got {self.resolution}")
        require(self.n >= 1, "data.n", f"must be >= 1, got {self.n}")
        choice(self.on_bad_file, "data.on_bad_file", BAD_FILE_POLICIES)
        require(self.max_pixels >= 1, "data.max_pixels", f"must be >= 1, got {self.max_pixels}")
        require(self.name in BUNDLED_DATASETS + CONCEPT_DATASETS or self.root is not None, "data.root",
                f"data.name={self.name} needs data.root=PATH")
