"""The feature-space registry: every name `metrics.features` (and `metrics.cmmd_space`) accepts,
the network behind it, its embedding size, input size, weights and the reference implementation
whose features it reproduces.

Light on purpose, like bench.metrics.registry: no torch here, so bench.config can check names at
start-up (exit 2) without loading anything; an extractor's code is imported by its dotted name on
first use (`builder`).

Spaces (DESIGN.md, "Metrics"; README, "Which metric"):
  inception          the TF-FID Inception-v3 pool3 (Heusel et al. 2017): `fid`, `kid`, ... (default)
  dinov2-vit-*-14    DINOv2 (Oquab et al. 2023) CLS token after the final norm; Stein et al.
                     (NeurIPS 2023, dgm-eval) recommend the Fréchet distance in ViT-L/14 space
  clip-*             OpenAI CLIP image towers (Radford et al. 2021), open_clip names; CMMD
                     (Jayasumana et al., CVPR 2024) uses ViT-L/14@336
The ViT spaces reproduce torch-fidelity 0.4.0's `feature_extractor_dinov2.py` and
`feature_extractor_clip.py`: TF1-compatible bilinear resize of the uint8 image to the network's
input size, then per-channel normalisation on the 0-255 scale, then the network in float32.

Row names carry the space: the Inception space keeps the historical names (`fid`, `kid`,
`precision`, ...); another space writes `fd[<space>]` (a Fréchet distance in that space is no
longer the "Inception" distance), `kid[<space>]`, `precision[<space>]`, ..., `cmmd[<space>]`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Iterable

from bench.metrics import registry
from bench.weights.catalog import WeightSpec, spec_for
from bench.weights.errors import WeightsNotFoundError
from bench.weights.places import (WEIGHTS_ENV, candidate_paths, explicit_file, explicit_missing_line,
                                  torch_hub_checkpoints)

INCEPTION = "inception"
DEFAULT_CMMD_SPACE = "clip-vit-l-14-336"
FAMILIES = ("inception", "dinov2", "clip")

# ImageNet and OpenAI-CLIP channel statistics, as torch-fidelity 0.4.0 writes them (x 255 there)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class FeatureSpace:
    name: str                  # the `metrics.features` entry and the row suffix
    family: str                # one of FAMILIES
    dims: int                  # embedding size
    input_size: int            # the network's square input (after the TF1 resize)
    weights: str               # the bench.weights catalog name
    architecture: str          # timm model name (DINOv2) / open_clip model name (CLIP)
    reference: str             # the implementation whose features this reproduces
    code: str = ""             # "module:function" building the extractor (imported by `builder`)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def is_clip(self) -> bool:
        return self.family == "clip"


_SPACES: dict[str, FeatureSpace] = {}


def register(space: FeatureSpace) -> FeatureSpace:
    if space.name in _SPACES:
        raise ValueError(f"feature space {space.name!r} is registered twice")
    if space.family not in FAMILIES:
        raise ValueError(f"feature space {space.name!r}: family must be one of {FAMILIES}")
    _SPACES[space.name] = space
    return space


def space_names() -> tuple[str, ...]:
    return tuple(_SPACES)


def clip_space_names() -> tuple[str, ...]:
    return tuple(name for name, space in _SPACES.items() if space.is_clip)


def unknown_spaces(names: Iterable[str]) -> list[str]:
    return [name for name in names if name not in _SPACES]


def spec(name: str) -> FeatureSpace:
    if name not in _SPACES:
        raise ValueError(f"{name!r} is not a feature space; choose from {list(_SPACES)}")
    return _SPACES[name]


def builder(name: str) -> Any:
    """The function that builds the space's extractor (imports its module: torch, timm, open_clip)."""
    module, _, attribute = spec(name).code.partition(":")
    return getattr(importlib.import_module(module), attribute)


def row_name(metric: str, space: str) -> str:
    """The name a row of `metric` (as the metric writes it in Inception space) gets in `space`:
    unchanged in Inception space, else `fd[space]` for FID and `<metric>[space]` for the rest."""
    if space == INCEPTION:
        return metric
    return f"{'fd' if metric == 'fid' else metric}[{space}]"


def split_row_name(name: str) -> tuple[str, str]:
    """(metric, space) of a row name written by `row_name` ("fd[dinov2-vit-l-14]" -> ("fd", ...));
    a name without a registered space in brackets is in Inception space."""
    if name.endswith("]") and "[" in name:
        base, _, inside = name[:-1].partition("[")
        if inside in _SPACES:
            return base, inside
    return name, INCEPTION


def space_plan(cfg: Any) -> dict[str, list[str]]:
    """{feature space: the sample metrics of `cfg.names` (a MetricsConfig) computed in it},
    Inception first; spaces with no metric are left out. `fid`, `kid`, ... (registry spaces "any")
    run in every space of cfg.features, `cmmd` in cfg.cmmd_space, IS and CLIP score with the
    Inception set."""
    registry.check_names(cfg.names)
    names = [n for n in dict.fromkeys(cfg.names) if registry.spec(n).sampled]
    plan: dict[str, list[str]] = {INCEPTION: [n for n in names if registry.spec(n).spaces == registry.INCEPTION_SPACE]}
    for space in list(getattr(cfg, "features", None) or [INCEPTION]):
        plan.setdefault(space, [])
        plan[space] += [n for n in names if registry.spec(n).spaces == registry.ANY_SPACE]
    if "cmmd" in names:
        plan.setdefault(getattr(cfg, "cmmd_space", DEFAULT_CMMD_SPACE), []).append("cmmd")
    return {space: wanted for space, wanted in plan.items() if wanted}


def weights_needed(cfg: Any) -> list[str]:
    """The feature spaces other than Inception whose networks a run with this metrics config loads."""
    return [space for space in space_plan(cfg) if space != INCEPTION]


def missing_weights_line(space: str, spec: WeightSpec) -> str:
    """One line: the file, where it goes, the command that fetches it on a machine that is online."""
    return (f"feature space {space}: weights {spec.files[0]} ({spec.description}) not found (looked in "
            f"${WEIGHTS_ENV}, the weights store, {torch_hub_checkpoints()}, the Hugging Face and open_clip "
            f"caches; nothing is downloaded). {spec.note}")


def check_weights_present(cfg: Any) -> None:
    """Light start-up check (bench.preflight, no torch): every needed space has a weights file
    somewhere, or WeightsNotFoundError with one line per missing one. The sha256 is checked when
    the file is used (bench.metrics.spaces.check_feature_weights, the resolver)."""
    missing = []
    explicit = getattr(cfg, "feature_weights", None) or {}
    for space in weights_needed(cfg):
        weight = spec_for(spec(space).weights)
        if explicit.get(space):
            if explicit_file(weight, explicit[space]) is None:   # a file, or a Hugging Face folder holding one
                missing.append(explicit_missing_line(weight, explicit[space], f"metrics.feature_weights.{space}"))
        elif not any(path.is_file() for _, path in candidate_paths(weight)):
            missing.append(missing_weights_line(space, weight))
    if missing:
        raise WeightsNotFoundError(" | ".join(missing))


# ---- the spaces --------------------------------------------------------------------------------
register(FeatureSpace(INCEPTION, "inception", 2048, 299, "inception-2015-12-05", "inception-v3-tf",
                      "TF FID (torch-fidelity 'inception-v3-compat', pytorch-fid)", code=""))

_TF = "torch-fidelity 0.4.0"
for _size, _timm, _dims in (("s", "vit_small_patch14_dinov2", 384), ("b", "vit_base_patch14_dinov2", 768),
                            ("l", "vit_large_patch14_dinov2", 1024), ("g", "vit_giant_patch14_dinov2", 1536)):
    register(FeatureSpace(f"dinov2-vit-{_size}-14", "dinov2", _dims, 224, f"dinov2-vit-{_size}-14", _timm,
                          f"{_TF} 'dinov2-vit-{_size}-14' (torch hub facebookresearch/dinov2 dinov2_vit{_size}14)",
                          code="bench.metrics.vit_features:build_dinov2"))

# OpenAI CLIP image towers by open_clip model name (QuickGELU: the OpenAI weights were trained so).
for _name, _arch, _dims, _size, _tf in (("clip-vit-b-32", "ViT-B-32", 512, 224, "clip-vit-b-32"),
                                        ("clip-vit-b-16", "ViT-B-16", 512, 224, "clip-vit-b-16"),
                                        ("clip-vit-l-14", "ViT-L-14", 768, 224, "clip-vit-l-14"),
                                        ("clip-vit-l-14-336", "ViT-L-14-336", 768, 336, "clip-vit-l-14-336px")):
    register(FeatureSpace(_name, "clip", _dims, _size, _name, _arch, f"{_TF} '{_tf}' (OpenAI weights)",
                          code="bench.metrics.vit_features:build_clip", mean=CLIP_MEAN, std=CLIP_STD))
