"""Any pipeline with a trained adapter on its networks: the pipeline params `adapter` (a directory
written by `bench.train adapter=...`, or a shipped adapter's name under models/checkpoints/),
`adapter_scale` (the update's weight: 0 = the base model exactly, 1 = as trained; sweepable) and
`adapter_merge` (fold the adapter into the weights: no per-step cost, same images within float
tolerance). Families never see these params (models/networks/adapters.py does the work)."""
from __future__ import annotations

import logging
import math
from typing import Any

from bench.weights.formats import file_sha256
from models.core.checkpoint import MODEL_FILE
from models.core.interface import Pipeline
from models.core.registry import build_pipeline, resolve_checkpoint

log = logging.getLogger(__name__)

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
    # peft (and the transformers it loads) only when an adapter is used: seconds of every start-up
    from models.networks.adapters import load_adapter
    pipe = build_pipeline(family, name, checkpoint, **params)
    record = load_adapter(str(adapter), dict(pipe.networks()), scale=scale, merged=merge)
    base_match = same_base(record, checkpoint)
    if base_match is False:
        log.warning("adapter %s was trained on %s (sha256 %s), not on this pipeline's checkpoint %s: its update is "
                    "applied to other weights", adapter, record.get("base"), record.get("base_sha256"), checkpoint)
    pipe.adapter = {"adapter": str(adapter), "scale": scale, "merged": merge, "spec": record["spec"],
                    "base": record.get("base"), "base_sha256": record.get("base_sha256"), "same_base": base_match}
    return pipe


def same_base(record: dict[str, Any], checkpoint: str | None) -> bool | None:
    """Whether `checkpoint`'s weights are the ones the adapter was trained on (None: unknown)."""
    expected = record.get("base_sha256")
    actual = None if checkpoint is None else checkpoint_sha256(checkpoint)
    return None if not expected or actual is None else actual == expected


def checkpoint_sha256(checkpoint: str) -> str | None:
    """sha256 of a checkpoint's weight file (a shipped name or a directory); None if it has none."""
    weights = resolve_checkpoint(checkpoint) / MODEL_FILE
    return file_sha256(weights) if weights.is_file() else None
