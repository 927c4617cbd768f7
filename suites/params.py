"""Typed `suite.params`: each suite declares its parameters as a dataclass (`Params` in its module),
and `parse_params` turns the composed `suite.params` mapping into one at start-up, before anything
runs. Unknown keys, wrong types and values out of range fail there, as a ConfigError naming the key
(`suite.params.<name>`) and what is allowed.

The schema in `bench.config` keeps `suite.params` a free mapping: which dataclass applies depends on
`suite.name`, so OmegaConf checks it here, after composition, with the same rules as the rest.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Mapping, Optional, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from bench.data.config import ConfigError, require
from models.core.interface import STAGE_SETTINGS

P = TypeVar("P", bound="SuiteParams")


@dataclass
class SuiteParams:
    """What every suite's Params is. `BEYOND_PIPELINES` names params for work beyond the listed
    pipelines (smoke's autoencoder reconstruction): `pipeline=X` on the command line, which runs
    the suite on X alone, drops them too (bench.app.narrow_to_chosen_pipeline)."""
    BEYOND_PIPELINES: ClassVar[tuple[str, ...]] = ()


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
