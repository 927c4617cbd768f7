"""Any pipeline with a trained adapter on its networks: the pipeline params `adapter` (a directory
written by `bench.train adapter=...`, or a shipped adapter's name under models/checkpoints/),
`adapter_scale` (the update's weight: 0 = the base model exactly, 1 = as trained; sweepable) and
`adapter_merge` (fold the adapter into the weights: no per-step cost, same images within float
tolerance). Families never see these params (models/networks/adapters.py does the work)."""
from __future__ import annotations

import math
from typing import Any

from models.core.interface import Pipeline
from models.core.registry import build_pipeline
from models.networks.adapters import load_adapter

ADAPTER_PARAMS = ("adapter", "adapter_scale", "adapter_merge")


def build_adapted_pipeline(family: str, name: str, checkpoint: str | None = None, **params: Any) -> Pipeline:
    adapter = params.pop("adapter", None)
    scale = params.pop("adapter_scale", None)
    merge = bool(params.pop("adapter_merge", False))
    if adapter is None:
        if scale is not None or merge:
            raise ValueError("pipeline.params.adapter_scale / adapter_merge need pipeline.params.adapter=NAME_OR_DIR")
        return build_pipeline(family, name, checkpoint, **params)
    scale = 1.0 if scale is None else float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"pipeline.params.adapter_scale must be a number >= 0, got {scale}")
    pipe = build_pipeline(family, name, checkpoint, **params)
    record = load_adapter(str(adapter), dict(pipe.networks()), scale=scale, merged=merge)
    pipe.adapter = {"adapter": str(adapter), "scale": scale, "merged": merge, "spec": record["spec"],
                    "base": record.get("base")}
    return pipe
