"""Pipeline families by name. Each family module registers a builder with `@register_family`;
modules are imported lazily so that building one family never imports another's weights."""
from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:   # for annotations only: the config reads FAMILY_MODULES before torch loads (issue 26)
    from models.core.interface import Pipeline

# family name -> module that registers it
FAMILY_MODULES = {
    "pixel": "models.families.pixel",
    "cascaded": "models.families.cascaded",
    "latent_unet": "models.families.latent_unet",
    "latent_dit": "models.families.latent_dit",
    "latent_concat": "models.families.latent_concat",
    "unclip": "models.families.unclip",
    "imagen": "models.families.imagen",
    "external": "models.families.external",
}

Builder = Callable[..., "Pipeline"]
_BUILDERS: dict[str, Builder] = {}

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"


def register_family(name: str) -> Callable[[Builder], Builder]:
    if name not in FAMILY_MODULES:
        raise ValueError(f"family {name!r} is not listed in models.core.registry.FAMILY_MODULES")

    def wrap(builder: Builder) -> Builder:
        _BUILDERS[name] = builder
        return builder
    return wrap


def resolve_checkpoint(checkpoint: str | None) -> Path | None:
    """A checkpoint is a directory holding `model.safetensors` + `config.json`. A bare name
    refers to a shipped one under models/checkpoints/."""
    if checkpoint is None:
        return None
    path = Path(checkpoint).expanduser()
    if not path.exists() and (CHECKPOINT_DIR / checkpoint).exists():
        path = CHECKPOINT_DIR / checkpoint
    if not path.exists():
        shipped = sorted(p.name for p in CHECKPOINT_DIR.iterdir()) if CHECKPOINT_DIR.exists() else []
        raise FileNotFoundError(
            f"checkpoint {checkpoint!r} not found (looked at {path} and {CHECKPOINT_DIR / checkpoint}); "
            f"pass a directory with model.safetensors + config.json, or one of the shipped: {shipped}")
    return path


def looks_like_path(value: str) -> bool:
    """A model named by a local path rather than a Hugging Face id (`name` or `org/name` of letters,
    digits and `._-`): it exists here, starts with `.`, `/` or `~`, or has more than one `/`.
    Messages then call it a path (issue 26: a missing folder was called a "model id")."""
    return Path(value).expanduser().exists() or value.startswith((".", "~")) \
        or re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value) is None


def build_pipeline(family: str, name: str, checkpoint: str | None = None, **params: Any) -> Pipeline:
    if family not in FAMILY_MODULES:
        raise ValueError(f"pipeline family {family!r} is unknown; known: {sorted(FAMILY_MODULES)}")
    if family not in _BUILDERS:
        importlib.import_module(FAMILY_MODULES[family])
    return _BUILDERS[family](name=name, checkpoint=resolve_checkpoint(checkpoint), **params)
