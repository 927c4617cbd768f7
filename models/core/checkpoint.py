"""Checkpoints as a directory: `model.safetensors` (weights, no pickle) + `config.json`.

`config.json` says how to rebuild every network: {"family": ..., "networks": {role: {"type":
"unet", "config": {...}}, ...}, ...family-specific keys}. Weights of network `role` are stored
under the key prefix "role.". `build_networks(config)` turns a config into modules (a type
registry, so other families add their own network types with `register_network_type`), and
`load_checkpoint(dir)` returns the config and the loaded modules.

A checkpoint may come from anyone, so nothing in it is trusted before it is checked
(`CheckpointError`, one line naming the file, the key and what to do):
- config.json must be a JSON object whose "networks" entries are {"type", "config"}; the values
  of a network config must be sane (ints in [0, MAX_CONFIG_INT], finite floats);
- every network is first built on the `meta` device (shapes only, no storage, ~10-50 ms), its
  parameter and buffer bytes summed, and the checkpoint refused when they exceed the memory
  budget (`set_memory_budget`, from `hardware.memory_budget_gb`; default half the physical
  RAM): a config.json asking for base_channels=4096 is refused in a second, not killed by the
  kernel after minutes of allocation. A builder's own key check (unknown keys) runs here too;
- model.safetensors must parse (a truncated or garbage file is named) and match the config;
- where the checkpoint records the sha256 of its weight files (`SHA256SUMS` beside them, the
  `sha256sum` format: every shipped checkpoint and adapter, and everything `save_checkpoint` /
  `save_adapter` write), each file is checked against it before use and refused on a mismatch,
  naming the file (a bit flip in a shipped file would otherwise only show as NaN samples). The
  check is cheap: a file verified once is remembered by its stat fingerprint (path, device,
  inode, size, mtime_ns, ctime_ns) in `$DIFFBENCH_CACHE/verified/` and in memory, so it is hashed
  again only when it changes. A user checkpoint without SHA256SUMS loads as before (the run's
  manifest records the sha256 of its weights).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
from safetensors import SafetensorError
from torch.overrides import TorchFunctionMode
from safetensors.torch import load_file, save

from bench.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from bench.paths import default_cache_dir
from bench.weights.formats import file_sha256

log = logging.getLogger(__name__)
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SUMS_FILE = "SHA256SUMS"           # sha256 of the weight files, `sha256sum` format (`sha256sum -c SHA256SUMS`)
VERIFIED_DIR = "verified"          # under $DIFFBENCH_CACHE: files whose sha256 matched, by stat fingerprint
FORMAT = "diffbench-checkpoint/1"

NetworkBuilder = Callable[[Mapping[str, Any]], nn.Module]
_NETWORK_TYPES: dict[str, NetworkBuilder] = {}
# network type -> the module that registers its builder, imported when a config names the type
# (a plugin registry: checkpoints load without the caller importing every network module).
NETWORK_MODULES = {
    "unet": "models.networks.unet",
    "efficient_unet": "models.networks.efficient_unet",
    "dit": "models.networks.dit",
    "autoencoder": "models.networks.autoencoder",
    "reference_clip": "models.networks.reference_clip",
    "class_conditioner": "models.networks.conditioning",
    "text_conditioner": "models.networks.conditioning",
    "text_encoder": "models.networks.text_encoders",
    "unclip_prior": "models.networks.unclip_prior",
    "unclip_decoder_conditioner": "models.networks.unclip_prior",
    "patch_discriminator": "models.networks.discriminator",
}


MAX_CONFIG_INT = 1 << 24           # channels, widths, vocabularies, resolutions: far above any real model
DEFAULT_BUDGET_FRACTION = 0.5      # of physical RAM, when no budget is set
_memory_budget_bytes: int | None = None


class CheckpointError(ValueError):
    """A checkpoint (or an architecture given as pipeline params) that cannot be used as given:
    unreadable or malformed files, insane config values, or networks too large for the memory
    budget. The message names the file (or params), the key or estimate, and what to do."""


def set_memory_budget(gigabytes: float | None) -> None:
    """The most bytes of weights a checkpoint's networks may ask for (None: the default,
    DEFAULT_BUDGET_FRACTION of physical RAM). Set at start-up from `hardware.memory_budget_gb`."""
    global _memory_budget_bytes
    _memory_budget_bytes = None if gigabytes is None else int(gigabytes * 1024 ** 3)


def memory_budget_bytes() -> int:
    if _memory_budget_bytes is not None:
        return _memory_budget_bytes
    return int(DEFAULT_BUDGET_FRACTION * physical_memory_bytes())


def physical_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):   # not POSIX: psutil, else a conservative 8 GiB
        try:
            import psutil   # optional; only where sysconf cannot say
            return int(psutil.virtual_memory().total)
        except ImportError:
            return 8 * 1024 ** 3


def register_network_type(name: str) -> Callable[[NetworkBuilder], NetworkBuilder]:
    def wrap(builder: NetworkBuilder) -> NetworkBuilder:
        _NETWORK_TYPES[name] = builder
        return builder
    return wrap


def build_networks(config: Mapping[str, Any], source: str = "the pipeline params") -> nn.ModuleDict:
    """{role: module} from a checkpoint config's "networks" entry (randomly initialised), after
    checking it (`check_networks`: sane values, a size within the memory budget). `source` names
    where the config came from, for the messages."""
    networks = check_networks(config, source)
    out = nn.ModuleDict()
    for role, spec in networks.items():
        out[role] = _NETWORK_TYPES[spec["type"]](spec.get("config", {}))
    return out


def check_networks(config: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """The "networks" entry of a config, checked without allocating: structure, value bounds,
    the builders' own key checks and the total weight bytes, estimated on the meta device."""
    networks = config.get("networks") if isinstance(config, Mapping) else None
    if not isinstance(networks, Mapping) or not networks:
        raise CheckpointError(f"{source}: no 'networks' mapping {{role: {{type, config}}}}; a checkpoint's "
                              f"{CONFIG_FILE} must describe its networks (see models/core/checkpoint.py)")
    total, sizes = 0, {}
    for role, spec in networks.items():
        where = f"{source}, key networks.{role}"
        if not isinstance(spec, Mapping):
            raise CheckpointError(f"{where}: expected {{\"type\": ..., \"config\": {{...}}}}, got {type(spec).__name__}")
        unknown = set(spec) - {"type", "config"}
        if unknown:
            raise CheckpointError(f"{where}: unknown keys {sorted(unknown)}; allowed: ['config', 'type']")
        kind = spec.get("type")
        if isinstance(kind, str) and kind not in _NETWORK_TYPES and kind in NETWORK_MODULES:
            importlib.import_module(NETWORK_MODULES[kind])
        if kind not in _NETWORK_TYPES:
            raise CheckpointError(f"{where}.type: {kind!r} is not a network type; known: {sorted(NETWORK_MODULES)}")
        net_config = spec.get("config", {})
        if not isinstance(net_config, Mapping):
            raise CheckpointError(f"{where}.config: expected a JSON object, got {type(net_config).__name__}")
        _check_values(net_config, f"{where}.config")
        sizes[role] = _estimated_bytes(kind, net_config, where)
        total += sizes[role]
    budget = memory_budget_bytes()
    if total > budget:
        largest = max(sizes, key=sizes.get)
        raise CheckpointError(
            f"{source}: its networks need about {total / 1024 ** 3:.2f} GiB of float32 weights (largest: "
            f"networks.{largest}, {sizes[largest] / 1024 ** 3:.2f} GiB), above the memory budget of "
            f"{budget / 1024 ** 3:.2f} GiB; check the config's sizes (channels, widths, depths), or raise "
            f"hardware.memory_budget_gb if the machine really has the memory")
    return networks


def _check_values(values: Any, key: str) -> None:
    """Sane bounds for an untrusted network config: ints in [0, MAX_CONFIG_INT], finite floats."""
    if isinstance(values, Mapping):
        for name, value in values.items():
            _check_values(value, f"{key}.{name}")
    elif isinstance(values, (list, tuple)):
        for i, value in enumerate(values):
            _check_values(value, f"{key}[{i}]")
    elif isinstance(values, bool) or values is None or isinstance(values, str):
        return
    elif isinstance(values, int):
        if not 0 <= values <= MAX_CONFIG_INT:
            raise CheckpointError(f"{key}: {values} is outside the sane range [0, {MAX_CONFIG_INT}]; "
                                  "fix the value (sizes and counts are non-negative integers)")
    elif isinstance(values, float):
        if not math.isfinite(values):
            raise CheckpointError(f"{key}: {values} is not a finite number; fix the value")
    else:
        raise CheckpointError(f"{key}: unexpected value of type {type(values).__name__}")


class _SkipRandomInitOnMeta(TorchFunctionMode):
    """Random in-place initialisation of a meta tensor is a no-op (there are no values), but
    torch routes meta `normal_` (and `arange`) through Python decompositions whose first use
    imports torch._dynamo (~3 s); skipping them keeps the estimate at milliseconds."""

    RANDOM_INIT = {torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.random_, torch.Tensor.exponential_,
                   torch.Tensor.bernoulli_, nn.init.normal_, nn.init.uniform_, nn.init.trunc_normal_,
                   nn.init.kaiming_normal_, nn.init.kaiming_uniform_, nn.init.xavier_normal_,
                   nn.init.xavier_uniform_, nn.init.orthogonal_}

    # ranges (positional embeddings, frequency tables) take the same route on meta: made on the
    # CPU (small: their lengths are config ints, bounded) and moved to meta
    VIA_CPU = {torch.arange, torch.linspace, torch.logspace}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.RANDOM_INIT:
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        if func in self.VIA_CPU and kwargs.get("device") is None:
            return func(*args, **{**kwargs, "device": "cpu"}).to("meta")
        return func(*args, **kwargs)


class _KeyRecorder(Mapping):
    """A config mapping that notes which keys a builder reads; a builder that iterates it (e.g.
    `Config.from_dict(dict(config))`) checks the keys itself."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values
        self.read: set[str] = set()
        self.iterated = False

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self._values[key]

    def __iter__(self):
        self.iterated = True
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _estimated_bytes(kind: str, config: Mapping[str, Any], where: str) -> int:
    """Bytes of the network's parameters and buffers, built on the meta device (shapes, no
    storage); the builder's own checks (unknown keys, bad values) surface here, named."""
    state = torch.get_rng_state()   # meta init draws nothing, but a builder may touch the CPU RNG
    recorder = _KeyRecorder(config)
    try:
        with torch.device("meta"), _SkipRandomInitOnMeta():
            net = _NETWORK_TYPES[kind](recorder)
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as err:
        raise CheckpointError(f"{where}: cannot build a {kind!r} network from this config ({err}); "
                              f"fix or remove the offending key") from None
    finally:
        torch.set_rng_state(state)
    unread = sorted(set(config) - recorder.read) if not recorder.iterated else []
    if unread:   # a builder that picks keys one by one would ignore the rest silently
        raise CheckpointError(f"{where}.config: unknown keys {unread} (the {kind!r} network does not read them); "
                              f"remove them, or check their spelling")
    tensors = list(net.parameters()) + list(net.buffers())
    return sum(t.numel() * 4 for t in tensors if t.is_floating_point()) + \
        sum(t.numel() * t.element_size() for t in tensors if not t.is_floating_point())


def state_tensors(networks: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{role}.{key}": value.detach().cpu().contiguous().clone()
            for role, net in networks.items() for key, value in net.state_dict().items()}


WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def save_checkpoint(directory: str | Path, networks: Mapping[str, nn.Module], config: Mapping[str, Any],
                    dtype: str = "float32") -> Path:
    """Write weights and config atomically (config last: its presence marks a complete checkpoint).
    `dtype` stores floating-point tensors narrower (float16 halves a shipped file); loading casts
    them back to the modules' own dtype (`load_state_dict` copies)."""
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"checkpoint weight dtype {dtype!r} is not one of {sorted(WEIGHT_DTYPES)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(WEIGHT_DTYPES[dtype]) if v.is_floating_point() else v for k, v in state_tensors(networks).items()}
    data = save(tensors, metadata={"format": FORMAT, "dtype": dtype})
    atomic_write_bytes(directory / MODEL_FILE, data)
    # the sha256 of the bytes just written, so the export is verified at load like a shipped one
    write_sums(directory, {MODEL_FILE: hashlib.sha256(data).hexdigest()})
    atomic_write_json(directory / CONFIG_FILE, {"format": FORMAT, **config})
    return directory


# -- recorded sha256 of weight files (SHA256SUMS) and their verification at load ---------------------
SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](\S.*)$")


def write_sums(directory: str | Path, sums: Mapping[str, str]) -> Path:
    """Write `directory/SHA256SUMS` ({path relative to directory: sha256}) atomically, in the
    `sha256sum` format, so `cd DIR && sha256sum -c SHA256SUMS` checks it too."""
    path = Path(directory) / SUMS_FILE
    atomic_write_text(path, "".join(f"{sha}  {rel}\n" for rel, sha in sorted(sums.items())))
    return path


def sums_of(directory: str | Path, files: list[str]) -> dict[str, str]:
    """{relative path: sha256} of `files` under `directory` (for write_sums)."""
    return {rel: _hash_file(Path(directory) / rel) for rel in files}


def read_sums(directory: str | Path) -> dict[str, str] | None:
    """{relative path: sha256} from `directory/SHA256SUMS`; None when there is none. A file that is
    not in the `sha256sum` format is a CheckpointError naming it (never ignored: it guards weights)."""
    path = Path(directory) / SUMS_FILE
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checksum file {path} cannot be read ({err}); copy the checkpoint again "
                              f"(or re-export it)") from None
    sums = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        match = SUMS_LINE.match(line)
        if match is None:
            raise CheckpointError(f"checksum file {path}, line {number}: not '<sha256>  <file>' (the sha256sum "
                                  f"format); copy the checkpoint again, or rewrite it: sha256sum FILES > {SUMS_FILE}")
        sums[match.group(2).removeprefix("./")] = match.group(1).lower()
    return sums


def _hash_file(path: Path) -> str:
    return file_sha256(path)


# stat fingerprint -> the sha256 it was verified against, in this process (the disk cache serves others)
_verified: dict[tuple, str] = {}


def _fingerprint(path: Path) -> tuple:
    """What identifies a file's bytes without reading them: any write changes mtime and ctime
    (ctime cannot be set back with utime, so a rewrite that restores mtime is caught too)."""
    stat = os.stat(path)
    return (os.path.realpath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _cache_file(fingerprint: tuple) -> Path:
    name = hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()[:40]
    return default_cache_dir() / VERIFIED_DIR / f"{name}.json"


def verify_weights_file(path: str | Path, root: str | Path | None = None) -> str | None:
    """Check a weight file against the sha256 recorded for it in `root/SHA256SUMS` (root: the
    checkpoint or adapter directory; default the file's folder). Returns the verified sha256, or
    None when none is recorded (a user checkpoint: loads as before). A mismatch is a
    CheckpointError naming the file. Hashes a file once per stat fingerprint: later loads (this
    process: memory; others: $DIFFBENCH_CACHE/verified/) only stat it."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    sums = read_sums(root)
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    expected = None if sums is None else sums.get(rel)
    if expected is None:
        if sums is not None:   # a SHA256SUMS that leaves a weight file out guards nothing: say so
            log.warning("checksum file %s lists no sha256 for %s; it is loaded unverified", root / SUMS_FILE, rel)
        return None
    fingerprint = _fingerprint(path)
    if _verified.get(fingerprint) == expected:
        return expected
    cache = _cache_file(fingerprint)
    try:
        cached = json.loads(cache.read_text())
        if cached.get("fingerprint") == list(fingerprint) and cached.get("sha256") == expected:
            _verified[fingerprint] = expected
            return expected
    except (OSError, ValueError, AttributeError):   # no entry yet, or an unreadable one: hash the file
        pass
    actual = _hash_file(path)
    if actual != expected:
        raise CheckpointError(
            f"checkpoint weights {path} do not match the sha256 recorded in {root / SUMS_FILE} (recorded "
            f"{expected[:16]}..., file {actual[:16]}...): the file is damaged or was changed after export; copy it "
            f"again or re-export it (a shipped checkpoint: restore it with git checkout); if you changed the "
            f"weights on purpose, record them anew: cd {root} && sha256sum {' '.join(sorted(sums))} > {SUMS_FILE}")
    _verified[fingerprint] = expected
    try:   # only a match is remembered; a cache that cannot be written costs a re-hash next time, no more
        atomic_write_json(cache, {"fingerprint": list(fingerprint), "sha256": expected})
    except OSError as err:
        log.debug("cannot remember the verification of %s in %s: %s", path, cache, err)
    return expected


def load_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {directory}: no {CONFIG_FILE}; a checkpoint directory holds "
                                f"{MODEL_FILE} + {CONFIG_FILE} (see models/core/checkpoint.py)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise CheckpointError(f"checkpoint config {path} is not UTF-8 text ({err.reason} at byte {err.start}); "
                              f"replace it with the {CONFIG_FILE} written with the weights") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint config {path} is not valid JSON ({err.msg} at line {err.lineno}, column "
                              f"{err.colno}); replace it with the {CONFIG_FILE} written with the weights") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint config {path}: expected a JSON object, got {type(config).__name__}")
    return config


def read_weights(path: str | Path, root: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a truncated or garbage file is a CheckpointError naming it,
    and so is one whose sha256 differs from the one recorded in `root/SHA256SUMS`
    (`verify_weights_file`; root defaults to the file's folder). The parse comes first, so a
    truncated file is named as such; a file that parses but is damaged (a flipped bit in a weight)
    is caught by the sha256."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint weights {path} are not a readable safetensors file ({err}); the file is "
                              "truncated or corrupt: copy it again or re-export the checkpoint") from None
    verify_weights_file(path, root)
    return tensors


def load_weights(directory: str | Path, networks: Mapping[str, nn.Module]) -> None:
    """Load `model.safetensors` into `networks` strictly, naming missing or unexpected keys."""
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {directory}: no {MODEL_FILE}")
    tensors = read_weights(path)
    for role, net in networks.items():
        prefix = f"{role}."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            missing, unexpected = net.load_state_dict(own, strict=False)
        except RuntimeError as err:   # shape mismatches
            first = str(err).strip().splitlines()[1:2] or [str(err)]
            raise CheckpointError(f"checkpoint {path}, network {role!r}: the weights do not match config.json "
                                  f"({first[0].strip()}); use the config.json written with these weights") from None
        if missing or unexpected:
            raise CheckpointError(f"checkpoint {path}, network {role!r}: missing keys {missing[:5]}, "
                             f"unexpected keys {unexpected[:5]}; the weights do not match config.json")
    extra = sorted({k.split(".", 1)[0] for k in tensors} - set(networks))
    if extra:
        raise CheckpointError(f"checkpoint {path} holds networks {extra} that its config does not describe")


def load_checkpoint(directory: str | Path, *, weights: bool = True) -> tuple[dict[str, Any], nn.ModuleDict]:
    """(config, networks); with weights=False the networks keep their random initialisation."""
    config = load_config(directory)
    networks = build_networks(config, source=f"checkpoint config {Path(directory) / CONFIG_FILE}")
    if weights:
        load_weights(directory, networks)
    return config, networks
