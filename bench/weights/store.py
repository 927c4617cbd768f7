"""Importing weights a user already has (a folder copied from another machine, a torch hub
cache) into the project's store, `$DIFFBENCH_CACHE/weights`, checked on the way in."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.atomic import atomic_write
from bench.weights.catalog import KNOWN, WeightSpec
from bench.weights.errors import WeightsIntegrityError
from bench.weights.formats import file_sha256
from bench.weights.resolver import check, store_dir

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")


@dataclass(frozen=True)
class Imported:
    name: str            # weight name
    source: Path
    target: Path | None  # None: refused
    note: str


def _by_file_name() -> dict[str, WeightSpec]:
    return {file: spec for spec in KNOWN.values() for file in spec.files}


def _by_sha256() -> dict[str, tuple[WeightSpec, str]]:
    return {sha: (spec, file) for spec in KNOWN.values() for file, sha in spec.checksums if len(sha) == 64}


def import_folder(folder: Path) -> list[Imported]:
    """Every file in `folder` (recursively, links not followed) that is a known weight, by file
    name or by content (a pinned sha256 under another name), copied atomically into the store.
    A file with a pinned name but other bytes is refused and left where it is."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory; give the folder that holds the weight files")
    by_name, by_sha = _by_file_name(), _by_sha256()
    out: list[Imported] = []
    for root, _dirs, files in os.walk(folder):
        for file in sorted(files):
            path = Path(root) / file
            if path.suffix not in WEIGHT_SUFFIXES or path.is_symlink():
                continue
            spec, target_name = by_name.get(file), file
            if spec is None:
                spec, target_name = by_sha.get(file_sha256(path), (None, file))
            if spec is None:
                continue
            try:
                check(spec, path, "import")
            except WeightsIntegrityError as err:
                out.append(Imported(spec.name, path, None, f"refused: {err}"))
                continue
            target = store_dir() / target_name
            _copy(path, target)
            check(spec, target, "store")          # the copy is what will be used: check it too
            out.append(Imported(spec.name, path, target, "imported" + ("" if file == target_name else
                                                                       f" (renamed from {file}, matched by sha256)")))
    return out


def _copy(source: Path, target: Path) -> None:
    with open(source, "rb") as src, atomic_write(target, "wb") as dst:
        while chunk := src.read(1 << 22):
            dst.write(chunk)
