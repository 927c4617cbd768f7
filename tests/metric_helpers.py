"""A cheap stand-in feature extractor and sample batches for MetricSet tests (same interface as
bench.metrics.inception.InceptionExtractor: 4x4-pooled pixels as 48-d "pool" features)."""
from __future__ import annotations

import torch

from bench.data.shapes import ShapesSource
from models.core.interface import SampleBatch


class PooledPixels:
    name, dims, has_logits, resize_mode = "pooled-pixels", 48, False, "none"

    def __init__(self) -> None:
        self.calls = 0

    def cache_key(self) -> dict:
        return {"extractor": self.name, "weights_sha256": "none", "resize_mode": self.resize_mode}

    def describe(self) -> dict:
        return {"feature_extractor": self.name, "resize_mode": self.resize_mode,
                "weights": {"name": "pooled-pixels", "sha256": "0" * 64}}

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {"2048": torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)}


def batches(n: int, size: int = 20, seed: int = 3):
    for batch in ShapesSource(16, n, seed, "train").iter_batches(size):
        yield SampleBatch(batch.images, batch.indices, batch.captions, batch.labels, {}, {})
