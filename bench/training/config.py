"""The structured config of `python -m bench.train` (conf/train.yaml): it reuses the `pipeline`,
`data` and `hardware` groups of the benchmark and adds `train` (conf/train/*.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore

from bench.config import ConfigError, DataConfig, HardwareConfig, PipelineConfig
from bench.data.config import require
from models.core.checkpoint import WEIGHT_DTYPES


LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainingConfig:
    steps: int = 2000
    max_seconds: float = 0.0            # wall-time budget (training time summed over resumes); 0 = off
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100             # linear learning-rate warm-up
    lr_schedule: str = "constant"       # after warm-up: "constant", or "cosine" decay to lr_min at train.steps
    lr_min: float = 0.0
    grad_clip: float = 1.0              # max global grad norm; 0 = off
    ema_decay: float = 0.999
    ema_warmup: bool = True             # decay min(ema_decay, (1 + step) / (10 + step)), as in ADM / DiT codebases
    p_uncond: float = 0.1               # condition dropout for classifier-free guidance (Ho & Salimans 2022)
    amp: bool = True                    # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True          # NHWC convolutions: 1.04-1.37x faster CPU training steps (4 tiny UNets, batch 64)
    checkpoint_every: int = 500         # steps between resumable checkpoints
    keep_checkpoints: int = 2
    log_every: int = 50
    seed: int = 0
    threads: int = 0                    # CPU threads (torch.set_num_threads); 0 = leave torch's default
    preload_max_mb: int = 1024          # keep the decoded training set in memory when smaller
    resume: bool = True                 # continue from the newest checkpoint in the run directory
    init_from: Optional[str] = None     # fine-tune: start from this checkpoint's weights (dir or shipped name; same architecture)
    export: Optional[str] = None        # also write the final EMA weights here (model.safetensors + config.json)
    export_dtype: str = "float32"       # float16 halves the shipped file (weights only; loading casts back)
    model: Dict[str, Any] = field(default_factory=dict)  # architecture params for the family's make_trainable

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "checkpoint_every", "log_every", "keep_checkpoints"):
            require(getattr(self, key) >= 1, f"train.{key}", f"must be >= 1, got {getattr(self, key)}")
        require(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        require(self.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
        require(self.lr_schedule in LR_SCHEDULES, "train.lr_schedule",
                 f"must be one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        require(0 <= self.lr_min <= self.lr, "train.lr_min", f"must be in [0, train.lr={self.lr}], got {self.lr_min}")
        require(self.grad_clip >= 0, "train.grad_clip", "must be >= 0 (0 = off)")
        require(0 <= self.ema_decay < 1, "train.ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        require(0 <= self.p_uncond < 1, "train.p_uncond", f"must be in [0, 1), got {self.p_uncond}")
        require(self.threads >= 0, "train.threads", "must be >= 0")
        require(self.export_dtype in WEIGHT_DTYPES, "train.export_dtype",
                 f"must be one of {sorted(WEIGHT_DTYPES)}, got {self.export_dtype!r}")
        require(self.max_seconds >= 0, "train.max_seconds", "must be >= 0 (0 = off)")


ADAPTER_VARIANTS = ("none", "lora", "dora", "loha", "lokr")   # none = train the networks themselves
ADAPTER_TARGETS = ("attention", "attention+text", "attention+embed", "attention+embed+text",
                   "all")                                       # models.networks.adapters.TARGETS


@dataclass
class AdapterConfig:
    """`adapter` group (conf/adapter/*.yaml): train a peft adapter on the frozen train.init_from
    checkpoint instead of its weights (models/networks/adapters.py)."""
    variant: str = "none"
    rank: int = 4
    alpha: Optional[float] = None       # None: alpha = rank
    targets: str = "attention"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        require(self.variant in ADAPTER_VARIANTS, "adapter.variant",
                f"{self.variant!r} is not allowed; choose one of {list(ADAPTER_VARIANTS)}")
        require(self.targets in ADAPTER_TARGETS, "adapter.targets",
                f"{self.targets!r} is not allowed; choose one of {list(ADAPTER_TARGETS)}")
        require(self.rank >= 1, "adapter.rank", f"must be >= 1, got {self.rank}")
        require(self.alpha is None or self.alpha > 0, "adapter.alpha", f"must be > 0 or null, got {self.alpha}")
        require(0 <= self.dropout < 1, "adapter.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class TrainRunConfig:
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    data: DataConfig = field(default_factory=DataConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    train: TrainingConfig = field(default_factory=TrainingConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    quiet: bool = False


def register_train_schema() -> None:
    ConfigStore.instance().store(name="diffbench_train_schema", node=TrainRunConfig)


__all__ = ["AdapterConfig", "ConfigError", "TrainRunConfig", "TrainingConfig", "register_train_schema"]
