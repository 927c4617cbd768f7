"""Bundled and user data behind one contract (`ImageSource` streaming `ImageBatch`es).

`build_source(cfg, split)` picks the source named by `cfg.name`:
  shapes  - procedurally rendered coloured shapes, labels and captions (`bench.data.shapes`)
  natural - random crops of the photographs bundled in scikit-image / scikit-learn
  folder  - a directory of image files (cfg.root), optional captions file (cfg.captions)
  concept - shapes of a kind no shipped model saw (a heart), captioned: adapter fine-tuning
  npz     - an ADM/EDM-style .npz of uint8 NHWC samples (cfg.root)
`split` selects train/test/val for the generated sources; a folder or npz file is what it is.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bench.data.config import DATASETS, DataConfig

if TYPE_CHECKING:
    from bench.data.base import ImageBatch, ImageSource, SourceDataset
    from bench.data.images import BadImageError, DataError

__all__ = ["BadImageError", "DataError", "ImageBatch", "ImageSource", "SourceDataset", "build_source"]

# The package's names load on first use (PEP 562): importing bench.data.config, which the config
# schema does, must not import torch, so that `python -m bench` reports a config typo before
# torch's start-up (bench.preflight, issue 26).
_LAZY = {"ImageBatch": "bench.data.base", "ImageSource": "bench.data.base", "SourceDataset": "bench.data.base",
         "BadImageError": "bench.data.images", "DataError": "bench.data.images"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench.data' has no attribute {name!r}")


def build_source(cfg: DataConfig, split: str = "test") -> ImageSource:
    """The ImageSource the data config names."""
    from bench.data.folder import FolderSource
    from bench.data.images import DataError
    from bench.data.natural import NaturalSource
    from bench.data.npz import NpzSource
    from bench.data.shapes import ConceptSource, ShapesSource
    if cfg.name == "shapes":
        return ShapesSource(cfg.resolution, cfg.n, cfg.seed, split)
    if cfg.name == "concept":
        return ConceptSource(cfg.resolution, cfg.n, cfg.seed, split)
    if cfg.name == "natural":
        return NaturalSource(cfg.resolution, cfg.n, cfg.seed, split)
    if cfg.name in ("folder", "npz"):
        if cfg.root is None:
            raise DataError(f"data.name={cfg.name} needs data.root=PATH (a {'folder of images' if cfg.name == 'folder' else '.npz file'})")
        if cfg.name == "folder":
            return FolderSource(cfg.root, cfg.resolution, cfg.n, cfg.captions, cfg.on_bad_file, cfg.max_pixels)
        return NpzSource(cfg.root, cfg.resolution, cfg.n)
    raise DataError(f"data.name={cfg.name!r} is not a data source; choose one of {list(DATASETS)}")
