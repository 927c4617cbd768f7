"""Parameter-efficient adapters on a pipeline's networks, through `peft` (the library diffusers uses).

LoRA (Hu et al. 2021): freeze W0 and learn dW = B A of rank r, scaled by alpha / r, with B = 0 at
the start so the adapted model begins as the base model. Variants: DoRA (Liu et al. 2024, peft's
`use_dora`: a learned magnitude times the direction of W0 + dW), LoHa (Hadamard product of two
low-rank products, LyCORIS) and LoKr (Kronecker product, LyCORIS).

Targets (the names a config uses; LoRA for diffusion models adapts "the U-Net's attention layers
and the text encoder"):
- `attention`: the attention projections of the denoising networks: every nn.Linear whose parent
  module is an attention module (our UNet / Efficient U-Net / DiT `Attention`: q, kv, out/proj).
- `attention+text`: those, plus the attention projections of the text encoder roles
  (BERT-style query / key / value / attention.output.dense). Layers inside torch's
  nn.MultiheadAttention (open_clip, the small trainable encoder) are never wrapped: it reads
  out_proj.weight directly, so a wrapped out_proj would be silently bypassed.
- `attention+embed`: the attention projections plus the conditioning-embedding path of the denoisers:
  the timestep / pooled-text MLPs (`time_embed`, `extra_embed`, DiT `t_embed`) and each block's
  projection of that embedding (residual blocks' `emb`, DiT `modulation`). In an Imagen-style UNet the
  pooled text reaches every resolution only through this path (Saharia et al. 2022, App. B: the pooled
  embedding is added to the timestep embedding), while cross-attention sits at the lowest resolutions
  alone; a new shape needs the path that reaches the resolutions where shape is drawn.
- `attention+embed+text`: those, plus the text encoder's attention projections.
- `all`: every nn.Linear and nn.Conv2d of the denoising networks (the text encoder stays frozen).
Roles: the pipeline's `networks()`; "autoencoder" / "clip" / "vae" are never adapted, roles
named in TEXT_ROLES are the text encoders, every other role is a denoiser.

On disk an adapter is a directory: `adapter.json` (variant, rank, targets, base checkpoint, training
record) and, per adapted role, `<role>/adapter_model.safetensors` + `<role>/adapter_config.json`,
peft's own layout (PeftConfig.from_pretrained / get_peft_model_state_dict read and write it), and
`SHA256SUMS` (the sha256 of each `<role>/adapter_model.safetensors`, checked at load).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from peft import (LoHaConfig, LoKrConfig, LoraConfig, PeftConfig, get_peft_model_state_dict,
                  inject_adapter_in_model, set_peft_model_state_dict)
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import save_file

from models.core.checkpoint import read_weights, sums_of, write_sums
from models.core.registry import CHECKPOINT_DIR

VARIANTS = ("lora", "dora", "loha", "lokr")
TARGETS = ("attention", "attention+text", "attention+embed", "attention+embed+text", "all")
NEVER_ADAPTED = ("autoencoder", "clip", "vae")
TEXT_ROLES = ("text_encoder", "conditioner")
ADAPTER_JSON = "adapter.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
ADAPTER_NAME = "default"
FORMAT = "diffbench-adapter/1"
# BERT-style text encoders keep the attention output projection outside the attention module.
TEXT_ATTENTION_PATH = re.compile(r"(^|\.)attention\.(self\.(query|key|value)|output\.dense)$")
# The conditioning-embedding path (`attention+embed`): embedding MLPs and the per-block projections of the embedding.
EMBED_PATH = re.compile(r"(^|\.)((time_embed|extra_embed|t_embed\.mlp)\.\d+|emb|modulation\.\d+)$")


@dataclass(frozen=True)
class AdapterSpec:
    variant: str = "lora"
    rank: int = 4
    alpha: float | None = None          # None: alpha = rank (scaling 1 at adapter scale 1)
    targets: str = "attention"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"adapter.variant={self.variant!r} is unknown; choose one of {list(VARIANTS)}")
        if self.targets not in TARGETS:
            raise ValueError(f"adapter.targets={self.targets!r} is unknown; choose one of {list(TARGETS)}")
        if int(self.rank) < 1:
            raise ValueError(f"adapter.rank must be >= 1, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"adapter.dropout must be in [0, 1), got {self.dropout}")

    @property
    def scale_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    def peft_config(self, modules: list[str]) -> PeftConfig:
        common = {"r": int(self.rank), "target_modules": modules}
        if self.variant in ("lora", "dora"):
            return LoraConfig(lora_alpha=self.scale_alpha, lora_dropout=self.dropout,
                              use_dora=self.variant == "dora", **common)
        if self.variant == "loha":
            return LoHaConfig(alpha=self.scale_alpha, module_dropout=self.dropout, **common)
        return LoKrConfig(alpha=self.scale_alpha, module_dropout=self.dropout, **common)


def adapts_text(targets: str) -> bool:
    """Whether the target set `targets` adapts the text encoder."""
    return "text" in targets.split("+")


def role_kind(role: str) -> str:
    """'frozen', 'text' or 'denoiser' (module docstring)."""
    base = role.rsplit(".", 1)[-1]
    if base in NEVER_ADAPTED:
        return "frozen"
    return "text" if base in TEXT_ROLES or base.startswith("text_encoder") else "denoiser"


def target_modules(net: nn.Module, targets: str, kind: str) -> list[str]:
    """Qualified names of the layers of `net` that `targets` adapts, for a role of `kind`."""
    parts = set(targets.split("+"))
    if kind == "frozen" or (kind == "text" and not adapts_text(targets)):
        return []
    modules = dict(net.named_modules())
    found = []
    for name, module in modules.items():
        parent = modules.get(name.rpartition(".")[0]) if "." in name else net
        if isinstance(parent, nn.MultiheadAttention):
            continue        # it reads out_proj.weight directly: a wrapped out_proj would be bypassed
        if targets == "all" and kind == "denoiser":
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                found.append(name)
            continue
        if not isinstance(module, nn.Linear):
            continue
        if "Attention" in type(parent).__name__ or TEXT_ATTENTION_PATH.search(name):
            found.append(name)
        elif kind == "denoiser" and "embed" in parts and EMBED_PATH.search(name):
            found.append(name)
    return found


def adapter_layers(net: nn.Module) -> list[BaseTunerLayer]:
    return [m for m in net.modules() if isinstance(m, BaseTunerLayer)]


def attach(networks: Mapping[str, nn.Module], spec: AdapterSpec) -> dict[str, PeftConfig]:
    """Inject fresh adapters (the base model's output unchanged: B or its variant's factor is zero)
    into the targeted layers, freeze everything else; returns the peft config per adapted role."""
    configs = {}
    for role, net in networks.items():
        net.requires_grad_(False)
        modules = target_modules(net, spec.targets, role_kind(role))
        if not modules:
            continue
        # Exact names (a regex anchored on the full name), so peft adapts exactly these layers.
        config = spec.peft_config(modules)
        inject_adapter_in_model(config, net, adapter_name=ADAPTER_NAME)
        configs[role] = config
    if not configs:
        raise ValueError(f"adapter.targets={spec.targets!r} matches no layer of the networks "
                         f"{sorted(networks)}; choose one of {list(TARGETS)}")
    for role in configs:
        for name, p in networks[role].named_parameters():
            p.requires_grad_(is_adapter_parameter(name))
    return configs


def is_adapter_parameter(name: str) -> bool:
    return any(f".{key}" in f".{name}" for key in ("lora_", "hada_", "lokr_")) and f".{ADAPTER_NAME}" in name


def trainable_parameters(networks: Mapping[str, nn.Module]) -> int:
    return sum(p.numel() for net in networks.values() for p in net.parameters() if p.requires_grad)


def set_scale(networks: Mapping[str, nn.Module], scale: float) -> None:
    """Scale every adapter's update by `scale` (its scaling becomes scale * alpha / r). Scale 0
    switches the adapter layers off, so the output is the base model's bit for bit (DoRA's
    renormalisation would otherwise leave rounding differences)."""
    if not (scale == scale) or scale < 0:
        raise ValueError(f"adapter scale must be a number >= 0, got {scale}")
    for net in networks.values():
        for layer in adapter_layers(net):
            merged = layer.merged
            if merged:
                layer.unmerge()
            layer.set_scale(ADAPTER_NAME, float(scale))
            layer.enable_adapters(scale != 0)
            if merged and scale != 0:
                layer.merge()


def merge(networks: Mapping[str, nn.Module]) -> None:
    """Fold the adapters into the base weights (W0 + scale * dW): no extra cost per step."""
    for net in networks.values():
        for layer in adapter_layers(net):
            if not layer.merged and not layer.disable_adapters:
                layer.merge()


def unmerge(networks: Mapping[str, nn.Module]) -> None:
    for net in networks.values():
        for layer in adapter_layers(net):
            while layer.merged:
                layer.unmerge()


def is_merged(networks: Mapping[str, nn.Module]) -> bool:
    return any(layer.merged for net in networks.values() for layer in adapter_layers(net))


def save_adapter(directory: str | Path, networks: Mapping[str, nn.Module], configs: Mapping[str, PeftConfig],
                 spec: AdapterSpec, meta: Mapping[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write the adapters of `networks` (unmerged weights) in peft's layout, atomically."""
    final = Path(directory)
    tmp = final.parent / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    roles = {}
    for role, config in configs.items():
        state = get_peft_model_state_dict(networks[role], adapter_name=ADAPTER_NAME)
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in state.items()}
        (tmp / role).mkdir()
        save_file(state, str(tmp / role / WEIGHTS_FILE), metadata={"format": "pt"})
        config.save_pretrained(str(tmp / role))
        roles[role] = {"parameters": int(sum(v.numel() for v in state.values())),
                       "layers": len(adapter_layers(networks[role]))}
    record = {"format": FORMAT, "spec": asdict(spec), "roles": roles, **dict(meta or {})}
    # the sha256 of every weight file, verified at load (models.core.checkpoint.verify_weights_file)
    write_sums(tmp, sums_of(tmp, [f"{role}/{WEIGHTS_FILE}" for role in configs]))
    (tmp / ADAPTER_JSON).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def shipped_adapters() -> list[str]:
    """Names of the adapters shipped under models/checkpoints/ (directories holding adapter.json)."""
    return sorted(p.parent.name for p in CHECKPOINT_DIR.glob(f"*/{ADAPTER_JSON}"))


def resolve_adapter(name: str) -> Path:
    """A directory holding adapter.json, or the name of a shipped one under models/checkpoints/
    (found by name like a checkpoint: `pipeline.params.adapter=heart_lora_r4`)."""
    path = Path(name).expanduser()
    if not (path / ADAPTER_JSON).is_file() and (CHECKPOINT_DIR / name / ADAPTER_JSON).is_file():
        path = CHECKPOINT_DIR / name
    if not (path / ADAPTER_JSON).is_file():
        raise FileNotFoundError(f"adapter {name!r} not found: no {ADAPTER_JSON} in {path} or "
                                f"{CHECKPOINT_DIR / name}; pass a shipped adapter's name ({shipped_adapters()}) "
                                f"or a directory written by `bench.train adapter=...` (train.export=DIR)")
    return path


def adapter_size_bytes(directory: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob(WEIGHTS_FILE))


def load_adapter(name: str | Path, networks: Mapping[str, nn.Module], scale: float = 1.0,
                 merged: bool = False) -> dict[str, Any]:
    """Inject a saved adapter into `networks` (the pipeline the adapter was trained on), load its
    weights, set its scale and optionally merge it. Returns its adapter.json record."""
    directory = resolve_adapter(str(name))
    record = json.loads((directory / ADAPTER_JSON).read_text())
    if record.get("format") != FORMAT:
        raise ValueError(f"adapter {directory}: format {record.get('format')!r}, expected {FORMAT!r}")
    missing_roles = sorted(set(record["roles"]) - set(networks))
    if missing_roles:
        raise ValueError(f"adapter {directory} adapts networks {missing_roles} that this pipeline lacks "
                         f"(it has {sorted(networks)}); load it on the pipeline it was trained on "
                         f"({record.get('base', 'see adapter.json')})")
    for net in networks.values():
        net.requires_grad_(False)
    for role in record["roles"]:
        net = networks[role]
        config = PeftConfig.from_pretrained(str(directory / role))
        inject_adapter_in_model(config, net, adapter_name=ADAPTER_NAME)
        first = next(net.parameters())
        # read_weights: a damaged file is named, and one listed in the adapter's SHA256SUMS is verified
        state = {k: v.to(first.device) for k, v in read_weights(directory / role / WEIGHTS_FILE, root=directory).items()}
        result = set_peft_model_state_dict(net, state, adapter_name=ADAPTER_NAME)
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:
            raise ValueError(f"adapter {directory / role}: tensors {unexpected[:3]} fit no layer of network "
                             f"{role!r}; the adapter was made for another architecture")
        net.requires_grad_(False)
    set_scale(networks, scale)
    if merged:
        merge(networks)
    return record
