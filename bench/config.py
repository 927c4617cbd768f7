"""The structured config schema behind `conf/` (Hydra ConfigStore).

Types are checked by OmegaConf when Hydra composes (unknown keys, wrong types); value
ranges and choices are checked in each dataclass's `__post_init__`, which runs when
`validate()` turns the composed config into objects, so every bad value fails at start-up
with the key's full name and what is allowed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "heun")
THRESHOLDING = ("none", "static", "dynamic")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
DATASETS = ("shapes", "natural", "folder", "npz")
RESIZE_MODES = ("tf1", "clean")
BAD_FILE_POLICIES = ("error", "skip")


class ConfigError(ValueError):
    """A config value that is out of range or not among the allowed choices."""


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {message}")


def _choice(value: str, key: str, allowed: tuple[str, ...]) -> None:
    if value == MISSING:  # schema defaults are built before composition fills them in
        return
    _require(value in allowed, key, f"{value!r} is not allowed; choose one of {list(allowed)}")


@dataclass
class HardwareConfig:
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    dtype: str = "float32"
    compile: bool = False          # torch.compile the denoisers (GPU)
    channels_last: bool = False
    batch_size: int = 16
    num_workers: int = 0           # DataLoader workers for data decoding

    def __post_init__(self) -> None:
        _require(self.device in DEVICES or self.device.startswith("cuda:"), "hardware.device",
                 f"{self.device!r} is not allowed; choose one of {list(DEVICES)} or cuda:N")
        _choice(self.dtype, "hardware.dtype", DTYPES)
        _require(self.batch_size >= 1, "hardware.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.num_workers >= 0, "hardware.num_workers", f"must be >= 0, got {self.num_workers}")


@dataclass
class SamplerConfig:
    name: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    thresholding: str = "none"
    dynamic_threshold_percentile: float = 0.995

    def __post_init__(self) -> None:
        _choice(self.name, "sampler.name", SAMPLERS)
        _require(self.steps >= 1, "sampler.steps", f"must be >= 1, got {self.steps}")
        _require(self.eta >= 0, "sampler.eta", f"must be >= 0, got {self.eta}")
        _choice(self.thresholding, "sampler.thresholding", THRESHOLDING)
        _require(0 < self.dynamic_threshold_percentile <= 1, "sampler.dynamic_threshold_percentile",
                 f"must be in (0, 1], got {self.dynamic_threshold_percentile}")


@dataclass
class DataConfig:
    name: str = "shapes"
    resolution: int = 32
    n: int = 1000                  # images in the reference set
    seed: int = 0
    root: Optional[str] = None     # folder / npz path
    captions: Optional[str] = None  # captions or prompts file for folder data
    on_bad_file: str = "error"     # folder data: stop at a corrupt file, or skip and count

    def __post_init__(self) -> None:
        _choice(self.name, "data.name", DATASETS)
        _require(self.resolution >= 8, "data.resolution", f"must be >= 8, got {self.resolution}")
        _require(self.n >= 1, "data.n", f"must be >= 1, got {self.n}")
        _choice(self.on_bad_file, "data.on_bad_file", BAD_FILE_POLICIES)
        _require(self.name not in ("folder", "npz") or self.root is not None, "data.root",
                 f"data.name={self.name} needs data.root=PATH")


@dataclass
class MetricsConfig:
    names: List[str] = field(default_factory=lambda: ["fid", "kid", "precision_recall", "speed"])
    resize_mode: str = "tf1"        # tf1: torch-fidelity's TF1 bilinear; clean: clean-fid PIL bicubic
    reference: Optional[str] = None  # an npz with mu/sigma (pytorch-fid / EDM / ADM) instead of data
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pr_k: int = 3
    max_kept_features: int = 50000  # cap on features kept for KID / precision-recall
    clip_model: str = "shapes-clip"  # open_clip model name, or the project's own reference CLIP
    clip_pretrained: Optional[str] = None
    feature_batch_size: int = 64
    speed_repeats: int = 3

    def __post_init__(self) -> None:
        _choice(self.resize_mode, "metrics.resize_mode", RESIZE_MODES)
        _require(self.kid_subsets >= 1, "metrics.kid_subsets", "must be >= 1")
        _require(self.kid_subset_size >= 2, "metrics.kid_subset_size", "must be >= 2")
        _require(self.pr_k >= 1, "metrics.pr_k", "must be >= 1")
        _require(self.feature_batch_size >= 1, "metrics.feature_batch_size", "must be >= 1")


@dataclass
class PipelineConfig:
    name: str = "???"
    family: str = "???"
    checkpoint: Optional[str] = None
    params: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from models.registry import FAMILY_MODULES
        _choice(self.family, "pipeline.family", tuple(FAMILY_MODULES))


@dataclass
class SuiteConfig:
    name: str = "smoke"
    pipelines: Optional[List[str]] = None   # names under conf/pipeline/; None = the selected `pipeline`
    n: int = 64                             # samples per pipeline and sweep point
    sweep: Dict[str, List[Any]] = field(default_factory=dict)  # in-process sweep axes
    params: Dict[str, Any] = field(default_factory=dict)       # suite-specific settings

    def __post_init__(self) -> None:
        from suites import SUITES
        _choice(self.name, "suite.name", tuple(SUITES))
        _require(self.n >= 1, "suite.n", f"must be >= 1, got {self.n}")


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

    def __post_init__(self) -> None:
        _require(self.guidance_scale >= 0, "guidance_scale", f"must be >= 0, got {self.guidance_scale}")


def register_schema() -> None:
    ConfigStore.instance().store(name="diffbench_schema", node=Config)


def validate(cfg: DictConfig) -> Config:
    """Composed config -> typed objects; raises ConfigError naming the first bad key."""
    try:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except ConfigError:
        raise
    except Exception as err:  # OmegaConf wraps errors raised in __post_init__
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(str(err)) from err
