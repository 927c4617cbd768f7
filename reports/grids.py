"""Sample grids: the first K stored samples of each pipeline (and sweep point), captioned with
their prompt or class label, as grids/<pipeline>[__<point>].png.

Read straight from the run's sample store (`samples/<pipeline>/<point>/shards/*.npz`, layout in
bench.store), with numpy only: no torch, no model, nothing re-sampled. Samples made elsewhere
(the external family's folders and npz files) go through the same store, so they get a grid too;
a run made with store_samples=false reads them from the path its manifest records.
Drawn with matplotlib (Agg, no pyplot state), nearest-neighbour upscaling (a 32 px sample stays
sharp), fixed metadata: the same store gives the same bytes.

Read at a glance (issue 28): a class label is captioned with its class name (the checkpoint's
config.json `class_names`, else the run's bundled data set's), an adapter and its scale are in the
title (the rows' `pipeline_params`), and every grid of one report has the same size (the same
columns, cell size and rows; a store with fewer samples leaves cells empty), so the page is not ragged.
Samples made elsewhere are titled with their name and order ("first 16 files of the folder"), never
a seed they were not made with (issue 26 follow-up).
"""
from __future__ import annotations

import json
import logging
import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench.atomic import atomic_savefig

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
    from bench.store_checks import npz_damage   # here: it reads npz layouts through bench.data, which imports torch (`python -m reports` never loads it)
    shards = sorted((Path(store) / "shards").glob("shard-*.npz"))
    out: dict[str, list[np.ndarray]] = {}
    count = 0
    for shard in shards:   # shards hold consecutive index ranges, sorted by index within
        problem = npz_damage(shard)   # never draw damaged samples (issue 29): the run regenerates them
        if problem:
            log.warning("sample grid of %s: %s is damaged (%s); drawn up to it only. Rerun the run to "
                        "regenerate it", store, shard, problem)
            break
        with np.load(shard, allow_pickle=False) as data:
            take = min(k - count, len(data["indices"]))
            for name in ("images", "indices", "labels", "prompts"):
                if name in data.files:
                    out.setdefault(name, []).append(data[name][:take])
        count += take
        if count >= k:
            break
    return {name: np.concatenate(parts) for name, parts in out.items()}


def caption(samples: dict[str, Any], i: int, width: int, class_names: Sequence[str] | None = None) -> str:
    if "prompts" in samples:
        return "\n".join(textwrap.wrap(str(samples["prompts"][i]), width)[:3])
    if "labels" in samples:
        label = int(samples["labels"][i])
        return str(class_names[label]) if class_names and 0 <= label < len(class_names) else f"class {label}"
    return f"#{int(samples['indices'][i])}"


COLUMNS = 8              # samples per grid row, in every grid
CELL = (1.3, 1.55)       # inches per sample: image + a one-line caption
TEXT_CELL = (1.9, 2.55)  # ... + a three-line prompt


@dataclass(frozen=True)
class Layout:
    """One grid geometry for every grid of a report."""
    cols: int
    rows: int
    cell: tuple[float, float]
    texts: bool

    @classmethod
    def fitting(cls, counts: Sequence[int], texts: bool) -> "Layout":
        most = max([1, *counts])
        cols = min(COLUMNS, most)
        return cls(cols, math.ceil(most / cols), TEXT_CELL if texts else CELL, texts)


def grid_name(pipeline: str, point: str) -> str:
    safe = lambda text: re.sub(r"[^A-Za-z0-9_.=-]+", "-", text).strip("-")   # noqa: E731
    return f"{safe(pipeline)}.png" if point in ("", "default") else f"{safe(pipeline)}__{safe(point)}.png"


def draw_grid(samples: dict[str, Any], title: str, path: Path, layout: Layout | None = None,
              class_names: Sequence[str] | None = None) -> Path:
    """A grid of the samples with captions under each, in `layout` (default: fitted to these
    samples); the figure size depends on the layout only."""
    images = samples["images"]
    n = len(images)
    texts = "prompts" in samples
    layout = layout or Layout.fitting([n], texts)
    cols, rows = layout.cols, layout.rows
    cell_w, cell_h = layout.cell
    fig = Figure(figsize=(cols * cell_w, rows * cell_h + 0.6))
    for i in range(min(n, cols * rows)):
        ax = fig.add_subplot(rows, cols, i + 1)
        image = np.transpose(images[i], (1, 2, 0))
        grey = image.shape[-1] == 1
        ax.imshow(image[..., 0] if grey else image[..., :3], cmap="gray" if grey else None,
                  interpolation="nearest", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(caption(samples, i, 26, class_names), fontsize=6.5 if texts else 8)
    width = max(40, int(cols * cell_w * 11))   # characters of a 10 pt title across the figure
    fig.suptitle("\n".join(textwrap.wrap(title, width)[:2]), fontsize=10)
    # fixed margins, not tight_layout: a grid's size and cell positions depend on the layout alone
    fig.subplots_adjust(left=0.02, right=0.98, bottom=(0.45 if texts else 0.25) / (rows * cell_h + 0.6),
                        top=1 - 0.55 / (rows * cell_h + 0.6), wspace=0.08, hspace=0.45 if texts else 0.25)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, path, **_SAVE)   # no half-written image; a failed write names the file
    return Path(path)


def external_samples(run_dir: Path, k: int, manifest: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]] | None:
    """(pipeline name, first k samples) of a run that scored an external folder or npz without
    storing samples (store_samples=false): read from the path its manifest's config records.
    None when the run has no such pipeline or the path is gone (a warning says which).
    `manifest`: the run's (default: its manifest.json)."""
    manifest = run_manifest(run_dir) if manifest is None else manifest
    config = manifest.get("config") or {}
    if not isinstance(config, dict):
        return None
    pipeline = config.get("pipeline") or {}
    params = pipeline.get("params") or {}
    if config.get("store_samples", True) or pipeline.get("family") != "external" or "path" not in params:
        return None
    label = ((manifest.get("checkpoints") or {}).get(pipeline.get("name")) or {}).get("label")   # the rows' name
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
    samples["made_elsewhere"] = {"source": "folder" if path.is_dir() else "npz", "path": str(path)}
    return str(label or pipeline.get("name") or "external"), samples


def write_grids(run_dirs: Sequence[Path] | Path, out_dir: Path, k: int = DEFAULT_K,
                manifests: Mapping[str, Mapping[str, Any]] | None = None) -> list[Path]:
    """One grid per stored (pipeline, point) of each run, under out_dir/grids/, all in one layout.
    With several runs, a grid name that repeats gets the run directory's name prefixed. Returns
    the PNG paths. `manifests` (by run id) complete what each run's manifest.json holds: the runner
    draws its grids before manifest.json has the checkpoints (what a pipeline is: its class names,
    samples made elsewhere)."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [Path(run_dirs)]
    if k < 1:
        raise ValueError(f"grid size k must be >= 1, got {k}")
    jobs = []   # (run, grid name, samples, title, class names)
    for run in map(Path, run_dirs):
        manifest = run_manifest(run, manifests)
        facts, data_names = pipeline_facts(run, manifest)
        stores = find_stores(run)
        for store in stores:
            samples = first_samples(store, k)
            if not len(samples.get("images", ())):
                log.warning("%s holds no finished shard; no grid for it", store)
                continue
            fact = facts.get(store.parent.name, {})
            jobs.append((run, grid_name(store.parent.name, store.name), samples,
                         _title(store, len(samples["images"]), fact), fact.get("class_names") or data_names))
        if not stores:
            external = external_samples(run, k, manifest)
            if external is not None and len(external[1].get("images", ())):
                pipeline, samples = external
                title = external_title(pipeline, len(samples["images"]), samples.pop("made_elsewhere"))
                jobs.append((run, grid_name(pipeline, ""), samples, title, None))
    layout = Layout.fitting([len(job[2]["images"]) for job in jobs], any("prompts" in job[2] for job in jobs))
    names = [job[1] for job in jobs]
    written = []
    for run, name, samples, title, class_names in jobs:
        if names.count(name) > 1:
            name = f"{re.sub(r'[^A-Za-z0-9_.=-]+', '-', run.name)}__{name}"
        written.append(draw_grid(samples, title, Path(out_dir) / GRID_DIR / name, layout, class_names))
    return written


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def run_manifest(run: Path, manifests: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The run's manifest.json, completed by `manifests`' entry for its run id."""
    manifest = _read_json(Path(run) / "manifest.json")
    extra = (manifests or {}).get(str(manifest.get("run_id")))
    return {**manifest, **extra} if isinstance(extra, Mapping) else manifest


def pipeline_facts(run: Path, manifest: dict[str, Any] | None = None) -> tuple[dict[str, dict[str, Any]], list[str] | None]:
    """Per pipeline of a run, under the name its sample store is filed by (`info.name`, the
    manifest's checkpoint `label`): `class_names` (what a label means: its checkpoint's) and, for
    an adapted pipeline, `adapter` and `adapter_scale`; and the class names of the run's data set
    (for pipelines whose checkpoint names none). Samples made elsewhere get `made_elsewhere` (their
    source and path): titled by their order, not a seed."""
    manifest = run_manifest(run) if manifest is None else manifest
    config = manifest.get("config") or {}
    facts: dict[str, dict[str, Any]] = {}
    labels: dict[str, str] = {}
    for name, entry in (manifest.get("checkpoints") or {}).items():
        entry = entry if isinstance(entry, dict) else {}
        labels[name] = str(entry.get("label") or name)
        source = entry.get("provenance") if isinstance(entry.get("provenance"), dict) else {}
        if source.get("source") in ("folder", "npz") and source.get("path"):   # samples made elsewhere: no seed
            facts.setdefault(labels[name], {})["made_elsewhere"] = {"source": source["source"], "path": source["path"]}
        names = _read_json(Path(str(entry["checkpoint"])) / "config.json").get("class_names") \
            if entry.get("checkpoint") else None
        if isinstance(names, list) and names:
            facts.setdefault(labels[name], {})["class_names"] = [str(n) for n in names]
    data_names = _data_class_names(config)
    for pipeline, params in _row_pipeline_params(Path(run)):
        fact = facts.setdefault(labels.get(pipeline, pipeline), {})
        if params.get("adapter"):
            fact["adapter"] = str(params["adapter"])
            fact["adapter_scale"] = params.get("adapter_scale", 1.0)
    return facts, data_names


def _row_pipeline_params(run: Path) -> list[tuple[str, dict[str, Any]]]:
    """(pipeline, its params) for each distinct pair in the run's results.csv."""
    try:
        frame = pd.read_csv(run / "results.csv", usecols=lambda c: c in ("pipeline", "pipeline_params"))
    except (OSError, ValueError):
        return []
    if "pipeline_params" not in frame.columns:
        return []
    out = []
    for pipeline, text in frame.drop_duplicates().itertuples(index=False):
        try:
            params = json.loads(text) if isinstance(text, str) else {}
        except ValueError:
            params = {}
        if isinstance(params, dict):
            out.append((str(pipeline), params))
    return out


def _data_class_names(config: dict[str, Any]) -> list[str] | None:
    """The class names of the run's data set where it is a bundled one that has classes (shapes:
    bench.data.shapes.KINDS), for checkpoints whose config does not name them."""
    data = config.get("data") or {}
    if not isinstance(data, dict) or data.get("name") != "shapes":
        return None
    from bench.data.shapes import KINDS   # only here: it imports torch, which a grid otherwise never needs
    return list(KINDS)


def external_title(label: str, shown: int, where: dict[str, Any], point: str = "") -> str:
    """'<label>: first K files of folder <name> (sorted by path; made elsewhere)': samples made
    elsewhere have no seed here, only an order (the folder's sorted files, the npz's rows)."""
    path = Path(str(where.get("path", "")))
    folder = where.get("source") == "folder"
    name = path.name if folder else path.stem
    what = ("the folder" if folder else "the npz") if name == label else (f"folder {name}" if folder else path.name)
    order = "sorted by path" if folder else "in array order"
    return f"{label}{point}: first {shown} {'files' if folder else 'images'} of {what} ({order}; made elsewhere)"


def _title(store: Path, shown: int, fact: dict[str, Any] | None = None) -> str:
    """'<pipeline> + adapter <name> (scale s) (<point>): first K samples, seed S' from the store's key;
    samples made elsewhere by their order instead (`external_title`)."""
    key = _read_json(store / "store.json").get("key", {})
    point = ", ".join(f"{a}={b}" for a, b in sorted((key.get("point") or {}).items()))
    seed = (key.get("request") or {}).get("seed")
    fact = fact or {}
    if fact.get("made_elsewhere"):
        return external_title(store.parent.name, shown, fact["made_elsewhere"], f" ({point})" if point else "")
    scale = 1.0 if fact.get("adapter_scale") is None else fact["adapter_scale"]
    adapter = f" + adapter {fact['adapter']} (scale {scale})" if fact.get("adapter") else ""
    where = f" ({point})" if point else ""
    return (f"{store.parent.name}{adapter}{where}: first {shown} samples"
            + (f", seed {seed}" if seed is not None else ""))
