"""Prompt alignment of a text-to-image pipeline on `shapes` prompts, measured two ways:

- by a CLIP embedder (offline: the project's `shapes-clip`): each image is assigned the prompt of
  the set whose text embedding is closest; accuracy vs chance = 1 / number of prompts;
- by a pixel rule that needs no learned model: the object is the largest blob of chromatic pixels
  (the shapes backgrounds are white/black/gray/beige, chroma <= 50; every shape colour has chroma
  >= 180); colour = the nearest to its core's mean RGB among the prompts' colours ("in set": the
  two-prompt decision) and among all 8 shapes colours ("8-way"); shape = circle if the object fills the disc
  around its centroid that reaches its farthest pixel (area / (pi d_max^2): circle ~ 1, square
  2/pi ~ 0.64 at any tilt), else square. Only "circle" vs "square" is decided by the rule.

    python -m bench.tools.prompt_alignment pipeline=unclip_shapes n=32   (see `main`)
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from omegaconf import OmegaConf
from PIL import Image
from scipy import ndimage
from torchvision.utils import make_grid

from bench.data.prompts import COLOURS, KINDS
from bench.data.shapes import COLOUR_RGB
from models.core.interface import SampleRequest
from models.core.registry import build_pipeline
from models.networks.reference_clip import load_reference_clip

CHROMA_MIN = 60.0         # max - min channel; backgrounds <= 50 (beige), shape colours >= 180
CIRCLE_MIN_FILL = 0.73    # area / (pi d_max^2) at or above: circle (best split on real 32 px shapes, 88%)
PROMPT = re.compile(rf"a ({'|'.join(COLOURS)}) ({'|'.join(KINDS)})")


def chroma(images: torch.Tensor) -> torch.Tensor:
    x = images.float()
    return x.amax(1) - x.amin(1)


def object_mask(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> bool (N, H, W): the largest 4-connected blob of chromatic pixels (generated
    samples have chromatic speckle in the background; a real shapes image has one blob)."""
    out = []
    for c in (chroma(images) > CHROMA_MIN).numpy():
        labels, count = ndimage.label(c)
        if count == 0:
            out.append(torch.zeros(c.shape, dtype=torch.bool))
            continue
        sizes = ndimage.sum(c, labels, range(1, count + 1))
        out.append(torch.from_numpy(labels == 1 + int(sizes.argmax())))
    return torch.stack(out)


def pixel_colour(images: torch.Tensor, choices: Sequence[str] = COLOURS) -> list[str | None]:
    """Nearest of the `choices` shapes colours to the mean RGB of the object's saturated core
    (chroma >= 100; all of the object where it has none); None: no object."""
    masks, strong = object_mask(images), chroma(images) >= 100
    palette = torch.tensor([COLOUR_RGB[c] for c in choices], dtype=torch.float32)
    out: list[str | None] = []
    for im, m, s in zip(images.float(), masks, strong):
        if m.sum() == 0:
            out.append(None)
            continue
        core = m & s if (m & s).any() else m
        mean = im[:, core].mean(1)
        out.append(choices[int(((palette - mean) ** 2).sum(1).argmin())])
    return out


def disc_fill(images: torch.Tensor) -> list[float]:
    """area / (pi d_max^2) of each image's object pixels (d_max: centroid to the farthest pixel's
    outer edge, + half a pixel); 0 for an empty mask."""
    out = []
    for m in object_mask(images):
        ys, xs = torch.nonzero(m, as_tuple=True)
        if len(ys) == 0:
            out.append(0.0)
            continue
        cy, cx = ys.float().mean(), xs.float().mean()
        d_max = float(((ys - cy) ** 2 + (xs - cx) ** 2).sqrt().max()) + 0.5
        out.append(float(len(ys) / (math.pi * d_max ** 2)))
    return out


def pixel_kind(images: torch.Tensor) -> list[str | None]:
    return [None if f == 0 else ("circle" if f >= CIRCLE_MIN_FILL else "square") for f in disc_fill(images)]


@torch.no_grad()
def clip_choice(embedder: Any, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """Index into `prompts` of the closest text embedding for each image."""
    img = embedder.encode_images(images)
    txt = embedder.encode_texts(list(prompts))
    return (img @ txt.T).argmax(1).cpu()


def alignment(images_by_prompt: Mapping[str, torch.Tensor], embedder: Any) -> dict[str, Any]:
    """Accuracies (and chance levels) over prompts of the form "a {colour} {kind}"."""
    prompts = list(images_by_prompt)
    rows: dict[str, Any] = {"prompts": prompts, "clip": getattr(embedder, "name", "?"), "per_prompt": {}}
    parsed = {}
    for prompt in prompts:
        match = PROMPT.fullmatch(prompt)
        if match is None:
            raise ValueError(f"prompt {prompt!r}: alignment needs prompts 'a {{colour}} {{kind}}' with a shapes "
                             f"colour and kind")
        parsed[prompt] = match.groups()
    set_colours = list(dict.fromkeys(c for c, _ in parsed.values()))
    keys = ("clip", "colour_in_set", "kind", "colour_in_set_and_kind", "colour_8way")
    totals = dict.fromkeys(keys, 0)
    for k, prompt in enumerate(prompts):
        images = images_by_prompt[prompt]
        colour, kind = parsed[prompt]
        kind_ok = torch.tensor([c == kind for c in pixel_kind(images)])
        colour_ok = torch.tensor([c == colour for c in pixel_colour(images, set_colours)])
        ok = {"clip": clip_choice(embedder, images, prompts) == k, "colour_in_set": colour_ok, "kind": kind_ok,
              "colour_in_set_and_kind": colour_ok & kind_ok,
              "colour_8way": torch.tensor([c == colour for c in pixel_colour(images)])}
        rows["per_prompt"][prompt] = {"n": len(images), **{f"{key}_accuracy": float(v.float().mean())
                                                           for key, v in ok.items()}}
        for key, v in ok.items():
            totals[key] += int(v.sum())
    n = sum(len(images_by_prompt[p]) for p in prompts)
    chance = {"clip": 1 / len(prompts), "colour_in_set": 1 / len(set_colours), "kind": 0.5,
              "colour_in_set_and_kind": 0.5 / len(set_colours), "colour_8way": 1 / len(COLOURS)}
    rows["n"] = n
    for key in keys:
        rows[f"{key}_accuracy"], rows[f"{key}_chance"] = totals[key] / n, chance[key]
    return rows


def generate(pipe: Any, prompt: str, n: int, seed: int = 0, **request: Any) -> torch.Tensor:
    req = SampleRequest(n=n, prompts=[prompt], seed=seed, **request)
    return torch.cat([b.images for b in pipe.sample(req)])


def main(argv: Sequence[str]) -> None:
    """key=value arguments: pipeline (conf/pipeline name), n, steps, guidance, seed, batch_size,
    prompts ("a red circle|a blue square"), out (JSON path), grid (PNG path), images (a .pt file:
    samples are loaded from it if it exists, else generated and saved there), clip=0 (samples only),
    sr=0 (unCLIP without its SR stage), thresholding, prior_steps / prior_guidance for unCLIP, and
    checkpoint / sr_checkpoint (a directory, e.g. a training step) in place of the config's."""


    args = dict(a.split("=", 1) for a in argv)
    torch.set_num_threads(int(args.get("threads", 1)))
    spec = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "pipeline" /
                                                 f"{args['pipeline']}.yaml"))
    params = dict(spec.get("params") or {})
    if args.get("sr") == "0":                # unCLIP: the decoder's output, without the SR stage
        params["super_resolution"] = {}
    elif "sr_checkpoint" in args:
        params["super_resolution"] = {"checkpoint": args["sr_checkpoint"]}
    pipe = build_pipeline(spec["family"], spec["name"], args.get("checkpoint", spec.get("checkpoint")), **params)
    request: dict[str, Any] = {"steps": int(args.get("steps", 25)), "guidance_scale": float(args.get("guidance", 3.0)),
                               "batch_size": int(args.get("batch_size", 32)),
                               "thresholding": args.get("thresholding", "none")}
    if "prior_steps" in args or "prior_guidance" in args:
        request["stage_overrides"] = {"prior": {"steps": int(args.get("prior_steps", request["steps"])),
                                                "guidance_scale": float(args.get("prior_guidance", request["guidance_scale"]))}}
    prompts = args.get("prompts", "a red circle|a blue square").split("|")
    n = int(args.get("n", 32))
    cached = Path(args["images"]) if "images" in args else None     # samples saved by an earlier run
    if cached is not None and cached.exists():
        images = torch.load(cached, weights_only=True)
        request = {"note": f"samples loaded from {cached}; the request that made them is not recorded"}
    else:
        images = {p: generate(pipe, p, n, int(args.get("seed", 0)), **request) for p in prompts}
        if cached is not None:
            torch.save(images, cached)
    if args.get("clip", "1") == "0":        # samples (and grid) only
        if "grid" in args:
            save_grid(images, args["grid"], per_row=int(args.get("per_row", 16)))
        return
    result = {"pipeline": spec["name"], "request": request, **alignment(images, load_reference_clip())}
    print(json.dumps(result, indent=2))
    if "out" in args:
        Path(args["out"]).write_text(json.dumps(result, indent=2))
    if "grid" in args:
        save_grid(images, args["grid"], per_row=int(args.get("per_row", 16)))


def save_grid(images_by_prompt: Mapping[str, torch.Tensor], path: str, per_row: int = 16, scale: int = 3) -> None:
    """One row block per prompt (the first `per_row` images), nearest-neighbour upscaled."""
    rows = [ims[:per_row] for ims in images_by_prompt.values()]
    grid = make_grid(torch.cat(rows), nrow=per_row, padding=2, pad_value=255)
    image = Image.fromarray(grid.permute(1, 2, 0).numpy())
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    image.save(path)


if __name__ == "__main__":
    main(sys.argv[1:])
