"""How a family plugs into the generic trainer, without the trainer knowing the family.

A trainable family has a module `bench.training.families.<family>` (TRAINING_MODULES) that defines

    make_trainable(name, params, *, resolution, num_classes, class_names) -> Trainable

where `params` are its architecture params (pipeline.params merged with train.model) and the
rest describes the training data. The `Trainable` holds the networks as one ModuleDict (what
the optimiser, EMA and checkpoints see) and computes the loss of a batch.

A batch is a dict: "image" float NCHW in [-1, 1] on the training device, "label" int64 (N,)
with -1 for "no label / dropped for CFG", "caption" list[str] with "" for "no caption /
dropped for CFG". Condition dropout is done by the trainer; a family maps -1 / "" to its null
condition. All randomness must come from the `generator` passed in (resumable training).
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping, Protocol, runtime_checkable

import torch
import torch.nn as nn

from models.core.registry import FAMILY_MODULES

TRAINING_MODULES = {family: f"bench.training.families.{family}"
                    for family in ("pixel", "cascaded", "latent_unet", "latent_dit", "latent_concat", "imagen",
                                   "unclip")}


@runtime_checkable
class Trainable(Protocol):
    networks: nn.ModuleDict

    def training_loss(self, batch: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor: ...

    def checkpoint_config(self) -> dict[str, Any]: ...


def make_trainable(family: str, name: str, params: Mapping[str, Any], *, resolution: int,
                   num_classes: int | None, class_names: list[str] | None) -> Trainable:
    if family not in FAMILY_MODULES:
        raise ValueError(f"pipeline family {family!r} is unknown; known: {sorted(FAMILY_MODULES)}")
    if family not in TRAINING_MODULES:
        raise ValueError(f"family {family!r} cannot be trained with bench.train; trainable families: "
                         f"{sorted(TRAINING_MODULES)}")
    # Imported on demand: a family's training code pulls in its losses (e.g. LPIPS-vgg) and data.
    module = importlib.import_module(TRAINING_MODULES[family])
    trainable = module.make_trainable(name, dict(params), resolution=resolution, num_classes=num_classes,
                                      class_names=class_names)
    if not isinstance(trainable, Trainable):
        raise TypeError(f"{TRAINING_MODULES[family]}.make_trainable returned {type(trainable).__name__}, "
                        "which lacks networks / training_loss / checkpoint_config")
    return trainable
