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


def first_present(spec: WeightSpec) -> Path | None:
    return next((path for _, path in candidate_paths(spec) if path.is_file()), None)
