"""The Hydra entry point: `python -m bench [overrides]` / `diffbench [overrides]`.

compose config -> validate (bad keys/values fail here, naming the key; the suite's name and
params too) -> seed, device -> suite.run(session, params) -> results.csv/.parquet -> report.md +
plots -> manifest status complete.
A run that fails leaves manifest.json with status "failed" and no results files claiming
completeness; rerunning with the same `hydra.run.dir` resumes from the stored samples.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Sequence

import hydra
import pandas as pd
import torch
import torch.distributed as dist
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bench.config import Config, ConfigError, register_schema, validate
from bench.data import DataError
from bench.device import describe, resolve_device
from bench.distributed import World, init_world
from bench.manifest import file_sha256, write_manifest
from bench.metrics.refstats import ReferenceError as ReferenceStatsError
from bench.results import CORE_COLUMNS, DETAILS_COLUMN, write_results
from bench.session import Session
from bench.store import StoreMismatchError
from bench.weights import WeightsError
from models.core.interface import NonFiniteError, RequestError
from models.core.registry import resolve_checkpoint
from reports.run_report import write_run_report
from suites import SWEEP_AXIS_KEYS, load_suite, prepare_suite

log = logging.getLogger("bench")


class UserError(Exception):
    """Errors caused by input (config, data, weights, request): printed without a traceback."""


USER_ERRORS = (ConfigError, RequestError, UserError, FileNotFoundError, DataError, WeightsError,
               StoreMismatchError, NonFiniteError, ReferenceStatsError)


def multirun_params(overrides: list[str]) -> dict[str, object]:
    """A multirun job's command-line overrides as sweep columns (`guidance_scale=2` ->
    {"guidance_scale": 2.0}), so merged multirun reports keep the jobs apart. Group choices
    (`pipeline=x`) and hydra.* keys are not sweep parameters of a row."""
    params: dict[str, object] = {}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key.startswith("hydra.") or key in CORE_COLUMNS or key == DETAILS_COLUMN or "." not in key \
                and key in ("pipeline", "sampler", "data", "metrics", "suite", "hardware", "quiet"):
            continue
        params[key] = yaml.safe_load(value) if value else value
    return params


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The config keys set on the command line (`suite.n=16` -> "suite.n")."""
    return [item.lstrip("+~").partition("=")[0] for item in overrides]


def narrow_to_chosen_pipeline(raw: DictConfig, overrides: list[str]) -> None:
    """`pipeline=X` on the command line runs the suite on X alone, even when the suite lists
    its own pipelines (smoke lists every shipped one), unless suite.pipelines is also given; the
    suite's params for work beyond its pipelines (`Params.BEYOND_PIPELINES`, e.g. the smoke's
    autoencoder reconstruction rows) are then dropped too, unless given as well."""
    keys = override_keys(overrides)
    if "pipeline" not in keys or any(k.startswith("suite.pipelines") for k in keys):
        return
    raw.suite.pipelines = None
    params = raw.suite.get("params") or {}
    for name in load_suite(raw.suite.name).Params.BEYOND_PIPELINES:
        if name in params and not any(k.startswith(f"suite.params.{name}") for k in keys):
            raw.suite.params[name] = None


def narrow_sweep_to_overrides(raw: DictConfig, overrides: list[str]) -> None:
    """A command-line value for a setting the suite sweeps is honoured, not dropped by the sweep:
    `-m suite=guidance_sweep guidance_scale=1,2` is one job per scale, each sweeping that scale
    alone (and saying so in the log). Given together with `suite.sweep.<axis>` it is refused."""
    keys = override_keys(overrides)
    sweep = raw.suite.get("sweep") or {}
    for axis, axis_keys in SWEEP_AXIS_KEYS.items():
        given = [key for key in axis_keys if key in keys]
        if axis not in sweep or not given:
            continue
        if any(k.startswith(f"suite.sweep.{axis}") for k in keys):
            raise ConfigError(f"config key '{given[0]}': given together with suite.sweep.{axis}, which the "
                              f"suite sweeps; give one of them")
        value = OmegaConf.select(raw, axis_keys[0])
        log.info("suite %s sweeps %s over %s; %s=%s from the command line narrows it to that value",
                 raw.suite.name, axis, list(sweep[axis]), given[0], value)
        raw.suite.sweep[axis] = [value]


def run(cfg: Config, raw: DictConfig, run_dir: Path,
        job_params: dict[str, object] | None = None, overrides: Sequence[str] = ()) -> pd.DataFrame | None:
    """Run the configured suite into run_dir (the results frame; None on ranks other than 0).
    `overrides`: the command line's, for what depends on a key being given rather than defaulted
    (suite.n for samples made elsewhere). Importable for tests and notebooks."""
    suite, params = prepare_suite(cfg.suite.name, cfg.suite.params)   # start-up: nothing written yet
    world = init_world(resolve_device(cfg.hardware))
    run_dir = _same_run_dir(Path(run_dir), world)
    run_id = f"{run_dir.parent.name}/{run_dir.name}" if run_dir.parent.name else run_dir.name
    config = OmegaConf.to_container(raw, resolve=True)
    torch.manual_seed(cfg.seed)
    session = Session(cfg, run_dir, run_id, job_params, world, suite_n_given="suite.n" in override_keys(overrides))
    manifest = dict(run_id=run_id, config=config, seed=cfg.seed,
                    device={**describe(session.device), "world_size": world.size})
    if not world.is_main:   # other ranks sample and measure their share; rank 0 writes
        suite.run(session, params)
        return None
    write_manifest(run_dir, status="running", **manifest)
    try:
        suite.run(session, params)   # rows go into session.rows (session.record)
        frame = write_results(run_dir, session.rows)
        write_run_report(run_dir, frame, quiet=cfg.quiet)
    except BaseException as err:
        write_manifest(run_dir, status="failed", error=f"{type(err).__name__}: {err}", warnings=session.warnings,
                       **manifest)
        raise
    write_manifest(run_dir, status="complete", weights=session.weights_used, checkpoints=_checkpoints(session),
                   warnings=session.warnings, **manifest)
    log.info("results in %s", run_dir)
    return frame


def _checkpoints(session: Session) -> dict[str, dict[str, object]]:
    """Per loaded pipeline: its checkpoint directory, the weights' sha256 and parameter count."""
    checkpoints = {}
    for name, pipe in session.loaded_pipelines().items():
        path = resolve_checkpoint(session.pipeline_config(name).checkpoint)
        weights_file = path / "model.safetensors" if path else None
        checkpoints[name] = {"checkpoint": str(path) if path else None,
                             "sha256": file_sha256(str(weights_file)) if weights_file and weights_file.exists() else None,
                             "parameters": pipe.parameter_count()}
    return checkpoints


def _same_run_dir(run_dir: Path, world: World) -> Path:
    """Under torchrun every rank composes its own `${now:...}` run dir; all use rank 0's."""
    if not world.distributed:
        return run_dir
    shared = [str(run_dir)]
    dist.broadcast_object_list(shared, src=0)
    return Path(shared[0])


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _hydra_main(raw: DictConfig) -> None:
    try:
        hydra_cfg = HydraConfig.get()
        narrow_to_chosen_pipeline(raw, list(hydra_cfg.overrides.task))
        narrow_sweep_to_overrides(raw, list(hydra_cfg.overrides.task))
        cfg = validate(raw)
        if cfg.quiet:
            os.environ["DIFFBENCH_QUIET"] = "1"
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        job_params = multirun_params(list(hydra_cfg.overrides.task)) if multirun else {}
        run(cfg, raw, Path(hydra_cfg.runtime.output_dir), job_params, list(hydra_cfg.overrides.task))
    except USER_ERRORS as err:
        if os.environ.get("DIFFBENCH_DEBUG"):
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    register_schema()
    _hydra_main()


if __name__ == "__main__":
    main()
