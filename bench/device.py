"""Device and dtype selection from `hardware` config."""
from __future__ import annotations

import torch

from bench.config import ConfigError, HardwareConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
