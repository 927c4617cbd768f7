"""A LoRA on a diffusers pipeline: `params.lora` (a save_lora_weights folder or file) and
`params.lora_scale` (sweepable, e.g. a multirun over pipeline.params.lora_scale=0,0.5,1) go to
diffusers' `load_lora_weights` / `set_adapters`; the manifest's provenance records them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

LORA_NAME = "diffbench_lora"


def load_lora(pipe: Any, name: str, lora: str | None, scale: float | None) -> dict[str, Any]:
    """params.lora (a folder or .safetensors file written by `save_lora_weights`, diffusers' /
    peft's LoRA layout) loaded with the pipeline's own `load_lora_weights`, weighted by
    params.lora_scale (default 1; 0 gives the base model's images exactly: the LoRA term is
    multiplied by 0). diffusers routes it to the UNet and, when the file has them, the text encoder."""
    if lora is None:
        raise ValueError(f"diffusers pipeline {name!r}: params.lora_scale needs params.lora=PATH")
    scale = 1.0 if scale is None else float(scale)
    if not scale == scale or scale < 0:
        raise ValueError(f"diffusers pipeline {name!r}: params.lora_scale must be a number >= 0, got {scale}")
    if not hasattr(pipe, "load_lora_weights"):
        raise ValueError(f"diffusers pipeline {name!r}: {type(pipe).__name__} cannot load LoRA weights "
                         "(no load_lora_weights); remove params.lora")
    path = Path(str(lora)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"diffusers pipeline {name!r}: params.lora={lora!r} does not exist; give the folder "
                                "(or .safetensors file) written by save_lora_weights")
    try:
        if path.is_file():
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=LORA_NAME)
        else:
            pipe.load_lora_weights(str(path), adapter_name=LORA_NAME)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"diffusers pipeline {name!r}: params.lora={lora!r} could not be loaded: {err}") from None
    pipe.set_adapters([LORA_NAME], adapter_weights=[scale])
    return {"path": str(path), "scale": scale, "components": sorted(pipe.get_list_adapters())}

