"""Shorter variants of the shapes captions ("a red circle" for the full five-attribute caption):
the caption augmentation that lets models trained on full captions follow short prompts
(used by the reference CLIP, Imagen and unCLIP training)."""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from bench.data.prompts import BACKGROUNDS, COLOURS, KINDS, POSITIONS, SIZES

KEEP_PROBABILITY = {"size": 0.5, "colour": 0.7, "kind": 0.7, "position": 0.3, "background": 0.3}


def caption_variant(attributes: Mapping[str, str], rng: np.random.Generator, full_probability: float = 0.3) -> str:
    """The full caption, or one with size / colour / kind / position / background dropped
    independently (kind -> "shape"; colour and kind kept more often, so that short prompts such
    as "a red circle" are common); at least one of colour and kind is kept."""
    a = attributes
    if rng.random() < full_probability:
        keep = dict.fromkeys(KEEP_PROBABILITY, True)
    else:
        keep = {k: bool(rng.random() < p) for k, p in KEEP_PROBABILITY.items()}
        if not (keep["colour"] or keep["kind"]):
            keep[("colour", "kind")[int(rng.integers(2))]] = True
    words = ["a"]
    words += [a["size"]] if keep["size"] else []
    words += [a["colour"]] if keep["colour"] else []
    words += [a["kind"] if keep["kind"] else "shape"]
    words += ["at the", a["position"]] if keep["position"] else []
    words += ["on a", a["background"], "background"] if keep["background"] else []
    return " ".join(words)


CAPTION_PATTERN = re.compile(
    rf"a ({'|'.join(SIZES)}) ({'|'.join(COLOURS)}) ({'|'.join(KINDS)}) at the ({'|'.join(POSITIONS)}) "
    rf"on a ({'|'.join(BACKGROUNDS)}) background")


def parse_caption(caption: str) -> dict[str, str] | None:
    """A full shapes caption -> its attributes; None for anything else (another data set's captions)."""
    match = CAPTION_PATTERN.fullmatch(caption.strip())
    if match is None:
        return None
    return dict(zip(("size", "colour", "kind", "position", "background"), match.groups()))


def vary_caption(caption: str, rng: np.random.Generator) -> str:
    """A random variant of a full shapes caption; other captions (and "") unchanged."""
    attributes = parse_caption(caption)
    return caption if attributes is None else caption_variant(attributes, rng)
