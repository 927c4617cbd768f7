"""Metrics: `build_metrics(cfg, data, ...) -> MetricSet`, then `update(batch)` per SampleBatch
and `compute() -> list[MetricValue]`.

`registry` lists every metric: its `metrics.names` entry, what it needs (Inception pool features
or logits, CLIP embeddings, image pairs, timings), what it compares against and the kinds of rows
it writes. One module per metric (torch-fidelity's layout): the sample metrics (`fid`, `kid`,
`precision_recall`, ...: `base.Metric` subclasses that MetricSet builds, `metric_set`), and
`reconstruction` (PSNR/SSIM/LPIPS/rFID) and `speed`, which the suites run on their own data. `inception` holds the feature extractor and the per-batch feature
sharing, `frechet` the streaming statistics and the distance, `refstats` the cached reference
statistics. `feature_spaces` lists the spaces beside Inception (DINOv2, CLIP; `vit_features` builds
them), `spaces` runs the metrics in each space of `metrics.features` (`build_metrics` is its), and
`cmmd` is CMMD.
"""
from __future__ import annotations

from typing import Any

__all__ = ["MetricSet", "build_metrics"]


def __getattr__(name: str) -> Any:
    # Imported on first use: MetricSet needs torch, but bench.config and the reports import the
    # registry, which runs this file first, and must start without torch.
    if name == "build_metrics":   # every feature space of metrics.features (one MetricSet when Inception alone)
        from bench.metrics import spaces
        return spaces.build_metrics
    if name in __all__:
        from bench.metrics import metric_set
        return getattr(metric_set, name)
    raise AttributeError(f"module 'bench.metrics' has no attribute {name!r}")
