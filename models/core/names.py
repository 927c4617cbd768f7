"""Lists of names the config checks, in a torch-free module: `python -m bench` checks a config
(bench.preflight) before it imports torch, so a typo is reported in about a second (issue 26).
The modules that own the concepts read them from here: models.core.interface (thresholding)
and models.sampling.samplers (SAMPLERS maps each sampler name to its function)."""
from __future__ import annotations

THRESHOLDING_MODES = ("none", "static", "dynamic")
SAMPLER_NAMES = ("ddpm", "ddim", "dpmpp_2m", "heun")
