"""Classifier-free guidance and x0 thresholding, as wrappers around a denoiser.

- Classifier-free guidance (Ho & Salimans 2022): D = D_u + w (D_c - D_u). Written on x0_hat it
  equals the eps form, since at fixed (x, sigma) x0_hat = x - sigma eps_hat is affine in eps_hat.
  The conditional and unconditional passes run as ONE network call on the doubled batch; w = 1
  is exactly the conditional model and costs one pass.
- Static thresholding (Saharia et al. 2022, "Imagen", sec. 2.3): clip x0_hat to [-1, 1].
- Dynamic thresholding (Imagen sec. 2.3): s = the p-th percentile of |x0_hat| per sample;
  if s > 1, clip to [-s, s] and divide by s; with s <= 1 it is a clip to [-1, 1] (a no-op on
  values already inside).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from models.core.interface import THRESHOLDING_MODES

ConditionedDenoiser = Callable[..., torch.Tensor]   # denoise(x, sigma, **cond) -> x0_hat


def _split_frac(frac: torch.Tensor | None, n: int) -> torch.Tensor | None:
    return None if frac is None else frac[:n]


def _concat(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    if isinstance(a, list):
        return a + b
    if a is None and b is None:
        return None
    raise TypeError(f"cannot batch conditioning values of type {type(a).__name__} for guidance")


class ClassifierFreeGuidance:
    """denoise(x, sigma) -> x0_hat with the conditioning bound in and guidance scale `scale`.

    `cond` and `uncond` are keyword arguments for the inner denoiser (e.g. {"y": labels} and
    {"y": null labels}); they must have the same keys. scale == 1 evaluates only `cond`."""

    def __init__(self, denoise: ConditionedDenoiser, scale: float, cond: Mapping[str, Any],
                 uncond: Mapping[str, Any] | None = None) -> None:
        if scale < 0:
            raise ValueError(f"guidance scale must be >= 0, got {scale}")
        if scale != 1 and uncond is None:
            raise ValueError(f"guidance scale {scale} needs an unconditional input; this model has none "
                             "(train it with condition dropout, or use guidance_scale=1)")
        if uncond is not None and set(cond) != set(uncond):
            raise ValueError(f"cond keys {sorted(cond)} and uncond keys {sorted(uncond)} differ")
        self.denoise = denoise
        self.scale = float(scale)
        self.cond = dict(cond)
        self.uncond = None if uncond is None else dict(uncond)
        self._n = 0
        self._doubled = None if self.uncond is None else {k: _concat(self.cond[k], self.uncond[k]) for k in self.cond}

    @property
    def variance_frac(self) -> torch.Tensor | None:
        """The conditional half's learned-variance fraction (as GLIDE / ADM guidance do)."""
        frac = getattr(self.denoise, "variance_frac", None)
        return _split_frac(frac, self._n) if self.scale != 1 else frac

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self._n = x.shape[0]
        if self.scale == 1:
            return self.denoise(x, sigma, **self.cond)
        both = self.denoise(torch.cat([x, x]), torch.cat([sigma, sigma]), **self._doubled)
        x0_cond, x0_uncond = both.chunk(2)
        return x0_uncond + self.scale * (x0_cond - x0_uncond)


def static_threshold(x0: torch.Tensor) -> torch.Tensor:
    return x0.clamp(-1.0, 1.0)


def dynamic_threshold(x0: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
    """Imagen's dynamic thresholding, per sample over all its pixels."""
    if not 0 < percentile <= 1:
        raise ValueError(f"dynamic thresholding percentile must be in (0, 1], got {percentile}")
    flat = x0.detach().reshape(x0.shape[0], -1).abs().float()
    s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0).to(x0.dtype)
    s = s.reshape(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


class Thresholded:
    """Wraps a denoiser so its x0_hat is thresholded (the sampler then only sees in-range x0)."""

    def __init__(self, denoise: Callable[..., torch.Tensor], mode: str, percentile: float = 0.995) -> None:
        if mode not in THRESHOLDING_MODES:
            raise ValueError(f"thresholding {mode!r} is unknown; choose one of {THRESHOLDING_MODES}")
        self.denoise = denoise
        self.mode = mode
        self.percentile = percentile

    @property
    def variance_frac(self) -> torch.Tensor | None:
        return getattr(self.denoise, "variance_frac", None)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x0 = self.denoise(x, sigma)
        if self.mode == "static":
            return static_threshold(x0)
        if self.mode == "dynamic":
            return dynamic_threshold(x0, self.percentile)
        return x0


def guided_denoiser(denoise: ConditionedDenoiser, *, scale: float, cond: Mapping[str, Any],
                    uncond: Mapping[str, Any] | None, thresholding: str = "none",
                    percentile: float = 0.995) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """CFG, then thresholding of the guided x0_hat: the usual stack for a sampling stage."""
    return Thresholded(ClassifierFreeGuidance(denoise, scale, cond, uncond), thresholding, percentile)
