"""Suite registry: suite name -> module with `run(session) -> list[dict]` (result rows).

A suite decides which pipelines x metrics x sweep points to measure; `bench.session.Session`
gives it loaded pipelines, requests, metric sets and the sample store, so a suite module
is only the loop over its sweep (see suites/smoke.py)."""
from __future__ import annotations

import importlib
from types import ModuleType

SUITES = {
    "smoke": "suites.smoke",
    "autoencoder_zoo": "suites.autoencoder_zoo",
    "f_sweep": "suites.f_sweep",
    "guidance_sweep": "suites.guidance_sweep",
    "speed": "suites.speed",
    "cascade": "suites.cascade",
    "regression": "suites.regression",
}


def load_suite(name: str) -> ModuleType:
    if name not in SUITES:
        raise ValueError(f"suite {name!r} is unknown; known: {sorted(SUITES)}")
    return importlib.import_module(SUITES[name])
