"""Adapter fine-tuning in the generic trainer (`python -m bench.train ... adapter=lora`): the
`adapter` config group becomes a peft adapter (models/networks/adapters.py) injected into the
trainable's networks after they are loaded from train.init_from; only its tensors train, and
train.export writes it in peft's layout instead of a full checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn

from bench.training.config import AdapterConfig, TrainingConfig
from models.networks.adapters import AdapterSpec, attach, trainable_parameters


def adapter_spec(cfg: AdapterConfig) -> AdapterSpec | None:
    if cfg.variant == "none":
        return None
    return AdapterSpec(variant=cfg.variant, rank=int(cfg.rank), alpha=cfg.alpha, targets=cfg.targets,
                       dropout=float(cfg.dropout))


def adapter_run_dir(run_dir: Path, spec: AdapterSpec) -> Path:
    """Each adapter setting trains in its own subdirectory of the run directory (resumable apart)."""
    return Path(run_dir) / f"adapter_{spec.variant}_r{spec.rank}_{spec.targets.replace('+', '_')}"


def check_adapter_run(spec: AdapterSpec, tc: TrainingConfig) -> None:
    if not tc.init_from:
        raise ValueError(f"adapter={spec.variant} trains an adapter on a trained model: set train.init_from to "
                         f"its checkpoint (a shipped name such as imagen_shapes16_32, or a directory)")
    if "text" in spec.targets:
        # The frozen pretrained encoders encode under torch.no_grad (models/networks/text_encoders.py),
        # so a text-encoder adapter would receive no gradient: refuse rather than train nothing.
        raise ValueError(f"adapter.targets={spec.targets}: bench.train cannot train text-encoder adapters (the "
                         f"frozen text encoders run without gradients); use adapter.targets=attention or all. "
                         f"Adapters with text-encoder layers still load at sampling time")


def attach_for_training(networks: nn.ModuleDict, spec: AdapterSpec) -> tuple[dict[str, Any], int]:
    """Inject the adapter into the (already initialised) networks; (peft configs by role, trainable count)."""
    configs = attach(dict(networks.items()), spec)
    return configs, trainable_parameters(dict(networks.items()))


def adapter_record(spec: AdapterSpec, tc: TrainingConfig, pipeline: str, family: str,
                   training: Mapping[str, Any]) -> dict[str, Any]:
    """adapter.json's provenance: the base checkpoint it adapts and how it was trained."""
    return {"base": tc.init_from, "pipeline": pipeline, "family": family, "training": dict(training)}
