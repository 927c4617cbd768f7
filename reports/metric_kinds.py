"""What a metric's name says about it: which direction is better, whether it is a noisy
timing, its unit and label, how many decimals to show, where it goes in a table, and the
regression gate's default tolerance.

Shared by the tables, the Pareto plot (which corner is best) and the regression gate. Every
kind comes from the metric registry (bench.metrics.registry), which declares the rows each
metric writes. A name (without a "[model]" / "[stage]" suffix) is looked up exactly first, then
against the registered variant patterns in registry order, so that `fid_clean`,
`shapes_clip_score` or `stage_time_sr1` are recognised; names no metric writes and no variant
matches (training losses, ...) fall back to the two rules at the end.
"""
from __future__ import annotations

import re
from dataclasses import replace

from bench.metrics.registry import DIRECTIONS, EITHER, HIGHER, LOWER, GateDefaults, MetricKind, row_kinds

__all__ = ["DIRECTIONS", "EITHER", "HIGHER", "LOWER", "MetricKind", "is_better", "metric_kind", "metric_sort_key"]

# Names outside the registry: errors and losses are lower-is-better; anything else has no direction.
_OTHER_GATE = GateDefaults(abs=0.0, rel=0.05)
_LOSS = re.compile(r"mse|mae|(^|_)l[12]($|_)|error|loss|nll|bpd")


def metric_kind(name: str) -> MetricKind:
    # "clip_score[ViT-B-32/laion2b_s34b_b79k]": the bracket names the model, not the kind
    key = re.sub(r"\[.*\]$", "", str(name)).lower()
    kinds = row_kinds()
    for kind in kinds:
        if kind.name == key:
            return kind
    for kind in kinds:
        if kind.variants and re.search(kind.variants, key):
            return replace(kind, name=key, label=key)   # a variant: same kind, its own name
    if _LOSS.search(key):
        return MetricKind(key, key, LOWER, _OTHER_GATE, rank=9)
    return MetricKind(key, key, EITHER, _OTHER_GATE, rank=10)


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
