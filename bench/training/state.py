"""Resumable training checkpoints, with no pickle anywhere.

A checkpoint directory `step_NNNNNNN/` holds
- model.safetensors + config.json: the EMA weights, a usable pipeline checkpoint as is;
- train_state.safetensors: raw weights ("model.<role>.<key>"), optimiser tensors
  ("optim.<param>.<name>"), RNG states ("rng.<name>");
- train_state.json: step, optimiser hyper-parameters and non-tensor state, loss log, elapsed time.
It is written under a temporary name and renamed, so a killed run never leaves a half checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save

from bench.atomic import atomic_write_bytes, atomic_write_json
from models.core.checkpoint import save_checkpoint, state_tensors
from models.core.checkpoint import load_weights

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"
PREFIX = "step_"


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in sd["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_state(run_dir: Path, step: int, *, networks: nn.ModuleDict, ema: nn.ModuleDict,
               optimizer: torch.optim.Optimizer, generator: torch.Generator, config: dict[str, Any],
               meta: dict[str, Any], keep: int) -> Path:
    root = Path(run_dir) / "checkpoints"
    final = root / f"{PREFIX}{step:07d}"
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, ema, config)
    tensors = {f"model.{k}": v for k, v in state_tensors(networks).items()}
    optim_tensors, optim_meta = _optimizer_split(optimizer)
    tensors.update(optim_tensors)
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    atomic_write_bytes(tmp / STATE_TENSORS, save(tensors))
    atomic_write_json(tmp / STATE_JSON, {"step": step, "optimizer": optim_meta, **meta})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE_JSON).is_file())


def load_state(path: Path, *, networks: nn.ModuleDict, ema: nn.ModuleDict, optimizer: torch.optim.Optimizer,
               generator: torch.Generator) -> dict[str, Any]:
    """Restore everything `save_state` wrote; returns the JSON part (step, loss log, ...)."""
    meta = json.loads((path / STATE_JSON).read_text())
    tensors = load_file(str(path / STATE_TENSORS))
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    for role, net in networks.items():
        own = {k[len(role) + 1:]: v for k, v in model_sd.items() if k.startswith(f"{role}.")}
        net.load_state_dict(own, strict=True)
    load_weights(path, ema)
    optimizer.load_state_dict(_optimizer_join(tensors, meta["optimizer"]))
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta
