"""Train and evaluate the reference CLIP ("shapes-clip") on `shapes` captions.

    nice -n 10 python -m bench.tools.train_reference_clip --out models/checkpoints/shapes_clip

Training data: the `shapes` train split at 32 px. Each step pairs images with a caption
*variant*: the full caption or one with attributes dropped ("a red circle", "a large blue
shape at the top left"), so short prompts are in distribution for the text tower.
Evaluation: the held-out test split, zero-shot (no fitting on it):
  - top-1 image->text and text->image retrieval among groups of `group` full captions;
  - shape-kind classification with prompts "a {kind}" (8-way), colour with "a {colour} shape"
    (8-way), and both with "a {colour} {kind}" (64-way).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from bench.data.caption_variants import caption_variant
from bench.data.prompts import BACKGROUNDS, COLOURS, KINDS, POSITIONS, SIZES
from bench.data.shapes import ShapesSource
from models.core.checkpoint import save_checkpoint
from models.networks.reference_clip import REFERENCE_CLIP_DIR, ClipEmbedder, ReferenceClip, ReferenceClipEmbedder
from models.networks.text_encoders import WordTokenizer
from models.networks.reference_clip import load_reference_clip

DEFAULT_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "image": {"resolution": 32, "channels": [32, 64, 64]},
    "text": {"width": 64, "layers": 1, "heads": 4, "max_length": 20},
}


def shapes_vocabulary() -> list[str]:
    """Every word the caption grammar and its variants can use."""
    phrases = [*KINDS, *COLOURS, *SIZES, *POSITIONS, *BACKGROUNDS, "a shape at the on background"]
    return sorted({w for p in phrases for w in WordTokenizer.split(p)})


def load_split(resolution: int, n: int, seed: int, split: str) -> tuple[torch.Tensor, list[dict[str, str]]]:
    source = ShapesSource(resolution, n, seed, split)
    images = torch.cat([b.images for b in source.iter_batches(1000)])
    return images, [source.item_attributes(i) for i in range(n)]


def train(out: Path, *, steps: int, batch_size: int, n_train: int, lr: float, seed: int,
          config: Mapping[str, Any] | None = None, log_every: int = 100) -> ReferenceClip:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = json.loads(json.dumps(config or DEFAULT_CONFIG))
    config["text"]["tokenizer"] = {"kind": "word", "vocab": shapes_vocabulary()}
    model = ReferenceClip(config)
    images, attributes = load_split(config["image"]["resolution"], n_train, seed, "train")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) *
                                                 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    start, running = time.time(), 0.0
    for step in range(steps):
        pick = rng.choice(n_train, size=batch_size, replace=False)
        prompts = [caption_variant(attributes[i], rng) for i in pick]
        loss = model.loss(images[torch.from_numpy(pick)], prompts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running += loss.item()
        if (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} loss {running / log_every:.4f} "
                  f"logit_scale {float(model.log_logit_scale.exp()):.1f} {time.time() - start:.0f}s", flush=True)
            running = 0.0
    model.eval()
    save_checkpoint(out, {"clip": model}, {
        "family": "reference_clip", "name": "shapes-clip",
        "networks": {"clip": {"type": "reference_clip", "config": config}},
        "training": {"steps": steps, "batch_size": batch_size, "n_train": n_train, "lr": lr, "seed": seed,
                     "data": "shapes train split, 32 px, caption variants", "seconds": round(time.time() - start, 1)},
    })
    return model


@torch.no_grad()
def zero_shot(embedder: ClipEmbedder, *, n: int = 2000, seed: int = 0, group: int = 100,
              resolution: int = 32) -> dict[str, float]:
    """Held-out (test split) zero-shot accuracies and their chance levels."""
    images, attributes = load_split(resolution, n, seed, "test")
    image_emb = torch.cat([embedder.encode_images(images[i:i + 500]) for i in range(0, n, 500)])
    captions = [f"a {a['size']} {a['colour']} {a['kind']} at the {a['position']} on a {a['background']} background"
                for a in attributes]
    text_emb = torch.cat([embedder.encode_texts(captions[i:i + 500]) for i in range(0, n, 500)])
    i2t = t2i = 0
    usable = n - n % group
    for g in range(0, usable, group):
        sims = image_emb[g:g + group] @ text_emb[g:g + group].T
        target = torch.arange(sims.shape[0])
        i2t += int((sims.argmax(1) == target).sum())
        t2i += int((sims.argmax(0) == target).sum())

    def classify(prompts: list[str], truth: list[int]) -> float:
        pred = (image_emb @ embedder.encode_texts(prompts).T).argmax(1)
        return float((pred == torch.tensor(truth)).float().mean())

    kinds = [KINDS.index(a["kind"]) for a in attributes]
    colours = [COLOURS.index(a["colour"]) for a in attributes]
    return {
        "n": n, "group": group,
        "image_to_text_top1": i2t / usable, "text_to_image_top1": t2i / usable, "retrieval_chance": 1 / group,
        "kind_accuracy": classify([f"a {k}" for k in KINDS], kinds), "kind_chance": 1 / len(KINDS),
        "colour_accuracy": classify([f"a {c} shape" for c in COLOURS], colours), "colour_chance": 1 / len(COLOURS),
        "colour_kind_accuracy": classify([f"a {c} {k}" for c in COLOURS for k in KINDS],
                                         [c * len(KINDS) + k for c, k in zip(colours, kinds)]),
        "colour_kind_chance": 1 / (len(COLOURS) * len(KINDS)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REFERENCE_CLIP_DIR)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--n-train", type=int, default=40000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-only", action="store_true", help="only evaluate the checkpoint at --out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.eval_only:
        embedder = load_reference_clip(checkpoint=args.out)
    else:
        embedder = ReferenceClipEmbedder(train(args.out, steps=args.steps, batch_size=args.batch_size,
                                               n_train=args.n_train, lr=args.lr, seed=args.seed))
    print(json.dumps(zero_shot(embedder), indent=2))


if __name__ == "__main__":
    main()
