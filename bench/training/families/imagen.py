"""Training of the `imagen` family through the generic trainer (`python -m bench.train`,
bench/training/trainable.py): every stage of the cascade trains jointly on each batch.

- Captions: shapes captions are replaced by a random *variant* (attributes dropped, e.g.
  "a red circle"), so short prompts are in distribution; "" (the trainer's condition dropout
  for CFG) stays "" = the null condition.
- Base: L_simple on the image area-downsampled to resolutions[0].
- SR stage k: the image at resolutions[k-1] is corrupted by the stage's conditioning
  augmentation at a level ~ U[0, max_level] (Ho et al. 2022 / Imagen sec. 2.4), upsampled and
  concatenated; the level's features join the pooled text in the UNet's extra embedding.
- Frozen LM: its embeddings are computed once per distinct caption and cached (Imagen sec. 2.1:
  freezing allows "offline computation of text embeddings"); on CPU a MiniLM pass over a batch
  costs more than the UNets' training step, and the caption grammar has ~16k variants.
All randomness comes from the trainer's generator (resumable).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from models.sampling.augment import downsample
from models.sampling.diffusion import training_loss
from models.families.imagen import (ImagenPipeline, build_config_and_networks, load_text_encoder, stage_inputs,
                                    text_conditions)
from models.networks.text_encoders import TextEncoder
from bench.data.caption_variants import vary_caption


def caption_variants(captions: list[str], generator: torch.Generator) -> list[str]:
    rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,), generator=generator)))
    return [vary_caption(c, rng) for c in captions]


class FrozenTextCache:
    """caption -> (unpadded token states, pooled) of a frozen encoder, computed for the misses of a
    batch in one call. Rebuilt padded rows equal `text_conditions`' (padding is zeroed there)."""

    def __init__(self, encoder: TextEncoder, max_entries: int = 40000) -> None:
        self.encoder, self.max_entries = encoder, max_entries
        self.entries: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.hits = self.misses = 0

    @torch.no_grad()
    def __call__(self, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        missing = list(dict.fromkeys(c for c in captions if c not in self.entries))
        self.hits += len(captions) - len(missing)
        self.misses += len(missing)
        if missing:
            self.encoder.to(device)
            cond, _ = text_conditions(self.encoder, missing)
            lengths = (cond["context"].abs().sum(-1) > 0).sum(1)
            if len(self.entries) + len(missing) > self.max_entries:
                self.entries.clear()                    # bounded memory; refills from the batches
            for c, ctx, pooled, n in zip(missing, cond["context"].cpu(), cond["pooled"].cpu(), lengths.tolist()):
                self.entries[c] = (ctx[:n].clone(), pooled.clone())
        length, dim = self.encoder.max_length, self.encoder.dim
        context = torch.zeros(len(captions), length, dim)
        for i, c in enumerate(captions):
            ctx = self.entries[c][0]
            context[i, :len(ctx)] = ctx
        pooled = torch.stack([self.entries[c][1] for c in captions])
        return {"context": context.to(device), "pooled": pooled.to(device)}


class ImagenTrainable:
    def __init__(self, config: dict[str, Any], networks: nn.ModuleDict, text_encoder: TextEncoder) -> None:
        self.config = config
        self.networks = networks                 # trained (the frozen LM is not among them)
        self.text_encoder = text_encoder
        self.pipeline = ImagenPipeline("train", config, networks, text_encoder)
        self.cache = None if text_encoder.trainable else FrozenTextCache(text_encoder)

    def encode(self, captions: list[str]) -> dict[str, torch.Tensor]:
        # A text-encoder adapter trains through the encoder: no cached (constant) embeddings then.
        if self.cache is None or any(p.requires_grad for p in self.text_encoder.parameters()):
            cond, _ = text_conditions(self.text_encoder, captions)
            return cond
        return self.cache(captions, self.device)

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


def make_trainable(name: str, params: Mapping[str, Any], *, resolution: int, num_classes: int | None,
                   class_names: list[str] | None) -> Any:
    """Training entry for `python -m bench.train` (see bench/training/families/imagen.py)."""
    config, networks = build_config_and_networks(None, dict(params))
    if config["resolution"] != resolution:
        raise ValueError(f"imagen resolutions {config['resolutions']} end at {config['resolution']} px but the "
                         f"training data is {resolution} px; set data.resolution={config['resolution']}")
    return ImagenTrainable(config, networks, load_text_encoder(config, networks))
