"""The contract between a sample metric and MetricSet (bench.metrics.registry lists the metrics).

A sample metric is built once per evaluation from the config and the shared resources, sees every
batch of generated images (`update`), hands its accumulated state to another process and folds
one in (`state`, `merge`: torchrun sharding, bench.distributed) and at the end writes its rows
(`compute`). What several metrics read is computed once by MetricSet: the Inception features of
each batch, and the first `max_kept_features` of them, kept once for every metric that `keeps`
them (KID, precision/recall, ...), so such a metric may have no state of its own.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from bench.metrics.inception import FeatureBank
from bench.metrics.refstats import ReferenceStats
from bench.results import MetricValue


@dataclass
class Resources:
    """What MetricSet shares with the metrics it builds."""
    device: str | torch.device = "cpu"
    clip_embedder: Any = None    # a ready CLIP embedder (tools, tests); None: the metric builds it from the config


@dataclass
class BatchInputs:
    """One batch of generated images and the inputs computed from it."""
    images: torch.Tensor                      # uint8 NCHW
    prompts: Sequence[str] | None
    features: dict[str, torch.Tensor] = field(default_factory=dict)   # by input name (registry.INCEPTION_POOL, ...)


@dataclass
class ComputeContext:
    """What a metric reads at the end, besides its own state."""
    cfg: Any                                  # bench.config.MetricsConfig
    n: int                                    # images added, over all processes
    reference: ReferenceStats | None
    details: dict[str, Any]                   # provenance: feature extractor and reference
    extractor_details: dict[str, Any]         # provenance of the feature extractor alone
    kept: dict[str, FeatureBank]              # kept inputs, by input name

    def kept_features(self, name: str) -> torch.Tensor:
        return self.kept[name].tensor()

    def capped_details(self, name: str) -> dict[str, Any]:
        """Says so in the row when more images were seen than kept."""
        return {"features_capped_at": self.cfg.max_kept_features} if self.kept[name].capped else {}


class Metric(ABC):
    """A sample metric. The defaults suit one that reads only kept inputs: nothing of its own to
    accumulate, hand over or merge."""

    def __init__(self, cfg: Any, resources: Resources) -> None:
        self.cfg = cfg

    def update(self, inputs: BatchInputs) -> None:
        """Add one batch."""

    def state(self) -> dict[str, Any]:
        """What another process needs to fold this one's images in (picklable, no networks)."""
        return {}

    def merge(self, state: dict[str, Any]) -> None:
        """Fold in another process's `state()`, whose images come after this one's."""

    @abstractmethod
    def compute(self, context: ComputeContext) -> list[MetricValue]:
        """The metric's rows."""
