"""Training the cascaded family (bench.train): every stage's denoising loss, the SR stages on
downsampled data corrupted by their conditioning augmentation (Ho et al. 2022 sec. 3.2)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from models.core.checkpoint import load_checkpoint
from models.core.registry import resolve_checkpoint
from models.families.base import load_family_networks
from models.families.cascaded import CASCADE_ARCH_PARAMS, CascadedPipeline, cascade_config
from models.sampling.augment import downsample, level_embedding
from models.sampling.diffusion import training_loss


class CascadedTrainable:
    """Trains the cascade's stages jointly: loss = mean of the trained stages' losses. Each SR stage
    sees area-downsampled data, corrupted by its conditioning augmentation at a random level.
    `train_stages` (default: all) trains a subset; the others stay frozen, e.g. a new SR stage
    under an already trained base (Ho et al. 2022 train each stage of a cascade independently)."""

    def __init__(self, config: dict[str, Any], networks: nn.ModuleDict,
                 train_stages: Sequence[str] | None = None) -> None:
        self.config = config
        self.networks = networks
        self.pipeline = CascadedPipeline("train", config, networks)
        self.train_stages = list(self.pipeline.names if train_stages is None else train_stages)
        unknown = set(self.train_stages) - set(self.pipeline.names)
        if unknown or not self.train_stages:
            raise ValueError(f"cascade train_stages={self.train_stages} must name some of its stages "
                             f"{self.pipeline.names}")
        self.frozen_stages = [n for n in self.pipeline.names if n not in self.train_stages]
        for name in self.pipeline.names:
            networks[name].requires_grad_(name not in self.frozen_stages)

    def training_loss(self, batch: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor:
        p = self.pipeline
        full = batch["image"]
        if full.shape[-1] < p.resolutions[-1]:
            raise ValueError(f"cascade trains at {p.resolutions[-1]} px but the data is {full.shape[-1]} px; "
                             f"set data.resolution={p.resolutions[-1]}")
        labels = batch["label"]
        losses = []
        for k, (name, res) in enumerate(zip(p.names, p.resolutions)):
            if name not in self.train_stages:
                continue
            net = self.networks[name]
            target = downsample(full, res) if full.shape[-1] != res else full
            kwargs: dict[str, Any] = {"y": labels} if net.config.num_classes is not None else {}
            if k > 0:
                aug = p.augs[k - 1]
                low = downsample(full, p.resolutions[k - 1])
                level = aug.training_levels(len(full), generator).to(full.device)
                eps = torch.randn(low.shape, generator=generator).to(low) if aug.kind == "noise" else None
                kwargs["cond_image"] = aug.condition(low, level, res, eps)
                kwargs["extra"] = level_embedding(level).to(full.dtype)
            losses.append(training_loss(net, target, p.schedules[name], prediction=p.specs[name].prediction,
                                        learn_sigma=net.config.learn_sigma, generator=generator, **kwargs))
        return torch.stack(losses).mean()

    def checkpoint_config(self) -> dict[str, Any]:
        return self.config


def init_frozen_stages(config: Mapping[str, Any], networks: nn.ModuleDict, stages: Sequence[str],
                       init_from: str) -> None:
    """Load `stages` from checkpoint `init_from`; each must have the same network and diffusion config."""
    source = resolve_checkpoint(init_from)
    source_config, source_networks = load_checkpoint(source)
    for name in stages:
        for part in ("networks", "diffusion"):
            ours, theirs = config[part].get(name), source_config.get(part, {}).get(name)
            if ours != theirs:
                raise ValueError(f"cascade stage {name!r} is frozen but its {part} config differs from "
                                 f"init_from={init_from!r} ({theirs} vs {ours}); make the recipe's "
                                 f"architecture of {name!r} match the checkpoint, or train that stage too")
        networks[name].load_state_dict(source_networks[name].state_dict())


def make_trainable(name: str, params: Mapping[str, Any], *, resolution: int, num_classes: int | None,
                   class_names: list[str] | None) -> CascadedTrainable:
    """Training entry (bench.train); class conditioning is on when the data has classes.
    `train_stages` + `init_from` train some stages and take the others from a trained checkpoint."""
    params = {k: v for k, v in dict(params).items() if k != "truncated"}
    train_stages, init_from = params.pop("train_stages", None), params.pop("init_from", None)
    params.setdefault("num_classes", num_classes)
    params.setdefault("class_names", class_names)
    config, networks = load_family_networks("cascaded", None, params, cascade_config, CASCADE_ARCH_PARAMS)
    trainable = CascadedTrainable(config, networks, train_stages)
    if trainable.frozen_stages:
        if init_from is None:
            raise ValueError(f"cascade train_stages={trainable.train_stages} leaves {trainable.frozen_stages} "
                             f"untrained: set init_from to a trained cascaded checkpoint to take them from")
        init_frozen_stages(config, networks, trainable.frozen_stages, str(init_from))
    return trainable
