"""Reconstruction quality of an autoencoder: PSNR and SSIM (torchmetrics, per image, then the
mean with a 95% CI), LPIPS (the lpips package; backbone weights through the resolver) and rFID
(FID of the reconstructions against the originals, Inception statistics streamed for both).

Images are uint8 NCHW; PSNR/SSIM run on [0, 1] floats with data_range=1.0 stated explicitly
(equal to skimage on the uint8 images with data_range=255). SSIM uses the Gaussian window of
Wang et al. 2004 (sigma 1.5, 11 taps), as skimage's `gaussian_weights=True, sigma=1.5,
use_sample_covariance=False`.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from bench.metrics.fid import fid_from_stats
from bench.metrics.frechet import GaussianAccumulator
from bench.metrics.inception import POOL_FEATURES
from bench.metrics.summary import RunningMean
from bench.results import MetricValue
from bench.weights import load_state_dict, resolve
import lpips

SSIM_SIGMA, SSIM_TAPS = 1.5, 11   # Wang et al. 2004; skimage: truncate 3.5 -> radius int(3.5*1.5+0.5)=5
LPIPS_BACKBONES = {"alex": "alexnet_imagenet_features", "vgg": "vgg16_imagenet_features"}


def psnr_per_image(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW pairs -> (N,) PSNR in dB, data range 1.0 on [0, 1] floats (float64)."""
    x, y = _unit(original), _unit(reconstruction)
    return peak_signal_noise_ratio(y, x, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim_per_image(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """(N,) SSIM. torchmetrics averages its SSIM map over the whole image, borders included
    (computed on reflect-padded input); Wang et al.'s reference code and skimage average only
    the interior where the 11-tap window fits ('valid' filtering). We take torchmetrics' map
    and crop the 5-pixel border, which gives skimage's numbers."""
    x, y = _unit(original), _unit(reconstruction)
    _, full = structural_similarity_index_measure(y, x, gaussian_kernel=True, sigma=SSIM_SIGMA,
                                                  kernel_size=SSIM_TAPS, data_range=1.0, reduction="none",
                                                  return_full_image=True)
    pad = (SSIM_TAPS - 1) // 2
    if min(full.shape[-2:]) <= 2 * pad:
        raise ValueError(f"SSIM needs images larger than {SSIM_TAPS}x{SSIM_TAPS}, got {tuple(full.shape[-2:])}")
    return full[..., pad:-pad, pad:-pad].mean(dim=(1, 2, 3))


def _unit(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"reconstruction metrics need uint8 NCHW images, got {images.dtype} {tuple(images.shape)}")
    return images.to(torch.float64) / 255.0


def load_lpips(net: str = "alex", device: str | torch.device = "cpu",
               backbone_path: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """lpips.LPIPS with its bundled linear layers and the ImageNet backbone from the resolver.

    lpips's `pn.alexnet`/`pn.vgg16` keep torchvision's `features.N` modules under their original
    index inside slices (slice1 holds features.0-1, slice2 features.2-4, ... for AlexNet), so
    `sliceK.N.weight` <- `features.N.weight` for every key."""
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"LPIPS backbone {net!r} is not one of {sorted(LPIPS_BACKBONES)}")
    backbone = resolve(LPIPS_BACKBONES[net], backbone_path)
    linear = resolve(f"lpips-{net}-v0.1")
    with warnings.catch_warnings():   # lpips passes torchvision's deprecated `pretrained=` flag
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, model_path=str(linear.path), verbose=False)
    features = load_state_dict(backbone.path)
    features = {k.removeprefix("features."): v for k, v in features.items() if not k.startswith("classifier.")}
    mapped = {key: features[key.split(".", 1)[1]] for key in model.net.state_dict()}
    model.net.load_state_dict(mapped, strict=True)
    model = model.eval().requires_grad_(False).to(device)
    return model, {"lpips_net": net, "weights": backbone.describe(), "lpips_linear": linear.describe()}


def lpips_per_image(model: torch.nn.Module, original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    to_signed = lambda im: im.to(device, torch.float32) / 127.5 - 1.0   # noqa: E731 - lpips wants [-1, 1]
    with torch.inference_mode():
        return model(to_signed(original), to_signed(reconstruction)).reshape(-1).cpu()


class ReconstructionMetrics:
    """Streaming PSNR, SSIM, LPIPS and (with an Inception extractor) rFID."""

    def __init__(self, *, device: str | torch.device = "cpu", lpips_net: str | None = "alex",
                 extractor: Any = None, shared_lpips: tuple[torch.nn.Module, dict[str, Any]] | None = None) -> None:
        """`shared_lpips`: a `load_lpips` result to share between metrics (else `lpips_net` is loaded)."""
        self.device = torch.device(device)
        self.psnr, self.ssim, self.lpips = RunningMean(), RunningMean(), RunningMean()
        if shared_lpips is None:
            shared_lpips = load_lpips(lpips_net, self.device) if lpips_net else (None, {})
        self.lpips_model, self.lpips_details = shared_lpips
        self.extractor = extractor
        self.original_stats, self.reconstruction_stats = GaussianAccumulator(), GaussianAccumulator()

    def update(self, originals: torch.Tensor, reconstructions: torch.Tensor,
               original_features: torch.Tensor | None = None) -> None:
        """`original_features`: the originals' Inception pool features, when several metrics over the
        same images (one per autoencoder) share them instead of extracting them again."""
        if originals.shape != reconstructions.shape:
            raise ValueError(f"originals {tuple(originals.shape)} and reconstructions "
                             f"{tuple(reconstructions.shape)} differ in shape")
        self.psnr.update(psnr_per_image(originals, reconstructions))
        self.ssim.update(ssim_per_image(originals, reconstructions))
        if self.lpips_model is not None:
            self.lpips.update(lpips_per_image(self.lpips_model, originals, reconstructions))
        if self.extractor is not None:
            if original_features is None:
                original_features = self.extractor(originals)[POOL_FEATURES]
            self.original_stats.update(original_features)
            self.reconstruction_stats.update(self.extractor(reconstructions)[POOL_FEATURES])

    def compute(self) -> list[MetricValue]:
        ci = {"ci_kind": "95% normal CI of the mean", "aggregation": "per image, then mean"}
        out = [self._mean_row("psnr", self.psnr, "dB", {**ci, "data_range": 1.0}),
               self._mean_row("ssim", self.ssim, "", {**ci, "data_range": 1.0, "gaussian_sigma": SSIM_SIGMA,
                                                      "kernel_size": SSIM_TAPS, "border": "cropped"})]
        if self.lpips_model is not None:
            out.append(self._mean_row("lpips", self.lpips, "", {**ci, **self.lpips_details}))
        if self.extractor is not None:
            mu_r, sigma_r = self.reconstruction_stats.stats()
            mu_o, sigma_o = self.original_stats.stats()
            out.append(fid_from_stats(mu_r, sigma_r, mu_o, sigma_o, n=self.reconstruction_stats.n, name="rfid",
                                      details={**self.extractor.describe(), "reference": "the originals"}))
        return out

    @staticmethod
    def _mean_row(name: str, values: RunningMean, unit: str, details: dict[str, Any]) -> MetricValue:
        low, high = values.ci95()
        return MetricValue(name, values.mean, n=values.n, unit=unit, ci_low=low, ci_high=high, details=details)
