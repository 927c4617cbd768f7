"""MetricSet: the sample metrics of one evaluation (one pipeline at one sweep point), built from
the registry, and `build_metrics`, which loads what they share first.

Per batch the Inception runs once and every metric reads that pass: FID streams float64
moments (constant memory); the metrics that `keep` pool features (KID, precision/recall, ...)
read the first `max_kept_features` of them, kept once for all; IS the kept logits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from bench.data import build_source
from bench.metrics import registry
from bench.metrics.base import BatchInputs, ComputeContext, Resources
from bench.metrics.inception import LOGITS, POOL_FEATURES, FeatureBank, SharedFeatures, build_inception
from bench.metrics.refstats import ReferenceError, ReferenceStats, load_reference_npz, reference_stats
from bench.results import MetricValue
from models.core.interface import NonFiniteError, count_nonfinite

EXTRACTOR_OUTPUTS = {registry.INCEPTION_POOL: POOL_FEATURES, registry.INCEPTION_LOGITS: LOGITS}


class MetricSet:
    """The accumulators of one evaluation: `update(batch)` per SampleBatch, then `compute()`;
    `state()` / `merge(state)` carry one process's share to another (bench.distributed)."""

    def __init__(self, names: Sequence[str], cfg: Any, *, extractor: Any = None,
                 reference: ReferenceStats | None = None, clip_embedder: Any = None,
                 device: str | torch.device = "cpu") -> None:
        specs = [registry.spec(name) for name in names]
        separate = [spec.name for spec in specs if not spec.sampled]
        if separate:
            raise ValueError(f"{separate} are not accumulated from generated samples (the suites measure them); "
                             f"a MetricSet holds {list(registry.sampled_names())}")
        self.names = list(names)
        self.cfg = cfg
        self.extractor = extractor
        self.features = SharedFeatures(extractor) if extractor is not None else None
        self.reference = reference
        self.n = 0
        kept_inputs = dict.fromkeys(name for spec in specs for name in sorted(spec.keeps))
        self.kept = {name: FeatureBank(cfg.max_kept_features) for name in kept_inputs}
        resources = Resources(device=device, clip_embedder=clip_embedder)
        self.metrics = {name: registry.load(name)(cfg, resources) for name in self.names}

    def update(self, batch: Any) -> None:
        """Add one `models.core.interface.SampleBatch` (only `.images` and `.prompts` are read)."""
        images = batch.images
        features = self.features(images) if self.features is not None else {}
        outputs = getattr(self.extractor, "outputs", EXTRACTOR_OUTPUTS)   # a ViT space's: its embedding as "pool"
        inputs = BatchInputs(images, batch.prompts, {name: features[key] for name, key in outputs.items()
                                                     if key in features})
        for name, values in inputs.features.items():
            if count_nonfinite(values):   # the message only when needed: this runs for every batch
                extractor = getattr(self.extractor, "name", type(self.extractor).__name__)
                _check_finite(values, f"features of the generated side: metric input {name!r} ({extractor}) of "
                                      f"images {self.n}-{self.n + len(images) - 1} of this evaluation",
                              "the images are uint8, so the feature extractor's weights or its device/dtype are at fault")
        for name, bank in self.kept.items():
            bank.update(inputs.features[name])
        for metric in self.metrics.values():
            metric.update(inputs)
        self.n += len(images)

    def state(self) -> dict[str, Any]:
        """This process's share, without networks (picklable)."""
        return {"n": self.n, "kept": {name: bank.state() for name, bank in self.kept.items()},
                "metrics": {name: metric.state() for name, metric in self.metrics.items()}}

    def merge(self, state: dict[str, Any]) -> None:
        """Fold in another process's `state()`, whose images come after ours (index order)."""
        self.n += state["n"]
        for name, bank_state in state["kept"].items():
            self.kept[name].merge(bank_state)
        for name, metric_state in state["metrics"].items():
            self.metrics[name].merge(metric_state)

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
        context = ComputeContext(self.cfg, self.n, self.reference, self.details(),
                                 self.extractor.describe() if self.extractor is not None else {}, self.kept)
        return [row for metric in self.metrics.values() for row in metric.compute(context)]


def sample_metric_names(names: Sequence[str]) -> list[str]:
    """The sample metrics among `names` (checked against the registry), each once, in order."""
    registry.check_names(names)
    return [name for name in dict.fromkeys(names) if registry.spec(name).sampled]


def build_metrics(cfg: Any, data: Any, *, device: str | torch.device = "cpu", quiet: bool = True,
                  cache_dir: str | Path | None = None, num_workers: int = 0, extractor: Any = None,
                  reference_source: Any = None, clip_embedder: Any = None,
                  inception_weights: str | None = None) -> MetricSet:
    """Accumulators for the sample metrics in `cfg.names` (a `bench.config.MetricsConfig`; the
    others, speed and reconstruction, are measured by the suites) against the reference of `data`
    (a `bench.config.DataConfig`, test split) or the npz in `cfg.reference`.

    The reference statistics are computed here (or read from the cache), so a bad data source
    or missing weights fail before any sampling. Optional overrides, for tools and tests: a
    ready `extractor`, a `reference_source` ImageSource, a `clip_embedder`, an explicit
    `inception_weights` file."""
    names = sample_metric_names(cfg.names)
    specs = [registry.spec(name) for name in names]
    needs = registry.needs_of(names)
    uses_inception = bool(needs & registry.INCEPTION_INPUTS)
    reference = None
    if uses_inception:
        need_logits = registry.INCEPTION_LOGITS in needs
        if extractor is None:
            extractor = build_inception(resize_mode=cfg.resize_mode, device=device, batch_size=cfg.feature_batch_size,
                                        need_logits=need_logits, weights_path=inception_weights)
        elif need_logits and not extractor.has_logits:
            wanting = [spec.name for spec in specs if registry.INCEPTION_LOGITS in spec.needs]
            raise ValueError(f"{', '.join(wanting)} needs an extractor with logits; {extractor.name} has none")
        if any(spec.reference for spec in specs):
            reference = _reference(cfg, data, extractor, specs, quiet=quiet, cache_dir=cache_dir,
                                   num_workers=num_workers, source=reference_source)
    return MetricSet(names, cfg, extractor=extractor if uses_inception else None, reference=reference,
                     clip_embedder=clip_embedder, device=device)


def _reference(cfg: Any, data: Any, extractor: Any, specs: list[registry.MetricSpec], *, quiet: bool,
               cache_dir: Any, num_workers: int, source: Any) -> ReferenceStats:
    wanting_features = [spec.name for spec in specs if spec.reference == registry.FEATURES]
    if cfg.reference:
        reference = load_reference_npz(cfg.reference)
        _check_reference(reference, f"metrics.reference={cfg.reference}",
                         "replace the file with statistics computed from real images (pytorch-fid --save-stats), "
                         "or unset metrics.reference to compute them from the data")
        if wanting_features:
            reference.require_features(wanting_features[0])
        if reference.mu.shape[0] != extractor.dims:
            raise ReferenceError(f"metrics.reference={cfg.reference}: mu has {reference.mu.shape[0]} dimensions but the "
                                 f"{extractor.name} features have {extractor.dims}; give statistics of the same "
                                 "extractor's pool features (e.g. pytorch-fid --save-stats), or unset metrics.reference")
        return reference
    if source is None:
        source = build_source(data, split="test")
    reference = reference_stats(source, extractor, n=data.n,
                                keep_features=cfg.max_kept_features if wanting_features else 0,
                                cache_dir=cache_dir, batch_size=cfg.feature_batch_size, num_workers=num_workers,
                                quiet=quiet)
    where = reference.description.get("cache") or f"data {source.name!r}"
    _check_reference(reference, f"reference statistics of {where}",
                     "delete the cached file to recompute it, and check the data and the feature extractor's weights")
    return reference


def _check_finite(values: Any, what: str, hint: str) -> None:
    """Raise NonFiniteError naming `what` when `values` (a tensor or array) hold NaN or inf: they
    would make an empty or meaningless metric (or an eigenvalue solver's unhelpful error) later."""
    tensor = torch.as_tensor(values)
    bad = count_nonfinite(tensor)
    if bad:
        nan = int(torch.isnan(tensor).sum())
        raise NonFiniteError(f"{what}: {bad} of {tensor.numel()} values are not finite ({nan} NaN, {bad - nan} inf); "
                             f"no metric can be computed from them. {hint[0].upper()}{hint[1:]}")


def _check_reference(reference: ReferenceStats, where: str, hint: str) -> None:
    """The reference side's statistics (and kept features) must be finite numbers."""
    fields = {"mu": reference.mu, "sigma": reference.sigma}
    if reference.features is not None:
        fields["features"] = reference.features
    for name, values in fields.items():
        _check_finite(values, f"{where}: {name} of the reference side", hint)
