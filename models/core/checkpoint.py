"""Checkpoints as a directory: `model.safetensors` (weights, no pickle) + `config.json`.

`config.json` says how to rebuild every network: {"family": ..., "networks": {role: {"type":
"unet", "config": {...}}, ...}, ...family-specific keys}. Weights of network `role` are stored
under the key prefix "role.". `build_networks(config)` turns a config into modules (a type
registry, so other families add their own network types with `register_network_type`), and
`load_checkpoint(dir)` returns the config and the loaded modules.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
from safetensors.torch import load_file, save

from bench.atomic import atomic_write_bytes, atomic_write_json

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "diffbench-checkpoint/1"

NetworkBuilder = Callable[[Mapping[str, Any]], nn.Module]
_NETWORK_TYPES: dict[str, NetworkBuilder] = {}
# network type -> the module that registers its builder, imported when a config names the type
# (a plugin registry: checkpoints load without the caller importing every network module).
NETWORK_MODULES = {
    "unet": "models.networks.unet",
    "efficient_unet": "models.networks.efficient_unet",
    "dit": "models.networks.dit",
    "autoencoder": "models.networks.autoencoder",
    "reference_clip": "models.networks.reference_clip",
    "class_conditioner": "models.networks.conditioning",
    "text_conditioner": "models.networks.conditioning",
    "text_encoder": "models.networks.text_encoders",
    "unclip_prior": "models.networks.unclip_prior",
    "unclip_decoder_conditioner": "models.networks.unclip_prior",
    "patch_discriminator": "models.networks.discriminator",
}


def register_network_type(name: str) -> Callable[[NetworkBuilder], NetworkBuilder]:
    def wrap(builder: NetworkBuilder) -> NetworkBuilder:
        _NETWORK_TYPES[name] = builder
        return builder
    return wrap


def build_networks(config: Mapping[str, Any]) -> nn.ModuleDict:
    """{role: module} from a checkpoint config's "networks" entry (randomly initialised)."""
    networks = config.get("networks")
    if not isinstance(networks, Mapping) or not networks:
        raise ValueError("checkpoint config has no 'networks' mapping {role: {type, config}}")
    out = nn.ModuleDict()
    for role, spec in networks.items():
        kind = spec.get("type")
        if kind not in _NETWORK_TYPES and kind in NETWORK_MODULES:
            importlib.import_module(NETWORK_MODULES[kind])
        if kind not in _NETWORK_TYPES:
            raise ValueError(f"network {role!r}: type {kind!r} is unknown; known: {sorted(NETWORK_MODULES)}")
        out[role] = _NETWORK_TYPES[kind](spec.get("config", {}))
    return out


def state_tensors(networks: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{role}.{key}": value.detach().cpu().contiguous().clone()
            for role, net in networks.items() for key, value in net.state_dict().items()}


WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def save_checkpoint(directory: str | Path, networks: Mapping[str, nn.Module], config: Mapping[str, Any],
                    dtype: str = "float32") -> Path:
    """Write weights and config atomically (config last: its presence marks a complete checkpoint).
    `dtype` stores floating-point tensors narrower (float16 halves a shipped file); loading casts
    them back to the modules' own dtype (`load_state_dict` copies)."""
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"checkpoint weight dtype {dtype!r} is not one of {sorted(WEIGHT_DTYPES)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(WEIGHT_DTYPES[dtype]) if v.is_floating_point() else v for k, v in state_tensors(networks).items()}
    atomic_write_bytes(directory / MODEL_FILE, save(tensors, metadata={"format": FORMAT, "dtype": dtype}))
    atomic_write_json(directory / CONFIG_FILE, {"format": FORMAT, **config})
    return directory


def load_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {directory}: no {CONFIG_FILE}; a checkpoint directory holds "
                                f"{MODEL_FILE} + {CONFIG_FILE} (see models/core/checkpoint.py)")
    return json.loads(path.read_text())


def load_weights(directory: str | Path, networks: Mapping[str, nn.Module]) -> None:
    """Load `model.safetensors` into `networks` strictly, naming missing or unexpected keys."""
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {directory}: no {MODEL_FILE}")
    tensors = load_file(str(path))
    for role, net in networks.items():
        prefix = f"{role}."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing, unexpected = net.load_state_dict(own, strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint {path}, network {role!r}: missing keys {missing[:5]}, "
                             f"unexpected keys {unexpected[:5]}; the weights do not match config.json")
    extra = sorted({k.split(".", 1)[0] for k in tensors} - set(networks))
    if extra:
        raise ValueError(f"checkpoint {path} holds networks {extra} that its config does not describe")


def load_checkpoint(directory: str | Path, *, weights: bool = True) -> tuple[dict[str, Any], nn.ModuleDict]:
    """(config, networks); with weights=False the networks keep their random initialisation."""
    config = load_config(directory)
    networks = build_networks(config)
    if weights:
        load_weights(directory, networks)
    return config, networks
