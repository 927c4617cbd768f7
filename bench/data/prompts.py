"""Prompt sets: the `shapes` caption grammar, and a loader for prompt files.

Grammar: "a {size} {colour} {kind} at the {position} on a {background} background", each
word drawn uniformly from the vocabularies below. The attributes of item i of a (seed, split)
come from their own hashed RNG, `numpy.random.default_rng([seed, split_id, i, 0])`, so an item
never depends on how many items came before it. `shapes_prompts(n, seed)` are the captions of
the shapes *test* split, so a text-conditioned sample i can be set against reference item i.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bench.data.images import DataError

KINDS = ("circle", "square", "triangle", "diamond", "hexagon", "star", "cross", "ring")
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
SIZES = ("small", "medium", "large")
POSITIONS = ("top left", "top center", "top right",
             "center left", "center", "center right",
             "bottom left", "bottom center", "bottom right")   # row-major on a 3x3 grid
BACKGROUNDS = ("white", "black", "gray", "beige")              # disjoint from COLOURS
SPLITS = {"train": 0, "test": 1, "val": 2}
ATTRIBUTE_STREAM, GEOMETRY_STREAM = 0, 1   # independent RNG streams per item


def split_id(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    return SPLITS[split]


def item_rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    """The RNG of one item: hashed from (seed, split, index, stream) by numpy's SeedSequence."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([seed, split_id(split), index, stream])


def sample_attributes(seed: int, split: str, index: int) -> dict[str, str]:
    rng = item_rng(seed, split, index, ATTRIBUTE_STREAM)
    picks = rng.integers(0, [len(KINDS), len(COLOURS), len(SIZES), len(POSITIONS), len(BACKGROUNDS)])
    return {"kind": KINDS[picks[0]], "colour": COLOURS[picks[1]], "size": SIZES[picks[2]],
            "position": POSITIONS[picks[3]], "background": BACKGROUNDS[picks[4]]}


def caption_for(attributes: dict[str, str]) -> str:
    """{'kind': 'circle', 'colour': 'red', ...} -> "a small red circle at the top left on a white background"."""
    vocab = {"kind": KINDS, "colour": COLOURS, "size": SIZES, "position": POSITIONS, "background": BACKGROUNDS}
    for key, allowed in vocab.items():
        if attributes.get(key) not in allowed:
            raise ValueError(f"shapes caption: attribute {key}={attributes.get(key)!r} is not one of {list(allowed)}")
    a = attributes
    return f"a {a['size']} {a['colour']} {a['kind']} at the {a['position']} on a {a['background']} background"


def shapes_prompts(n: int, seed: int, split: str = "test") -> list[str]:
    """Captions of shapes items 0..n-1 of (seed, split): deterministic, no rendering."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [caption_for(sample_attributes(seed, split, i)) for i in range(n)]


def load_prompts(path: str | Path) -> list[str]:
    """Prompts from a .txt file (one per line, blank lines skipped) or a .csv file (column
    `prompt`, else `caption`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist; give a .txt (one prompt per line) or .csv file")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        text = path.read_text(encoding="utf-8-sig")
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    elif suffix == ".csv":
        prompts = _csv_column(path, ("prompt", "caption"))
    else:
        raise DataError(f"prompt file {path}: unsupported extension {path.suffix!r}; use .txt (one prompt "
                        "per line) or .csv (with a 'prompt' or 'caption' column)")
    if not prompts:
        raise DataError(f"prompt file {path} contains no prompts (only blank lines or empty cells); "
                        "write one prompt per line (.txt) or per row of a 'prompt' column (.csv)")
    return prompts


def _csv_column(path: Path, names: tuple[str, ...]) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        column = next((c for c in names if c in columns), None)
        if column is None:
            raise DataError(f"prompt file {path}: no column named {' or '.join(names)}; found columns {columns}")
        raw = reader.fieldnames[columns.index(column)]  # type: ignore[index]
        values = [(row.get(raw) or "").strip() for row in reader]
    return [v for v in values if v]
