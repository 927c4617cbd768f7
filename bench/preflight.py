"""The start-up checks of `python -m bench`, with light imports only (issue 26).

`check(argv)` composes every job's config with Hydra's compose API (the same config tree), types
and checks it against the schema (bench.config: keys, values, metric names), checks that the run
directory can be written and that every input path the config names exists and is readable. It
imports hydra, omegaconf and the torch-free schema and registries only, so a typo in a key, a
metric name or a path exits 2 with one line in about a second (README, "Start-up"), not after
torch, pandas and the suites have loaded (~10-20 s on a loaded machine). What needs those (the
suite's params, npz layouts, prompts, a model folder's classes, reference statistics, the run
directory's earlier run) is checked next by `bench.app.preflight`, still before Hydra starts.

`check_run_dir` keeps a run directory's finished work (issue 26): a rerun with the same settings
resumes; with other settings it is refused before anything is touched, naming every differing
setting with both values, unless `overwrite=true`, which first removes what the earlier run left.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from bench.config import Config, ConfigError, omegaconf_message, register_schema, schema_keys, validate
from bench.metrics.feature_spaces import check_weights_present
from models.core.registry import looks_like_path, resolve_checkpoint

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
HYDRA_FLAGS_WITHOUT_RUN = ("help", "hydra_help", "info", "cfg", "shell_completion", "version")
HYDRA_OTHER_CONFIG = ("config_name", "config_path", "config_dir", "experimental_rerun")
# What composing a config can raise about the command line (unknown key, group option, bad value)
COMPOSE_ERRORS = (HydraException, OmegaConfBaseException)
# What the light checks raise about the input (bench.app.USER_ERRORS adds the heavier layers' errors)
LIGHT_ERRORS = (ConfigError, FileNotFoundError, PermissionError)


class RunDirError(ConfigError):
    """The run directory holds another run (other settings or another model)."""


@dataclass
class Job:
    overrides: list[str]
    raw: DictConfig        # the composed config without its hydra node, as the command line gave it
    cfg: Config            # typed and checked (before the suite narrows it: bench.app.prepare_config)
    out_dir: Path          # hydra.run.dir (hydra.sweep.dir for a multirun)
    key: str               # which of the two


@dataclass
class Checked:
    jobs: list[Job]
    total: int             # jobs in the multirun (the product of its sweeps); 1 for a single run
    multirun: bool
    debug: bool


def check(argv: Sequence[str]) -> Checked | None:
    """The light checks of every job (each value of each swept key once): exit 2 with one line on
    the first bad key, value, metric name, path or run directory. None when Hydra answers the
    command line itself (--help, --cfg, ...) or composes another config than ours."""
    from hydra._internal.utils import get_args_parser   # Hydra's own command-line grammar
    args, _ = get_args_parser().parse_known_args(list(argv))
    if any(getattr(args, flag, None) for flag in HYDRA_FLAGS_WITHOUT_RUN + HYDRA_OTHER_CONFIG):
        return None
    overrides = list(args.overrides or [])
    debug = bool(os.environ.get("DIFFBENCH_DEBUG")) or any(o.replace(" ", "") in ("debug=true", "debug=True")
                                                           for o in overrides)
    try:
        lines, total = expand_sweeps(overrides) if args.multirun else ([overrides], 1)
        jobs = [compose_job(line, bool(args.multirun)) for line in lines]
    except Exception as err:
        if not isinstance(err, LIGHT_ERRORS + COMPOSE_ERRORS):
            raise
        fail(err, debug)
    return Checked(jobs, total, bool(args.multirun), debug)


def fail(err: BaseException, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exception(err)
    print(f"error: {one_line(err)}", file=sys.stderr)
    sys.exit(2)


def compose_job(overrides: Sequence[str], multirun: bool = False) -> Job:
    """One job's config composed (Hydra's compose API) and checked, with its run directory and inputs."""
    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        raw = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    hydra_node = raw.hydra
    with open_dict(raw):
        del raw["hydra"]
    cfg = validate(raw)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    out_dir = Path(str(hydra_node.sweep.dir if multirun else hydra_node.run.dir))
    check_writable(out_dir, key)
    for spec_key, spec in pipeline_specs(cfg, overrides):
        check_pipeline_paths(spec_key, spec)
    for key_name, value in (("suite.params.prompts", cfg.suite.params.get("prompts")),
                            ("metrics.reference", cfg.metrics.reference),
                            ("data.captions", cfg.data.captions)):
        if value:
            check_file(key_name, value, "file")
    if cfg.data.name in ("folder", "npz") and cfg.data.root is not None:
        check_file("data.root", cfg.data.root, "folder" if cfg.data.name == "folder" else "file")
    if not cfg.dry_run:   # DINOv2 / CLIP feature spaces: their weights are never downloaded (a dry run loads nothing)
        check_weights_present(cfg.metrics)
    return Job(list(overrides), raw, cfg, out_dir, key)


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The config keys set on the command line (`suite.n=16` -> "suite.n")."""
    return [item.lstrip("+~").partition("=")[0] for item in overrides]


def pipeline_specs(cfg: Config, overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """(config key, pipeline config) of every pipeline the job runs: the selected one, or the
    suite's list (read from conf/pipeline/NAME.yaml) unless `pipeline=X` alone narrows it."""
    keys = override_keys(overrides)
    names = cfg.suite.pipelines
    if not names or "pipeline" in keys and not any(k.startswith("suite.pipelines") for k in keys):
        return [("pipeline", cfg.pipeline)]
    specs = []
    for name in names:
        if name == cfg.pipeline.name:
            specs.append(("pipeline", cfg.pipeline))
        elif (CONF_DIR / "pipeline" / f"{name}.yaml").exists():
            specs.append((f"suite.pipelines ({name})", OmegaConf.load(CONF_DIR / "pipeline" / f"{name}.yaml")))
    return specs


def check_pipeline_paths(where: str, spec: Any) -> None:
    params = dict(spec.get("params") or {}) if isinstance(spec, (dict, DictConfig)) else dict(spec.params or {})
    checkpoint = spec.get("checkpoint") if isinstance(spec, DictConfig) else spec.checkpoint
    key = "pipeline" if where == "pipeline" else where
    if checkpoint:
        try:
            resolve_checkpoint(str(checkpoint))
        except FileNotFoundError as err:
            raise ConfigError(f"config key '{key}.checkpoint': {err}") from None
    if params.get("source") == "diffusers":
        for model_key, model in [("params.model", params.get("model"))] + \
                [(f"params.stages[{i}]", s) for i, s in enumerate(params.get("stages") or [])]:
            if model and looks_like_path(str(model)):
                folder = check_file(f"{key}.{model_key}", str(model), "folder",
                                    "give a folder written by save_pretrained(), or a Hugging Face model id")
                check_file(f"{key}.{model_key}", str(folder / "model_index.json"), "file",
                           "a diffusers model folder holds model_index.json (save_pretrained() writes it)")
        if params.get("lora"):
            check_file(f"{key}.params.lora", str(params["lora"]), "any",
                       "give the folder (or .safetensors file) written by save_lora_weights")
        return
    if params.get("path") is not None:
        check_file(f"{key}.params.path", str(params["path"]), "any",
                   "give a folder of images or an ADM-style .npz of samples")
    if params.get("prompts"):
        check_file(f"{key}.params.prompts", str(params["prompts"]), "file")


def check_file(key: str, value: str, kind: str, hint: str = "") -> Path:
    """`value` (config key `key`) names an existing, readable file or folder: else one line naming
    the key, the path and what to do."""
    path = Path(value).expanduser()
    what = {"file": "file", "folder": "folder", "any": "file or folder"}[kind]
    hint = f"; {hint}" if hint else f"; give an existing {what}"
    if not path.exists():
        raise ConfigError(f"config key '{key}': path {path} does not exist{hint}")
    if kind == "file" and not path.is_file() or kind == "folder" and not path.is_dir():
        raise ConfigError(f"config key '{key}': path {path} is not a {what}{hint}")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise ConfigError(f"config key '{key}': path {path} cannot be read (permission denied); make it readable")
    return path


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


# -- the run directory's earlier run ------------------------------------------------------------
# Settings that do not change what a run measures: a rerun may change them and still resume.
NOT_SETTINGS = ("quiet", "debug", "dry_run", "overwrite", "hardware.num_workers")


def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out     # an empty mapping holds no setting ({} and unset are the same run)
    return {prefix.rstrip("."): obj}


def differing_settings(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, stored value, wanted value) of every setting that differs, in key order."""
    a, b = flat(stored), flat(wanted)
    missing = object()
    found = []
    for key in sorted(set(a) | set(b)):
        if key in NOT_SETTINGS:
            continue
        old, new = a.get(key, missing), b.get(key, missing)
        if old != new:
            found.append((key, "(unset)" if old is missing else old, "(unset)" if new is missing else new))
    return found


def earlier_run(run_dir: Path) -> dict[str, Any] | None:
    """The manifest of the run already in run_dir (None when there is none)."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunDirError(f"run directory {run_dir}: its manifest.json cannot be read ({err}); give a new "
                          "hydra.run.dir, or add overwrite=true to replace what is there") from None
    return manifest if isinstance(manifest, dict) and "run_id" in manifest and "config" in manifest else None


def is_finished(run_dir: Path, manifest: Mapping[str, Any]) -> bool:
    """The earlier run in run_dir finished: its manifest says complete and its results are there."""
    return manifest.get("status") == "complete" and (Path(run_dir) / "results.csv").is_file()


def check_run_dir(run_dir: Path, config: Mapping[str, Any], overwrite: bool, keep: Sequence[str] = ()) -> str:
    """Whether a run may go into run_dir, checked before anything there is touched: "new" (no
    earlier run), "resume" (an unfinished earlier run with the same settings: its stored samples are
    reused), "complete" (a finished run with the same settings: left as it is, nothing to do), or
    "overwrite" (other settings, or a finished run, and overwrite=true: what the earlier run left is removed first,
    but `keep`, the names Hydra wrote for this run). Other settings without overwrite=true raise
    RunDirError naming each differing setting with both values."""
    manifest = earlier_run(run_dir)
    if manifest is None:
        return "new"
    differing = differing_settings(manifest["config"], config)
    finished = is_finished(run_dir, manifest)
    if not differing and finished and not overwrite:
        return "complete"   # a finished run is never changed by a later one: nothing to do
    if not differing and not finished:
        return "resume"
    if not overwrite:
        shown = "; ".join(f"{key}: {_short(old)} there, {_short(new)} now" for key, old, new in differing[:8])
        more = f" (and {len(differing) - 8} more)" if len(differing) > 8 else ""
        raise RunDirError(f"run directory {run_dir} holds a {manifest.get('status', 'earlier')} run with other "
                          f"settings ({shown}{more}); nothing was changed. Give a new hydra.run.dir, or add "
                          "overwrite=true to replace that run")
    clear_run_dir(Path(run_dir), keep)
    return "overwrite"


def clear_run_dir(run_dir: Path, keep: Sequence[str] = ()) -> None:
    """Remove what an earlier run left in run_dir (results, manifest, reports, plots, grids, sample
    store...), so nothing of a pipeline no longer in the run survives. Only a directory holding a
    diffbench manifest gets here (check_run_dir), never an arbitrary folder. The manifest goes
    last: a kill midway leaves a directory that is still recognisably an earlier run. Under torchrun
    rank 0 alone clears (every rank runs these checks; the others meet it in init_process_group
    before they write anything)."""
    if os.environ.get("RANK", "0") != "0":
        return
    for entry in sorted(run_dir.iterdir()):
        if entry.name in keep or entry.name == "manifest.json":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (run_dir / "manifest.json").unlink(missing_ok=True)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


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
    if isinstance(cause, OmegaConfBaseException) and isinstance(err, COMPOSE_ERRORS):
        return omegaconf_message(cause)
    lines = [line.strip() for line in str(err).splitlines()
             if line.strip() and "HYDRA_FULL_ERROR" not in line]
    if "Config search path:" in lines:
        lines = lines[:lines.index("Config search path:")]
    if len(lines) > 1 and lines[1].startswith("Available options"):
        return f"{lines[0]}; {lines[1]} {', '.join(lines[2:])}"
    return "; ".join(lines) or type(err).__name__
