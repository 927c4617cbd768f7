"""The metric registry: every name `metrics.names` accepts, what that metric needs, and the kinds
of result rows it writes. The one source for MetricSet (which inputs to compute, which reference
to load, which metrics to build), config validation (bench.config), the suites (which metrics
apply to a pipeline), the report kinds (reports.metric_kinds) and the regression gate's
directions and default tolerances (bench.regress).

Light on purpose: no torch here, so bench.config and the reports (which start without torch) can
read it; a metric's code is imported by its dotted name on first use (`load`).

A new metric is its own module (for a sample metric, a `bench.metrics.base.Metric` subclass), one
`register(...)` statement at the end of this file and a test.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Iterable

LOWER, HIGHER, EITHER = "lower", "higher", "either"   # which value is better; EITHER: no preference
DIRECTIONS = (LOWER, HIGHER, EITHER)

# What a metric reads. MetricSet computes the sample inputs once per batch of generated images and
# shares them; the others belong to metrics the suites run on their own data.
INCEPTION_POOL = "inception_pool"       # Inception-v3 pool3 features (2048-d) of each image
INCEPTION_LOGITS = "inception_logits"   # its 1008-way logits (pool3 @ fc.weight^T)
CLIP_EMBEDDINGS = "clip_embeddings"     # CLIP embeddings of each image and of its prompt
IMAGE_PAIRS = "image_pairs"             # (original, reconstruction) pairs of an autoencoder
TIMINGS = "timings"                     # timed sampling runs of a pipeline
INCEPTION_INPUTS = frozenset({INCEPTION_POOL, INCEPTION_LOGITS})
SAMPLE_INPUTS = INCEPTION_INPUTS | {CLIP_EMBEDDINGS}
# How images are resized to the Inception's 299 px (bench.metrics.inception): torch-fidelity's TF1
# bilinear or clean-fid's PIL bicubic. Here, torch-free, so the config checks it before torch loads.
RESIZE_MODES = ("tf1", "clean")

# What a metric compares the generated images against (MetricSet loads it once for all).
MOMENTS = "moments"     # the reference's feature mean and covariance (an npz from elsewhere will do)
FEATURES = "features"   # the reference's kept features themselves (computed from data here)

# In which feature spaces (bench.metrics.feature_spaces) a sample metric runs. Its "pool features"
# input (INCEPTION_POOL) is then that space's embedding, and its rows carry the space in their
# names (`fd[dinov2-vit-l-14]`, `kid[...]`; feature_spaces.row_name).
INCEPTION_SPACE = "inception"   # the Inception alone (IS reads its logits; CLIP score its own model)
ANY_SPACE = "any"               # every space in metrics.features (FD/FID, KID, precision/recall, ...)
CLIP_SPACE = "clip"             # the CLIP space metrics.cmmd_space (CMMD)
SPACE_KINDS = (INCEPTION_SPACE, ANY_SPACE, CLIP_SPACE)


@dataclass(frozen=True)
class GateDefaults:
    """The regression gate's default tolerance for a row (bench.regress): regressed when worse than
    the baseline by more than max(abs, rel * |baseline|, ci_k * half-width of the difference's CI).
    They absorb cross-platform float drift of seeded runs, not real changes."""
    abs: float
    rel: float
    ci_k: float = 1.0
    skip: bool = False     # reported but not gated unless --check-timing (noisy timings)


@dataclass(frozen=True)
class MetricKind:
    """What one result row means, for tables, plots and the regression gate."""
    name: str                    # the row's metric, without a "[model]" / "[stage]" suffix
    label: str                   # short display name
    direction: str               # LOWER | HIGHER | EITHER is better
    gate: GateDefaults
    unit: str = ""               # the row's unit column
    timing: bool = False         # wall time, throughput or memory: noisy across machines and loads
    decimals: int | None = None  # display decimals when the row has no CI; None: 4 significant digits
    rank: int = 10               # column order in tables (quality first, timings last)
    group: str = "other"         # tolerance class; "count" is shown as an integer
    variants: str | None = None  # regex (lower case): other names read as this kind, e.g. fid_clean


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its `metrics.names` entry, where its code lives, what it reads and writes."""
    name: str
    code: str                          # "module:attribute", imported on first use by `load`
    needs: frozenset[str]              # inputs it reads (INCEPTION_POOL, ..., TIMINGS)
    rows: tuple[MetricKind, ...]       # the rows it writes
    keeps: frozenset[str] = frozenset()  # inputs it reads as the kept sample (the first max_kept_features)
    reference: str | None = None       # MOMENTS | FEATURES | None
    spaces: str = INCEPTION_SPACE      # SPACE_KINDS: the feature spaces it runs in

    @property
    def sampled(self) -> bool:
        """Accumulated by MetricSet from batches of generated images (and merged across torchrun ranks)."""
        return self.needs <= SAMPLE_INPUTS

    @property
    def needs_prompts(self) -> bool:
        return CLIP_EMBEDDINGS in self.needs


_REGISTRY: dict[str, MetricSpec] = {}


def register(spec: MetricSpec) -> MetricSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"metric {spec.name!r} is registered twice")
    if not spec.keeps <= spec.needs or (spec.reference is not None and spec.reference not in (MOMENTS, FEATURES)):
        raise ValueError(f"metric {spec.name!r}: keeps must be among its needs, reference MOMENTS, FEATURES or None")
    if spec.spaces not in SPACE_KINDS:
        raise ValueError(f"metric {spec.name!r}: spaces must be one of {SPACE_KINDS}")
    _REGISTRY[spec.name] = spec
    return spec


def metric_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def sampled_names() -> tuple[str, ...]:
    return tuple(name for name, entry in _REGISTRY.items() if entry.sampled)


def unknown_names(names: Iterable[str]) -> list[str]:
    return [name for name in names if name not in _REGISTRY]


def check_names(names: Iterable[str]) -> None:
    unknown = unknown_names(names)
    if unknown:
        raise ValueError(f"metrics.names: {unknown} are not metrics; choose from {sorted(_REGISTRY)}")


def spec(name: str) -> MetricSpec:
    check_names([name])
    return _REGISTRY[name]


def needs_of(names: Iterable[str]) -> frozenset[str]:
    """Every input the named metrics read together."""
    return frozenset().union(*(spec(name).needs for name in names))


def row_kinds() -> tuple[MetricKind, ...]:
    """The kinds of every row any metric writes, in registry order."""
    return tuple(kind for entry in _REGISTRY.values() for kind in entry.rows)


def load(name: str) -> Any:
    """The metric's code (for a sample metric, its `Metric` class)."""
    module, _, attribute = spec(name).code.partition(":")
    return getattr(importlib.import_module(module), attribute)


# ---- the metrics -----------------------------------------------------------------------------
# Registry order matters only for names no metric writes exactly (reports.metric_kinds tries the
# variant patterns in this order): the speed rows come first so that a time or memory suffix
# decides ("fid_seconds" is a time).
_TIMING = GateDefaults(abs=0.0, rel=0.5, skip=True)
_EXACT = GateDefaults(abs=0.0, rel=0.0, ci_k=0.0)   # counts (NFE) are exact
_FID = GateDefaults(abs=0.5, rel=0.02)
_FRACTION = GateDefaults(abs=0.02, rel=0.0)


def _timing(name: str, label: str, direction: str, unit: str, decimals: int | None, rank: int,
            variants: str | None = None) -> MetricKind:
    return MetricKind(name, label, direction, _TIMING, unit=unit, timing=True, decimals=decimals, rank=rank,
                      group="timing", variants=variants)


register(MetricSpec("speed", "bench.metrics.speed:measure_speed", frozenset({TIMINGS}), (
    _timing("images_per_s", "images/s", HIGHER, "img/s", 2, 20, r"per_?s(ec(ond)?)?($|_)|throughput|(^|_)fps($|_)"),
    _timing("peak_memory_mib", "peak memory", LOWER, "MiB", 1, 23,
            r"mem(ory)?($|_)|(^|_)rss($|_)|alloc|bytes|(^|_)(mb|mib|gb|gib)($|_)"),
    MetricKind("nfe_per_image", "NFE/image", LOWER, _EXACT, decimals=1, rank=22, group="count",
               variants=r"(^|_)nfe($|_)"),
    _timing("stage_share", "stage share", EITHER, "", 3, 24, r"share|fraction"),
    _timing("s_per_image", "s/image", LOWER, "s", None, 21, r"s_per|seconds?($|_)|latency|time|(^|_)(s|ms)($|_)"),
    _timing("stage_s_per_image", "stage s/image", LOWER, "s", None, 21),
    # compute per forward, not a time; kept with the timings, where its name's pattern put it before
    _timing("gflops_per_forward", "GFLOPs/forward", LOWER, "GFLOPs", None, 21),
)))
register(MetricSpec("fid", "bench.metrics.fid:FidMetric", frozenset({INCEPTION_POOL}), (
    MetricKind("fid", "FID", LOWER, _FID, decimals=2, rank=0, group="fid", variants="fid"),
    # the same Fréchet distance in another feature space: `fd[dinov2-vit-l-14]` (issue 27)
    MetricKind("fd", "FD", LOWER, _FID, decimals=2, rank=0, group="fid", variants=r"(^|_)fd($|_)"),
), reference=MOMENTS, spaces=ANY_SPACE))
register(MetricSpec("kid", "bench.metrics.kid:KidMetric", frozenset({INCEPTION_POOL}), (
    MetricKind("kid", "KID", LOWER, GateDefaults(abs=0.001, rel=0.05), decimals=4, rank=1, group="kid",
               variants="kid"),), keeps=frozenset({INCEPTION_POOL}), reference=FEATURES, spaces=ANY_SPACE))
register(MetricSpec("precision_recall", "bench.metrics.precision_recall:PrecisionRecallMetric",
                    frozenset({INCEPTION_POOL}), (
    MetricKind("precision", "Precision", HIGHER, _FRACTION, decimals=3, rank=2, group="fraction", variants="precision"),
    MetricKind("recall", "Recall", HIGHER, _FRACTION, decimals=3, rank=2, group="fraction", variants="recall"),
), keeps=frozenset({INCEPTION_POOL}), reference=FEATURES, spaces=ANY_SPACE))
register(MetricSpec("density_coverage", "bench.metrics.density_coverage:DensityCoverageMetric",
                    frozenset({INCEPTION_POOL}), (
    MetricKind("density", "Density", HIGHER, GateDefaults(abs=0.02, rel=0.02), decimals=3, rank=2, group="density",
               variants="density"),
    MetricKind("coverage", "Coverage", HIGHER, _FRACTION, decimals=3, rank=2, group="fraction", variants="coverage"),
), keeps=frozenset({INCEPTION_POOL}), reference=FEATURES, spaces=ANY_SPACE))
register(MetricSpec("inception_score", "bench.metrics.inception_score:InceptionScoreMetric",
                    frozenset({INCEPTION_LOGITS}), (
    MetricKind("inception_score", "IS", HIGHER, GateDefaults(abs=0.05, rel=0.02), decimals=2, rank=3,
               group="inception_score", variants=r"inception_score|(^|_)r?is($|_)"),
), keeps=frozenset({INCEPTION_LOGITS})))
# CMMD (Jayasumana et al., CVPR 2024): MMD x 1000, Gaussian RBF kernel (sigma 10) on the normalised
# embeddings of a CLIP space (metrics.cmmd_space, default clip-vit-l-14-336); row `cmmd[<space>]`.
register(MetricSpec("cmmd", "bench.metrics.cmmd:CmmdMetric", frozenset({INCEPTION_POOL}), (
    MetricKind("cmmd", "CMMD", LOWER, GateDefaults(abs=0.01, rel=0.05), decimals=3, rank=1, group="cmmd",
               variants="cmmd"),), keeps=frozenset({INCEPTION_POOL}), reference=FEATURES, spaces=CLIP_SPACE))
register(MetricSpec("clip_score", "bench.metrics.clip_score:ClipScoreMetric", frozenset({CLIP_EMBEDDINGS}), (
    MetricKind("clip_score", "CLIP score", HIGHER, GateDefaults(abs=0.25, rel=0.01), decimals=2, rank=4,
               group="clip_score", variants="clip"),)))
register(MetricSpec("reconstruction", "bench.metrics.reconstruction:ReconstructionMetrics",
                    frozenset({IMAGE_PAIRS, INCEPTION_POOL}), (
    MetricKind("psnr", "PSNR", HIGHER, GateDefaults(abs=0.1, rel=0.005), unit="dB", decimals=2, rank=6, group="psnr",
               variants="psnr"),
    MetricKind("ssim", "SSIM", HIGHER, GateDefaults(abs=0.005, rel=0.005), decimals=4, rank=7, group="ssim",
               variants="ssim"),
    MetricKind("lpips", "LPIPS", LOWER, GateDefaults(abs=0.005, rel=0.02), decimals=4, rank=8, group="lpips",
               variants="lpips"),
    MetricKind("rfid", "rFID", LOWER, _FID, decimals=2, rank=0, group="fid"),
    # suite inpainting: % of out-of-mask pixels (any channel) the output changed; 0 = known pixels kept
    MetricKind("changed_outside_mask", "changed outside mask", LOWER, GateDefaults(abs=0.5, rel=0.0), unit="%",
               decimals=1, rank=9, group="percent"),
)))
