"""Metric accumulators: `build_metrics(cfg, data, ...) -> MetricSet`, then `update(batch)` per
SampleBatch and `compute() -> list[MetricValue]`.

One module per metric (torch-fidelity's layout): `fid`, `kid`, `precision_recall`,
`inception_score`, `clip_score`, `reconstruction` (PSNR/SSIM/LPIPS/rFID), `speed` (separate:
`speed.measure_speed`). `inception` holds the feature extractor and the per-batch feature
sharing, `frechet` the streaming statistics and the distance, `refstats` the cached reference
statistics.

A MetricSet runs the Inception once per batch and feeds every Inception metric from that pass:
FID from streamed float64 moments (constant memory), KID and precision/recall from the first
`max_kept_features` features, IS from the logits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from bench.metrics.fid import fid_from_stats
from bench.metrics.frechet import GaussianAccumulator
from bench.metrics.inception import (LOGITS, POOL_FEATURES, FeatureBank, SharedFeatures, build_inception)
from bench.metrics.kid import kid_value
from bench.metrics.precision_recall import precision_recall_values
from bench.metrics.inception_score import inception_score_value
from bench.metrics.refstats import ReferenceStats, load_reference_npz, reference_stats
from bench.results import MetricValue

INCEPTION_METRICS = ("fid", "kid", "precision_recall", "inception_score")
METRIC_NAMES = (*INCEPTION_METRICS, "clip_score")
SEPARATE_METRICS = {"speed": "bench.metrics.speed.measure_speed",
                    "reconstruction": "bench.metrics.reconstruction.ReconstructionMetrics"}
IS_SPLITS = 10


class MetricSet:
    """The accumulators of one evaluation (one pipeline at one sweep point)."""

    def __init__(self, names: Sequence[str], cfg: Any, *, extractor: Any = None,
                 reference: ReferenceStats | None = None, clip: Any = None) -> None:
        self.names = list(names)
        self.cfg = cfg
        self.extractor = extractor
        self.features = SharedFeatures(extractor) if extractor is not None else None
        self.reference = reference
        self.clip = clip
        self.n = 0
        self.gaussian = GaussianAccumulator() if "fid" in self.names else None
        keep = cfg.max_kept_features if {"kid", "precision_recall"} & set(self.names) else 0
        self.kept = FeatureBank(keep) if keep else None
        self.logits = FeatureBank(cfg.max_kept_features) if "inception_score" in self.names else None

    def update(self, batch: Any) -> None:
        """Add one `models.interface.SampleBatch` (only `.images` and `.prompts` are read)."""
        images = batch.images
        if self.features is not None:
            features = self.features(images)
            if self.gaussian is not None:
                self.gaussian.update(features[POOL_FEATURES])
            if self.kept is not None:
                self.kept.update(features[POOL_FEATURES])
            if self.logits is not None:
                self.logits.update(features[LOGITS])
        if self.clip is not None:
            self.clip.update(images, batch.prompts)
        self.n += len(images)

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.extractor is not None:
            out.update(self.extractor.describe())
        if self.reference is not None:
            out.update(reference=self.reference.description, n_reference=self.reference.n)
        return out

    def compute(self) -> list[MetricValue]:
        if self.n == 0:
            raise ValueError("no images were added to the metrics; nothing to compute")
        details = self.details()
        capped = {"features_capped_at": self.cfg.max_kept_features} if self.kept is not None and self.kept.capped else {}
        out: list[MetricValue] = []
        for name in self.names:
            if name == "fid":
                mu, sigma = self.gaussian.stats()
                out.append(fid_from_stats(mu, sigma, self.reference.mu, self.reference.sigma, n=self.gaussian.n,
                                          details=details))
            elif name == "kid":
                out.append(kid_value(self.kept.tensor(), self.reference.require_features("kid"),
                                     subsets=self.cfg.kid_subsets, subset_size=self.cfg.kid_subset_size,
                                     n=self.n, details={**details, **capped}))
            elif name == "precision_recall":
                out += precision_recall_values(self.kept.tensor(), self.reference.require_features("precision/recall"),
                                               k=self.cfg.pr_k, n=self.n, details={**details, **capped})
            elif name == "inception_score":
                out.append(inception_score_value(self.logits.tensor(), splits=IS_SPLITS, n=self.n,
                                                 details=self.extractor.describe()))
            elif name == "clip_score":
                out.append(self.clip.compute())
        return out


def _check_names(names: Sequence[str]) -> list[str]:
    wanted = [n for n in names if n not in SEPARATE_METRICS]
    unknown = [n for n in wanted if n not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"metrics.names: {unknown} are not metrics; choose from {list(METRIC_NAMES)} "
                         f"(and {sorted(SEPARATE_METRICS)}, measured separately)")
    return list(dict.fromkeys(wanted))


def build_metrics(cfg: Any, data: Any, *, device: str | torch.device = "cpu", quiet: bool = True,
                  cache_dir: str | Path | None = None, num_workers: int = 0, extractor: Any = None,
                  reference_source: Any = None, clip_embedder: Any = None,
                  inception_weights: str | None = None) -> MetricSet:
    """Accumulators for `cfg.names` (a `bench.config.MetricsConfig`) against the reference of
    `data` (a `bench.config.DataConfig`, test split) or the npz in `cfg.reference`.

    The reference statistics are computed here (or read from the cache), so a bad data source
    or missing weights fail before any sampling. Optional overrides, for tools and tests: a
    ready `extractor`, a `reference_source` ImageSource, a `clip_embedder`, an explicit
    `inception_weights` file."""
    names = _check_names(cfg.names)
    inception_names = [n for n in names if n in INCEPTION_METRICS]
    reference = None
    if inception_names:
        if extractor is None:
            extractor = build_inception(resize_mode=cfg.resize_mode, device=device, batch_size=cfg.feature_batch_size,
                                        need_logits="inception_score" in names, weights_path=inception_weights)
        elif "inception_score" in names and not extractor.has_logits:
            raise ValueError(f"inception_score needs an extractor with logits; {extractor.name} has none")
        if set(inception_names) - {"inception_score"}:
            reference = _reference(cfg, data, extractor, names, quiet=quiet, cache_dir=cache_dir,
                                   num_workers=num_workers, source=reference_source)
    clip = None
    if "clip_score" in names:
        from bench.metrics.clip_score import ClipScore, build_embedder
        clip = ClipScore(clip_embedder if clip_embedder is not None else
                         build_embedder(cfg.clip_model, cfg.clip_pretrained, device))
    return MetricSet(names, cfg, extractor=extractor if inception_names else None, reference=reference, clip=clip)


def _reference(cfg: Any, data: Any, extractor: Any, names: list[str], *, quiet: bool, cache_dir: Any,
               num_workers: int, source: Any) -> ReferenceStats:
    needs_features = bool({"kid", "precision_recall"} & set(names))
    if cfg.reference:
        reference = load_reference_npz(cfg.reference)
        if needs_features:
            reference.require_features("kid" if "kid" in names else "precision/recall")
        if reference.mu.shape[0] != extractor.dims:
            raise ValueError(f"metrics.reference={cfg.reference}: mu has {reference.mu.shape[0]} dimensions but the "
                             f"{extractor.name} features have {extractor.dims}")
        return reference
    if source is None:
        from bench.data import build_source
        source = build_source(data, split="test")
    return reference_stats(source, extractor, n=data.n, keep_features=cfg.max_kept_features if needs_features else 0,
                           cache_dir=cache_dir, batch_size=cfg.feature_batch_size, num_workers=num_workers,
                           quiet=quiet)


__all__ = ["INCEPTION_METRICS", "METRIC_NAMES", "MetricSet", "build_metrics"]
