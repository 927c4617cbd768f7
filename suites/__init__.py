"""Suite registry: suite name -> module with `Params` (its `suite.params` as a dataclass, see
suites/params.py) and `run(session, params) -> None`.

A suite decides which pipelines x metrics x sweep points to measure; `bench.session.Session`
gives it loaded pipelines, requests, metric sets and the sample store, so a suite module
is only the loop over its sweep (see suites/smoke.py). Its result rows go through
`session.record` into `session.rows` (so every rank's share and every sweep point meet in one
list), which bench.app writes; `run` returns nothing."""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Mapping

from bench.data.config import choice
from suites.params import SuiteParams, parse_params

SUITES = {
    "smoke": "suites.smoke",
    "autoencoder_zoo": "suites.autoencoder_zoo",
    "f_sweep": "suites.f_sweep",
    "guidance_sweep": "suites.guidance_sweep",
    "speed": "suites.speed",
    "cascade": "suites.cascade",
    "regression": "suites.regression",
    "lora_sweep": "suites.lora_sweep",
    "superres": "suites.superres",
    "inpainting": "suites.inpainting",
    "score": "suites.score",
}

# A suite's sweep axis -> the config key that sets the same setting for one run (and the group
# whose choice sets it, for `sampler=ddim`). A run that gives the key narrows the axis to its value.
SWEEP_AXIS_KEYS = {"guidance_scale": ("guidance_scale",), "sampler": ("sampler.name", "sampler"),
                   "steps": ("sampler.steps",), "eta": ("sampler.eta",), "batch_size": ("hardware.batch_size",),
                   "dtype": ("hardware.dtype",)}


def load_suite(name: str) -> ModuleType:
    """The suite's module; a ConfigError naming `suite.name` and the known suites otherwise."""
    choice(name, "suite.name", tuple(SUITES))
    return importlib.import_module(SUITES[name])


def prepare_suite(name: str, params: Mapping[str, Any] | None, cfg: Any = None) -> tuple[ModuleType, SuiteParams]:
    """The start-up check of the `suite` group above the config layer: the module of `suite.name`
    and its typed `suite.params`; given the whole config (`cfg`), also what the params mean with
    the rest of it (`Params.check_config`: e.g. f_sweep's autoencoder for every f of its sweep)."""
    suite = load_suite(name)
    parsed = parse_params(suite.Params, params, name)
    if cfg is not None:
        parsed.check_config(cfg)
    return suite, parsed
