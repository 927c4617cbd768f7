"""What a diffusers model is called and where it came from: the rows' label (`model_label`: a
shipped option's name, OPTION_NAMES, gives way to the model's own), and the run manifest's
provenance (`describe_pipeline`: path or repo id, the local folder holding its files, which
bench.manifest hashes, pipeline and component classes, the versions of the libraries that ran it).
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any, Sequence

# The shipped options' names (conf/pipeline/diffusers_*.yaml): a row label that names the config
# option, not the model, so a model's own name replaces them (tests check this list against conf/).
OPTION_NAMES = ("diffusers_ddpm", "diffusers_dit", "diffusers_if", "diffusers_ldm", "diffusers_ldm_text2im",
                "diffusers_sd", "diffusers_unclip")
LIBRARIES = ("diffusers", "transformers", "torch", "accelerate")   # versions recorded in the manifest


def describe_pipeline(pipe: Any, revision: str | None = None) -> dict[str, Any]:
    """Where a diffusers pipeline came from and what it is made of: path or repo id, the local
    folder holding its files (for their sha256), pipeline and component classes, library versions."""
    model = str(getattr(pipe.config, "_name_or_path", "") or "")
    return {"source": "diffusers", "model": model or "(in memory)", "revision": revision,
            "folder": _local_folder(model, revision), "pipeline_class": type(pipe).__name__,
            "components": {k: type(v).__name__ for k, v in pipe.components.items() if v is not None},
            "versions": {name: _version(name) for name in LIBRARIES}}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _local_folder(model: str, revision: str | None) -> str | None:
    """The folder the weights were read from: a save_pretrained() folder, or the Hugging Face
    cache snapshot of a repo id (looked up offline); None for a pipeline built in memory."""
    if not model:
        return None
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser().resolve())
    try:
        from huggingface_hub import snapshot_download   # diffusers' own dependency, only needed here
        return snapshot_download(model, revision=revision, local_files_only=True)
    except (ImportError, OSError, ValueError):   # not a cached repo id: the manifest's weight_files is null
        return None


def model_label(model: str | None, stages: Sequence[str] | None) -> str:
    """A row label that names the model: the folder's or repo id's last part (`/x/my-ddim` ->
    `my-ddim`, `google/ddpm-cifar10-32` -> `ddpm-cifar10-32`); IF stages joined by `+`."""
    sources = [model] if model else list(stages or [])
    return "+".join(str(s).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] for s in sources)
