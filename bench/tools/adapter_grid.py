"""A concept adapter's sample grid: held-out concept images, the base model and the adapted model on the
same concept prompts and seeds (row 1: held-out images; row 2: base; row 3: base + adapter).

    python -m bench.tools.adapter_grid heart_lora_r4 --out reports/docs/lora_heart_grid.png

The adapter is a shipped name (models/checkpoints/<name>/adapter.json) or a directory written by
`bench.train ... adapter=... train.export=DIR`; its adapter.json names the base checkpoint and family.
Prompts are the concept set's held-out captions (data=concept, split=test), as suite=lora_sweep uses.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from bench.config import DataConfig
from bench.data import build_source
from models.core.interface import SampleRequest
from models.families.adapted import build_adapted_pipeline
from models.networks.adapters import ADAPTER_JSON, resolve_adapter
from suites.image_to_image import write_grid


def adapter_grid(adapter: str, out: str, *, n: int = 8, steps: int = 20, guidance: float = 3.0,
                 thresholding: str = "none", seed: int = 0, concept: str = "concept", zoom: int = 3) -> str:
    directory = resolve_adapter(adapter)
    record = json.loads((directory / ADAPTER_JSON).read_text())
    data = record.get("training", {}).get("data", {})
    held_out = next(build_source(DataConfig(name=concept, resolution=int(data.get("resolution", 32)), n=n,
                                            seed=int(data.get("seed", 0))), split="test").iter_batches(n))
    prompts = list(held_out.captions)
    request = SampleRequest(n=n, seed=seed, prompts=prompts, steps=steps, sampler="ddim", guidance_scale=guidance,
                            thresholding=thresholding, batch_size=n)
    rows = [held_out.images]
    for scale in (0.0, 1.0):       # scale 0 is the base model bit for bit (models/networks/adapters.py)
        pipe = build_adapted_pipeline(record["family"], "adapter_grid", record["base"], adapter=adapter,
                                      adapter_scale=scale)
        rows.append(torch.cat([b.images for b in pipe.sample(request)]))
    # rows named and the adapter with its scale in the title (issue 28: a grid read at a glance)
    write_grid(Path(out), rows, n, scale=zoom,
               labels=[f"held-out {concept} images", f"base: {record['base']}", f"base + {adapter} (scale 1.0)"],
               title=f"{adapter} on {record['base']}: DDIM {steps} steps, guidance {guidance:g}, seed {seed}")
    print(f"{out}: row 1 held-out {concept} images, row 2 {record['base']}, row 3 + {adapter}; prompts:")
    for p in prompts:
        print(f"  {p}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.adapter_grid", description=__doc__.split("\n")[0])
    parser.add_argument("adapter")
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--thresholding", default="none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zoom", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        adapter_grid(args.adapter, args.out, n=args.n, steps=args.steps, guidance=args.guidance,
                     thresholding=args.thresholding, seed=args.seed, zoom=args.zoom)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
