"""What every family builder shares: config + networks from a checkpoint (optionally untrained:
its architecture, fresh weights) or, without one, from the family's architecture params."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from models.core.checkpoint import build_networks, load_checkpoint

# Params accepted with a checkpoint: untrained=true keeps its config but not its weights.
CHECKPOINT_PARAMS = ("untrained", "init_seed")


def load_family_networks(family: str, checkpoint: Path | None, params: dict[str, Any],
                         make_config: Any, arch_params: tuple[str, ...]
                         ) -> tuple[dict[str, Any], nn.ModuleDict]:
    """Config + networks for a family builder: from a checkpoint (optionally untrained, i.e. its
    architecture with fresh weights) or, without one, from architecture params."""
    seed = int(params.pop("init_seed", 0))
    if checkpoint is None:
        unknown = set(params) - set(arch_params) - {"untrained"}
        if unknown:
            raise ValueError(f"{family} pipeline params {sorted(unknown)} are unknown; known: "
                             f"{list(arch_params) + list(CHECKPOINT_PARAMS)}")
        params.pop("untrained", None)
        torch.manual_seed(seed)
        config = make_config(**params)
        return config, build_networks(config)
    unknown = set(params) - set(CHECKPOINT_PARAMS)
    if unknown:
        raise ValueError(f"{family} pipeline params {sorted(unknown)} cannot be combined with checkpoint "
                         f"{checkpoint}: the architecture comes from its config.json. Allowed: {list(CHECKPOINT_PARAMS)}")
    untrained = bool(params.pop("untrained", False))
    torch.manual_seed(seed)
    config, networks = load_checkpoint(checkpoint, weights=not untrained)
    if config.get("family") != family:
        raise ValueError(f"checkpoint {checkpoint} is for family {config.get('family')!r}, not {family!r}")
    return config, networks
