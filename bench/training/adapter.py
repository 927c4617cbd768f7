"""Adapter fine-tuning in the generic trainer (`python -m bench.train ... adapter=lora`): the
`adapter` config group becomes a peft adapter (models/networks/adapters.py) injected into the
trainable's networks after they are loaded from train.init_from; only its tensors train, and
train.export writes it in peft's layout instead of a full checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn

from bench.training.config import AdapterConfig, TrainingConfig
from models.families.adapted import checkpoint_sha256
from models.networks.adapters import AdapterSpec, adapts_text, attach, trainable_parameters


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


def attach_for_training(networks: nn.ModuleDict, spec: AdapterSpec,
                        text_encoder: nn.Module | None = None) -> tuple[dict[str, Any], int]:
    """Inject the adapter into the (already initialised) networks; (peft configs by role, trainable count).
    A text-encoder target set also adapts the trainable's frozen pretrained encoder (which is not among
    its networks): it joins `networks` as role "text_encoder", so the optimiser, EMA, resumable state
    and export see its adapter, and it encodes with gradients from then on (TextEncoder.grad_scope)."""
    if adapts_text(spec.targets) and "text_encoder" not in networks:
        if text_encoder is None:
            raise ValueError(f"adapter.targets={spec.targets}: this family's trainer has no text encoder to adapt; "
                             f"use adapter.targets=attention, attention+embed or all")
        networks["text_encoder"] = text_encoder.to(next(networks.parameters()).device)
    configs = attach(dict(networks.items()), spec)
    return configs, trainable_parameters(dict(networks.items()))


def adapter_record(spec: AdapterSpec, tc: TrainingConfig, pipeline: str, family: str,
                   training: Mapping[str, Any]) -> dict[str, Any]:
    """adapter.json's provenance: the base checkpoint it adapts (with its weights' sha256) and how it was
    trained (the recipe: learning rate and schedule, batch, seed)."""
    recipe = {k: getattr(tc, k) for k in ("lr", "lr_schedule", "lr_min", "warmup_steps", "batch_size", "grad_clip",
                                          "p_uncond", "ema_decay", "seed")}
    return {"base": tc.init_from, "base_sha256": checkpoint_sha256(tc.init_from),
            "pipeline": pipeline, "family": family, "training": {**dict(training), "recipe": recipe}}
