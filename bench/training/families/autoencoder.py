"""The first stage of latent diffusion: train, calibrate and evaluate an autoencoder.

LDM trains in two stages (Rombach et al. 2022, sec. 3): the autoencoder first, then the
diffusion model on its frozen latents. Stage one runs in the shared trainer (`bench.train`)
through a latent family's `make_trainable` with `stage: autoencoder` (see conf/train/ae_*.yaml):

    python -m bench.train pipeline=latent_unet_shapes32 pipeline.name=ae_kl_f4_shapes32 \\
        train=ae_kl_f4_shapes32 data=shapes data.n=4096

The trainer exports the EMA weights; the latent scale factor is then computed from training
data (the trainer writes a checkpoint's config before training, so this is a separate step)
and stored in its config, and the reconstruction quality is measured on held-out data:

    python -m bench.training.families.autoencoder calibrate models/checkpoints/ae_kl_f4_shapes32 --data shapes
    python -m bench.training.families.autoencoder evaluate ae_kl_f4_shapes32 --data shapes --n 1000 --rfid
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from bench.atomic import atomic_write_json
from bench.data import build_source
from bench.data.config import DataConfig
from bench.metrics.inception import build_inception
from bench.metrics.reconstruction import ReconstructionMetrics
from bench.training.families.autoencoder_loss import (
    AutoencoderLoss,
    AutoencoderLossConfig,
)
from models.core.checkpoint import CONFIG_FILE, load_config
from models.core.interface import to_uint8
from models.core.registry import resolve_checkpoint
from models.networks.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    autoencoder_spec,
    compute_scale_factor,
    load_autoencoder,
)

AUTOENCODER_PARAMS = ("stage", "autoencoder", "loss")


class AutoencoderTrainable:
    """`bench.training.trainable.Trainable` for an autoencoder (+ its discriminator, when the loss
    has one). LPIPS is frozen and kept out of `networks`, so it is neither optimised nor saved."""

    def __init__(self, params: Mapping[str, Any], *, resolution: int) -> None:
        unknown = set(params) - set(AUTOENCODER_PARAMS)
        if unknown:
            raise ValueError(f"autoencoder training params {sorted(unknown)} are unknown; known: "
                             f"{list(AUTOENCODER_PARAMS)} (autoencoder: AutoencoderConfig fields, "
                             f"loss: AutoencoderLossConfig fields)")
        self.autoencoder = Autoencoder(AutoencoderConfig.from_dict(dict(params.get("autoencoder", {}))))
        self.autoencoder.latent_shape(resolution)            # f must divide the training resolution
        self.loss = AutoencoderLoss(AutoencoderLossConfig(**dict(params.get("loss", {}))),
                                    self.autoencoder.config.in_channels)
        self.resolution = resolution
        self.networks = nn.ModuleDict({"autoencoder": self.autoencoder})
        if self.loss.discriminator is not None:
            self.networks["discriminator"] = self.loss.discriminator
        self.last_logs: dict[str, float] = {}

    def training_loss(self, batch: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor:
        disc = self.loss.discriminator
        step = int(disc.steps) if disc is not None else 0
        out = self.loss(self.autoencoder, batch["image"], step, generator)
        if disc is not None:
            disc.steps += 1
        self.last_logs = out.logs
        return out.loss

    def checkpoint_config(self) -> dict[str, Any]:
        networks = {"autoencoder": autoencoder_spec(self.autoencoder)}
        if self.loss.discriminator is not None:
            networks["discriminator"] = {"type": "patch_discriminator", "config": self.loss.discriminator.spec}
        return {"kind": "autoencoder", "resolution": self.resolution, "networks": networks,
                "loss": asdict(self.loss.config), "latent_scale": None}


# ----------------------------------------------------------------------------- data helpers

def image_batches(data: str, resolution: int, n: int, split: str, seed: int = 0,
                  batch_size: int = 64) -> Iterator[torch.Tensor]:
    """uint8 NCHW batches of a data source (bench.data)."""
    source = build_source(DataConfig(name=data, resolution=resolution, n=n, seed=seed), split=split)
    for batch in source.iter_batches(batch_size):
        yield batch.images


def to_signed(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


def calibrate(checkpoint: str | Path, *, data: str, resolution: int | None = None, n: int = 2048,
              seed: int = 0, batch_size: int = 64) -> float:
    """Compute the latent scale factor on `n` training images and write it into config.json."""
    directory = resolve_checkpoint(str(checkpoint))
    config = load_config(directory)
    resolution = int(resolution or config.get("resolution") or 32)
    autoencoder = load_autoencoder(directory)
    autoencoder.config.scale_factor = 1.0
    scale = compute_scale_factor(autoencoder, (to_signed(b) for b in image_batches(
        data, resolution, n, "train", seed, batch_size)))
    config["networks"]["autoencoder"]["config"]["scale_factor"] = scale
    config["latent_scale"] = {"scale_factor": scale, "latent_std": 1.0 / scale, "data": data, "split": "train",
                              "resolution": resolution, "n": n, "seed": seed,
                              "latents": "posterior mode (KL) / pre-quantisation (VQ)"}
    atomic_write_json(directory / CONFIG_FILE, config)
    return scale


@torch.no_grad()
def evaluate(checkpoint: str | Path, *, data: str, resolution: int, n: int = 1000, split: str = "test",
             seed: int = 0, batch_size: int = 64, rfid: bool = False, lpips_net: str = "alex") -> list[Any]:
    """PSNR, SSIM, LPIPS (and rFID) of decode(encode(x)) on held-out images (bench.metrics)."""
    autoencoder = load_autoencoder(checkpoint)
    extractor = None
    if rfid:
        extractor = build_inception(batch_size=batch_size)
    metrics = ReconstructionMetrics(lpips_net=lpips_net, extractor=extractor)
    for images in image_batches(data, resolution, n, split, seed, batch_size):
        metrics.update(images, to_uint8(autoencoder.decode(autoencoder.encode(to_signed(images)))))
    return metrics.compute()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.training.families.autoencoder", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("calibrate", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("checkpoint", help="checkpoint directory or shipped name")
        p.add_argument("--data", default="shapes", help="bench.data source: shapes | natural")
        p.add_argument("--resolution", type=int, default=None, help="default: the checkpoint's training resolution")
        p.add_argument("--n", type=int, default=2048 if name == "calibrate" else 1000)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--batch-size", type=int, default=64)
        if name == "evaluate":
            p.add_argument("--split", default="test")
            p.add_argument("--rfid", action="store_true", help="also rFID (Inception features)")
            p.add_argument("--lpips-net", default="alex", choices=["alex", "vgg"])
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    if args.command == "calibrate":
        scale = calibrate(args.checkpoint, data=args.data, resolution=args.resolution, n=args.n, seed=args.seed,
                          batch_size=args.batch_size)
        print(f"scale_factor = {scale:.6f} (latent std {1 / scale:.6f}) written to {args.checkpoint}")
        return 0
    resolution = args.resolution or int(load_config(resolve_checkpoint(args.checkpoint)).get("resolution") or 32)
    rows = evaluate(args.checkpoint, data=args.data, resolution=resolution, n=args.n, split=args.split,
                    seed=args.seed, batch_size=args.batch_size, rfid=args.rfid, lpips_net=args.lpips_net)
    out = {row.metric: {"value": row.value, "ci_low": row.ci_low, "ci_high": row.ci_high, "n": row.n} for row in rows}
    print(json.dumps({"checkpoint": str(args.checkpoint), "data": args.data, "split": args.split,
                      "resolution": resolution, "metrics": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
