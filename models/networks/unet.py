"""The denoiser UNet (DDPM / ADM lineage, with LDM's spatial transformer for cross-attention).

- Residual blocks with GroupNorm and the timestep embedding injected as a scale-shift of the
  second norm (ADM "adaptive group norm", Dhariwal & Nichol 2021 sec. 3), sinusoidal timestep
  features + MLP (Ho et al. 2020 / Transformer positional encoding).
- Self-attention at chosen resolutions; with `context_dim` set, those blocks are LDM spatial
  transformers (Rombach et al. 2022 sec. 3.3): self-attention, cross-attention to a (B, L, D)
  context sequence, GEGLU feed-forward.
- Class-label embedding with a null label (index num_classes) for classifier-free guidance;
  labels < 0 or `y=None` mean "null".
- An optional extra (B, extra_embed_dim) vector added to the timestep embedding (e.g. the
  noise-augmentation level of a super-resolution stage, a CLIP image embedding).
- An optional conditioning image concatenated to the input channels (super-resolution).
- An optional space-to-depth stem (`patch_size` > 1, pixel-unshuffle in / pixel-shuffle out,
  as in Hoogeboom et al. 2023, "simple diffusion", sec. 3.3) so the UNet runs at a lower
  resolution; `attention_resolutions` name feature-map sizes after the stem.
Presets live in `UNET_PRESETS`: tiny ones for CPU tests, paper-scale ones for reference.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.core.checkpoint import register_network_type


@dataclass
class UNetConfig:
    resolution: int = 32
    in_channels: int = 3
    out_channels: int = 3
    cond_channels: int = 0                     # channels of a concatenated conditioning image
    patch_size: int = 1                        # space-to-depth stem: the UNet runs at resolution / patch_size
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (8,)
    num_heads: int = 4
    norm_groups: int = 8
    dropout: float = 0.0
    num_classes: int | None = None             # class conditioning; index num_classes is the null label
    context_dim: int | None = None             # cross-attention to a (B, L, context_dim) sequence
    transformer_depth: int = 1
    extra_embed_dim: int | None = None         # extra vector added to the timestep embedding
    learn_sigma: bool = False                  # output 2x out_channels (Nichol & Dhariwal)

    def __post_init__(self) -> None:
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        downsample = self.patch_size * 2 ** (len(self.channel_mults) - 1)
        if self.resolution % downsample:
            raise ValueError(f"UNet resolution {self.resolution} is not divisible by patch_size * 2^(levels-1) "
                             f"= {downsample}")
        for mult in self.channel_mults:
            if (self.base_channels * mult) % self.norm_groups:
                raise ValueError(f"UNet channels {self.base_channels * mult} are not divisible by "
                                 f"norm_groups={self.norm_groups}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "UNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown UNet config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["channel_mults"] = list(self.channel_mults)
        out["attention_resolutions"] = list(self.attention_resolutions)
        return out


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (continuous) timesteps, (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, channels: int, out_channels: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head (self- or cross-) attention over token sequences (B, N, C)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        k, v = self.kv(x if context is None else context).chunk(2, dim=-1)
        split = lambda t: t.reshape(b, -1, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        h = F.scaled_dot_product_attention(split(self.q(x)), split(k), split(v))
        return self.out(h.transpose(1, 2).reshape(b, n, c))


class SelfAttentionBlock(nn.Module):
    """ADM attention block: GroupNorm, multi-head self-attention over pixels, zero-init residual."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.attn = Attention(channels, heads)
        zero_module(self.attn.out)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        return x + self.attn(tokens).transpose(1, 2).reshape(b, c, h, w)


class GEGLU(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * mult * dim)
        self.out = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return self.out(a * F.gelu(gate))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads, context_dim)
        self.ff = GEGLU(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x))
        if context is not None:       # without a context (e.g. a dropped prompt path) skip cross-attention
            x = x + self.cross_attn(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """LDM spatial transformer: norm, 1x1 in, `depth` transformer blocks, zero-init 1x1 out, residual."""

    def __init__(self, channels: int, heads: int, groups: int, context_dim: int, depth: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.blocks = nn.ModuleList([TransformerBlock(channels, heads, context_dim) for _ in range(depth)])
        self.proj_out = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).reshape(b, c, h * w).transpose(1, 2)
        for block in self.blocks:
            tokens = block(tokens, context)
        return x + self.proj_out(tokens.transpose(1, 2).reshape(b, c, h, w))


class Level(nn.Module):
    """A residual block, optionally followed by attention (both take emb / context)."""

    def __init__(self, res: ResBlock, attn: nn.Module | None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x, context)


class UNet(nn.Module):
    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        ch, groups, emb_dim = cfg.base_channels, cfg.norm_groups, 4 * cfg.base_channels
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_embed = None if cfg.num_classes is None else nn.Embedding(cfg.num_classes + 1, emb_dim)
        self.extra_embed = None if cfg.extra_embed_dim is None else nn.Sequential(
            nn.Linear(cfg.extra_embed_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def attention(channels: int, resolution: int) -> nn.Module | None:
            if resolution not in cfg.attention_resolutions:
                return None
            if cfg.context_dim is None:
                return SelfAttentionBlock(channels, cfg.num_heads, groups)
            return SpatialTransformer(channels, cfg.num_heads, groups, cfg.context_dim, cfg.transformer_depth)

        patch = cfg.patch_size
        self.input_conv = nn.Conv2d((cfg.in_channels + cfg.cond_channels) * patch ** 2, ch, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_channels, channels, resolution = [ch], ch, cfg.resolution // patch
        for level, mult in enumerate(cfg.channel_mults):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(Level(ResBlock(channels, ch * mult, emb_dim, groups, cfg.dropout),
                                    attention(ch * mult, resolution)))
                channels = ch * mult
                skip_channels.append(channels)
            self.down.append(blocks)
            last = level == len(cfg.channel_mults) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(channels, channels, 3, stride=2, padding=1))
            if not last:
                skip_channels.append(channels)
                resolution //= 2
        self.middle = nn.ModuleList([
            Level(ResBlock(channels, channels, emb_dim, groups, cfg.dropout),
                  SelfAttentionBlock(channels, cfg.num_heads, groups) if cfg.context_dim is None else
                  SpatialTransformer(channels, cfg.num_heads, groups, cfg.context_dim, cfg.transformer_depth)),
            Level(ResBlock(channels, channels, emb_dim, groups, cfg.dropout), None),
        ])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(Level(ResBlock(channels + skip_channels.pop(), ch * mult, emb_dim, groups, cfg.dropout),
                                    attention(ch * mult, resolution)))
                channels = ch * mult
            self.up.append(blocks)
            self.upsample.append(nn.Identity() if level == 0 else nn.Conv2d(channels, channels, 3, padding=1))
            if level:
                resolution *= 2
        out_channels = cfg.out_channels * (2 if cfg.learn_sigma else 1) * patch ** 2
        self.out = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                 zero_module(nn.Conv2d(channels, out_channels, 3, padding=1)))

    def embed(self, t: torch.Tensor, y: torch.Tensor | None, extra: torch.Tensor | None, batch: int) -> torch.Tensor:
        t = torch.as_tensor(t, device=self.input_conv.weight.device).float().expand(batch)
        emb = self.time_embed(timestep_embedding(t, self.config.base_channels).to(self.input_conv.weight.dtype))
        if self.label_embed is not None:
            null = self.config.num_classes
            labels = torch.full((batch,), null, device=emb.device, dtype=torch.long) if y is None else y.long()
            emb = emb + self.label_embed(torch.where(labels < 0, torch.full_like(labels, null), labels))
        elif y is not None:
            raise ValueError("this UNet has no class conditioning (num_classes=None) but was given labels y")
        if self.extra_embed is not None:
            if extra is None:
                raise ValueError(f"this UNet needs an extra embedding of size {self.config.extra_embed_dim}")
            emb = emb + self.extra_embed(extra.to(emb.dtype))
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                context: torch.Tensor | None = None, extra: torch.Tensor | None = None,
                cond_image: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W) noisy input; t: (B,) or scalar timestep; y: (B,) labels; context:
        (B, L, context_dim); extra: (B, extra_embed_dim); cond_image: (B, cond_channels, H, W)."""
        if self.config.cond_channels:
            if cond_image is None or cond_image.shape[1] != self.config.cond_channels:
                raise ValueError(f"this UNet needs cond_image with {self.config.cond_channels} channels")
            x = torch.cat([x, cond_image.to(x.dtype)], dim=1)
        emb = self.embed(t, y, extra, x.shape[0])
        h = self.input_conv(F.pixel_unshuffle(x, self.config.patch_size) if self.config.patch_size > 1 else x)
        skips = [h]
        for blocks, down in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, emb, context)
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        for block in self.middle:
            h = block(h, emb, context)
        for blocks, up in zip(self.up, self.upsample):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.out(h)
        return F.pixel_shuffle(h, self.config.patch_size) if self.config.patch_size > 1 else h


UNET_PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized: ~1M parameters at 32 px.
    "tiny": dict(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attention_resolutions=(8,),
                 num_heads=4, norm_groups=8),
    # Ho et al. 2020, CIFAR-10 (35.7M): 128 ch, (1, 2, 2, 2), 2 blocks, attention at 16 px, dropout 0.1.
    "ddpm_cifar10": dict(resolution=32, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                         attention_resolutions=(16,), num_heads=1, norm_groups=32, dropout=0.1),
    # Dhariwal & Nichol 2021, ImageNet 64 (ADM): 192 ch, (1, 2, 3, 4), 3 blocks, attention 32/16/8,
    # learned variance, class-conditional (ADM uses 64-channel heads; here a fixed 4 heads).
    "adm_imagenet64": dict(resolution=64, base_channels=192, channel_mults=(1, 2, 3, 4), num_res_blocks=3,
                           attention_resolutions=(32, 16, 8), num_heads=4, norm_groups=32, dropout=0.1,
                           num_classes=1000, learn_sigma=True),
    # Rombach et al. 2022, LDM-4 text-to-image: 320 ch, (1, 2, 4, 4), 2 blocks, transformers at
    # latent 32/16/8 with cross-attention to a 1280-d context, 8 heads, on 4-channel 32x32 latents.
    "ldm_txt2img": dict(resolution=32, in_channels=4, out_channels=4, base_channels=320, channel_mults=(1, 2, 4, 4),
                        num_res_blocks=2, attention_resolutions=(32, 16, 8), num_heads=8, norm_groups=32,
                        context_dim=1280, transformer_depth=1),
}


def unet_config(preset: str | None = None, **overrides: Any) -> UNetConfig:
    """A preset, with any field overridden (e.g. unet_config("tiny", resolution=16, num_classes=4))."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in UNET_PRESETS:
            raise ValueError(f"UNet preset {preset!r} is unknown; choose one of {sorted(UNET_PRESETS)}")
        values.update(UNET_PRESETS[preset])
    values.update(overrides)
    return UNetConfig.from_dict(values)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@register_network_type("unet")
def _build_unet(config: Mapping[str, Any]) -> nn.Module:
    return UNet(UNetConfig.from_dict(dict(config)))
