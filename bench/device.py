"""The `hardware` config group (its schema, re-exported by bench.config) and the device and dtype it selects."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from bench.data.config import ConfigError, choice, require
from models.core.checkpoint import DEFAULT_BUDGET_FRACTION, set_memory_budget

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class HardwareConfig:
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    dtype: str = "float32"
    compile: bool = False          # torch.compile the denoisers (GPU)
    channels_last: bool = False
    batch_size: int = 16
    num_workers: int = 0           # DataLoader workers for data decoding
    # most GiB of weights a checkpoint's (or pipeline params') networks may ask for, estimated
    # before anything is allocated (models.core.checkpoint); null: half the physical RAM
    memory_budget_gb: Optional[float] = None

    def __post_init__(self) -> None:
        require(self.device in DEVICES or self.device.startswith("cuda:"), "hardware.device",
                f"{self.device!r} is not allowed; choose one of {list(DEVICES)} or cuda:N")
        choice(self.dtype, "hardware.dtype", tuple(DTYPES))
        require(self.batch_size >= 1, "hardware.batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.num_workers >= 0, "hardware.num_workers", f"must be >= 0, got {self.num_workers}")
        require(self.memory_budget_gb is None or math.isfinite(self.memory_budget_gb) and self.memory_budget_gb > 0,
                "hardware.memory_budget_gb", f"must be a finite number of GiB > 0 or null (= {DEFAULT_BUDGET_FRACTION:g} "
                f"of the physical RAM), got {self.memory_budget_gb}")


def apply_memory_budget(hw: HardwareConfig) -> None:
    """Checkpoints loaded from now on are refused past `hardware.memory_budget_gb` of weights."""
    set_memory_budget(hw.memory_budget_gb)


def resolve_device(hw: HardwareConfig) -> torch.device:
    if hw.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if hw.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'hardware.device': {hw.device!r} asked for, but CUDA is not "
                          "available here; use hardware.device=cpu or auto")
    return torch.device(hw.device)


def resolve_dtype(hw: HardwareConfig, device: torch.device) -> torch.dtype:
    dtype = DTYPES[hw.dtype]
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("config key 'hardware.dtype': float16 is not supported on CPU; "
                          "use float32 or bfloat16")
    return dtype


def describe(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
