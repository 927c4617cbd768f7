"""Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

A latent (C, H, W) is cut into p x p patches (p in {2, 4, 8}), linearly embedded, given fixed
2-D sin-cos position embeddings, and run through transformer blocks conditioned on the
timestep t and the class label c. The paper's four block designs (sec. 3.2, Fig. 3) are here:

- `adaln_zero` (the paper's choice): adaptive LayerNorm whose scale/shift *and* residual
  gates alpha are regressed from t + c embeddings; the regressing MLP is zero-initialised, so
  every block starts as the identity map;
- `adaln`: the same without gates and without zero-initialisation;
- `cross_attention`: [t, c] embeddings as a length-2 sequence, an extra cross-attention layer
  after self-attention;
- `in_context`: t and c embeddings appended as two tokens, plain ViT blocks.

The output layer predicts noise and, with `learn_sigma`, a diagonal covariance (2C channels,
Nichol & Dhariwal's interpolation, as in the paper). Class label c < 0 (or y=None) is the null
label used for classifier-free guidance. Presets `DiT-{S,B,L,XL}/{2,4,8}` have the paper's
widths, depths and heads (Table 1); `tiny` is for CPU tests and shipped checkpoints.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models.core.checkpoint import register_network_type

BLOCKS = ("adaln_zero", "adaln", "cross_attention", "in_context")
PATCH_SIZES = (2, 4, 8)


@dataclass
class DiTConfig:
    input_size: int = 8                 # latent H = W
    in_channels: int = 4
    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int | None = None      # None: unconditional (t only); index num_classes = null label
    learn_sigma: bool = True
    block: str = "adaln_zero"

    def __post_init__(self) -> None:
        if self.patch_size not in PATCH_SIZES:
            raise ValueError(f"DiT patch_size must be one of {PATCH_SIZES}, got {self.patch_size}")
        if self.input_size % self.patch_size:
            raise ValueError(f"DiT input_size {self.input_size} is not divisible by patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"DiT hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.block not in BLOCKS:
            raise ValueError(f"DiT block {self.block!r} is not one of {BLOCKS}")

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DiTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown DiT config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Table 1 of the paper: (hidden size, depth, heads). Names as the paper: DiT-XL/2 etc.
DIT_SIZES: dict[str, tuple[int, int, int]] = {
    "S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16),
}
DIT_PRESETS: dict[str, dict[str, Any]] = {
    f"DiT-{size}/{p}": dict(hidden_size=h, depth=d, num_heads=heads, patch_size=p)
    for size, (h, d, heads) in DIT_SIZES.items() for p in PATCH_SIZES
}
DIT_PRESETS["tiny"] = dict(hidden_size=96, depth=4, num_heads=4, patch_size=2)


def dit_config(preset: str | None = None, **overrides: Any) -> DiTConfig:
    """A preset with any field overridden, e.g. dit_config("DiT-XL/2", input_size=32, num_classes=1000)."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in DIT_PRESETS:
            raise ValueError(f"DiT preset {preset!r} is unknown; choose one of {sorted(DIT_PRESETS)}")
        values.update(DIT_PRESETS[preset])
    values.update(overrides)
    return DiTConfig.from_dict(values)


# ----------------------------------------------------------------------------- embeddings

def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (MAE / DiT): half the channels per axis. (grid^2, dim)."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a hidden size divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    coords = torch.arange(grid, dtype=torch.float64)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")

    def axis(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)
    return torch.cat([axis(gx), axis(gy)], dim=1).float()


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of (continuous) t, then a 2-layer MLP (DiT's `TimestepEmbedder`)."""

    def __init__(self, hidden: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, context: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.is_cross = context

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        k, v = self.kv(x if context is None else context).chunk(2, dim=-1)
        split = lambda t: t.reshape(b, -1, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(self.q(x)), split(k), split(v))
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def mlp(dim: int, ratio: float) -> nn.Sequential:
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class DiTBlock(nn.Module):
    """One transformer block in any of the four designs; `cond` is the (B, D) t + c embedding,
    `tokens` the (B, 2, D) [t, c] sequence for cross-attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, block: str) -> None:
        super().__init__()
        self.block = block
        adaptive = block in ("adaln_zero", "adaln")
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=not adaptive, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=not adaptive, eps=1e-6)
        self.mlp = mlp(dim, mlp_ratio)
        self.cross = None
        if block == "cross_attention":
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
            self.cross = Attention(dim, heads, context=True)
        self.modulation = None
        if adaptive:  # shift, scale (and gate for adaLN-Zero) for attention and MLP
            chunks = 6 if block == "adaln_zero" else 4
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, chunks * dim))
            if block == "adaln_zero":  # gates alpha = 0: the block starts as the identity (sec. 3.2)
                nn.init.zeros_(self.modulation[-1].weight)
                nn.init.zeros_(self.modulation[-1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        if self.modulation is None:
            x = x + self.attn(self.norm1(x))
            if self.cross is not None:
                x = x + self.cross(self.norm_cross(x), tokens)
            return x + self.mlp(self.norm2(x))
        params = self.modulation(cond).chunk(6 if self.block == "adaln_zero" else 4, dim=1)
        if self.block == "adaln_zero":
            shift1, scale1, gate1, shift2, scale2, gate2 = params
            x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
            return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))
        shift1, scale1, shift2, scale2 = params
        x = x + self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """LayerNorm (adaptively modulated for the adaLN designs) + linear to p*p*out channels."""

    def __init__(self, dim: int, patch: int, out_channels: int, adaptive: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=not adaptive, eps=1e-6)
        self.linear = nn.Linear(dim, patch * patch * out_channels)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim)) if adaptive else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.modulation is not None:
            shift, scale = self.modulation(cond).chunk(2, dim=1)
            x = modulate(x, shift, scale)
        return self.linear(x)


# ----------------------------------------------------------------------------- the model

class DiT(nn.Module):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = cfg = config
        dim, p = cfg.hidden_size, cfg.patch_size
        self.patch_embed = nn.Conv2d(cfg.in_channels, dim, p, stride=p)
        self.register_buffer("pos_embed", sincos_pos_embed(dim, cfg.input_size // p)[None], persistent=False)
        self.t_embed = TimestepEmbedder(dim)
        self.y_embed = None if cfg.num_classes is None else nn.Embedding(cfg.num_classes + 1, dim)
        self.blocks = nn.ModuleList([DiTBlock(dim, cfg.num_heads, cfg.mlp_ratio, cfg.block) for _ in range(cfg.depth)])
        self.final = FinalLayer(dim, p, cfg.out_channels, adaptive=cfg.block in ("adaln_zero", "adaln"))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's initialisation: xavier-uniform linears, patch embedding as a linear, N(0, 0.02)
        label and timestep embeddings; zero adaLN-Zero modulation and zero output layer."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        if self.y_embed is not None:
            nn.init.normal_(self.y_embed.weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        if self.config.block == "adaln_zero":
            for block in self.blocks:
                nn.init.zeros_(block.modulation[-1].weight)
                nn.init.zeros_(block.modulation[-1].bias)
        if self.final.modulation is not None:
            nn.init.zeros_(self.final.modulation[-1].weight)
            nn.init.zeros_(self.final.modulation[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def embed_label(self, y: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor | None:
        if self.y_embed is None:
            if y is not None:
                raise ValueError("this DiT is unconditional (num_classes=None) but was given labels y")
            return None
        null = self.config.num_classes
        labels = torch.full((batch,), null, device=device, dtype=torch.long) if y is None else y.long().to(device)
        return self.y_embed(torch.where(labels < 0, torch.full_like(labels, null), labels))

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        b, p, c = tokens.shape[0], self.config.patch_size, self.config.out_channels
        g = self.config.input_size // p
        x = tokens.reshape(b, g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(b, c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W) noisy latents; t: (B,) or scalar (continuous) timestep; y: (B,) labels.
        Returns (B, C or 2C, H, W): the noise prediction (and the variance interpolation)."""
        cfg = self.config
        b = x.shape[0]
        if x.shape[1:] != (cfg.in_channels, cfg.input_size, cfg.input_size):
            raise ValueError(f"DiT expects inputs (B, {cfg.in_channels}, {cfg.input_size}, {cfg.input_size}), "
                             f"got {tuple(x.shape)}")
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed.to(x.dtype)
        t_emb = self.t_embed(torch.as_tensor(t, device=x.device).float().expand(b))
        y_emb = self.embed_label(y, b, x.device)
        cond = t_emb if y_emb is None else t_emb + y_emb
        extra = torch.stack([t_emb] + ([] if y_emb is None else [y_emb]), dim=1)  # (B, 1 or 2, D)
        if cfg.block == "in_context":
            tokens = torch.cat([tokens, extra], dim=1)
        for block in self.blocks:
            tokens = block(tokens, cond, extra)
        tokens = tokens[:, : cfg.num_patches]
        return self.unpatchify(self.final(tokens, cond))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def forward_flops(model: nn.Module, input_shape: tuple[int, ...], **kwargs: Any) -> int:
    """FLOPs of one forward pass on a batch of one, as counted by torch.utils.flop_counter
    (2 per multiply-add; matmuls, convolutions and attention). Works on the meta device."""
    param = next(model.parameters())
    x = torch.zeros((1, *input_shape), device=param.device, dtype=param.dtype)
    t = torch.zeros(1, device=param.device)
    if getattr(getattr(model, "config", None), "num_classes", None) is not None and "y" not in kwargs:
        kwargs["y"] = torch.zeros(1, dtype=torch.long, device=param.device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, **kwargs)
    return int(counter.get_total_flops())


def gflops(model: nn.Module, input_shape: tuple[int, ...], **kwargs: Any) -> float:
    """Gflops per forward pass (one image) in the DiT paper's convention, which counts a
    multiply-add as one operation (fvcore): DiT-XL/2 on 32x32x4 latents gives 118.6 (Table 4).
    That is half of `forward_flops`."""
    return forward_flops(model, input_shape, **kwargs) / 2e9


@register_network_type("dit")
def build_dit(config: dict[str, Any]) -> DiT:
    return DiT(DiTConfig.from_dict(dict(config)))
