"""Training the latent_concat family (bench.train): the denoiser learns on the frozen autoencoder's
latents with its task's condition concatenated to z_t (Rombach et al. 2022 sec. 3.3), made from
each training batch:
- superres (sec. 4.4): the batch bicubic-degraded by the autoencoder's factor f, through the same
  bench.data.degrade the superres suite uses (8-bit quantised low-resolution image), so the
  model trains on exactly the inputs it is evaluated on;
- inpaint (sec. 4.5): one random mask per sample, then the encoded masked image + the mask at
  latent size (models.families.latent_concat). The masks come from bench.data.masks: a bank of
  MASK_BANK_SIZE masks (kind box / thin / thick and area ratio in MASK_RATIO_RANGE, each with its
  own seed, all drawn from a generator seeded with MASK_BANK_SEED) made once, since drawing strokes
  costs ~8 ms a mask, as much as the training step itself; each sample takes a bank mask and one of
  its 8 flips / quarter turns, both drawn from the training generator.
All randomness of a step comes from the trainer's generator (resumable, deterministic).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from bench.data.degrade import degrade
from bench.data.masks import MASK_KINDS, make_mask
from bench.training.families.latent import LatentTrainable
from models.core.interface import to_uint8
from models.families.latent import build_latent_networks
from models.families.latent_concat import FAMILY, inpaint_condition, latent_concat_config, superres_condition
from models.networks.autoencoder import Autoencoder
from models.sampling.diffusion import training_loss

MASK_RATIO_RANGE = (0.05, 0.6)   # covers the inpainting suite's default sets (0.15 thin, 0.25 box, 0.35 thick)
MASK_BANK_SIZE = 2048
MASK_BANK_SEED = 0


def random_masks(n: int, resolution: int, generator: torch.Generator) -> torch.Tensor:
    """n masks (uint8 N 1 H W, 1 = to inpaint): per sample a kind, an area ratio and a mask seed,
    all drawn from `generator`."""
    kinds = torch.randint(len(MASK_KINDS), (n,), generator=generator)
    lo, hi = MASK_RATIO_RANGE
    ratios = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    seeds = torch.randint(2 ** 62, (n,), generator=generator)
    return torch.stack([make_mask(MASK_KINDS[int(k)], round(float(r), 4), resolution, int(s), 0)
                        for k, r, s in zip(kinds, ratios, seeds)])


def dihedral(masks: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
    """Mask k turned by ops[k] % 4 quarter turns, then flipped left-right if ops[k] >= 4 (same area)."""
    out = [torch.rot90(m, int(op) % 4, dims=(-2, -1)) for m, op in zip(masks, ops)]
    return torch.stack([m.flip(-1) if int(op) >= 4 else m for m, op in zip(out, ops)])


class LatentConcatTrainable(LatentTrainable):
    def __init__(self, config: dict[str, Any], networks: nn.ModuleDict) -> None:
        super().__init__(config, networks)
        self.task = config["task"]
        self.resolution = int(config["resolution"])
        self.latent_size = int(config["latent_shape"][-1])
        self._mask_bank: torch.Tensor | None = None

    def mask_bank(self) -> torch.Tensor:
        if self._mask_bank is None:
            self._mask_bank = random_masks(MASK_BANK_SIZE, self.resolution, torch.Generator().manual_seed(MASK_BANK_SEED))
        return self._mask_bank

    def training_masks(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n masks (uint8 N 1 H W): bank entries and their flips / turns, drawn from `generator`."""
        bank = self.mask_bank()
        picks = torch.randint(len(bank), (n,), generator=generator)
        return dihedral(bank[picks], torch.randint(8, (n,), generator=generator))

    def condition(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The concatenated condition of a batch of [-1, 1] images."""
        if self.task == "superres":
            low = degrade(to_uint8(images), self.resolution // self.latent_size, "bicubic")
            return superres_condition(low.to(images.device).float() / 127.5 - 1.0, self.latent_size)
        masks = self.training_masks(len(images), generator).to(images.device).float()
        return inpaint_condition(self.networks["autoencoder"], images, masks)

    def training_loss(self, batch: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor:
        autoencoder: Autoencoder = self.networks["autoencoder"].eval()
        images = batch["image"]
        if images.shape[-1] != self.resolution:
            raise ValueError(f"latent_concat trains at {self.resolution} px but the data is {images.shape[-1]} px; "
                             f"set data.resolution={self.resolution}")
        with torch.no_grad():
            latents = autoencoder.encode(images)
            cond = self.condition(images, generator)
        denoiser = self.networks["denoiser"]
        return training_loss(denoiser, latents, self.schedule, prediction=self.spec.prediction,
                             learn_sigma=bool(getattr(denoiser.config, "learn_sigma", False)), generator=generator,
                             cond_image=cond)


def make_trainable(name: str, params: Mapping[str, Any], *, resolution: int, num_classes: int | None,
                   class_names: list[str] | None) -> LatentConcatTrainable:
    """The data's resolution unless set; its classes are not used (the family is unconditional)."""
    params = dict(params)
    if params.pop("stage", "denoiser") != "denoiser":
        raise ValueError(f"{FAMILY} trains its denoiser only (on a shipped, calibrated autoencoder): drop `stage`")
    params.setdefault("resolution", resolution)
    config, networks = build_latent_networks(FAMILY, None, params, latent_concat_config)
    return LatentConcatTrainable(config, nn.ModuleDict(dict(networks)))
