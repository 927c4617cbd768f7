"""Sample grids: the first K stored samples of each pipeline (and sweep point), captioned with
their prompt or class label, as grids/<pipeline>[__<point>].png.

Read straight from the run's sample store (`samples/<pipeline>/<point>/shards/*.npz`, layout in
bench.store), with numpy only: no torch, no model, nothing re-sampled. Samples made elsewhere
(the external family's folders and npz files) go through the same store, so they get a grid too;
a run made with store_samples=false reads them from the path its manifest records.
Drawn with matplotlib (Agg, no pyplot state), nearest-neighbour upscaling (a 32 px sample stays
sharp), fixed metadata: the same store gives the same bytes.
"""
from __future__ import annotations

import json
import logging
import math
import re
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

log = logging.getLogger(__name__)

GRID_DIR = "grids"
SAMPLES_DIR = "samples"
DEFAULT_K = 16
_SAVE = {"dpi": 100, "metadata": {"Software": None}}


def find_stores(run_dir: Path) -> list[Path]:
    """Sample stores under a run directory, sorted (pipeline, then point)."""
    root = Path(run_dir) / SAMPLES_DIR
    return sorted(p.parent for p in root.glob("*/*/store.json")) if root.is_dir() else []


def first_samples(store: Path, k: int) -> dict[str, Any]:
    """The first k samples by index: images (uint8 NCHW), indices, and labels/prompts if stored."""
    shards = sorted((Path(store) / "shards").glob("shard-*.npz"))
    out: dict[str, list[np.ndarray]] = {}
    count = 0
    for shard in shards:   # shards hold consecutive index ranges, sorted by index within
        with np.load(shard, allow_pickle=False) as data:
            take = min(k - count, len(data["indices"]))
            for name in ("images", "indices", "labels", "prompts"):
                if name in data.files:
                    out.setdefault(name, []).append(data[name][:take])
        count += take
        if count >= k:
            break
    return {name: np.concatenate(parts) for name, parts in out.items()}


def caption(samples: dict[str, Any], i: int, width: int) -> str:
    if "prompts" in samples:
        return "\n".join(textwrap.wrap(str(samples["prompts"][i]), width)[:3])
    if "labels" in samples:
        return f"class {int(samples['labels'][i])}"
    return f"#{int(samples['indices'][i])}"


def grid_name(pipeline: str, point: str) -> str:
    safe = lambda text: re.sub(r"[^A-Za-z0-9_.=-]+", "-", text).strip("-")   # noqa: E731
    return f"{safe(pipeline)}.png" if point in ("", "default") else f"{safe(pipeline)}__{safe(point)}.png"


def draw_grid(samples: dict[str, Any], title: str, path: Path) -> Path:
    """A grid of the samples with captions under each; columns = ceil(sqrt(K)), at most 8."""
    images = samples["images"]
    n = len(images)
    cols = min(8, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    texts = "prompts" in samples
    cell_w, cell_h = (1.9, 2.55) if texts else (1.3, 1.55)
    fig = Figure(figsize=(cols * cell_w, rows * cell_h + 0.5))
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        image = np.transpose(images[i], (1, 2, 0))
        grey = image.shape[-1] == 1
        ax.imshow(image[..., 0] if grey else image[..., :3], cmap="gray" if grey else None,
                  interpolation="nearest", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(caption(samples, i, 26), fontsize=6.5 if texts else 8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **_SAVE)
    return Path(path)


def external_samples(run_dir: Path, k: int) -> tuple[str, dict[str, Any]] | None:
    """(pipeline name, first k samples) of a run that scored an external folder or npz without
    storing samples (store_samples=false): read from the path its manifest's config records.
    None when the run has no such pipeline or the path is gone (a warning says which)."""
    try:
        config = json.loads((Path(run_dir) / "manifest.json").read_text(encoding="utf-8")).get("config") or {}
    except (OSError, ValueError):
        return None
    pipeline = config.get("pipeline") or {}
    params = pipeline.get("params") or {}
    if config.get("store_samples", True) or pipeline.get("family") != "external" or "path" not in params:
        return None
    path = Path(str(params["path"])).expanduser()
    if not path.exists() or params.get("source") == "diffusers":
        log.warning("run %s: external samples at %s are not there any more; no grid for them", run_dir, path)
        return None
    if path.is_dir():
        from PIL import Image   # only here: a folder of samples to open
        from bench.data.folder import scan_images
        files = scan_images(path).files[:k]
        images = []
        for name in files:
            with Image.open(path / name) as image:
                images.append(np.transpose(np.asarray(image.convert("RGB")), (2, 0, 1)))
        samples: dict[str, Any] = {"images": images, "indices": np.arange(len(images))}
    else:
        with np.load(path, mmap_mode="r", allow_pickle=False) as data:   # ADM npz: arr_0 NHWC, arr_1 labels
            samples = {"images": np.transpose(np.asarray(data["arr_0"][:k]), (0, 3, 1, 2))}
            if "arr_1" in data.files:
                samples["labels"] = np.asarray(data["arr_1"][:k])
        samples["indices"] = np.arange(len(samples["images"]))
    if params.get("prompts"):
        lines = Path(str(params["prompts"])).expanduser().read_text(encoding="utf-8").splitlines()
        samples["prompts"] = lines[:len(samples["images"])]
    return str(pipeline.get("name") or "external"), samples


def write_grids(run_dirs: Sequence[Path] | Path, out_dir: Path, k: int = DEFAULT_K) -> list[Path]:
    """One grid per stored (pipeline, point) of each run, under out_dir/grids/. With several runs,
    a grid name that repeats gets the run directory's name prefixed. Returns the PNG paths."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [Path(run_dirs)]
    if k < 1:
        raise ValueError(f"grid size k must be >= 1, got {k}")
    jobs = []   # (run, grid name, title, how to read the samples)
    for run in map(Path, run_dirs):
        stores = find_stores(run)
        for store in stores:
            jobs.append((run, grid_name(store.parent.name, store.name), store))
        if not stores:
            external = external_samples(run, k)
            if external is not None:
                jobs.append((run, grid_name(external[0], ""), external))
    names = [name for _, name, _ in jobs]
    written = []
    for run, name, source in jobs:
        if names.count(name) > 1:
            name = f"{re.sub(r'[^A-Za-z0-9_.=-]+', '-', run.name)}__{name}"
        if isinstance(source, Path):
            samples = first_samples(source, k)
            title = _title(source, len(samples.get("images", ())))
        else:
            pipeline, samples = source
            title = f"{pipeline}: first {len(samples['images'])} samples (external, read from its path)"
        if not len(samples.get("images", ())):
            log.warning("%s holds no finished shard; no grid for it", source)
            continue
        written.append(draw_grid(samples, title, Path(out_dir) / GRID_DIR / name))
    return written


def _title(store: Path, shown: int) -> str:
    """'<pipeline> (<point>): first K samples, seed S' from the store's key."""
    try:
        key = json.loads((store / "store.json").read_text(encoding="utf-8")).get("key", {})
    except (OSError, ValueError):
        key = {}
    point = ", ".join(f"{a}={b}" for a, b in sorted((key.get("point") or {}).items()))
    seed = (key.get("request") or {}).get("seed")
    where = f" ({point})" if point else ""
    return f"{store.parent.name}{where}: first {shown} samples" + (f", seed {seed}" if seed is not None else "")
