"""What a metric's name says about it: which direction is better, whether it is a noisy
timing, its unit and label, how many decimals to show, where it goes in a table, and the
regression gate's default tolerance.

Shared by the tables, the Pareto plot (which corner is best) and the regression gate. Every
kind comes from the metric registry (bench.metrics.registry), which declares the rows each
metric writes. A name (without a "[model]" / "[stage]" suffix) is looked up exactly first, then
against the registered variant patterns in registry order, so that `fid_clean`,
`shapes_clip_score` or `stage_time_sr1` are recognised; names no metric writes and no variant
matches (training losses, ...) fall back to the two rules at the end.

Descriptors (issue 28) are rows that measure the input rather than score the output, such as the
inpainting masks' measured area: a setting that was measured, with no better direction (so never
bold), no plot panel of its own, and its value said beside the setting it measures.
"""
from __future__ import annotations

import re
from dataclasses import replace

from bench.metrics.registry import DIRECTIONS, EITHER, HIGHER, LOWER, GateDefaults, MetricKind, row_kinds

__all__ = ["DESCRIPTORS", "DIRECTIONS", "EITHER", "HIGHER", "LOWER", "MetricKind", "display_label", "is_better",
           "is_descriptor", "metric_kind", "metric_sort_key"]

# Names outside the registry: errors and losses are lower-is-better; anything else has no direction.
_OTHER_GATE = GateDefaults(abs=0.0, rel=0.05)
_LOSS = re.compile(r"mse|mae|(^|_)l[12]($|_)|error|loss|nll|bpd")
DESCRIPTOR = "descriptor"   # MetricKind.group of a descriptor row
# Descriptor rows the suites write, with their label: suites.inpainting's mean fraction of each
# image the mask covers (the `mask_ratio` setting asks for an area; this is the area made).
DESCRIPTORS = {"mask_area_ratio": "measured mask area"}


def _key(name: str) -> str:
    # "clip_score[ViT-B-32/laion2b_s34b_b79k]": the bracket names the model, not the kind
    return re.sub(r"\[.*\]$", "", str(name)).lower()


def _registered(key: str) -> tuple[MetricKind | None, bool]:
    """(the registered kind of `key`, whether it matched as a variant of that kind)."""
    kinds = row_kinds()
    for kind in kinds:
        if kind.name == key:
            return kind, False
    for kind in kinds:
        if kind.variants and re.search(kind.variants, key):
            return kind, True
    return None, False


def metric_kind(name: str) -> MetricKind:
    key = _key(name)
    if key in DESCRIPTORS:
        return MetricKind(key, DESCRIPTORS[key], EITHER, _OTHER_GATE, rank=11, group=DESCRIPTOR)
    kind, variant = _registered(key)
    if kind is not None:
        return replace(kind, name=key, label=key) if variant else kind   # a variant: same kind, its own name
    if _LOSS.search(key):
        return MetricKind(key, key, LOWER, _OTHER_GATE, rank=9)
    return MetricKind(key, key, EITHER, _OTHER_GATE, rank=10)


def is_descriptor(name: str) -> bool:
    """A row that describes the input (a measured setting), not the quality of the output."""
    return metric_kind(name).group == DESCRIPTOR


def display_label(name: str) -> str:
    """A label for figures: the registry's, or for a variant its name with the base kind's label
    in it ("psnr_in_mask" -> "PSNR in mask"), else the name with spaces."""
    key = _key(name)
    kind, variant = _registered(key)
    if key in DESCRIPTORS:
        return DESCRIPTORS[key]
    if kind is not None and not variant:
        return kind.label
    if kind is not None and kind.name in key:
        key = key.replace(kind.name, kind.label, 1)
    return key.replace("_", " ")


def metric_sort_key(name: str) -> tuple[int, str]:
    """Table column order: fid, kid, precision/recall, IS, CLIP, PSNR, SSIM, LPIPS, ..., timings."""
    return (metric_kind(name).rank, str(name))


def is_better(direction: str, a: float, b: float) -> bool:
    """True when a is strictly better than b under `direction` (never for `either`)."""
    if direction == LOWER:
        return a < b
    if direction == HIGHER:
        return a > b
    return False
