"""Figures for the latent families: sample grids and reconstruction grids.

    python -m bench.tools.latent_grids samples latent_unet latent_unet_shapes32 --out grid.png [--untrained]
    python -m bench.tools.latent_grids recon ae_kl_f4_shapes32 --data shapes --out recon.png

`samples`: one row per class (labels 0..K-1), `--per-class` samples each, seeds/indices fixed.
`recon`: held-out originals (odd rows) above their reconstructions decode(encode(x)) (even rows).
Images are upscaled by nearest neighbour (`--zoom`) so 32 px samples are visible.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from models.core.interface import SampleRequest, to_uint8
from models.networks.autoencoder import load_autoencoder
from bench.training.families.autoencoder import image_batches, to_signed
from models.core.registry import build_pipeline


def save_grid(images: torch.Tensor, columns: int, path: str | Path, zoom: int = 2, pad: int = 2) -> Path:
    """uint8 NCHW -> a PNG grid with `columns` images per row and a white gap between images."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    canvas = torch.full((c, rows * (h + pad) + pad, columns * (w + pad) + pad), 255, dtype=torch.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, columns)
        canvas[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = image
    if zoom > 1:
        canvas = F.interpolate(canvas[None].float(), scale_factor=zoom, mode="nearest")[0].to(torch.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(path)
    return path


def sample_grid(family: str, checkpoint: str, out: str, *, per_class: int = 8, steps: int = 50,
                sampler: str = "ddim", guidance: float = 1.0, seed: int = 0, untrained: bool = False,
                zoom: int = 2) -> Path:
    params = {"untrained": True} if untrained else {}
    pipe = build_pipeline(family, checkpoint, checkpoint=checkpoint, **params)
    classes = pipe.info.num_classes or 1
    labels = [k for k in range(classes) for _ in range(per_class)] if pipe.info.num_classes else None
    request = SampleRequest(n=classes * per_class, seed=seed, labels=labels, steps=steps, sampler=sampler,
                            guidance_scale=guidance, batch_size=32)
    images = torch.cat([batch.images for batch in pipe.sample(request)])
    return save_grid(images, per_class, out, zoom)


@torch.no_grad()
def reconstruction_grid(checkpoint: str, out: str, *, data: str = "shapes", resolution: int = 32,
                        n: int = 16, columns: int = 8, zoom: int = 2) -> Path:
    autoencoder = load_autoencoder(checkpoint)
    originals = next(image_batches(data, resolution, n, "test", batch_size=n))
    recons = to_uint8(autoencoder.decode(autoencoder.encode(to_signed(originals))))
    rows = [torch.cat([originals[i:i + columns], recons[i:i + columns]]) for i in range(0, n, columns)]
    return save_grid(torch.cat(rows), columns, out, zoom)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.latent_grids", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("samples")
    s.add_argument("family", choices=["latent_unet", "latent_dit"])
    s.add_argument("checkpoint")
    s.add_argument("--out", required=True)
    s.add_argument("--per-class", type=int, default=8)
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("--sampler", default="ddim")
    s.add_argument("--guidance", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--untrained", action="store_true", help="the checkpoint's architecture with a fresh denoiser")
    s.add_argument("--zoom", type=int, default=2)
    r = sub.add_parser("recon")
    r.add_argument("checkpoint")
    r.add_argument("--out", required=True)
    r.add_argument("--data", default="shapes")
    r.add_argument("--resolution", type=int, default=32)
    r.add_argument("--n", type=int, default=16)
    r.add_argument("--zoom", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "samples":
        path = sample_grid(args.family, args.checkpoint, args.out, per_class=args.per_class, steps=args.steps,
                           sampler=args.sampler, guidance=args.guidance, seed=args.seed, untrained=args.untrained,
                           zoom=args.zoom)
    else:
        path = reconstruction_grid(args.checkpoint, args.out, data=args.data, resolution=args.resolution,
                                   n=args.n, zoom=args.zoom)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
