"""Training objective of the first-stage autoencoders (LDM appendix G; Esser et al. 2021, VQGAN).

    L = w_pix * |x - x'|_{1 or 2} + w_p * LPIPS_VGG(x, x') + regulariser + lambda * L_GAN

- per-pixel and perceptual terms are means per pixel / per image;
- KL-reg: `kl_weight * KL(q(z|x) || N(0, I)) / (C*H*W)`, i.e. LDM's objective (which sums the
  reconstruction term over pixels) divided by the pixel count, so `kl_weight` means what
  LDM's `kl_weight` (1e-6) means;
- VQ-reg: `codebook_weight *` the quantiser's commitment (+ codebook) loss;
- GAN: a PatchGAN discriminator (Isola et al. 2017) with the hinge loss, switched on at step
  `disc_start`, weighted adaptively by the ratio of gradient norms at the decoder's last layer
  (VQGAN eq. 7), times `disc_weight`.

Generator and discriminator are trained with one optimizer step: the generator's adversarial
term sees the discriminator with detached weights (`torch.func.functional_call`), and the
discriminator's term sees detached reconstructions, so each loss reaches only its own network.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from bench.weights import load_state_dict, resolve
from models.networks.autoencoder import Autoencoder
from models.networks.autoencoder_regularizers import codebook_usage
from models.networks.discriminator import PatchDiscriminator
import lpips

LPIPS_BACKBONE = "vgg16_imagenet_features"   # LDM's autoencoders train with LPIPS-VGG


@dataclass
class AutoencoderLossConfig:
    pixel_loss: str = "l1"               # l1 | l2
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0       # LPIPS-VGG; 0 = off (then no pretrained weights are needed)
    kl_weight: float = 1e-6              # LDM's KL-reg weight (see module docstring for scaling)
    codebook_weight: float = 1.0
    perceptual_images: int | None = None  # LPIPS on only the first k images of a batch (CPU budget)
    disc_start: int | None = None        # step at which the discriminator switches on; None = never
    disc_weight: float = 0.5
    disc_layers: int = 2
    disc_channels: int = 32
    adaptive_disc_weight: bool = True

    def __post_init__(self) -> None:
        if self.pixel_loss not in ("l1", "l2"):
            raise ValueError(f"autoencoder loss pixel_loss {self.pixel_loss!r} is not one of ['l1', 'l2']")
        for name in ("pixel_weight", "perceptual_weight", "kl_weight", "codebook_weight", "disc_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"autoencoder loss {name} must be >= 0, got {getattr(self, name)}")
        if self.disc_start is not None and self.disc_start < 0:
            raise ValueError(f"autoencoder loss disc_start must be >= 0 or None, got {self.disc_start}")


def load_lpips_vgg() -> nn.Module:
    """LPIPS with the VGG16 trunk, offline: the package's own linear layers and the ImageNet
    VGG16 conv weights found by the weights resolver (`vgg16_imagenet_features`)."""

    resolved = resolve(LPIPS_BACKBONE)
    path, source = resolved.path, f"{resolved.path} (sha256 {resolved.sha256[:12]}, {resolved.source})"
    features = load_state_dict(path)
    heads = torch.load(resolve("lpips-vgg-v0.1").path, map_location="cpu", weights_only=True)
    # Build on the meta device: torchvision's vgg16() would spend seconds initialising a
    # classifier LPIPS never uses. Every tensor is then loaded below.
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)
    model = model.to_empty(device="cpu")
    model.scaling_layer = lpips.lpips.ScalingLayer()   # its constant buffers, rebuilt on the CPU
    # lpips splits torchvision's vgg16().features into slice1..slice5 keeping the layer numbers.
    trunk = {f"{name}.{layer}.{kind}": features[f"features.{layer}.{kind}"]
             for name, slice_ in model.net.named_children() for layer in slice_._modules
             if f"features.{layer}.weight" in features for kind in ("weight", "bias")}
    try:
        model.net.load_state_dict(trunk, strict=True)
        for i, head in enumerate(model.lins):
            head.load_state_dict({"model.1.weight": heads[f"lin{i}.model.1.weight"]}, strict=True)
    except (RuntimeError, KeyError) as err:
        raise ValueError(f"{path}: not a torchvision vgg16().features state dict, or the lpips package's "
                         f"vgg.pth heads changed: {err}") from None
    model.eval().requires_grad_(False)
    model.weights_source = source
    return model


@dataclass
class LossOutput:
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)
    reconstruction: torch.Tensor | None = None


class AutoencoderLoss(nn.Module):
    """Holds the discriminator (trainable) and LPIPS (frozen); `forward(ae, images, step)`."""

    def __init__(self, cfg: AutoencoderLossConfig, in_channels: int = 3) -> None:
        super().__init__()
        self.config = cfg
        self.perceptual = load_lpips_vgg() if cfg.perceptual_weight > 0 else None
        self.discriminator = (PatchDiscriminator(in_channels, cfg.disc_channels, cfg.disc_layers)
                              if cfg.disc_start is not None else None)

    def train(self, mode: bool = True) -> "AutoencoderLoss":
        super().train(mode)
        if self.perceptual is not None:
            self.perceptual.eval()  # LPIPS has dropout in its linear heads: keep it off
        return self

    def reconstruction_terms(self, x: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, dict]:
        cfg = self.config
        pixel = (recon - x).abs().mean() if cfg.pixel_loss == "l1" else (recon - x).pow(2).mean()
        loss, logs = cfg.pixel_weight * pixel, {f"pixel_{cfg.pixel_loss}": float(pixel.detach())}
        if self.perceptual is not None:
            k = cfg.perceptual_images or x.shape[0]  # batches come shuffled: the first k are a fair subset
            if next(self.perceptual.parameters()).device != x.device:
                self.perceptual.to(x.device)
            perceptual = self.perceptual(x[:k].float().contiguous(), recon[:k].float().contiguous()).mean()
            loss = loss + cfg.perceptual_weight * perceptual
            logs["lpips"] = float(perceptual.detach())
        return loss, logs

    def adaptive_weight(self, nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
        """VQGAN eq. 7: balance the GAN gradient against the reconstruction gradient."""
        if not self.config.adaptive_disc_weight or not torch.is_grad_enabled():
            return torch.tensor(1.0, device=nll.device)
        nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        return (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()

    def forward(self, autoencoder: Autoencoder, images: torch.Tensor, step: int,
                generator: torch.Generator | None = None) -> LossOutput:
        cfg = self.config
        out = autoencoder(images, generator)
        nll, logs = self.reconstruction_terms(images, out.reconstruction)
        if autoencoder.quantizer is None:
            pixels = images[0].numel()
            regulariser = cfg.kl_weight * out.regularization / pixels
            logs["kl"] = float(out.regularization.detach())
        else:
            regulariser = cfg.codebook_weight * out.regularization
            logs["vq"] = float(out.regularization.detach())
            logs.update({f"codebook_{k}": v for k, v in
                         codebook_usage(out.indices, autoencoder.config.codebook_size).items()})
        loss = nll + regulariser
        if self.discriminator is not None and step >= cfg.disc_start:
            frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
            g_loss = -functional_call(self.discriminator, frozen, (out.reconstruction,)).mean()
            weight = cfg.disc_weight * self.adaptive_weight(nll, g_loss, autoencoder.last_layer)
            real = self.discriminator(images.detach())
            fake = self.discriminator(out.reconstruction.detach())
            d_loss = 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())  # hinge
            loss = loss + weight * g_loss + d_loss
            logs.update(g_loss=float(g_loss.detach()), d_loss=float(d_loss.detach()), d_weight=float(weight))
        logs["loss"] = float(loss.detach())
        return LossOutput(loss, logs, out.reconstruction)
