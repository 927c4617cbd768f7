"""Run a suite in-process through the real config tree (Hydra compose + bench.app.run), so
suite tests pay neither interpreter start-up nor model loading twice."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from bench.config import register_schema, validate

CONF = Path(__file__).resolve().parent.parent / "conf"


def run_suite(run_dir: Path, *overrides: str):
    """Compose conf/config.yaml with `overrides`, run it into run_dir, return the results frame."""
    from bench.app import narrow_sweep_to_overrides, narrow_to_chosen_pipeline, run
    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="config", overrides=["quiet=true", *overrides])
    narrow_to_chosen_pipeline(raw, list(overrides))   # as the command line does
    narrow_sweep_to_overrides(raw, list(overrides))
    return run(validate(raw), raw, Path(run_dir), overrides=list(overrides))
