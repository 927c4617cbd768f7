"""What a metric's name says about it: which direction is better, whether it is a noisy
timing, how many decimals to show, where it goes in a table, and its tolerance class.

Shared by the tables, the Pareto plot (which corner is best) and the regression gate.
Names are matched by patterns, first match wins, so that variants such as `fid_clean`,
`rfid`, `shapes_clip_score` or `stage_time_sr1` are recognised without a registry.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

LOWER, HIGHER, EITHER = "lower", "higher", "either"
DIRECTIONS = (LOWER, HIGHER, EITHER)


@dataclass(frozen=True)
class MetricKind:
    direction: str        # lower | higher | either (no preferred direction)
    timing: bool          # wall time, throughput or memory: noisy across machines and loads
    decimals: int | None  # display decimals when the metric has no CI; None: 4 significant digits
    rank: int             # column order in tables (quality first, timings last)
    group: str            # tolerance class used by bench.regress


# (pattern, direction, timing, decimals, rank, group). Order = match priority: throughput
# ("images_per_s") must be tried before the generic seconds rule ("_s" suffix).
_RULES: tuple[tuple[str, str, bool, int | None, int, str], ...] = (
    (r"per_?s(ec(ond)?)?($|_)|throughput|(^|_)fps($|_)", HIGHER, True, 2, 20, "timing"),
    (r"mem(ory)?($|_)|(^|_)rss($|_)|alloc|bytes|(^|_)(mb|mib|gb|gib)($|_)", LOWER, True, 1, 23, "timing"),
    (r"(^|_)nfe($|_)", LOWER, False, 1, 22, "count"),
    (r"share|fraction", EITHER, True, 3, 24, "timing"),
    (r"s_per|seconds?($|_)|latency|time|(^|_)(s|ms)($|_)", LOWER, True, None, 21, "timing"),
    (r"fid", LOWER, False, 2, 0, "fid"),
    (r"kid", LOWER, False, 4, 1, "kid"),
    (r"precision|recall|density|coverage", HIGHER, False, 3, 2, "fraction"),
    (r"inception_score|(^|_)r?is($|_)", HIGHER, False, 2, 3, "inception_score"),
    (r"clip", HIGHER, False, 2, 4, "clip_score"),
    (r"psnr", HIGHER, False, 2, 6, "psnr"),
    (r"ssim", HIGHER, False, 4, 7, "ssim"),
    (r"lpips", LOWER, False, 4, 8, "lpips"),
    (r"mse|mae|(^|_)l[12]($|_)|error|loss|nll|bpd", LOWER, False, None, 9, "other"),
)
_COMPILED = tuple((re.compile(p), *rest) for p, *rest in _RULES)
_UNKNOWN = MetricKind(EITHER, False, None, 10, "other")


def metric_kind(name: str) -> MetricKind:
    # "clip_score[ViT-B-32/laion2b_s34b_b79k]": the bracket names the model, not the kind
    key = re.sub(r"\[.*\]$", "", str(name)).lower()
    for pattern, direction, timing, decimals, rank, group in _COMPILED:
        if pattern.search(key):
            return MetricKind(direction, timing, decimals, rank, group)
    return _UNKNOWN


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
