"""unCLIP's own networks (Ramesh et al. 2022): the diffusion prior over CLIP image embeddings
and the decoder's conditioner that turns an image embedding into context tokens."""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn as nn

from models.core.checkpoint import register_network_type
from models.networks.unet import timestep_embedding


class DiffusionPrior(nn.Module):
    """x0-predicting transformer prior over CLIP image embeddings (Ramesh et al. sec. 2.1)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        d, width = int(config["embed_dim"]), int(config["width"])
        self.embed_dim, self.width = d, width
        self.text_proj = nn.Linear(int(config["text_dim"]), width)
        self.text_embed_proj = nn.Linear(d, width)
        self.image_proj = nn.Linear(d, width)
        self.time_embed = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.query = nn.Parameter(torch.randn(width) / math.sqrt(width))
        self.positions = nn.Parameter(torch.randn(int(config["text_length"]) + 4, width) / math.sqrt(width))
        layer = nn.TransformerEncoderLayer(width, int(config["heads"]), 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, int(config["layers"]), enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, d))

    def forward(self, x: torch.Tensor, t: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
                text_embed: torch.Tensor) -> torch.Tensor:
        """x: (B, D) noised scaled image embedding; t: (B,) timesteps; text_tokens (B, L, text_dim)
        with mask (B, L); text_embed (B, D) -> predicted clean scaled image embedding (B, D)."""
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device).float().expand(b)
        sequence = torch.cat([
            self.text_proj(text_tokens.to(x.dtype)),
            self.text_embed_proj(text_embed.to(x.dtype))[:, None],
            self.time_embed(timestep_embedding(t, self.width).to(x.dtype))[:, None],
            self.image_proj(x)[:, None],
            self.query.to(x.dtype).expand(b, 1, -1),
        ], dim=1) + self.positions.to(x.dtype)
        keep = torch.cat([text_mask.bool(), torch.ones(b, 4, dtype=torch.bool, device=x.device)], dim=1)
        return self.out(self.transformer(sequence, src_key_padding_mask=~keep)[:, -1])


class DecoderConditioner(nn.Module):
    """z_i -> `image_tokens` context tokens (+ the CLIP text tokens) and the UNet's extra vector."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)
        self.image_tokens, self.context_dim = int(config["image_tokens"]), int(config["context_dim"])
        self.use_text = bool(config.get("use_text", True))
        self.to_tokens = nn.Linear(int(config["embed_dim"]), self.image_tokens * self.context_dim)
        self.text_proj = nn.Linear(int(config["text_dim"]), self.context_dim) if self.use_text else None

    def forward(self, image_embed: torch.Tensor, text_tokens: torch.Tensor | None) -> torch.Tensor:
        tokens = self.to_tokens(image_embed).reshape(image_embed.shape[0], self.image_tokens, self.context_dim)
        if self.text_proj is None:
            return tokens
        return torch.cat([tokens, self.text_proj(text_tokens.to(tokens.dtype))], dim=1)


@register_network_type("unclip_prior")
def _build_prior(config: Mapping[str, Any]) -> nn.Module:
    return DiffusionPrior(config)


@register_network_type("unclip_decoder_conditioner")
def _build_decoder_conditioner(config: Mapping[str, Any]) -> nn.Module:
    return DecoderConditioner(config)
