"""CLIP embedders: the project's own tiny reference CLIP ("shapes-clip") and open_clip models,
behind one two-method interface:

    encode_images(uint8 NCHW) -> (N, D) L2-normalised
    encode_texts(list[str])   -> (N, D) L2-normalised

plus `text_encoder` (a `models.networks.text_encoders.TextEncoder` over the same text tower, for the
token sequences unCLIP's prior reads) and `describe()` (provenance for result rows).

`shapes-clip` is a small dual encoder (a CNN image tower and a transformer text tower over a
word tokenizer) trained with CLIP's symmetric InfoNCE loss and a learned temperature
(Radford et al. 2021, sec. 2.3 and Fig. 3) on `shapes` captions. It is the project's own
model: it serves unCLIP's embeddings and the offline alignment metric
(`clip_score[shapes-clip]`), and is never presented as OpenAI/LAION CLIP. With real open_clip
weights, `build_clip_embedder(name, pretrained)` switches both to them.

Training lives in `bench/tools/train_reference_clip.py`.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.core.checkpoint import load_checkpoint, register_network_type
from models.networks.text_encoders import OpenClipTextEncoder, TextEncoder, TrainableTextEncoder, create_open_clip

REFERENCE_CLIP_NAME = "shapes-clip"
REFERENCE_CLIP_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "shapes_clip"


class ImageTower(nn.Module):
    """A small CNN: a 2x2-patch stem (32 px -> 16), then stride-2 stages (-> 8 -> 4); the 4x4 map
    flattened (position survives) and its spatial max (a small object anywhere), layer-normed, -> D. No normalisation inside by default: GroupNorm
    triples the CPU cost of this tower and is not needed at this depth."""

    def __init__(self, resolution: int = 32, channels: Sequence[int] = (32, 64, 64), embed_dim: int = 64,
                 group_norm: bool = False, groups: int = 8) -> None:
        super().__init__()
        self.resolution = resolution

        def norm(c: int) -> nn.Module:
            return nn.GroupNorm(groups, c) if group_norm else nn.Identity()
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 2, stride=2), norm(channels[0]), nn.SiLU()]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), norm(c_out), nn.SiLU(),
                       nn.Conv2d(c_out, c_out, 3, padding=1), norm(c_out), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        side = resolution // 2 ** len(channels)
        if side < 1 or resolution % 2 ** len(channels):
            raise ValueError(f"ImageTower: resolution {resolution} must be divisible by 2^{len(channels)}")
        features = channels[-1] * (side * side + 1)
        self.norm = nn.LayerNorm(features)
        self.projection = nn.Linear(features, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.features(images)
        return self.projection(self.norm(torch.cat([h.flatten(1), h.amax(dim=(2, 3))], dim=1)))


class ReferenceClip(nn.Module):
    """Image tower + text tower + learned temperature (log of the logit scale, CLIP init 1/0.07)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        image, text = dict(config["image"]), dict(config["text"])
        self.embed_dim = int(config["embed_dim"])
        self.image_tower = ImageTower(embed_dim=self.embed_dim, **image)
        self.text_tower = TrainableTextEncoder(pooled_dim=self.embed_dim, **text)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def resolution(self) -> int:
        return self.image_tower.resolution

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 255] float) NCHW at any size -> [-1, 1] at the tower's resolution
        (area averaging when shrinking, which is how `shapes` renders its small views)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be NCHW with 3 channels, got shape {tuple(images.shape)}")
        x = images.to(device=self.log_logit_scale.device, dtype=torch.float32) / 127.5 - 1.0
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            shrink = x.shape[-1] > self.resolution
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="area" if shrink else "bilinear",
                              align_corners=None if shrink else False)
        return x

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_tower(self.prepare_images(images)), dim=-1)

    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.text_tower.encode(prompts).pooled, dim=-1)

    def loss(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Symmetric InfoNCE (Radford et al. 2021, Fig. 3): cross-entropy over image->text and
        text->image logits, scaled by exp(t) with t learned and capped at log(100)."""
        img, txt = self.image_embeddings(images), self.text_embeddings(prompts)
        logits = self.log_logit_scale.clamp(max=math.log(100.0)).exp() * img @ txt.T
        target = torch.arange(len(prompts), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@register_network_type("reference_clip")
def _build_reference_clip(config: Mapping[str, Any]) -> nn.Module:
    return ReferenceClip(config)


# --------------------------------------------------------------------------- embedders
class ClipEmbedder:
    """The two-method interface shared by the reference CLIP and open_clip models."""

    name: str
    embed_dim: int
    text_encoder: TextEncoder

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def encode_texts(self, prompts: Sequence[str]) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"clip_model": self.name}


class ReferenceClipEmbedder(ClipEmbedder):
    def __init__(self, model: ReferenceClip, name: str = REFERENCE_CLIP_NAME, sha256: str | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.name, self.sha256 = name, sha256
        self.embed_dim = model.embed_dim
        self.text_encoder = model.text_tower

    @property
    def device(self) -> torch.device:
        return self.model.log_logit_scale.device

    def to(self, device: str | torch.device) -> "ReferenceClipEmbedder":
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.image_embeddings(images)

    @torch.no_grad()
    def encode_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.model.text_embeddings(list(prompts))

    def describe(self) -> dict[str, Any]:
        return {"clip_model": self.name, "clip_weights_sha256": self.sha256,
                "clip_note": "project-trained on shapes captions (models/networks/reference_clip.py); not OpenAI/LAION CLIP"}


class OpenClipEmbedder(ClipEmbedder):
    """An open_clip model with its own preprocessing: resize (shortest side, bicubic, antialiased)
    and centre crop to the model's input size, then its mean/std normalisation."""

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = None, device: str | torch.device = "cpu",
                 model: nn.Module | None = None) -> None:
        self.model = (model if model is not None else create_open_clip(model_name, pretrained, device)).eval()
        self.name = model_name if pretrained is None else f"{model_name}/{pretrained}"
        self.pretrained = pretrained
        self.text_encoder = OpenClipTextEncoder(model_name, pretrained, model=self.model)
        self.embed_dim = self.text_encoder.pooled_dim
        cfg = getattr(self.model.visual, "preprocess_cfg", {})
        size = cfg.get("size", getattr(self.model.visual, "image_size", 224))
        self.size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))).view(1, 3, 1, 1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "OpenClipEmbedder":
        self.model.to(device)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be NCHW with 3 channels, got shape {tuple(images.shape)}")
        x = images.to(self.device, torch.float32) / 255.0
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        new = (max(self.size, round(h * scale)), max(self.size, round(w * scale)))
        if new != (h, w):
            x = F.interpolate(x, size=new, mode="bicubic", align_corners=False, antialias=True)
        top, left = (new[0] - self.size) // 2, (new[1] - self.size) // 2
        x = x[..., top:top + self.size, left:left + self.size]
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(self.preprocess(images), normalize=True).float()

    @torch.no_grad()
    def encode_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.text_encoder.encode(list(prompts)).pooled.float(), dim=-1)

    def describe(self) -> dict[str, Any]:
        return {"clip_model": self.name, "clip_pretrained": self.pretrained}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_reference_clip(device: str | torch.device = "cpu", checkpoint: str | Path | None = None) -> ReferenceClipEmbedder:
    """The shipped shapes-clip (models/checkpoints/shapes_clip), or another checkpoint directory."""
    directory = Path(checkpoint) if checkpoint is not None else REFERENCE_CLIP_DIR
    if not (directory / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"reference CLIP checkpoint not found at {directory}; remake it with "
            f"`python -m bench.tools.train_reference_clip --out {directory}` (see {REFERENCE_CLIP_DIR / 'README.md'})")
    config, networks = load_checkpoint(directory)
    return ReferenceClipEmbedder(networks["clip"], sha256=file_sha256(directory / "model.safetensors")).to(device)


def build_clip_embedder(name: str = REFERENCE_CLIP_NAME, pretrained: str | None = None,
                        device: str | torch.device = "cpu", checkpoint: str | Path | None = None) -> ClipEmbedder:
    """"shapes-clip" -> the project's reference CLIP; any other name -> an open_clip model
    (pretrained: a tag such as "laion2b_s34b_b79k" or a weights file)."""
    if name == REFERENCE_CLIP_NAME:
        return load_reference_clip(device, checkpoint)
    return OpenClipEmbedder(name, pretrained, device)
