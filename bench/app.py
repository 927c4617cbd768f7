"""The Hydra entry point: `python -m bench [overrides]` / `diffbench [overrides]` (bench/__main__.py runs
the light checks of bench.preflight before importing this module, which imports torch and the suites).

preflight (before Hydra starts: compose every job's config with Hydra's compose API, type and check
it, open its inputs, check the run directory; a bad key, option, value or input exits 2 with one line
naming it; `dry_run=true` prints the plan and exits 0) -> compose config -> validate (bad keys/values fail
here, naming the key; the suite's name and params too) -> seed, device -> suite.run(session,
params) -> results.csv/.parquet -> report.md + plots -> manifest status complete.
Errors in the input (USER_ERRORS) print one line and exit 2; `debug=true` (or DIFFBENCH_DEBUG=1)
adds the traceback. A run that fails leaves manifest.json with status "failed" and no results
files (a failed write removes what it half wrote); rerunning with the same `hydra.run.dir`
resumes from the stored samples.
"""
from __future__ import annotations

import copy
import logging
import os
import sys
import traceback
import zipfile
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

from bench.atomic import describe_io_error, sweep_temp_files
from bench.config import Config, ConfigError, PipelineConfig, register_schema, validate
from bench.data import DataError, build_source
from bench.data.prompts import load_prompts
from bench.device import describe, resolve_device
from bench.distributed import World, init_world
from bench.manifest import file_sha256, model_provenance, write_manifest
from bench.metrics.refstats import ReferenceError as ReferenceStatsError
from bench.metrics.spaces import check_feature_weights
from bench.metrics.refstats import load_reference_npz
from bench.preflight import (COMPOSE_ERRORS, CONF_DIR, Checked, Job, check, check_run_dir, compose_job,
                             differing_settings, earlier_run, fail, is_finished, looks_like_path, one_line,
                             override_keys)
from bench.results import CORE_COLUMNS, DETAILS_COLUMN, RESULT_FILES, write_results
from bench.session import SETTING_COLUMNS, Session
from bench.store import StoreError
from bench.weights import WeightsError
from models.core.checkpoint import CheckpointError
from models.core.interface import NonFiniteError, RequestError
from models.core.registry import build_pipeline, resolve_checkpoint
from models.families.diffusers_preflight import check_request_scheduler, saved_model_classes
from models.families.diffusers_common import SCHEDULERS, scheduler_mode
from reports.run_report import write_run_report
from suites import SWEEP_AXIS_KEYS, load_suite, prepare_suite

log = logging.getLogger("bench")


class UserError(Exception):
    """Errors caused by input (config, data, weights, request): printed without a traceback."""


USER_ERRORS = (ConfigError, RequestError, UserError, FileNotFoundError, DataError, WeightsError,
               StoreError, NonFiniteError, ReferenceStatsError, CheckpointError)
# The run's error boundary for the disk and damaged files (issue 29): a write that fails (full disk,
# read-only folder), a file that cannot be read or is not a complete zip/npz. One line naming the
# file and what to do (bench.atomic.describe_io_error), exit 2; the run stays resumable.
IO_ERRORS = (OSError, zipfile.BadZipFile)


def multirun_params(overrides: list[str]) -> dict[str, object]:
    """A multirun job's command-line overrides as sweep columns (`guidance_scale=2` ->
    {"guidance_scale": 2.0}), so merged multirun reports keep the jobs apart. Group choices
    (`pipeline=x`) and hydra.* keys are not sweep parameters of a row."""
    params: dict[str, object] = {}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key.startswith("hydra.") or key in CORE_COLUMNS or key == DETAILS_COLUMN or "." not in key \
                and key in ("pipeline", "sampler", "data", "metrics", "suite", "hardware", "quiet", "debug", "dry_run"):
            continue
        params[SETTING_COLUMNS.get(key, key)] = yaml.safe_load(value) if value else value
    return params


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
    suite, params = prepare_suite(cfg.suite.name, cfg.suite.params, cfg)   # start-up: nothing written yet
    # the weights of every feature space beside Inception, found before any sampling (exit 2 if not)
    feature_weights = check_feature_weights(cfg.metrics)
    world = init_world(resolve_device(cfg.hardware))
    run_dir = _same_run_dir(Path(run_dir), world)
    run_id = f"{run_dir.parent.name}/{run_dir.name}" if run_dir.parent.name else run_dir.name
    config = OmegaConf.to_container(raw, resolve=True)
    earlier = earlier_run(run_dir)
    if earlier and is_finished(run_dir, earlier) and not cfg.overwrite \
            and not differing_settings(earlier["config"], config):   # read-only, so every rank agrees
        log.info("run directory %s holds this run, complete; nothing to do (python -m reports %s redraws "
                 "its report; overwrite=true runs it again)", run_dir, run_dir)
        return pd.read_csv(run_dir / "results.csv") if world.is_main else None
    if world.is_main:   # before anything is written: a run directory keeps a finished run (issue 26);
        # preflight checked it already for `python -m bench`; this covers multirun jobs and in-process
        # calls. What Hydra just wrote for this run (.hydra/, its log) is not the earlier run's.
        check_run_dir(run_dir, config, cfg.overwrite, keep=[".hydra", *(p.name for p in run_dir.glob("*.log"))])
        # a killed run's temporary files (e.g. `.results.parquet.*.tmp`) must not outlive the resume; the
        # sample stores sweep theirs under their own lock (other ranks may be writing there already)
        sweep_temp_files(run_dir, skip=["samples"])
    torch.manual_seed(cfg.seed)
    session = Session(cfg, run_dir, run_id, job_params, world, suite_n_given="suite.n" in override_keys(overrides),
                      given=override_keys(overrides))
    manifest = dict(run_id=run_id, config=config, seed=cfg.seed,
                    device={**describe(session.device), "world_size": world.size})
    # the manifest's weights: the sha256 of each feature space's file (rows carry it too, issue 27)
    session.weights_used.update({str(w["name"]): str(w["sha256"]) for w in feature_weights.values()})
    if not world.is_main:   # other ranks sample and measure their share; rank 0 writes
        suite.run(session, params)
        return None
    try:
        write_manifest(run_dir, status="running", **manifest)
    except OSError as err:
        raise UserError(f"run directory {run_dir}: cannot write manifest.json ({err}); free space or give a "
                        "writable hydra.run.dir") from err
    try:
        suite.run(session, params)   # rows go into session.rows (session.record)
        try:
            frame = write_results(run_dir, session.rows)
            final = dict(weights=session.weights_used, checkpoints=_checkpoints(session), warnings=session.warnings,
                         inputs=session.measured_inputs())   # both sides as measured (issue 26)
            # report.html shows the provenance the complete manifest will hold (weights, checkpoints)
            write_run_report(run_dir, frame, quiet=cfg.quiet, manifest={**manifest, **final, "status": "complete"})
            write_manifest(run_dir, status="complete", **final, **manifest)
        except OSError as err:   # a full disk, a quota, a directory made read-only under us
            raise UserError(f"cannot write the results: {describe_io_error(err, run_dir)}") from err
    except BaseException as err:
        _discard_results(run_dir)   # nothing half-written beside a failed manifest
        _mark_failed(run_dir, err, session.warnings, manifest)
        raise
    log.info("results in %s", run_dir)
    return frame


def _discard_results(run_dir: Path) -> None:
    """Remove the results files and report of a run that failed: they would claim completeness."""
    for name in (*RESULT_FILES, "report.md", "report.html"):   # report.html shows a complete manifest
        try:
            (run_dir / name).unlink(missing_ok=True)
        except OSError as err:
            log.error("could not remove %s of the failed run: %s", run_dir / name, err)


def _mark_failed(run_dir: Path, err: BaseException, warnings: list[str], manifest: dict) -> None:
    try:
        write_manifest(run_dir, status="failed", error=f"{type(err).__name__}: {err}", warnings=warnings, **manifest)
    except OSError as write_err:   # e.g. the disk is full: say so, the manifest keeps status running
        log.error("could not mark %s failed: %s", run_dir / "manifest.json", write_err)


def _checkpoints(session: Session) -> dict[str, dict[str, object]]:
    """Per loaded pipeline: its checkpoint directory, the weights' sha256 and parameter count;
    for a model loaded from elsewhere (diffusers), what it reports in `provenance` (path or repo
    id, pipeline and component classes, library versions, the schedulers that ran) with the
    sha256 of every weight file in its folder (`model_provenance`)."""
    checkpoints = {}
    for name, pipe in session.loaded_pipelines().items():
        path = resolve_checkpoint(session.pipeline_config(name).checkpoint)
        weights_file = path / "model.safetensors" if path else None
        entry: dict[str, object] = {"label": pipe.info.name, "checkpoint": str(path) if path else None,
                                    "parameters": pipe.parameter_count()}
        provenance = getattr(pipe, "provenance", None)
        if isinstance(provenance, dict) and "folder" in provenance:   # its files are hashed one by one
            entry.update(model_provenance(provenance))
        else:
            entry["sha256"] = file_sha256(str(weights_file)) if weights_file and weights_file.exists() else None
            if isinstance(provenance, dict):
                entry["provenance"] = provenance
        checkpoints[name] = entry
    return checkpoints


def _same_run_dir(run_dir: Path, world: World) -> Path:
    """Under torchrun every rank composes its own `${now:...}` run dir; all use rank 0's."""
    if not world.distributed:
        return run_dir
    shared = [str(run_dir)]
    dist.broadcast_object_list(shared, src=0)
    return Path(shared[0])


def prepare_config(raw: DictConfig, overrides: Sequence[str]) -> Config:
    """The composed config as the run uses it: narrowed by the command line, typed and checked
    (the suite's name and params too). Raises ConfigError naming the first bad key."""
    narrow_to_chosen_pipeline(raw, list(overrides))
    narrow_sweep_to_overrides(raw, list(overrides))
    cfg = validate(raw)
    prepare_suite(cfg.suite.name, cfg.suite.params, cfg)   # the params with the sweep and data too
    return cfg


# -- start-up checks before Hydra runs anything (bad keys, inputs, run directory, dry_run) ----------
def preflight(argv: Sequence[str], checked: Checked | None = None) -> None:
    """Check the command line's config (every job of a multirun) before Hydra starts: first the
    light checks (`bench.preflight.check`: keys, values, metric names, paths, a writable run
    directory; `checked` when `python -m bench` already ran them before importing this module),
    then what needs the heavier layers: the suite and its params, every input opened as the run
    will read it (npz layouts, prompts, a diffusers model folder's classes, reference statistics)
    and the run directory's earlier run. A problem exits 2 with one line naming it (Hydra's own
    errors are multi-line, exit 1, and come after it has set up logging in the run directory).
    With `dry_run=true` print the plan and exit 0: nothing is sampled or written."""
    checked = checked or check(argv)
    if checked is None:
        return   # Hydra answers these itself, or composes another config than ours
    try:
        plans = [plan_job(job, multirun=checked.multirun) for job in checked.jobs]
    except Exception as err:
        if not isinstance(err, USER_ERRORS + COMPOSE_ERRORS + IO_ERRORS):
            raise
        fail(err if isinstance(err, USER_ERRORS + COMPOSE_ERRORS) else
             UserError(describe_io_error(err)).with_traceback(err.__traceback__), checked.debug)
    if plans and plans[0]["dry_run"]:
        total = checked.total
        shown = "" if total == len(plans) else f", checked as {len(plans)} (each value of each swept key once)"
        print(f"dry run: {total} job(s){shown}; the config is valid and every input opened; nothing was sampled "
              "or written")
        for number, plan in enumerate(plans):
            print(f"job {number}: " + "; ".join(f"{k}: {v}" for k, v in plan.items() if k != "dry_run"))
        sys.exit(0)


def plan_job(job: Job | Sequence[str], multirun: bool = False) -> dict[str, object]:
    """One job's config narrowed and checked as the run will use it (the suite's params too), its
    inputs opened (`open_inputs`) and its run directory checked (a single run's; a multirun job's
    is checked by `run` once Hydra names it); return what it will run."""
    if not isinstance(job, Job):
        job = compose_job(job, multirun)
    raw = copy.deepcopy(job.raw)   # narrowing edits it; the job keeps what the command line gave
    overrides = job.overrides
    cfg = prepare_config(raw, overrides)
    pipelines = list(cfg.suite.pipelines or [cfg.pipeline.name])
    sampling = {name: open_inputs(cfg, name) for name in pipelines}
    if cfg.metrics.reference:
        load_reference_npz(cfg.metrics.reference)   # mu and sigma, as the run reads them
    if cfg.data.name in ("folder", "npz"):
        build_source(cfg.data)                       # the reference folder / npz as the run reads it
    if cfg.suite.params.get("prompts"):
        load_prompts(cfg.suite.params["prompts"])
    run_dir = "none"
    if not multirun:
        config = OmegaConf.to_container(raw, resolve=True)
        state = check_run_dir(job.out_dir, config, cfg.overwrite) if not cfg.dry_run else \
            _run_dir_state(job.out_dir, config, cfg.overwrite)
        run_dir = f"{job.out_dir} ({state})"
    samplers = set(sampling.values())
    return {"dry_run": cfg.dry_run, "suite": cfg.suite.name, "pipelines": pipelines,
            "sweep": dict(OmegaConf.to_container(raw.suite.sweep)) or "none",
            "n": cfg.suite.n if "suite.n" in override_keys(overrides) or cfg.pipeline.family != "external"
            else f"{cfg.suite.n} (samples made elsewhere: all of them, unless suite.n is given)",
            "sampler": samplers.pop() if len(samplers) == 1 else "; ".join(f"{k}: {v}" for k, v in sampling.items()),
            "guidance_scale": cfg.guidance_scale, "seed": cfg.seed, "metrics": list(cfg.metrics.names),
            "data": f"{cfg.data.name} (n={cfg.data.n})", job.key: run_dir if not multirun else str(job.out_dir)}


def _run_dir_state(run_dir: Path, config: dict, overwrite: bool) -> str:
    """What a real run would do with run_dir, said by a dry run, which removes nothing: the same
    refusal as the run, or 'new', 'resume', 'overwrite (the earlier run would be removed)'."""
    manifest = earlier_run(run_dir)
    if manifest is None:
        return "new"
    finished = is_finished(run_dir, manifest)
    if not differing_settings(manifest["config"], config) and not (finished and overwrite):
        return "complete: nothing to do" if finished else "resume"
    if not overwrite:
        check_run_dir(run_dir, config, overwrite=False)   # raises the run's own refusal
    return "overwrite: the earlier run there would be removed"


NO_SAMPLING = "no sampling (samples made elsewhere)"


def open_inputs(cfg: Config, name: str) -> str:
    """Open what pipeline `name` will read, as the run reads it, without loading any network:
    samples made elsewhere (folder or npz: built, which reads the npz header or the first image,
    and the prompts); a diffusers model folder's model_index.json and scheduler config. Returns
    what will really sample: "no sampling", or the scheduler class and steps that will run."""
    spec = cfg.pipeline if name == cfg.pipeline.name else _pipeline_spec(name)
    sampler = f"{cfg.sampler.name} x {cfg.sampler.steps} steps (eta {cfg.sampler.eta})"
    if spec.family != "external":
        return sampler
    params = dict(spec.params)
    try:
        return _open_external(cfg, spec, params)
    except ValueError as err:   # a builder's plain complaint: named as the run names it (Session.load_pipeline)
        if type(err) is not ValueError:
            raise
        raise ConfigError(f"pipeline {spec.name} (family {spec.family}, pipeline.params {params}): {err}") from err


def _open_external(cfg: Config, spec: PipelineConfig, params: dict) -> str:
    if params.get("source") != "diffusers":
        if params.get("on_bad_file") != "skip":   # skip decodes every file to find the readable ones: the run does
            build_pipeline(spec.family, spec.name, spec.checkpoint, **params)   # files, npz layout, prompts
        return NO_SAMPLING
    mode = scheduler_mode(str(params.get("scheduler", "saved")), spec.name)
    models = [params["model"]] if params.get("model") else list(params.get("stages") or [])
    found = [saved_model_classes(str(model)) for model in models if looks_like_path(str(model))]
    classes = [pipeline_class for pipeline_class, _ in found]
    if mode == "request":
        for pipeline_class in classes:
            check_request_scheduler(pipeline_class, cfg.sampler.name, spec.name)
        return f"{cfg.sampler.name} as diffusers' {SCHEDULERS[cfg.sampler.name][0]} x {cfg.sampler.steps} steps " \
               "(params.scheduler=request)"
    if len(found) == len(models):
        return f"{'+'.join(scheduler for _, scheduler in found)} as saved x {cfg.sampler.steps} steps " \
               "(params.scheduler=saved; the sampler setting is not used)"
    return f"the model's own scheduler as saved x {cfg.sampler.steps} steps (params.scheduler=saved)"


def _pipeline_spec(name: str) -> PipelineConfig:
    merged = OmegaConf.merge(OmegaConf.structured(PipelineConfig), OmegaConf.load(CONF_DIR / "pipeline" / f"{name}.yaml"))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _hydra_main(raw: DictConfig) -> None:
    try:
        hydra_cfg = HydraConfig.get()
        cfg = prepare_config(raw, list(hydra_cfg.overrides.task))
        if cfg.quiet:
            os.environ["DIFFBENCH_QUIET"] = "1"
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        job_params = multirun_params(list(hydra_cfg.overrides.task)) if multirun else {}
        run(cfg, raw, Path(hydra_cfg.runtime.output_dir), job_params, list(hydra_cfg.overrides.task))
    except USER_ERRORS + IO_ERRORS as err:
        if os.environ.get("DIFFBENCH_DEBUG") or raw.get("debug"):
            traceback.print_exc()
        line = one_line(err) if isinstance(err, USER_ERRORS) else \
            describe_io_error(err, HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None)
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)


def main(checked: Checked | None = None) -> None:
    """`checked`: the light checks' result when bench/__main__.py ran them before importing this module."""
    register_schema()
    preflight(sys.argv[1:], checked)
    _hydra_main()


if __name__ == "__main__":
    main()
