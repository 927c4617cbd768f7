"""Typed `suite.params`: each suite declares its parameters as a dataclass (`Params` in its module),
and `parse_params` turns the composed `suite.params` mapping into one at start-up, before anything
runs. Unknown keys, wrong types and values out of range fail there, as a ConfigError naming the key
(`suite.params.<name>`) and what is allowed.

The schema in `bench.config` keeps `suite.params` a free mapping: which dataclass applies depends on
`suite.name`, so OmegaConf checks it here, after composition, with the same rules as the rest.

What the types cannot say is checked at start-up too, never deep inside a run: a suite's
`Params.__post_init__` checks its own values, and `Params.check_config(cfg)` what depends on the rest
of the config (its sweep, the data), called by `suites.prepare_suite` when it is given the config
(bench.app's start-up and preflight). The autoencoders a suite names (f_sweep, autoencoder_zoo) are
checked by `check_autoencoder`: a checkpoint that exists and holds an autoencoder of the right f,
or an AutoencoderConfig mapping with known keys, values of the right type and an f the autoencoder
supports; the message names the key and the suite's own allowed values (the shipped autoencoders
and their f, the powers of two an autoencoder can downsample by).
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Mapping, Optional, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from bench.data.config import ConfigError, require
from models.core.checkpoint import CheckpointError, check_networks, load_config
from models.core.interface import STAGE_SETTINGS
from models.core.registry import CHECKPOINT_DIR, resolve_checkpoint
from models.networks.autoencoder import CODEBOOK_UPDATES, MAX_LEVELS, REGULARIZERS, AutoencoderConfig

P = TypeVar("P", bound="SuiteParams")


@dataclass
class SuiteParams:
    """What every suite's Params is. `BEYOND_PIPELINES` names params for work beyond the listed
    pipelines (smoke's autoencoder reconstruction): `pipeline=X` on the command line, which runs
    the suite on X alone, drops them too (bench.app.narrow_to_chosen_pipeline)."""
    BEYOND_PIPELINES: ClassVar[tuple[str, ...]] = ()

    def check_config(self, cfg: Any) -> None:
        """Start-up checks that need the rest of the composed config (`cfg`: bench.config.Config),
        e.g. the suite's sweep or the data; a ConfigError naming the key. None by default."""


@dataclass
class SamplingParams(SuiteParams):
    """The params of every suite that samples: the session puts them into each request."""
    prompts: Optional[str] = None      # prompt file (.txt, .csv) for text-conditioned pipelines
    stage_overrides: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # stage -> settings

    def __post_init__(self) -> None:
        for stage, settings in self.stage_overrides.items():
            unknown = sorted(set(settings) - set(STAGE_SETTINGS))
            require(not unknown, f"suite.params.stage_overrides.{stage}",
                    f"unknown settings {unknown}; choose from {list(STAGE_SETTINGS)}")


@dataclass
class QualityParams(SamplingParams):
    """The params of suites that measure quality and speed (`suites.common.quality_and_speed`)."""
    speed_n: Optional[int] = None      # images per timed repeat; None = hardware.batch_size

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.speed_n is None or self.speed_n >= 1, "suite.params.speed_n", f"must be >= 1, got {self.speed_n}")


def parse_params(cls: type[P], given: Mapping[str, Any] | None, suite: str) -> P:
    """`given` (the composed suite.params) as a `cls`, its defaults filled in; raises ConfigError."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), given or {}))  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ConfigError):   # raised by a __post_init__, wrapped by OmegaConf
            raise cause from None
        raise ConfigError(_message(err, cls, suite)) from None


def _message(err: OmegaConfBaseException, cls: type, suite: str) -> str:
    """OmegaConf's complaint, said with the full key and the allowed keys or type."""
    key = str(getattr(err, "full_key", "") or "")
    parent, _, name = key.rpartition(".")
    owner = _dataclass_at(cls, parent)
    what = str(err).splitlines()[0].rstrip(".")
    if owner is not None:
        hints = typing.get_type_hints(owner)
        allowed = [f.name for f in dataclasses.fields(owner)]
        if isinstance(err, ConfigKeyError) and name not in allowed:
            what = f"suite {suite} has no such parameter; its parameters{' here' if parent else ''}: {allowed}"
        elif name in hints:
            what = f"{what}; expected {_type_name(hints[name])}"
    return f"config key 'suite.params.{key}': {what}"


def _dataclass_at(cls: type, path: str) -> type | None:
    """The dataclass that holds the key at `path` ("" = cls itself), or None inside a plain mapping."""
    for part in filter(None, path.split(".")):
        hint = typing.get_type_hints(cls).get(part)
        cls = _without_none(hint) if hint is not None else None
        if cls is None or not dataclasses.is_dataclass(cls):
            return None
    return cls


def _without_none(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


def _type_name(hint: Any) -> str:
    inner = _without_none(hint)
    name = inner.__name__ if isinstance(inner, type) and not typing.get_args(inner) else str(inner).replace("typing.", "")
    if dataclasses.is_dataclass(inner):
        name = f"a mapping with keys {[f.name for f in dataclasses.fields(inner)]}"
    return f"{name} or null" if inner is not hint else name


# -- autoencoders named by suite params (f_sweep, autoencoder_zoo) ------------------------------------
DOWNSAMPLE_FACTORS = tuple(2 ** m for m in range(MAX_LEVELS))   # what an autoencoder can downsample by
_FIELD_TYPES = {"regularizer": str, "downsample_factor": int, "latent_channels": int, "in_channels": int,
                "base_channels": int, "channel_mult": list, "num_res_blocks": int, "mid_attention": bool,
                "dropout": float, "logvar_init": float, "codebook_size": int, "commitment_beta": float,
                "codebook_update": str, "ema_decay": float, "scale_factor": float}
_FIELD_CHOICES = {"regularizer": REGULARIZERS, "codebook_update": CODEBOOK_UPDATES}


def shipped_autoencoder_factors() -> dict[str, int]:
    """{name: f} of the shipped checkpoints that are autoencoders (config.json kind: autoencoder)."""
    table = {}
    for path in sorted(CHECKPOINT_DIR.glob("*/config.json")):
        config = json.loads(path.read_text())
        if config.get("kind") == "autoencoder":
            table[path.parent.name] = int(config["networks"]["autoencoder"]["config"]["downsample_factor"])
    return table


def _shipped(f: int | None = None) -> str:
    table = shipped_autoencoder_factors()
    if f is not None and f in table.values():
        return f"shipped with f={f}: {[name for name, g in table.items() if g == f]}"
    return "shipped: " + ", ".join(f"{name} (f={g})" for name, g in table.items())


def check_downsample_factor(f: Any, key: str) -> int:
    """f is one of the factors an autoencoder supports (powers of two up to 2^(MAX_LEVELS - 1))."""
    require(isinstance(f, int) and not isinstance(f, bool) and f in DOWNSAMPLE_FACTORS, key,
            f"{f!r} is not a downsampling factor an autoencoder supports; f is a power of two in "
            f"{list(DOWNSAMPLE_FACTORS)} ({_shipped()})")
    return int(f)


def check_checkpoint(value: Any, key: str, family: str | None = None) -> None:
    """`value` names a pipeline checkpoint (a shipped name or a directory) whose config.json reads, of
    `family` when given; a ConfigError naming the key and the shipped checkpoints that would do."""
    def shipped() -> list[str]:
        names = []
        for path in sorted(CHECKPOINT_DIR.glob("*/config.json")):
            if family is None or json.loads(path.read_text()).get("family") == family:
                names.append(path.parent.name)
        return names
    require(isinstance(value, str) and value.strip() != "", key,
            f"expected a checkpoint name or directory, got {type(value).__name__} {value!r}; shipped: {shipped()}")
    try:
        config = load_config(resolve_checkpoint(value))
    except FileNotFoundError:
        raise ConfigError(f"config key '{key}': no checkpoint {value!r} (neither a directory nor a shipped name); "
                          f"shipped{f' {family}' if family else ''} checkpoints: {shipped()}") from None
    except CheckpointError as err:
        raise ConfigError(f"config key '{key}': {err}") from None
    if family is not None:
        require(config.get("family") == family, key, f"checkpoint {value!r} is a {config.get('family') or config.get('kind')!r} "
                                                     f"checkpoint, not {family!r}; shipped {family} checkpoints: {shipped()}")


def check_autoencoder(value: Any, key: str, f: int | None = None, mapping_allowed: bool = True) -> None:
    """`value` names a usable autoencoder: a checkpoint (a shipped name or a directory) holding one,
    or (mapping_allowed) an AutoencoderConfig mapping; with `f`, one that downsamples by f. A
    ConfigError naming `key` (and the field) and what is allowed, before anything is built."""
    what = "a checkpoint name or directory, or an AutoencoderConfig mapping" if mapping_allowed \
        else "the name of an autoencoder checkpoint or its directory"
    if isinstance(value, Mapping) and mapping_allowed:
        _check_autoencoder_config(value, key, f)
        return
    require(isinstance(value, str) and value.strip() != "", key,
            f"expected {what}, got {type(value).__name__} {value!r} ({_shipped(f)})")
    try:
        directory = resolve_checkpoint(value)
        config = load_config(directory)
    except FileNotFoundError:
        raise ConfigError(f"config key '{key}': no autoencoder checkpoint {value!r} (neither a directory nor a "
                          f"shipped name; {_shipped(f)}); give one of those or a directory written by "
                          f"`python -m bench.train` with an autoencoder recipe") from None
    except CheckpointError as err:
        raise ConfigError(f"config key '{key}': {err}") from None
    spec = (config.get("networks") or {}).get("autoencoder") if isinstance(config.get("networks"), Mapping) else None
    require(isinstance(spec, Mapping) and spec.get("type") == "autoencoder", key,
            f"checkpoint {directory} holds no autoencoder (no network 'autoencoder' of type 'autoencoder' in "
            f"its config.json); {_shipped(f)}")
    actual = (spec.get("config") or {}).get("downsample_factor")
    if f is not None:
        require(actual == f, key, f"autoencoder {value!r} downsamples by f={actual}, not f={f}; map f={f} to an "
                                  f"autoencoder with that f ({_shipped(f)}) or leave {f} out of the sweep")


def _check_autoencoder_config(value: Mapping[str, Any], key: str, f: int | None) -> None:
    """An AutoencoderConfig mapping: known keys, values of the right type and range, an f the
    autoencoder supports (and `f` when given), and a size within the memory budget."""
    fields = list(_FIELD_TYPES)
    for name, item in value.items():
        require(name in _FIELD_TYPES, f"{key}.{name}", f"not an autoencoder setting; the settings are {fields}")
        expected = _FIELD_TYPES[name]
        if item is None and name == "channel_mult":
            continue
        if expected is float:
            ok = isinstance(item, (int, float)) and not isinstance(item, bool)
        elif expected is list:
            ok = isinstance(item, (list, tuple)) and all(isinstance(m, int) and not isinstance(m, bool) for m in item)
        elif expected is int:
            ok = isinstance(item, int) and not isinstance(item, bool)
        else:
            ok = isinstance(item, expected)
        require(ok, f"{key}.{name}", f"expected {'a list of ints' if expected is list else expected.__name__}, "
                                     f"got {type(item).__name__} {item!r}")
        if name in _FIELD_CHOICES:
            require(item in _FIELD_CHOICES[name], f"{key}.{name}",
                    f"{item!r} is not allowed; choose one of {list(_FIELD_CHOICES[name])}")
    factor = value.get("downsample_factor", AutoencoderConfig.downsample_factor)
    check_downsample_factor(factor, f"{key}.downsample_factor")
    if f is not None:
        require(factor == f, f"{key}.downsample_factor", f"this autoencoder downsamples by {factor}, not f={f}: an "
                                                         f"autoencoder mapped to f={f} must downsample by {f}")
    try:
        AutoencoderConfig(**dict(value))
    except (ValueError, TypeError) as err:   # the combination (e.g. channel_mult's length for this f)
        raise ConfigError(f"config key '{key}': {err}") from None
    try:   # the bounds and memory budget every checkpoint config gets (models.core.checkpoint)
        check_networks({"networks": {"autoencoder": {"type": "autoencoder", "config": dict(value)}}}, "the autoencoder mapping")
    except CheckpointError as err:
        raise ConfigError(f"config key '{key}': {err}") from None
