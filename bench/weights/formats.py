"""Weight files on disk: their format, their sha256, reading and (atomically) writing them."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from bench.atomic import atomic_write_bytes

FORMATS = ("state_dict", "torchscript", "safetensors")
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, cached per (path, size, mtime): hashing 87 MB on every call is slow."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def detect_format(path: Path) -> str:
    """TorchScript archives are zip files holding `constants.pkl`; state dicts saved by torch.save
    are zip files without it (or legacy pickles)."""
    if path.suffix == ".safetensors":
        return "safetensors"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in archive.namelist()):
                return "torchscript"
    return "state_dict"


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch.save file (never an arbitrary pickle)."""
    path = Path(path)
    if detect_format(path) == "safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Atomic: a reader never sees half a file (safetensors' bytes depend only on the tensors)."""
    atomic_write_bytes(path, save({key: value.contiguous() for key, value in tensors.items()}))
