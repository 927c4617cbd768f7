"""The Hydra entry point: `python -m bench [overrides]` / `diffbench [overrides]`.

preflight (before Hydra starts: compose every job's config with Hydra's compose API, type and check
it, check the run directory; a bad key, option or value exits 2 with one line naming it;
`dry_run=true` prints the plan and exits 0) -> compose config -> validate (bad keys/values fail
here, naming the key; the suite's name and params too) -> seed, device -> suite.run(session,
params) -> results.csv/.parquet -> report.md + plots -> manifest status complete.
Errors in the input (USER_ERRORS) print one line and exit 2; `debug=true` (or DIFFBENCH_DEBUG=1)
adds the traceback. A run that fails leaves manifest.json with status "failed" and no results
files (a failed write removes what it half wrote); rerunning with the same `hydra.run.dir`
resumes from the stored samples.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Sequence

import hydra
import pandas as pd
import torch
import torch.distributed as dist
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from bench.config import Config, ConfigError, omegaconf_message, register_schema, schema_keys, validate
from bench.data import DataError
from bench.device import describe, resolve_device
from bench.distributed import World, init_world
from bench.manifest import file_sha256, model_provenance, write_manifest
from bench.metrics.refstats import ReferenceError as ReferenceStatsError
from bench.results import CORE_COLUMNS, DETAILS_COLUMN, RESULT_FILES, write_results
from bench.session import SETTING_COLUMNS, Session
from bench.store import StoreMismatchError
from bench.weights import WeightsError
from models.core.checkpoint import CheckpointError
from models.core.interface import NonFiniteError, RequestError
from models.core.registry import resolve_checkpoint
from reports.run_report import write_run_report
from suites import SWEEP_AXIS_KEYS, load_suite, prepare_suite

log = logging.getLogger("bench")


class UserError(Exception):
    """Errors caused by input (config, data, weights, request): printed without a traceback."""


USER_ERRORS = (ConfigError, RequestError, UserError, FileNotFoundError, DataError, WeightsError,
               StoreMismatchError, NonFiniteError, ReferenceStatsError, CheckpointError)
# What composing a config can raise about the command line (unknown key, group option, bad value)
COMPOSE_ERRORS = (HydraException, OmegaConfBaseException)


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
    try:
        write_manifest(run_dir, status="running", **manifest)
    except OSError as err:
        raise UserError(f"run directory {run_dir}: cannot write manifest.json ({err}); free space or give a "
                        "writable hydra.run.dir") from err
    try:
        suite.run(session, params)   # rows go into session.rows (session.record)
        try:
            frame = write_results(run_dir, session.rows)
            final = dict(weights=session.weights_used, checkpoints=_checkpoints(session), warnings=session.warnings)
            # report.html shows the provenance the complete manifest will hold (weights, checkpoints)
            write_run_report(run_dir, frame, quiet=cfg.quiet, manifest={**manifest, **final, "status": "complete"})
            write_manifest(run_dir, status="complete", **final, **manifest)
        except OSError as err:   # a full disk, a quota, a directory made read-only under us
            raise UserError(f"run directory {run_dir}: cannot write the results ({err}); free space or give a "
                            "writable hydra.run.dir, then rerun (stored samples are reused)") from err
    except BaseException as err:
        _discard_results(run_dir)   # nothing half-written beside a failed manifest
        _mark_failed(run_dir, err, session.warnings, manifest)
        raise
    log.info("results in %s", run_dir)
    return frame


def _discard_results(run_dir: Path) -> None:
    """Remove the results files and report of a run that failed: they would claim completeness."""
    for name in (*RESULT_FILES, "report.md"):
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
    prepare_suite(cfg.suite.name, cfg.suite.params)
    return cfg


# -- start-up checks before Hydra runs anything (bad keys, run directory, dry_run) ------------------
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
HYDRA_FLAGS_WITHOUT_RUN = ("help", "hydra_help", "info", "cfg", "shell_completion", "version")
HYDRA_OTHER_CONFIG = ("config_name", "config_path", "config_dir", "experimental_rerun")


def preflight(argv: Sequence[str]) -> None:
    """Compose and check the command line's config (every job of a multirun) before Hydra starts:
    an unknown key, group option or value, or a run directory that cannot be written exits 2 with
    one line naming it (Hydra's own errors are multi-line, exit 1, and come after it has set up
    logging in the run directory). With `dry_run=true` print the plan and exit 0: nothing is
    loaded, sampled or written."""
    from hydra._internal.utils import get_args_parser   # Hydra's own command-line grammar
    args, _ = get_args_parser().parse_known_args(list(argv))
    if any(getattr(args, flag, None) for flag in HYDRA_FLAGS_WITHOUT_RUN + HYDRA_OTHER_CONFIG):
        return   # Hydra answers these itself, or composes another config than ours
    overrides = list(args.overrides or [])
    debug = bool(os.environ.get("DIFFBENCH_DEBUG")) or any(o.replace(" ", "") in ("debug=true", "debug=True")
                                                           for o in overrides)
    try:
        jobs, total = expand_sweeps(overrides) if args.multirun else ([overrides], 1)
        plans = [plan_job(job, multirun=bool(args.multirun)) for job in jobs]
    except Exception as err:
        if not isinstance(err, USER_ERRORS + COMPOSE_ERRORS):
            raise
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    if plans and plans[0]["dry_run"]:
        checked = "" if total == len(plans) else f", checked as {len(plans)} (each value of each swept key once)"
        print(f"dry run: {total} job(s){checked}; the config is valid; nothing was loaded, sampled or written")
        for number, plan in enumerate(plans):
            print(f"job {number}: " + "; ".join(f"{k}: {v}" for k, v in plan.items() if k != "dry_run"))
        sys.exit(0)


def expand_sweeps(overrides: Sequence[str]) -> tuple[list[list[str]], int]:
    """A multirun's jobs to check: each value of each swept key once (the others at their first
    value), so every option and value given is composed without composing the whole product;
    and how many jobs the multirun has (the product)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    base, sweeps = [], []
    for index, override in enumerate(parsed):
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
            prefix = override.input_line[:len(override.input_line) - len(override.get_value_string())] \
                if hasattr(override, "get_value_string") else f"{override.get_key_element()}="
            sweeps.append((index, [f"{prefix}{v}" for v in values]))
            base.append(sweeps[-1][1][0])
        else:
            base.append(override.input_line)
    jobs, total = [base], 1
    for index, variants in sweeps:
        total *= len(variants)
        for variant in variants[1:]:
            job = list(base)
            job[index] = variant
            jobs.append(job)
    return jobs, total


def plan_job(overrides: Sequence[str], multirun: bool = False) -> dict[str, object]:
    """Compose one job's config (Hydra's compose API, the same config tree), check it and its
    run directory; return what it would run."""
    from hydra import compose, initialize_config_dir
    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        raw = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    hydra_node = raw.hydra
    with open_dict(raw):
        del raw["hydra"]
    cfg = prepare_config(raw, overrides)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    out_dir = Path(str(hydra_node.sweep.dir if multirun else hydra_node.run.dir))
    check_writable(out_dir, key)
    pipelines = list(cfg.suite.pipelines or [cfg.pipeline.name])
    return {"dry_run": cfg.dry_run, "suite": cfg.suite.name, "pipelines": pipelines,
            "sweep": dict(OmegaConf.to_container(raw.suite.sweep)) or "none",
            "n": cfg.suite.n if "suite.n" in override_keys(overrides) or cfg.pipeline.family != "external"
            else f"{cfg.suite.n} (samples made elsewhere: all of them, unless suite.n is given)",
            "sampler": f"{cfg.sampler.name} x {cfg.sampler.steps} steps (eta {cfg.sampler.eta})",
            "guidance_scale": cfg.guidance_scale, "seed": cfg.seed, "metrics": list(cfg.metrics.names),
            "data": f"{cfg.data.name} (n={cfg.data.n})", key: str(out_dir)}


def check_writable(path: Path, key: str) -> None:
    """The run directory can be made and written: checked at its nearest existing folder, without
    creating anything (Hydra makes it, then opens its log file there)."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"config key '{key}': {path} cannot be made: {existing} is a file, not a folder; "
                          f"give a writable folder, e.g. {key}=outputs/myrun")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(f"config key '{key}': {path} cannot be written ({existing}: {err.strerror or err}); "
                          f"give a writable folder, e.g. {key}=outputs/myrun") from None


def one_line(err: BaseException) -> str:
    """An error for the terminal as one line: Hydra's multi-line messages folded, its hints kept."""
    cause = err.__cause__
    if isinstance(err, ConfigCompositionException) and isinstance(cause, OmegaConfBaseException) \
            and getattr(cause, "full_key", None) and str(err).startswith("Could not override"):
        key = str(cause.full_key)
        allowed = schema_keys(key.rpartition(".")[0])
        if allowed is None:   # under a free mapping (pipeline.params, suite.params): adding takes +
            return f"config key '{key}': not in the composed config; add a new key with +{key}=..., " \
                   "or run with --cfg job to see every key"
        where = f"of {key.rpartition('.')[0]}" if "." in key else "at the top level"
        return f"config key '{key}': no such key; the keys {where} are {allowed}"
    if isinstance(cause, OmegaConfBaseException) and not isinstance(err, USER_ERRORS):
        return omegaconf_message(cause)
    lines = [line.strip() for line in str(err).splitlines()
             if line.strip() and "HYDRA_FULL_ERROR" not in line]
    if "Config search path:" in lines:
        lines = lines[:lines.index("Config search path:")]
    if len(lines) > 1 and lines[1].startswith("Available options"):
        return f"{lines[0]}; {lines[1]} {', '.join(lines[2:])}"
    return "; ".join(lines) or type(err).__name__


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
    except USER_ERRORS as err:
        if os.environ.get("DIFFBENCH_DEBUG") or raw.get("debug"):
            traceback.print_exc()
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    register_schema()
    preflight(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
