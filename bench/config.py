"""The structured config schema behind `conf/` (Hydra ConfigStore).

Types are checked by OmegaConf when Hydra composes (unknown keys, wrong types); value
ranges and choices are checked in each dataclass's `__post_init__`, which runs when
`validate()` turns the composed config into objects, so every bad value fails at start-up
with the key's full name and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

# The data group's schema and the shared checks live in the data layer (a model family builds a
# DataConfig too); ConfigError and DataConfig are re-exported here with the rest of the tree.
from bench.data.config import ConfigError, DataConfig
from bench.data.config import choice, require
from bench.device import HardwareConfig  # re-exported: the hardware group lives with its resolver
# Each list of names has one home, the lowest module that owns the concept.
# torch-free homes only: preflight (bench.preflight) checks a config before torch is imported
from bench.metrics.registry import RESIZE_MODES, metric_names, unknown_names
from bench.metrics.feature_spaces import clip_space_names, space_names, unknown_spaces
from models.core.names import SAMPLER_NAMES, THRESHOLDING_MODES
from models.core.registry import FAMILY_MODULES



@dataclass
class SamplerConfig:
    name: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    thresholding: str = "none"
    dynamic_threshold_percentile: float = 0.995

    def __post_init__(self) -> None:
        choice(self.name, "sampler.name", SAMPLER_NAMES)
        require(self.steps >= 1, "sampler.steps", f"must be >= 1, got {self.steps}")
        require(self.eta >= 0, "sampler.eta", f"must be >= 0, got {self.eta}")
        choice(self.thresholding, "sampler.thresholding", THRESHOLDING_MODES)
        require(0 < self.dynamic_threshold_percentile <= 1, "sampler.dynamic_threshold_percentile",
                 f"must be in (0, 1], got {self.dynamic_threshold_percentile}")


@dataclass
class MetricsConfig:
    names: List[str] = field(default_factory=lambda: ["fid", "kid", "precision_recall", "speed"])
    resize_mode: str = "tf1"        # tf1: torch-fidelity's TF1 bilinear; clean: clean-fid PIL bicubic
    reference: Optional[str] = None  # an npz with mu/sigma (pytorch-fid / EDM / ADM) instead of data
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pr_k: int = 3
    max_kept_features: int = 50000  # cap on features kept for KID, precision/recall, ...
    clip_model: str = "shapes-clip"  # open_clip model name, or the project's own reference CLIP
    clip_pretrained: Optional[str] = None
    feature_batch_size: int = 64
    speed_repeats: int = 3
    bootstrap: int = 0              # FID bootstrap replicates (0: no CI; bench.metrics.bootstrap)
    bootstrap_seed: int = 0
    # feature spaces of FD/FID, KID, precision/recall, density/coverage (bench.metrics.feature_spaces):
    # `fid` etc. in inception, `fd[<space>]`, `kid[<space>]`, ... in the others (one pass per batch)
    features: List[str] = field(default_factory=lambda: ["inception"])
    cmmd_space: str = "clip-vit-l-14-336"      # the CLIP space of `cmmd` (Jayasumana et al. 2024)
    # space -> weights file (None: searched, bench.weights); every space is a key, so
    # `metrics.feature_weights.dinov2-vit-l-14=PATH` needs no `+`
    feature_weights: Dict[str, Optional[str]] = field(
        default_factory=lambda: dict.fromkeys(name for name in space_names() if name != "inception"))

    def __post_init__(self) -> None:
        for key, given in (("metrics.features", self.features), ("metrics.feature_weights", self.feature_weights)):
            bad_spaces = unknown_spaces(given)
            require(not bad_spaces, key, f"{bad_spaces} are not feature spaces; choose from {list(space_names())}")
        require(bool(self.features) and len(set(self.features)) == len(self.features), "metrics.features",
                f"must list each feature space once, at least one, got {list(self.features)}")
        choice(self.cmmd_space, "metrics.cmmd_space", clip_space_names())
        unknown = unknown_names(self.names)
        lower = [name.lower() for name in unknown if name.lower() in metric_names()]
        require(not unknown, "metrics.names",
                 f"{unknown} are not metrics; choose from {sorted(metric_names())}"
                 + (f" (names are lower case: {lower})" if lower else ""))
        choice(self.resize_mode, "metrics.resize_mode", RESIZE_MODES)
        require(self.kid_subsets >= 1, "metrics.kid_subsets", "must be >= 1")
        require(self.kid_subset_size >= 2, "metrics.kid_subset_size", "must be >= 2")
        require(self.pr_k >= 1, "metrics.pr_k", "must be >= 1")
        require(self.feature_batch_size >= 1, "metrics.feature_batch_size", "must be >= 1")
        require(self.bootstrap == 0 or self.bootstrap >= 10, "metrics.bootstrap",
                f"must be 0 (off) or >= 10 replicates for a 95% interval, got {self.bootstrap}")


@dataclass
class PipelineConfig:
    name: str = "???"
    family: str = "???"
    checkpoint: Optional[str] = None
    params: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        choice(self.family, "pipeline.family", tuple(FAMILY_MODULES))


@dataclass
class SuiteConfig:
    """`name` and `params` are checked at start-up by the suites layer, which knows the suites and
    their params dataclasses and sits above this one (`suites.prepare_suite`)."""
    name: str = "smoke"
    pipelines: Optional[List[str]] = None   # names under conf/pipeline/; None = the selected `pipeline`
    n: int = 64                             # samples per pipeline and sweep point
    sweep: Dict[str, List[Any]] = field(default_factory=dict)  # in-process sweep axes
    params: Dict[str, Any] = field(default_factory=dict)       # suite-specific settings

    def __post_init__(self) -> None:
        require(self.n >= 1, "suite.n", f"must be >= 1, got {self.n}")


@dataclass
class Config:
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    seed: int = 0
    guidance_scale: float = 1.0
    quiet: bool = False             # no progress bars (CI)
    store_samples: bool = True      # write sample shards to the run directory (resumable)
    dry_run: bool = False           # validate the config, print the plan, exit 0 (bench.app.preflight)
    overwrite: bool = False         # replace an earlier run with other settings in the run directory (bench.preflight)
    debug: bool = False             # errors in the input also print their traceback

    def __post_init__(self) -> None:
        require(math.isfinite(self.guidance_scale) and self.guidance_scale >= 0, "guidance_scale",
                 f"must be a finite number >= 0, got {self.guidance_scale}")


def register_schema() -> None:
    ConfigStore.instance().store(name="diffbench_schema", node=Config)


def check_known_keys(cfg: DictConfig, schema: type = Config, prefix: str = "") -> None:
    """Every key of the composed config is one of the schema's: `+foo=1` composes (Hydra adds
    it), so it is refused here with the key and the allowed keys. Free mappings (pipeline.params,
    suite.params, suite.sweep) are checked by their owners (family builders, suites)."""
    hints = typing.get_type_hints(schema)
    allowed = [f.name for f in dataclasses.fields(schema)]
    for key in cfg.keys():
        if prefix == "" and key == "hydra":
            continue
        if key not in allowed:
            raise ConfigError(f"config key '{prefix}{key}': no such key; the keys {'at the top level' if not prefix else 'of ' + prefix.rstrip('.')} "
                              f"are {allowed}")
        node = cfg._get_node(key)
        if dataclasses.is_dataclass(hints.get(key)) and isinstance(node, DictConfig) and not node._is_missing() \
                and not node._is_none():
            check_known_keys(node, hints[key], f"{prefix}{key}.")


def schema_keys(path: str, schema: type = Config) -> list[str] | None:
    """The keys the schema allows at a dotted path ("" = the top level); None below a free mapping."""
    for part in filter(None, path.split(".")):
        hint = typing.get_type_hints(schema).get(part)
        if not dataclasses.is_dataclass(hint):
            return None
        schema = hint
    return [f.name for f in dataclasses.fields(schema)]


def validate(cfg: DictConfig, schema: type | None = None) -> Any:
    """Composed config -> typed objects; raises ConfigError naming the first bad key. `schema`:
    the composed tree's dataclass (bench.train passes its TrainRunConfig); by default the one the
    config was composed on (its defaults list names a stored schema), else Config."""
    composed_on = OmegaConf.get_type(cfg)
    schema = schema or (composed_on if dataclasses.is_dataclass(composed_on) else Config)
    check_known_keys(cfg, schema)
    try:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except ConfigError:
        raise
    except Exception as err:  # OmegaConf wraps errors raised in __post_init__
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(omegaconf_message(err)) from err


def omegaconf_message(err: Exception) -> str:
    """OmegaConf's multi-line complaint as one line naming the key."""
    key = getattr(err, "full_key", None)
    first = str(err).splitlines()[0].rstrip(".") if str(err) else type(err).__name__
    if isinstance(err, MissingMandatoryValue) and key:
        return f"config key '{key}': no value given (it is ??? in its config file); add {key}=VALUE"
    return f"config key '{key}': {first}" if key else first
