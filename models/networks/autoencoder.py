"""First-stage autoencoders of latent diffusion (Rombach et al. 2022, sec. 3 and appendix G).

One encoder/decoder pair (ResBlocks + optional mid self-attention, the LDM `Encoder`/`Decoder`
layout) with a downsampling factor f = 2^m, m in 0..5, and c latent channels, regularised
either way the paper compares:

- KL-reg: the encoder outputs the mean and log-variance of a diagonal Gaussian posterior; a
  small KL weight pulls it towards N(0, I).
- VQ-reg: a codebook of |Z| vectors (van den Oord et al. 2017). As in LDM the diffusion model
  works on the *pre-quantisation* latents and the quantiser is "absorbed into the decoder":
  `decode` quantises first.

`encode(x)` returns latents multiplied by `scale_factor`, computed from data so the latents
have unit variance (LDM sec. 4.3.2 / appendix G) and stored with the checkpoint config;
`decode(z)` undoes the scale. Images are float NCHW in [-1, 1].
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from models.networks.autoencoder_regularizers import DiagonalGaussian, VectorQuantizer
from models.core.checkpoint import (CONFIG_FILE, MODEL_FILE, check_networks, load_config, read_weights,
                                   register_network_type, save_checkpoint)
from models.core.registry import resolve_checkpoint

REGULARIZERS = ("kl", "vq")
CODEBOOK_UPDATES = ("ema", "straight_through")
MAX_LEVELS = 6  # f up to 2^5 = 32
DEFAULT_CHANNEL_MULT = (1, 2, 2, 4, 4, 4)


@dataclass
class AutoencoderConfig:
    regularizer: str = "kl"                 # kl | vq
    downsample_factor: int = 4              # f = 2^m, m in 0..5
    latent_channels: int = 4                # c
    in_channels: int = 3
    base_channels: int = 32
    channel_mult: tuple[int, ...] | None = None   # m + 1 entries; default DEFAULT_CHANNEL_MULT[:m + 1]
    num_res_blocks: int = 1
    mid_attention: bool = True
    dropout: float = 0.0
    # KL-reg only: initial bias of the posterior's log-variance channels. LDM starts at ~0 (std 1),
    # which swamps fresh latents (std ~0.3) with noise; short CPU runs then learn a constant image
    # (measured: ae_kl_f4 at 0 and LPIPS weight 1 stayed at L1 0.65). A negative value starts narrow.
    logvar_init: float = 0.0
    # VQ-reg only
    codebook_size: int = 256                # |Z|
    commitment_beta: float = 0.25           # beta of the commitment loss (VQ-VAE eq. 3)
    codebook_update: str = "ema"            # ema (VQ-VAE appendix A.1) | straight_through (codebook loss)
    ema_decay: float = 0.99
    # set from data after training (see `compute_scale_factor`)
    scale_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"autoencoder regularizer {self.regularizer!r} is not one of {REGULARIZERS}")
        f = self.downsample_factor
        if f < 1 or f & (f - 1) or f > 2 ** (MAX_LEVELS - 1):
            raise ValueError(f"autoencoder downsample_factor must be 2^m with m in 0..{MAX_LEVELS - 1} "
                             f"(1, 2, 4, ..., {2 ** (MAX_LEVELS - 1)}), got {f}")
        if self.channel_mult is None:
            self.channel_mult = DEFAULT_CHANNEL_MULT[: self.levels]
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if len(self.channel_mult) != self.levels:
            raise ValueError(f"autoencoder channel_mult {self.channel_mult} needs log2(f) + 1 = {self.levels} "
                             f"entries for downsample_factor {f}; drop it to use the default")
        if self.latent_channels < 1:
            raise ValueError(f"autoencoder latent_channels must be >= 1, got {self.latent_channels}")
        if self.codebook_update not in CODEBOOK_UPDATES:
            raise ValueError(f"autoencoder codebook_update {self.codebook_update!r} is not one of {CODEBOOK_UPDATES}")
        if self.scale_factor <= 0:
            raise ValueError(f"autoencoder scale_factor must be > 0, got {self.scale_factor}")

    @property
    def levels(self) -> int:
        return int(math.log2(self.downsample_factor)) + 1

    @classmethod
    def from_dict(cls, data: dict) -> "AutoencoderConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"autoencoder config has unknown keys {sorted(unknown)}; "
                             f"known: {sorted(cls.__dataclass_fields__)}")
        return cls(**known)


# ----------------------------------------------------------------------------- building blocks

def group_norm(channels: int) -> nn.GroupNorm:
    # LDM uses 32 groups; tiny CPU models have fewer channels, so take the largest divisor <= 32.
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.block = nn.Sequential(
            group_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
            group_norm(cout), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.block(x)


class SelfAttention2d(nn.Module):
    """Single-head spatial self-attention (the LDM autoencoder's `AttnBlock`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 conv with LDM's asymmetric (0, 1, 0, 1) padding: exactly halves H and W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def mid_block(channels: int, attention: bool, dropout: float) -> nn.Sequential:
    return nn.Sequential(ResBlock(channels, channels, dropout),
                         SelfAttention2d(channels) if attention else nn.Identity(),
                         ResBlock(channels, channels, dropout))


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig, out_channels: int) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        ch = widths[0]
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(ch, width, cfg.dropout))
                ch = width
            if level != len(widths) - 1:
                layers.append(Downsample(ch))
        self.down = nn.Sequential(*layers)
        self.mid = mid_block(ch, cfg.mid_attention, cfg.dropout)
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mid(self.down(self.conv_in(x))))


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        ch = widths[-1]
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch, 3, padding=1)
        self.mid = mid_block(ch, cfg.mid_attention, cfg.dropout)
        layers: list[nn.Module] = []
        for level in reversed(range(len(widths))):
            for _ in range(cfg.num_res_blocks + 1):  # LDM's decoder has one block more per level
                layers.append(ResBlock(ch, widths[level], cfg.dropout))
                ch = widths[level]
            if level != 0:
                layers.append(Upsample(ch))
        self.up = nn.Sequential(*layers)
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, cfg.in_channels, 3, padding=1))

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive GAN weight of LDM / VQGAN is measured at."""
        return self.out[-1].weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.up(self.mid(self.conv_in(z))))


# ----------------------------------------------------------------------------- the autoencoder

@dataclass
class AutoencoderOutput:
    reconstruction: torch.Tensor
    regularization: torch.Tensor          # per-batch mean KL (kl) or VQ loss (vq)
    indices: torch.Tensor | None = None   # VQ code indices


class Autoencoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.config = cfg
        c = cfg.latent_channels
        moments = 2 * c if cfg.regularizer == "kl" else c
        self.encoder = Encoder(cfg, moments)
        self.quant_conv = nn.Conv2d(moments, moments, 1)
        if cfg.regularizer == "kl" and cfg.logvar_init:
            with torch.no_grad():
                self.quant_conv.bias[c:].fill_(cfg.logvar_init)
        self.post_quant_conv = nn.Conv2d(c, c, 1)
        self.decoder = Decoder(cfg)
        self.quantizer = (VectorQuantizer(cfg.codebook_size, c, cfg.commitment_beta, cfg.codebook_update,
                                          cfg.ema_decay) if cfg.regularizer == "vq" else None)

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def scale_factor(self) -> float:
        return self.config.scale_factor

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        f = self.downsample_factor
        if resolution % f:
            raise ValueError(f"image size {resolution} is not divisible by the autoencoder's f={f}")
        return (self.latent_channels, resolution // f, resolution // f)

    def _check_images(self, x: torch.Tensor) -> None:
        f = self.downsample_factor
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"autoencoder expects images (N, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by the autoencoder's f={f}; "
                             f"crop or resize to a multiple of {f}")

    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        if self.quantizer is not None:
            raise TypeError("posterior() is for KL-reg autoencoders; this one is VQ-reg")
        self._check_images(x)
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def encode_unscaled(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """KL: the posterior mode (or a sample given `noise`); VQ: the pre-quantisation latents."""
        if self.quantizer is None:
            posterior = self.posterior(x)
            return posterior.mode() if noise is None else posterior.sample(noise)
        self._check_images(x)
        return self.quant_conv(self.encoder(x))

    def decode_unscaled(self, z: torch.Tensor) -> torch.Tensor:
        if self.quantizer is not None:
            z = self.quantizer(z).latents  # quantisation is part of decoding (LDM)
        return self.decoder(self.post_quant_conv(z))

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Images [-1, 1] (N, C, H, W) -> scaled latents (N, c, H/f, W/f) of about unit variance."""
        return self.encode_unscaled(x, noise) * self.scale_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in about [-1, 1] (not clamped)."""
        return self.decode_unscaled(z / self.scale_factor)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                sample_posterior: bool = True) -> AutoencoderOutput:
        """The training pass: reconstruction and the regulariser's loss. Randomness (the KL
        posterior sample, VQ codebook restarts) comes from `generator` when given."""
        if self.quantizer is None:
            posterior = self.posterior(x)
            if sample_posterior:
                noise = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean)
                z = posterior.sample(noise)
            else:
                z = posterior.mode()
            return AutoencoderOutput(self.decoder(self.post_quant_conv(z)), posterior.kl().mean())
        self._check_images(x)
        q = self.quantizer(self.quant_conv(self.encoder(x)), generator)
        return AutoencoderOutput(self.decoder(self.post_quant_conv(q.latents)), q.loss, q.indices)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.last_layer


@torch.no_grad()
def compute_scale_factor(autoencoder: Autoencoder, images: Iterable[torch.Tensor]) -> float:
    """1 / std of the unscaled latents over `images` (float [-1, 1] batches): LDM's rescaling
    so that the diffusion model sees latents of unit variance. Streams, in float64."""
    count, total, total_sq = 0, 0.0, 0.0
    was_training = autoencoder.training
    autoencoder.eval()
    device = next(autoencoder.parameters()).device
    for batch in images:
        z = autoencoder.encode_unscaled(batch.to(device)).double()
        count += z.numel()
        total += float(z.sum())
        total_sq += float(z.pow(2).sum())
    autoencoder.train(was_training)
    if count < 2:
        raise ValueError("compute_scale_factor needs at least one non-empty batch of images")
    variance = (total_sq - total * total / count) / (count - 1)
    return 1.0 / math.sqrt(max(variance, 1e-12))


# ----------------------------------------------------------------------------- checkpoints

@register_network_type("autoencoder")
def build_autoencoder(config: Mapping[str, Any]) -> Autoencoder:
    return Autoencoder(AutoencoderConfig.from_dict(dict(config)))


def autoencoder_spec(autoencoder: Autoencoder) -> dict[str, Any]:
    """The checkpoint `networks` entry of an autoencoder (its config carries the scale factor)."""
    cfg = asdict(autoencoder.config)
    cfg["channel_mult"] = list(cfg["channel_mult"])
    return {"type": "autoencoder", "config": cfg}


def save_autoencoder(autoencoder: Autoencoder, directory: str | Path, **extra: Any) -> Path:
    """A checkpoint (models.core.checkpoint format) whose one network is the role "autoencoder"."""
    config = {"kind": "autoencoder", "networks": {"autoencoder": autoencoder_spec(autoencoder)}, **extra}
    return save_checkpoint(directory, {"autoencoder": autoencoder}, config)


def load_autoencoder(checkpoint: str | Path) -> Autoencoder:
    """The autoencoder of a checkpoint: an autoencoder checkpoint, or a latent pipeline's (role
    "autoencoder"). A bare name means a shipped checkpoint under models/checkpoints/."""
    directory = resolve_checkpoint(str(checkpoint))
    spec = load_config(directory).get("networks", {}).get("autoencoder")
    if not spec or spec.get("type") != "autoencoder":
        raise ValueError(f"checkpoint {directory} has no network 'autoencoder' of type 'autoencoder' in its "
                         f"{CONFIG_FILE}; pass an autoencoder or latent-pipeline checkpoint")
    check_networks({"networks": {"autoencoder": spec}}, f"checkpoint config {directory / CONFIG_FILE}")  # untrusted
    model = build_autoencoder(spec["config"])
    weights = directory / MODEL_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {directory}: no {MODEL_FILE}")
    own = {k[len("autoencoder."):]: v for k, v in read_weights(weights).items() if k.startswith("autoencoder.")}
    missing, unexpected = model.load_state_dict(own, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {weights}: autoencoder weights do not match its config "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval()
