"""What bench.app checks of a diffusers model at start, before any model loads: the pipeline and
scheduler classes a save_pretrained() folder names in its model_index.json (what a dry run says will
run; a folder without one, or of a class no adapter serves, exits 2), and what
`params.scheduler=request` cannot do for that pipeline class (the adapters' own refusals, the same
lines: one matrix test).
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.data.config import ConfigError
from models.core.interface import RequestError
from models.families.diffusers import ADAPTERS, UnCLIP
from models.families.diffusers_schedulers import heun_refusal, unclip_refusal


def saved_model_classes(folder: str) -> tuple[str, str]:
    """(pipeline class, scheduler class(es), `+`-joined) that a save_pretrained() folder names in
    its model_index.json, read without loading anything: what a dry run says will run, and what
    preflight checks (a folder without model_index.json, or of a class no adapter serves, exits 2)."""
    path = Path(folder).expanduser() / "model_index.json"
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        pipeline_class = str(index["_class_name"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"diffusers model folder {Path(folder).expanduser()}: {path.name} cannot be read "
                          f"({type(err).__name__}: {err}); give a folder written by save_pretrained()") from None
    known = sorted(ADAPTERS) + ["IFPipeline", "IFSuperResolutionPipeline"]
    if pipeline_class not in known:
        raise ConfigError(f"diffusers model folder {Path(folder).expanduser()}: no adapter for {pipeline_class}; "
                          f"supported: {known}")
    schedulers = [str(value[1]) for key, value in index.items() if key.endswith("scheduler")
                  and key != "image_noising_scheduler" and isinstance(value, list) and len(value) == 2 and value[1]]
    return pipeline_class, "+".join(dict.fromkeys(schedulers)) or "(no scheduler)"

def check_request_scheduler(pipeline_class: str, sampler: str, name: str) -> None:
    """Refuse at start (before any model loads) what `params.scheduler=request` cannot do for a saved
    pipeline class: UnCLIP keeps its own schedulers; heun needs a loop that scales model inputs.
    The same refusals as `DiffusersAdapter.check_request` / `UnCLIP.__init__` (one matrix test)."""
    adapter = ADAPTERS.get(pipeline_class)
    if adapter is UnCLIP:
        raise ConfigError(f"config key 'pipeline.params.scheduler': {unclip_refusal(name)}")
    if sampler == "heun" and adapter is not None and not adapter.scales_model_input:
        raise RequestError(heun_refusal(name, pipeline_class))

