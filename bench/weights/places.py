"""Where copies of a named weight are looked for, without importing torch (DESIGN.md, "Weights").

The same places, in the same order, as `bench.weights.resolver.candidates` (tests/test_feature_spaces.py
checks they agree), for the light start-up checks of `python -m bench` (bench.preflight): a run that
asks for a feature space whose weights are nowhere exits 2 in about a second, before torch loads
(issue 27). Existence only: the resolver checks the sha256 of the file it then uses.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from bench.paths import default_cache_dir
from bench.weights.catalog import WeightSpec

WEIGHTS_ENV = "DIFFBENCH_WEIGHTS"
SHIPPED_DIR = Path(__file__).resolve().parent / "files"


def torch_hub_checkpoints() -> Path:
    """torch.hub.get_dir()/checkpoints, computed as torch computes it when torch is not loaded
    ($TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch; then hub/)."""
    if "torch.hub" in sys.modules:   # honours torch.hub.set_dir()
        return Path(sys.modules["torch.hub"].get_dir()) / "checkpoints"
    home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")))
    return Path(home) / "hub" / "checkpoints"


def hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def candidate_paths(spec: WeightSpec) -> list[tuple[str, Path]]:
    """(source label, path) of every place a copy may be, in the resolver's order."""
    out: list[tuple[str, Path]] = []
    env_dir = os.environ.get(WEIGHTS_ENV)
    if env_dir:
        out += [(f"env:{WEIGHTS_ENV}", Path(env_dir).expanduser() / f) for f in spec.files]
    out += [("shipped", SHIPPED_DIR / f) for f in spec.files if (SHIPPED_DIR / f).is_file()]
    out += [("store", default_cache_dir() / "weights" / f) for f in spec.files]
    for module, rel in spec.packages:
        root = package_dir(module)
        if root is not None:
            out.append((f"package:{module}", root / rel))
    out += [("cache:torch_hub", torch_hub_checkpoints() / f) for f in spec.files]
    for repo, filename in spec.hf_files:
        snapshots = hf_hub_cache() / f"models--{repo.replace('/', '--')}" / "snapshots"
        found = sorted(snapshots.glob(f"*/{filename}")) if snapshots.is_dir() else []
        out.append(("cache:huggingface", found[0] if found else snapshots / "*" / filename))
    clip_dir = Path("~/.cache/clip").expanduser()
    out += [("cache:open_clip", clip_dir / f) for f in spec.clip_cache_files]
    return out


# the weight file of a Hugging Face folder given as an explicit path, after the catalog's own names:
# transformers' `save_pretrained` (facebook/dinov2-*: model.safetensors, or the older
# pytorch_model.bin) and open_clip's hf-hub folders (open_clip_model.safetensors /
# open_clip_pytorch_model.bin beside open_clip_config.json)
TRANSFORMERS_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def folder_file_names(spec: WeightSpec) -> tuple[str, ...]:
    """The file names looked for, in order, when an explicit path is a folder."""
    names = [*spec.files, *(filename for _, filename in spec.hf_files)]
    if "model.safetensors" in names:
        names += TRANSFORMERS_FILES
    return tuple(dict.fromkeys(names))


def explicit_file(spec: WeightSpec, given: str | Path) -> Path | None:
    """The weight file an explicit path (`metrics.feature_weights.<space>=PATH`) names: the file
    itself, or in a folder (a Hugging Face folder, a torch hub checkpoints folder) the first of
    `folder_file_names`; None when there is neither."""
    path = Path(given).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return next((path / name for name in folder_file_names(spec) if (path / name).is_file()), None)
    return None


def explicit_missing_line(spec: WeightSpec, given: str | Path, key: str) -> str:
    """One line: why the explicit path holds no weight file, and what to give instead."""
    path = Path(given).expanduser()
    if path.is_dir():
        sharded = [name for name in SHARD_INDEXES if (path / name).is_file()]
        why = (f"a folder with a sharded checkpoint ({sharded[0]}), which is not read: save it as one file "
               f"(save_pretrained(..., max_shard_size='20GB'))" if sharded else
               f"a folder without any of {list(folder_file_names(spec))}")
    else:
        why = "no such file or folder"
    return (f"{key}={given}: {why}; give the path of one of {list(spec.files)} or of a Hugging Face folder "
            f"holding {[filename for _, filename in spec.hf_files][0] if spec.hf_files else 'one of them'}")


def first_present(spec: WeightSpec) -> Path | None:
    return next((path for _, path in candidate_paths(spec) if path.is_file()), None)
