"""Training of the `imagen` family through the generic trainer (`python -m bench.train`,
bench/training/trainable.py): every stage of the cascade trains jointly on each batch.

- Captions: shapes captions are replaced by a random *variant* (attributes dropped, e.g.
  "a red circle"), so short prompts are in distribution; "" (the trainer's condition dropout
  for CFG) stays "" = the null condition.
- Base: L_simple on the image area-downsampled to resolutions[0].
- SR stage k: the image at resolutions[k-1] is corrupted by the stage's conditioning
  augmentation at a level ~ U[0, max_level] (Ho et al. 2022 / Imagen sec. 2.4), upsampled and
  concatenated; the level's features join the pooled text in the UNet's extra embedding.
All randomness comes from the trainer's generator (resumable).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from models.augment import downsample
from models.diffusion import training_loss
from models.imagen import ImagenPipeline, stage_inputs, text_conditions
from models.text_encoders import TextEncoder
from models.train_reference_clip import vary_caption


def caption_variants(captions: list[str], generator: torch.Generator) -> list[str]:
    rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,), generator=generator)))
    return [vary_caption(c, rng) for c in captions]


class ImagenTrainable:
    def __init__(self, config: dict[str, Any], networks: nn.ModuleDict, text_encoder: TextEncoder) -> None:
        self.config = config
        self.networks = networks                 # trained (the frozen LM is not among them)
        self.text_encoder = text_encoder
        self.pipeline = ImagenPipeline("train", config, networks, text_encoder)

    def encode(self, captions: list[str]) -> dict[str, torch.Tensor]:
        if self.text_encoder.trainable:
            cond, _ = text_conditions(self.text_encoder, captions)
        else:
            with torch.no_grad():
                self.text_encoder.to(self.device)
                cond, _ = text_conditions(self.text_encoder, captions)
        return cond

    @property
    def device(self) -> torch.device:
        return next(self.networks.parameters()).device

    def training_loss(self, batch: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor:
        p, full = self.pipeline, batch["image"]
        if full.shape[-1] != p.resolutions[-1]:
            raise ValueError(f"imagen trains at {p.resolutions[-1]} px but the data is {full.shape[-1]} px; "
                             f"set data.resolution={p.resolutions[-1]}")
        text = self.encode(caption_variants(list(batch["caption"]), generator))
        text = {k: v.to(full.dtype) for k, v in text.items()}
        losses = []
        for k, (name, res) in enumerate(zip(p.names, p.resolutions)):
            target = downsample(full, res) if res != full.shape[-1] else full
            if k == 0:
                kwargs = stage_inputs(text)
            else:
                aug = p.augs[k - 1]
                low = downsample(full, p.resolutions[k - 1])
                level = aug.training_levels(len(full), generator).to(full.device)
                eps = torch.randn(low.shape, generator=generator).to(low) if aug.kind == "noise" else None
                kwargs = {**stage_inputs(text, level), "cond_image": aug.condition(low, level, res, eps)}
            losses.append(training_loss(self.networks[name], target, p.schedules[name],
                                        prediction=p.specs[name].prediction, generator=generator, **kwargs))
        return torch.stack(losses).mean()

    def checkpoint_config(self) -> dict[str, Any]:
        return self.config
