"""Imagen's Efficient U-Net (Saharia et al. 2022, Appendix B.1, Fig. A.28-A.30), built from the
shared UNet's blocks (`models.networks.unet`: ResBlock, attention, SpatialTransformer, timestep
features) with its three changes as config switches, so each can be measured on its own:

- `blocks_per_level`: residual blocks per level; Imagen shifts parameters and compute from
  high to low resolution by using more blocks there, e.g. (1, 2, 4) instead of (2, 2, 2).
- `scale_skips`: skip connections are multiplied by 1/sqrt(2) before being concatenated.
- `efficient_updown`: downsampling happens *before* the convolutions of a down block and
  upsampling *after* those of an up block, so the blocks of level i run at R / 2^(i+1)
  instead of R / 2^i (only the input and output convolutions see the full resolution).

With all switches off this is a plain UNet (one skip per level, Imagen's DBlock / UBlock
layout). Same call signature as `models.networks.unet.UNet`:
forward(x, t, y=None, context=None, extra=None, cond_image=None). Text-only: no class labels.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from models.core.checkpoint import register_network_type
from models.networks.unet import (
    Level,
    ResBlock,
    SelfAttentionBlock,
    SpatialTransformer,
    timestep_embedding,
    zero_module,
)

SKIP_SCALE = 1 / math.sqrt(2)


@dataclass
class EfficientUNetConfig:
    resolution: int = 32
    in_channels: int = 3
    out_channels: int = 3
    cond_channels: int = 0                     # channels of a concatenated conditioning image (super-resolution)
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    blocks_per_level: tuple[int, ...] = (2, 2, 2)
    attention_resolutions: tuple[int, ...] = (8,)   # working resolutions of levels that attend
    num_heads: int = 4
    norm_groups: int = 8
    dropout: float = 0.0
    context_dim: int | None = None             # cross-attention to a (B, L, context_dim) sequence
    transformer_depth: int = 1
    extra_embed_dim: int | None = None         # extra vector added to the timestep embedding
    scale_skips: bool = False
    efficient_updown: bool = False

    def __post_init__(self) -> None:
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        self.blocks_per_level = tuple(int(b) for b in self.blocks_per_level)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        if len(self.blocks_per_level) != len(self.channel_mults):
            raise ValueError(f"EfficientUNet: blocks_per_level {self.blocks_per_level} needs one entry per level "
                             f"of channel_mults {self.channel_mults}")
        if min(self.blocks_per_level) < 1:
            raise ValueError(f"EfficientUNet: every level needs >= 1 block, got {self.blocks_per_level}")
        if self.resolution % 2 ** self.downsamplings:
            raise ValueError(f"EfficientUNet: resolution {self.resolution} is not divisible by 2^{self.downsamplings}")
        for mult in (1, *self.channel_mults):
            if (self.base_channels * mult) % self.norm_groups:
                raise ValueError(f"EfficientUNet: channels {self.base_channels * mult} not divisible by "
                                 f"norm_groups={self.norm_groups}")

    @property
    def downsamplings(self) -> int:
        return len(self.channel_mults) - (0 if self.efficient_updown else 1)

    def level_resolution(self, level: int) -> int:
        return self.resolution // 2 ** (level + (1 if self.efficient_updown else 0))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EfficientUNetConfig":
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown EfficientUNet config keys {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("channel_mults", "blocks_per_level", "attention_resolutions"):
            out[key] = list(out[key])
        return out


class EfficientUNet(nn.Module):
    def __init__(self, config: EfficientUNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        ch, groups, emb_dim = cfg.base_channels, cfg.norm_groups, 4 * cfg.base_channels
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.extra_embed = None if cfg.extra_embed_dim is None else nn.Sequential(
            nn.Linear(cfg.extra_embed_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.skip_scale = SKIP_SCALE if cfg.scale_skips else 1.0

        def attention(channels: int, resolution: int, always: bool = False) -> nn.Module | None:
            if not always and resolution not in cfg.attention_resolutions:
                return None
            if cfg.context_dim is None:
                return SelfAttentionBlock(channels, cfg.num_heads, groups)
            return SpatialTransformer(channels, cfg.num_heads, groups, cfg.context_dim, cfg.transformer_depth)

        def blocks(c_in: int, c_out: int, count: int, resolution: int) -> nn.ModuleList:
            return nn.ModuleList([Level(ResBlock(c_in if k == 0 else c_out, c_out, emb_dim, groups, cfg.dropout),
                                        attention(c_out, resolution) if k == count - 1 else None)
                                  for k in range(count)])

        widths = [ch * m for m in cfg.channel_mults]
        last = len(widths) - 1
        self.input_conv = nn.Conv2d(cfg.in_channels + cfg.cond_channels, ch, 3, padding=1)
        self.down_blocks, self.downsamplers = nn.ModuleList(), nn.ModuleList()
        previous = ch
        for level, (width, count) in enumerate(zip(widths, cfg.blocks_per_level)):
            res = cfg.level_resolution(level)
            if cfg.efficient_updown:       # DBlock: stride-2 conv first, then the blocks at low resolution
                self.downsamplers.append(nn.Conv2d(previous, previous, 3, stride=2, padding=1))
            else:                          # classic: the blocks, then a stride-2 conv (none after the last)
                self.downsamplers.append(nn.Identity() if level == last else nn.Conv2d(width, width, 3, stride=2, padding=1))
            self.down_blocks.append(blocks(previous, width, count, res))
            previous = width
        bottom = cfg.level_resolution(last)
        self.middle = nn.ModuleList([
            Level(ResBlock(previous, previous, emb_dim, groups, cfg.dropout), attention(previous, bottom, always=True)),
            Level(ResBlock(previous, previous, emb_dim, groups, cfg.dropout), None),
        ])
        self.up_blocks, self.upsamplers = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(widths))):
            width, res = widths[level], cfg.level_resolution(level)
            self.up_blocks.append(blocks(previous + width, width, cfg.blocks_per_level[level], res))
            has_up = cfg.efficient_updown or level != last
            self.upsamplers.append(nn.Conv2d(width if cfg.efficient_updown else previous,
                                             width if cfg.efficient_updown else previous, 3, padding=1)
                                   if has_up else nn.Identity())
            previous = width
        self.out = nn.Sequential(nn.GroupNorm(groups, previous + ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(previous + ch, cfg.out_channels, 3, padding=1)))

    def embed(self, t: torch.Tensor, extra: torch.Tensor | None, batch: int) -> torch.Tensor:
        t = torch.as_tensor(t, device=self.input_conv.weight.device).float().expand(batch)
        emb = self.time_embed(timestep_embedding(t, self.config.base_channels).to(self.input_conv.weight.dtype))
        if self.extra_embed is not None:
            if extra is None:
                raise ValueError(f"this EfficientUNet needs an extra embedding of size {self.config.extra_embed_dim}")
            emb = emb + self.extra_embed(extra.to(emb.dtype))
        return emb

    @staticmethod
    def _up(h: torch.Tensor, conv: nn.Module) -> torch.Tensor:
        return conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                context: torch.Tensor | None = None, extra: torch.Tensor | None = None,
                cond_image: torch.Tensor | None = None) -> torch.Tensor:
        if y is not None:
            raise ValueError("EfficientUNet is text-conditioned (context / extra); it takes no class labels y")
        if self.config.cond_channels:
            if cond_image is None or cond_image.shape[1] != self.config.cond_channels:
                raise ValueError(f"this EfficientUNet needs cond_image with {self.config.cond_channels} channels")
            x = torch.cat([x, cond_image.to(x.dtype)], dim=1)
        emb = self.embed(t, extra, x.shape[0])
        h = first = self.input_conv(x)
        efficient, skips = self.config.efficient_updown, []
        for blocks, down in zip(self.down_blocks, self.downsamplers):
            if efficient:
                h = down(h)
            for block in blocks:
                h = block(h, emb, context)
            skips.append(h)
            if not efficient and not isinstance(down, nn.Identity):
                h = down(h)
        for block in self.middle:
            h = block(h, emb, context)
        for blocks, up in zip(self.up_blocks, self.upsamplers):
            if not efficient and not isinstance(up, nn.Identity):
                h = self._up(h, up)
            h = torch.cat([h, skips.pop() * self.skip_scale], dim=1)
            for block in blocks:
                h = block(h, emb, context)
            if efficient:
                h = self._up(h, up)
        return self.out(torch.cat([h, first * self.skip_scale], dim=1))


# The switches one at a time and together, for the speed/parameter table (see models/families/imagen.py).
EFFICIENT_SWITCHES: dict[str, dict[str, Any]] = {
    "baseline": dict(blocks_per_level=(2, 2, 2), scale_skips=False, efficient_updown=False),
    "more_blocks_low_res": dict(blocks_per_level=(1, 2, 4), scale_skips=False, efficient_updown=False),
    "scaled_skips": dict(blocks_per_level=(2, 2, 2), scale_skips=True, efficient_updown=False),
    "efficient_updown": dict(blocks_per_level=(2, 2, 2), scale_skips=False, efficient_updown=True),
    "efficient_unet": dict(blocks_per_level=(1, 2, 4), scale_skips=True, efficient_updown=True),
}


def efficient_unet_config(switches: str | None = None, **overrides: Any) -> EfficientUNetConfig:
    values: dict[str, Any] = {}
    if switches is not None:
        if switches not in EFFICIENT_SWITCHES:
            raise ValueError(f"EfficientUNet switch set {switches!r} is unknown; choose one of {sorted(EFFICIENT_SWITCHES)}")
        values.update(EFFICIENT_SWITCHES[switches])
    values.update(overrides)
    return EfficientUNetConfig.from_dict(values)


@register_network_type("efficient_unet")
def _build_efficient_unet(config: dict[str, Any]) -> nn.Module:
    return EfficientUNet(EfficientUNetConfig.from_dict(dict(config)))


def switch_table(resolution: int = 32, batch: int = 16, rounds: int = 5, threads: int = 1,
                 **overrides: Any) -> list[dict[str, Any]]:
    """(switch set, parameters, GFLOPs per image, images/s) for every EFFICIENT_SWITCHES entry, on one
    text-conditioned UNet config (MiniLM-sized context). Forward passes under no_grad; the switch sets
    are timed round-robin (`rounds` times each, median kept) so that a change in machine load hits
    them all alike."""

    torch.set_num_threads(threads)
    values = {**dict(resolution=resolution, base_channels=32, channel_mults=(1, 2, 2), context_dim=384,
                     extra_embed_dim=384, attention_resolutions=(8,)), **overrides}
    dim = values["context_dim"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, resolution, resolution, generator=gen)
    kwargs = dict(context=torch.randn(batch, 20, dim, generator=gen),
                  extra=torch.randn(batch, values["extra_embed_dim"], generator=gen))
    t = torch.full((batch,), 500.0)
    nets, rows = {}, {}
    for name in EFFICIENT_SWITCHES:
        torch.manual_seed(0)
        net = nets[name] = EfficientUNet(efficient_unet_config(name, **values)).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(x[:1], t[:1], context=kwargs["context"][:1], extra=kwargs["extra"][:1])
        rows[name] = {"switch": name, **{k: v for k, v in EFFICIENT_SWITCHES[name].items()},
                      "params": sum(p.numel() for p in net.parameters()),
                      "gflops_per_image": counter.get_total_flops() / 1e9, "seconds": []}
    with torch.no_grad():
        for net in nets.values():                      # warm-up
            net(x, t, **kwargs)
        for _ in range(rounds):
            for name, net in nets.items():
                start = time.perf_counter()
                net(x, t, **kwargs)
                rows[name]["seconds"].append(time.perf_counter() - start)
    for row in rows.values():
        row["images_per_s"] = batch / statistics.median(row.pop("seconds"))
    return list(rows.values())


if __name__ == "__main__":   # python -m models.networks.efficient_unet: the switch table (Markdown)
    table = switch_table()
    print("| switch | blocks_per_level | scale_skips | efficient_updown | params | GFLOPs/image | images/s |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['switch']} | {tuple(r['blocks_per_level'])} | {r['scale_skips']} | {r['efficient_updown']} | "
              f"{r['params']:,} | {r['gflops_per_image']:.3f} | {r['images_per_s']:.1f} |")
