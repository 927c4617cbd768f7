"""Sample metrics in several feature spaces in one pass (issue 27): `build_metrics` (the
`bench.metrics.build_metrics` every suite calls) gives one MetricSet per feature space of
`metrics.features` (bench.metrics.feature_spaces) and the CMMD space, each with its own network,
run once per batch for every metric of that space, and its own reference statistics (cached per
space: the cache key holds the space and its weights' sha256, bench.metrics.refstats). The rows of
a space other than Inception carry it in their names (`fd[dinov2-vit-l-14]`, `kid[...]`,
`cmmd[clip-vit-l-14-336]`; feature_spaces.row_name). A plain Inception configuration builds the
one MetricSet it always built.

`check_feature_weights(cfg)` finds every space's weights before anything is sampled (bench.app
calls it at start): missing ones exit 2 with one line naming the file, where to put it and the
command that fetches it on a machine that is online. Nothing is downloaded, and no other network
or size is used instead.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from bench.metrics import feature_spaces
from bench.metrics.feature_spaces import INCEPTION, row_name, space_plan, weights_needed
from bench.metrics.metric_set import MetricSet
from bench.metrics.metric_set import build_metrics as build_space_set
from bench.results import MetricValue
from bench.weights import WeightsNotFoundError, spec_for
from bench.weights.places import explicit_file
from bench.weights.resolver import check, locate


def _sub_config(cfg: Any, names: list[str], space: str) -> Any:
    """The metrics config of one space: its metrics; an npz reference (metrics.reference) holds
    Inception statistics, so another space computes its own from the data."""
    changes: dict[str, Any] = {"names": names}
    if space != INCEPTION:
        changes["reference"] = None
    if dataclasses.is_dataclass(cfg):
        return dataclasses.replace(cfg, **changes)
    out = copy.copy(cfg)   # a namespace (tools, tests)
    for key, value in changes.items():
        setattr(out, key, value)
    return out


def build_feature_extractor(space: str, cfg: Any, device: str | torch.device = "cpu") -> Any:
    """The extractor of a ViT space (cached per process), with the weights of
    metrics.feature_weights[space] when given."""
    explicit = (getattr(cfg, "feature_weights", None) or {}).get(space)
    return feature_spaces.builder(space)(space, device=device, batch_size=cfg.feature_batch_size,
                                         weights_path=explicit)


class SpaceMetricSet:
    """The MetricSets of one evaluation's feature spaces behind MetricSet's interface."""

    def __init__(self, sets: dict[str, MetricSet]) -> None:
        if not sets:
            raise ValueError("a SpaceMetricSet needs at least one feature space")
        self.sets = sets
        self.names = [name for metric_set in sets.values() for name in metric_set.names]

    @property
    def n(self) -> int:
        return next(iter(self.sets.values())).n

    def update(self, batch: Any) -> None:
        for metric_set in self.sets.values():   # each space's network once for all its metrics
            metric_set.update(batch)

    def state(self) -> dict[str, Any]:
        return {space: metric_set.state() for space, metric_set in self.sets.items()}

    def merge(self, state: dict[str, Any]) -> None:
        for space, space_state in state.items():
            self.sets[space].merge(space_state)

    def details(self) -> dict[str, Any]:
        return {space: metric_set.details() for space, metric_set in self.sets.items()}

    def compute(self) -> list[MetricValue]:
        rows = []
        for space, metric_set in self.sets.items():
            for row in metric_set.compute():
                rows.append(dataclasses.replace(row, metric=row_name(row.metric, space),
                                                details={**row.details, "feature_space": space}))
        return rows


def build_metrics(cfg: Any, data: Any, *, device: str | torch.device = "cpu", extractor: Any = None,
                  feature_extractors: dict[str, Any] | None = None, **kwargs: Any) -> MetricSet | SpaceMetricSet:
    """bench.metrics.metric_set.build_metrics for every feature space of `cfg` (see the module
    docstring); `extractor`: a ready Inception extractor, `feature_extractors`: ready extractors of
    other spaces by name (tools, tests); the other keywords go to each space's build_metrics."""
    plan = space_plan(cfg)
    if set(plan) <= {INCEPTION}:
        return build_space_set(cfg, data, device=device, extractor=extractor, **kwargs)
    sets: dict[str, MetricSet] = {}
    for space, names in plan.items():
        sub = _sub_config(cfg, names, space)
        if space == INCEPTION:
            sets[space] = build_space_set(sub, data, device=device, extractor=extractor, **kwargs)
            continue
        ready = (feature_extractors or {}).get(space)
        space_extractor = ready if ready is not None else build_feature_extractor(space, cfg, device)
        space_kwargs = {k: v for k, v in kwargs.items() if k != "inception_weights"}
        sets[space] = build_space_set(sub, data, device=device, extractor=space_extractor, **space_kwargs)
    return SpaceMetricSet(sets)


# --------------------------------------------------------------------------- start-up check
def check_feature_weights(cfg: Any) -> dict[str, Any]:
    """Find and sha256-check the weights of every feature space `cfg` needs, making and
    downloading nothing (bench.app.run, before any sampling; bench.preflight did the light
    existence check already); raise WeightsNotFoundError with one line per missing file. Returns
    the found ones' provenance by space (the manifest records the sha256 of the file used)."""
    feature_spaces.check_weights_present(cfg)
    found: dict[str, Any] = {}
    explicit = getattr(cfg, "feature_weights", None) or {}
    for space in weights_needed(cfg):
        spec = spec_for(feature_spaces.spec(space).weights)
        if explicit.get(space):   # the file, or the one in the (Hugging Face) folder given
            given = explicit_file(spec, explicit[space])
            resolved = check(spec, given, "explicit") if given is not None else None
        else:
            resolved = locate(spec)[0]
        if resolved is None:   # present a moment ago, gone now
            raise WeightsNotFoundError(feature_spaces.missing_weights_line(space, spec))
        found[space] = resolved.describe()
    return found


__all__ = ["SpaceMetricSet", "build_feature_extractor", "build_metrics", "check_feature_weights", "space_plan",
           "weights_needed"]
