"""CLIP score (Hessel et al. 2021, without their w=2.5 rescaling, as torchmetrics and most
text-to-image papers report it): 100 * max(cos(image embedding, prompt embedding), 0) per
image-prompt pair, then the mean with a 95% CI.

Everything goes through an *embedder* with two methods,
    encode_images(uint8 NCHW) -> (N, D)      encode_texts(list[str]) -> (N, D)
and `describe()` (provenance for the row). Two kinds:
  - an open_clip model with weights found by the resolver (`open_clip:<model>:<tag>`);
    the row is `clip_score[<model>/<tag>]`;
  - the project's own reference CLIP trained on shapes captions (`models.networks.reference_clip`),
    the offline default, under the distinct name `clip_score[shapes-clip]`: it is never
    presented as OpenAI/LAION CLIP.
"""
from __future__ import annotations

import os
from typing import Any, Protocol, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from bench.metrics.base import BatchInputs, ComputeContext, Metric, Resources
from bench.metrics.summary import RunningMean
from bench.results import MetricValue
from bench.weights import resolve

REFERENCE_CLIP = "shapes-clip"


class ClipUnavailableError(RuntimeError):
    """The requested CLIP model cannot be built here; the message says what to do instead."""


class Embedder(Protocol):
    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...
    def encode_texts(self, prompts: Sequence[str]) -> torch.Tensor: ...
    def describe(self) -> dict[str, Any]: ...


class OpenClipEmbedder:
    """An open_clip model with its preprocessing done on tensors: resize the shortest side to the
    model's input size (bicubic, antialiased; torchvision's uint8 path follows PIL), centre crop,
    mean/std normalisation from the model's preprocess config."""

    def __init__(self, model: torch.nn.Module, model_name: str, pretrained: str | None,
                 weights: dict[str, Any] | None = None, device: str | torch.device = "cpu") -> None:
        import open_clip  # here, not at the top: a heavy import only CLIP-score runs need
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.model_name, self.pretrained, self.weights = model_name, pretrained, weights
        self.tokenizer = open_clip.get_tokenizer(model_name)
        cfg = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", getattr(self.model.visual, "image_size", 224))
        self.size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1).to(self.device)
        self.std = torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1).to(self.device)

    @property
    def name(self) -> str:
        return f"{self.model_name}/{self.pretrained or 'random-init'}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = TF.resize(images, self.size, interpolation=InterpolationMode.BICUBIC, antialias=True)
        x = TF.center_crop(x, [self.size, self.size])
        return ((x.to(self.device).float() / 255.0) - self.mean) / self.std

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(self.preprocess(images)).float()

    @torch.inference_mode()
    def encode_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(list(prompts)).to(self.device)).float()

    def describe(self) -> dict[str, Any]:
        return {"clip_model": self.model_name, "clip_pretrained": self.pretrained, "weights": self.weights}


def open_clip_embedder(model_name: str, pretrained: str, device: str | torch.device = "cpu") -> OpenClipEmbedder:
    """An open_clip model with pretrained weights found by the resolver (tag or file path)."""
    import open_clip  # (as above)
    if model_name not in open_clip.list_models():
        raise ClipUnavailableError(f"metrics.clip_model={model_name!r} is not an open_clip model; choose one of "
                                   f"open_clip.list_models() (e.g. ViT-B-32) or {REFERENCE_CLIP!r}")
    if os.path.isfile(pretrained):
        weights = resolve(f"open_clip:{model_name}:{os.path.basename(pretrained)}", pretrained)
        tag = os.path.basename(pretrained)
    else:
        weights = resolve(f"open_clip:{model_name}:{pretrained}")
        tag = pretrained
    model = open_clip.create_model(model_name, pretrained=str(weights.path), device=device)
    return OpenClipEmbedder(model, model_name, tag, weights.describe(), device)


def reference_clip_embedder(device: str | torch.device = "cpu") -> Any:
    try:
        from models.networks.reference_clip import load_reference_clip
    except ImportError as err:
        raise ClipUnavailableError(
            f"metrics.clip_model={REFERENCE_CLIP!r} needs the project's reference CLIP "
            f"(models/networks/reference_clip.py, load_reference_clip), which is not available: {err}. Use an open_clip "
            "model with weights instead (metrics.clip_model=ViT-B-32 metrics.clip_pretrained=<tag or file>)") from err
    return load_reference_clip(device)


def build_embedder(model_name: str, pretrained: str | None, device: str | torch.device = "cpu") -> Any:
    if model_name == REFERENCE_CLIP:
        return reference_clip_embedder(device)
    if not pretrained:
        raise ClipUnavailableError(
            f"metrics.clip_model={model_name!r} needs metrics.clip_pretrained (an open_clip tag such as "
            f"laion2b_s34b_b79k, or a checkpoint file): a CLIP score from random weights means nothing")
    return open_clip_embedder(model_name, pretrained, device)


def clip_metric_name(embedder: Any) -> str:
    if isinstance(embedder, OpenClipEmbedder):
        return f"clip_score[{embedder.name}]"
    return f"clip_score[{getattr(embedder, 'name', REFERENCE_CLIP)}]"


class ClipScore:
    """Streaming CLIP score over (image, prompt) pairs."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.scores = RunningMean()

    def update(self, images: torch.Tensor, prompts: Sequence[str] | None) -> None:
        if prompts is None:
            raise ValueError("clip_score needs a prompt per image, but the batch has none (the pipeline is not "
                             "text-conditioned); drop clip_score from metrics.names for it")
        if len(prompts) != len(images):
            raise ValueError(f"clip_score: {len(images)} images but {len(prompts)} prompts")
        with torch.inference_mode():
            image_emb = F.normalize(self.embedder.encode_images(images).float(), dim=-1)
            text_emb = F.normalize(self.embedder.encode_texts(list(prompts)).float(), dim=-1)
        cosine = (image_emb * text_emb.to(image_emb.device)).sum(dim=-1)
        self.scores.update(100.0 * cosine.clamp(min=0.0))

    def state(self) -> dict[str, Any]:
        return self.scores.state()

    def merge(self, state: dict[str, Any]) -> None:
        self.scores.merge(state)

    def compute(self) -> MetricValue:
        low, high = self.scores.ci95()
        low = max(low, 0.0)       # per-image scores are >= 0, so is their mean: the normal CI is cut at 0
        details = {**self.embedder.describe(), "ci_kind": "95% normal CI of the mean, cut at 0"}
        if not details.get("weights") and getattr(self.embedder, "sha256", None):
            details["weights"] = {"name": getattr(self.embedder, "name", REFERENCE_CLIP), "sha256": self.embedder.sha256}
        return MetricValue(clip_metric_name(self.embedder), self.scores.mean, n=self.scores.n,
                           ci_low=low, ci_high=high, details=details)


class ClipScoreMetric(Metric):
    """CLIP score of each generated image against its prompt, with the CLIP model of
    metrics.clip_model / metrics.clip_pretrained (or a ready embedder)."""

    def __init__(self, cfg: Any, resources: Resources) -> None:
        super().__init__(cfg, resources)
        embedder = resources.clip_embedder
        self.score = ClipScore(embedder if embedder is not None else
                               build_embedder(cfg.clip_model, cfg.clip_pretrained, resources.device))

    def update(self, inputs: BatchInputs) -> None:
        self.score.update(inputs.images, inputs.prompts)

    def state(self) -> dict[str, Any]:
        return self.score.state()

    def merge(self, state: dict[str, Any]) -> None:
        self.score.merge(state)

    def compute(self, context: ComputeContext) -> list[MetricValue]:
        return [self.score.compute()]
