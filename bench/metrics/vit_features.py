"""DINOv2 and CLIP image embeddings as feature extractors (the spaces of
bench.metrics.feature_spaces beside Inception), built from the genuine architecture code of kept
libraries and fed exactly as torch-fidelity 0.4.0 feeds them.

Preprocessing (torch-fidelity 0.4.0, `feature_extractor_dinov2.py` / `feature_extractor_clip.py`):
uint8 NCHW -> float32 -> TF1-compatible bilinear resize (no antialiasing) to the network's input
size (224 for DINOv2, the tower's resolution for CLIP; `bench.metrics.inception.resize_tf1`,
bit-exact with torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x`) -> (x - 255 mean) /
(255 std) per channel (ImageNet statistics for DINOv2, OpenAI's for CLIP) -> the network in float32.
dgm-eval (Stein et al. 2023) resizes with torchvision's bicubic transform instead (README,
"Which metric"), so its numbers differ slightly from these.

Networks:
  DINOv2  timm's `VisionTransformer` (the architecture of timm's `vit_*_patch14_dinov2`: patch 14,
          LayerScale, SwiGLU for ViT-g), output the CLS token after the final norm (DINOv2's
          `x_norm_clstoken`, what torch hub's `dinov2_vit*14` returns). The checkpoint's 37x37
          position embedding (518 px) is interpolated once to the 16x16 grid of 224 px input with
          DINOv2's own formula (`dinov2_pos_embed`), so the features equal those of the
          facebookresearch code that torch-fidelity loads. Reads the facebookresearch layout
          (torch hub's `dinov2_vit*14_pretrain.pth`), timm's and transformers' (both converted).
  CLIP    open_clip's `build_model_from_openai_state_dict` (QuickGELU, OpenAI's fp16 rounding of the
          weights, as torch-fidelity's `build_model`), image tower only, output its projected
          embedding (not normalised; CMMD normalises its own copy, bench.metrics.cmmd). Reads
          OpenAI's TorchScript files, torch-fidelity's copies of them, and open_clip's state dicts.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.metrics import feature_spaces
from bench.metrics.feature_spaces import FeatureSpace
from bench.metrics.inception import resize_tf1
from bench.metrics.registry import INCEPTION_POOL
from bench.weights import ResolvedWeights, load_state_dict, resolve

EMBEDDING = "embedding"    # the key of the extractor's output (MetricSet maps it to the pool-features input)
DINOV2_HEAD_DIM = 64       # every DINOv2 and OpenAI CLIP ViT uses 64-d attention heads


class FeatureSpaceError(RuntimeError):
    """Weights that do not fit the feature space's network."""


# --------------------------------------------------------------------------- DINOv2
def dinov2_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """The class + patch position embedding for a grid x grid input, as DINOv2's
    `DinoVisionTransformer.interpolate_pos_encoding` makes it at every forward (Oquab et al. 2023,
    facebookresearch/dinov2 models/vision_transformer.py): bicubic, no antialiasing, scale factor
    (grid + 0.1) / M (the offset of facebookresearch/dino issue 8), in float32."""
    n = pos_embed.shape[1] - 1
    m = int(math.sqrt(n))
    if m * m != n:
        raise FeatureSpaceError(f"DINOv2 position embedding of {n} patches is not a square grid")
    if n == grid * grid:
        return pos_embed
    dim = pos_embed.shape[-1]
    original = pos_embed.dtype
    pos = pos_embed.float()
    scale = (grid + 0.1) / math.sqrt(n)
    patch = F.interpolate(pos[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2), scale_factor=(scale, scale),
                          mode="bicubic")
    if patch.shape[-2:] != (grid, grid):
        raise FeatureSpaceError(f"DINOv2 position embedding: interpolation gave {tuple(patch.shape[-2:])}, not {grid}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((pos[:, :1], patch), dim=1).to(original)


def _from_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' Dinov2Model keys (a `facebook/dinov2-*` folder) -> the facebookresearch layout."""
    state = {k.removeprefix("dinov2."): v for k, v in state.items()}
    out = {"cls_token": state["embeddings.cls_token"], "pos_embed": state["embeddings.position_embeddings"],
           "patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": state["layernorm.weight"], "norm.bias": state["layernorm.bias"]}
    if "embeddings.mask_token" in state:
        out["mask_token"] = state["embeddings.mask_token"].reshape(1, -1)
    # the files on the Hub name the attention projections query/key/value + output.dense; transformers
    # 5 holds them as q_proj/k_proj/v_proj/o_proj in memory (and saves them so)
    names = {"norm1": "norm1", "norm2": "norm2", "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.weights_in": "mlp.w12", "mlp.weights_out": "mlp.w3"}
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    for i in layers:
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            qkv = [f"{src}attention.attention.{name}.{part}" for name in ("query", "key", "value")]
            if qkv[0] not in state:
                qkv = [f"{src}attention.{name}.{part}" for name in ("q_proj", "k_proj", "v_proj")]
            out[f"{dst}attn.qkv.{part}"] = torch.cat([state[key] for key in qkv])
            for old, new in names.items():
                if f"{src}{old}.{part}" in state:
                    out[f"{dst}{new}.{part}"] = state[f"{src}{old}.{part}"]
        for j in (1, 2):
            if f"{src}layer_scale{j}.lambda1" in state:
                out[f"{dst}ls{j}.gamma"] = state[f"{src}layer_scale{j}.lambda1"]
    return out


def build_dinov2_network(state: dict[str, torch.Tensor], input_size: int = 224) -> nn.Module:
    """timm's VisionTransformer in DINOv2's configuration, sized from the checkpoint, loaded strictly."""
    from timm.layers import SwiGLUPacked
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
    state = dict(state)
    if any(k.startswith(("embeddings.", "dinov2.embeddings.")) for k in state):
        state = _from_transformers(state)
    if "cls_token" not in state or "patch_embed.proj.weight" not in state:
        raise FeatureSpaceError("not a DINOv2 checkpoint: no cls_token / patch_embed.proj.weight (expected the "
                                "facebookresearch layout of dinov2_vit*14_pretrain.pth, timm's or transformers')")
    dim = state["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    patch = state["patch_embed.proj.weight"].shape[-1]
    swiglu = "blocks.0.mlp.w12.weight" in state
    hidden = state["blocks.0.mlp.w12.weight" if swiglu else "blocks.0.mlp.fc1.weight"].shape[0]
    if not swiglu and state["blocks.0.mlp.fc2.weight"].shape[1] * 2 == hidden:
        swiglu = True    # timm's layout of ViT-g: the packed SwiGLU is called fc1/fc2
    kwargs: dict[str, Any] = dict(
        img_size=input_size, patch_size=patch, embed_dim=dim, depth=depth,
        num_heads=max(1, dim // DINOV2_HEAD_DIM), mlp_ratio=(hidden + 0.5) / dim,   # timm takes int(dim * ratio)
        init_values=1e-5 if "blocks.0.ls1.gamma" in state else None,   # LayerScale present (values loaded below)
        num_classes=0, global_pool="token")
    if swiglu:
        kwargs.update(mlp_layer=SwiGLUPacked, act_layer=nn.SiLU)
    model = VisionTransformer(**kwargs)
    state["pos_embed"] = dinov2_pos_embed(state["pos_embed"], input_size // patch)
    state = checkpoint_filter_fn(state, model)   # facebookresearch -> timm names (w12/w3, mask_token dropped)
    model.load_state_dict(state, strict=True)
    return model.requires_grad_(False).eval()


# --------------------------------------------------------------------------- CLIP
def clip_state_dict(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    """OpenAI's TorchScript archive (as open_clip and torch-fidelity read it) or a state dict."""
    if fmt == "torchscript":
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    return dict(load_state_dict(path))


def build_clip_network(state: dict[str, torch.Tensor]) -> nn.Module:
    """open_clip's CLIP from an OpenAI-layout state dict (QuickGELU); its image tower in float32."""
    from open_clip.model import build_model_from_openai_state_dict
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "visual.proj" not in state:
        raise FeatureSpaceError("not an OpenAI-layout CLIP ViT checkpoint (no visual.proj); give OpenAI's "
                                "<model>.pt or open_clip's open_clip_model.safetensors of the 'openai' weights")
    model = build_model_from_openai_state_dict(state, quick_gelu=True, cast_dtype=None)
    return model.visual.float().requires_grad_(False).eval()


# --------------------------------------------------------------------------- extractor
@dataclass
class VitExtractor:
    """uint8 NCHW images -> {"embedding": (N, D) float32 CPU}: one feature space's embedding."""
    space: FeatureSpace
    network: nn.Module
    weights: ResolvedWeights
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64
    input_size: int = 0          # 0: the space's
    pool_key = EMBEDDING         # what the reference statistics read as "pool features"
    outputs = {INCEPTION_POOL: EMBEDDING}   # MetricSet: the metrics' pool-features input is the embedding
    has_logits = False
    resize_mode = "tf1"

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.network = self.network.to(self.device)
        self.input_size = self.input_size or self.space.input_size
        self._mean = torch.tensor([255 * m for m in self.space.mean], dtype=torch.float32, device=self.device)
        self._std = torch.tensor([255 * s for s in self.space.std], dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            probe = torch.zeros(1, 3, self.input_size, self.input_size, device=self.device)
            self.dims = int(self.network(probe).shape[-1])

    @property
    def name(self) -> str:
        return self.space.name

    def describe(self) -> dict:
        library = "timm" if self.space.family == "dinov2" else "open_clip"
        return {"feature_extractor": self.space.name, "feature_space": self.space.name,
                "architecture": f"{self.space.architecture} ({library})", "resize_mode": self.resize_mode,
                "input_size": self.input_size, "preprocessing": self.space.reference,
                "weights": self.weights.describe()}

    def cache_key(self) -> dict:
        """What determines the features (reference-statistics caches are per space and weights)."""
        return {"extractor": self.space.name, "weights_sha256": self.weights.sha256, "resize_mode": self.resize_mode,
                "input_size": self.input_size}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.name} features need uint8 NCHW RGB images, got {images.dtype} "
                             f"{tuple(images.shape)}")
        parts = []
        for chunk in images.split(self.batch_size):
            x = resize_tf1(chunk.to(self.device, non_blocking=True), self.input_size)
            # torchvision.transforms.functional.normalize's arithmetic (sub, then div), as torch-fidelity
            x = x.sub_(self._mean.view(1, 3, 1, 1)).div_(self._std.view(1, 3, 1, 1))
            parts.append(self.network(x).float().cpu())
        return {EMBEDDING: torch.cat(parts) if parts else torch.empty(0, self.dims)}


_BUILT: dict[tuple, VitExtractor] = {}   # loaded once per process (a sweep builds a MetricSet per point)


def _build(name: str, make: Any, *, device: str | torch.device, batch_size: int,
           weights_path: str | None) -> VitExtractor:
    space = feature_spaces.spec(name)
    weights = resolve(space.weights, weights_path)
    key = (name, str(device), batch_size, str(weights.path), weights.sha256)
    if key not in _BUILT:
        network, input_size = make(weights, space)
        _BUILT[key] = VitExtractor(space, network, weights, torch.device(device), batch_size, input_size)
    return _BUILT[key]


def build_dinov2(name: str, *, device: str | torch.device = "cpu", batch_size: int = 64,
                 weights_path: str | None = None) -> VitExtractor:
    # torch-fidelity feeds every DINOv2 224 px (its INPUT_IMAGE_SIZE)
    return _build(name, lambda w, space: (build_dinov2_network(load_state_dict(w.path), space.input_size),
                                          space.input_size),
                  device=device, batch_size=batch_size, weights_path=weights_path)


def build_clip(name: str, *, device: str | torch.device = "cpu", batch_size: int = 64,
               weights_path: str | None = None) -> VitExtractor:
    def make(w: ResolvedWeights, space: FeatureSpace) -> tuple[nn.Module, int]:
        network = build_clip_network(clip_state_dict(w.path, w.format))
        return network, clip_input_size(network)    # the tower's resolution, as torch-fidelity reads it
    return _build(name, make, device=device, batch_size=batch_size, weights_path=weights_path)


def clip_input_size(network: nn.Module) -> int:
    size = network.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)
