"""The `hardware` config group (its schema, re-exported by bench.config) and the device and dtype it selects."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from bench.data.config import ConfigError, choice, require

if TYPE_CHECKING:
    import torch
# torch (and models.core.checkpoint, which needs it) is imported inside the functions that use it:
# HardwareConfig is part of the config schema, which `python -m bench` checks before torch loads
# (bench.preflight; a config typo is reported in about a second, not after torch's start-up)

DEVICES = ("auto", "cpu", "cuda")
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def torch_dtype(name: str) -> "torch.dtype":
    """hardware.dtype's name -> the torch dtype."""
    import torch
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


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
        choice(self.dtype, "hardware.dtype", DTYPE_NAMES)
        require(self.batch_size >= 1, "hardware.batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.num_workers >= 0, "hardware.num_workers", f"must be >= 0, got {self.num_workers}")
        if not (self.memory_budget_gb is None or math.isfinite(self.memory_budget_gb) and self.memory_budget_gb > 0):
            from models.core.checkpoint import DEFAULT_BUDGET_FRACTION   # torch: only on this error path
            require(False, "hardware.memory_budget_gb", f"must be a finite number of GiB > 0 or null "
                    f"(= {DEFAULT_BUDGET_FRACTION:g} of the physical RAM), got {self.memory_budget_gb}")


def apply_memory_budget(hw: HardwareConfig) -> None:
    """Checkpoints loaded from now on are refused past `hardware.memory_budget_gb` of weights."""
    from models.core.checkpoint import set_memory_budget
    set_memory_budget(hw.memory_budget_gb)


def resolve_device(hw: HardwareConfig) -> torch.device:
    import torch
    if hw.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if hw.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'hardware.device': {hw.device!r} asked for, but CUDA is not "
                          "available here; use hardware.device=cpu or auto")
    return torch.device(hw.device)


def resolve_dtype(hw: HardwareConfig, device: torch.device) -> torch.dtype:
    import torch
    dtype = torch_dtype(hw.dtype)
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("config key 'hardware.dtype': float16 is not supported on CPU; "
                          "use float32 or bfloat16")
    return dtype


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:   # not Linux
        import platform
        return platform.processor()


def describe(device: torch.device) -> dict:
    import torch
    info = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "threads": torch.get_num_threads(),
            # the CPU kernels' instruction set (AVX2, AVX512, ...): seeded CPU samples can differ by
            # +-1 in a few pixels between them (FID ~1e-5 relative), so a baseline says where it was made
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": _cpu_model()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
