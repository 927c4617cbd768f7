"""Conditioning encoders tau_theta of latent diffusion (Rombach et al. 2022, sec. 3.3).

tau_theta maps a condition y to a (B, L, D) sequence the denoiser cross-attends to:
- `ClassConditioner`: a learned embedding per class plus a null class for classifier-free
  guidance, as a length-1 sequence (LDM's `ClassEmbedder`); label -1 is the null label.
- `TextConditioner`: a thin adapter over `models.networks.text_encoders` (a trainable tokenizer +
  transformer for offline use, or a frozen pretrained encoder): the token states are the
  sequence; the empty prompt is the null condition.

`pair(ctx_inputs)` returns the conditional and null contexts in one call, padded to one length,
so classifier-free guidance can batch them (models.sampling.guidance).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from models.core.checkpoint import register_network_type
from models.networks.text_encoders import build_text_encoder

NULL_LABEL = -1
NULL_PROMPT = ""


class ClassConditioner(nn.Module):
    kind = "class"

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"class conditioner needs num_classes >= 1, got {num_classes}")
        self.num_classes, self.dim = int(num_classes), int(dim)
        self.embedding = nn.Embedding(num_classes + 1, dim)   # index num_classes: the null class
        nn.init.normal_(self.embedding.weight, std=1.0)

    def config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "dim": self.dim}

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """(B,) int labels, -1 = null -> (B, 1, dim)."""
        labels = labels.long().to(self.embedding.weight.device)
        if bool((labels >= self.num_classes).any()) or bool((labels < NULL_LABEL).any()):
            raise ValueError(f"class labels must be in [0, {self.num_classes}) or -1 (null), got "
                             f"{sorted(set(labels.tolist()))[:8]}")
        index = torch.where(labels < 0, torch.full_like(labels, self.num_classes), labels)
        return self.embedding(index)[:, None]

    def null_like(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.full_like(labels, NULL_LABEL)

    def pair(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(labels), self(self.null_like(labels))


class TextConditioner(nn.Module):
    """Prompts -> token states of a text encoder from `models.networks.text_encoders` (built from a spec)."""
    kind = "text"

    def __init__(self, encoder: Mapping[str, Any]) -> None:
        super().__init__()
        self.spec = dict(encoder)
        self.encoder = build_text_encoder(self.spec)
        self.dim = int(self.encoder.dim)

    def config(self) -> dict[str, Any]:
        return {"encoder": self.spec}

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.encoder.encode(list(prompts)).sequence

    def null_like(self, prompts: Sequence[str]) -> list[str]:
        return [NULL_PROMPT] * len(prompts)

    def pair(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        both = self(list(prompts) + self.null_like(prompts))  # one call: one padded length
        return both[: len(prompts)], both[len(prompts):]


@register_network_type("class_conditioner")
def build_class_conditioner(config: Mapping[str, Any]) -> ClassConditioner:
    return ClassConditioner(int(config["num_classes"]), int(config["dim"]))


@register_network_type("text_conditioner")
def build_text_conditioner(config: Mapping[str, Any]) -> TextConditioner:
    return TextConditioner(config["encoder"])


def conditioner_spec(conditioner: ClassConditioner | TextConditioner) -> dict[str, Any]:
    kind = "class_conditioner" if isinstance(conditioner, ClassConditioner) else "text_conditioner"
    return {"type": kind, "config": conditioner.config()}


def drop_conditions(conditioner: ClassConditioner | TextConditioner, values: Any, p: float,
                    generator: torch.Generator | None = None) -> Any:
    """Replace each condition by the null one with probability p (condition dropout for CFG,
    Ho & Salimans 2022)."""
    if p <= 0:
        return values
    n = len(values)
    drop = torch.rand(n, generator=generator) < p
    if isinstance(conditioner, ClassConditioner):
        values = torch.as_tensor(values).clone()
        values[drop.to(values.device)] = NULL_LABEL
        return values
    return [NULL_PROMPT if d else v for v, d in zip(values, drop.tolist())]
