"""Words on the plots (issue 28): sweep axes, metrics and their units as a reader says them
("sampling steps", "FID, lower is better", "PSNR in mask (dB)"), never raw keys. Shared by
reports.plots and reports.bars."""
from __future__ import annotations

import re

import pandas as pd

from reports.metric_kinds import EITHER, display_label, metric_kind

# How a sweep axis reads on a plot; other columns read as their name with spaces.
AXIS_LABELS = {"steps": "sampling steps", "guidance_scale": "guidance scale", "f": "downsampling factor f",
               "eta": "DDIM eta", "data_n": "reference images", "factor": "upscaling factor",
               "mask_ratio": "mask area ratio", "rank": "adapter rank", "adapter_scale": "adapter scale",
               "noise_aug": "noise augmentation level", "pipeline": "pipeline", "data": "data set",
               "input_resolution": "input size"}


def axis_label(axis: str) -> str:
    return AXIS_LABELS.get(axis, str(axis).replace("_", " ").replace(".", " "))


def metric_label(metric: str) -> str:
    """The registry's label, with the model or stage a bracket names: 'stage share (base)', 'FID'."""
    bracket = re.search(r"\[(.+)\]$", str(metric))
    base = display_label(metric)
    return f"{base} ({bracket.group(1)})" if bracket else base


def axis_title(metric: str, unit: str = "") -> str:
    """An axis label: 'PSNR (dB), higher is better'."""
    direction = metric_kind(metric).direction
    label = metric_label(metric)
    hint = "" if direction == EITHER else f", {direction} is better"
    same = unit in label or unit.replace("img", "images") in label   # "images/s (img/s)" says it twice
    return f"{label}{f' ({unit})' if unit and not same else ''}{hint}"


def unit_of(frame: pd.DataFrame, metric: str) -> str:
    return "/".join(sorted({u for u in frame.loc[frame["metric"] == metric, "unit"] if u}))
