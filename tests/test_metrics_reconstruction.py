"""PSNR/SSIM against skimage per image, LPIPS against its published example values, rFID."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bench.data.shapes import ShapesSource
from bench.metrics import registry
from bench.metrics.reconstruction import ReconstructionMetrics, load_lpips, lpips_per_image, psnr_per_image, \
    ssim_per_image

# The LPIPS authors' example triplet (richzhang/PerceptualSimilarity imgs/, BSD-2-Clause).
EXAMPLES = Path(__file__).resolve().parent / "data" / "lpips_examples"


def pairs(n: int = 6, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes and degraded copies: noise of growing strength, a blur, a shift."""
    originals = next(ShapesSource(size, n, 0, "test").iter_batches(n)).images
    g = torch.Generator().manual_seed(0)
    strength = torch.linspace(2, 40, n).view(n, 1, 1, 1)
    noisy = originals.float() + torch.randn(originals.shape, generator=g) * strength
    noisy[1] = torch.nn.functional.avg_pool2d(originals[1:2].float(), 3, 1, 1)[0]
    noisy[2] = torch.roll(originals[2].float(), 1, dims=2)
    return originals, noisy.round().clamp(0, 255).to(torch.uint8)


def test_psnr_and_ssim_equal_skimage_per_image() -> None:
    originals, reconstructions = pairs()
    psnr, ssim = psnr_per_image(originals, reconstructions), ssim_per_image(originals, reconstructions)
    for i in range(len(originals)):
        a, b = originals[i].permute(1, 2, 0).numpy(), reconstructions[i].permute(1, 2, 0).numpy()
        assert float(psnr[i]) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-4)
        expected = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         channel_axis=2, data_range=255)
        assert float(ssim[i]) == pytest.approx(expected, abs=1e-4)


def test_ssim_needs_room_for_its_window() -> None:
    tiny = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="larger than 11x11"):
        ssim_per_image(tiny, tiny)


def _load(name: str) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(EXAMPLES / f"{name}.png").convert("RGB"))).permute(2, 0, 1)[None]


def test_lpips_alex_gives_the_published_example_distances() -> None:
    model, details = load_lpips("alex")
    ref, p0, p1 = _load("ex_ref"), _load("ex_p0"), _load("ex_p1")
    assert float(lpips_per_image(model, ref, p0)) == pytest.approx(0.722, abs=5e-4)
    assert float(lpips_per_image(model, ref, p1)) == pytest.approx(0.138, abs=5e-4)
    assert details["weights"]["name"] == "alexnet_imagenet_features"
    assert details["lpips_linear"]["source"] == "package:lpips"


class PooledPixels:
    name = "pooled-pixels"

    def describe(self) -> dict:
        return {"feature_extractor": self.name, "resize_mode": "none", "weights": {"name": "none", "sha256": "0"}}

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"2048": torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 2).flatten(1)}


@pytest.mark.filterwarnings("ignore::bench.metrics.frechet.FrechetWarning")   # 12 images, 12-d features
def test_reconstruction_metrics_stream_and_report_rows() -> None:
    metrics = ReconstructionMetrics(extractor=PooledPixels())
    originals, reconstructions = pairs(n=12)
    metrics.update(originals[:5], reconstructions[:5])
    metrics.update(originals[5:], reconstructions[5:])
    rows = {row.metric: row for row in metrics.compute()}
    assert set(rows) == {"psnr", "ssim", "lpips", "rfid"}
    assert rows["psnr"].value == pytest.approx(float(psnr_per_image(originals, reconstructions).mean()), rel=1e-9)
    assert rows["psnr"].unit == "dB" and rows["psnr"].details["data_range"] == 1.0
    for name in ("psnr", "ssim", "lpips"):
        assert rows[name].n == 12 and rows[name].ci_low < rows[name].value < rows[name].ci_high
    assert rows["lpips"].details["weights"]["sha256"]
    assert rows["rfid"].value > 0 and rows["rfid"].details["reference"] == "the originals"
    declared = {kind.name: kind for kind in registry.spec("reconstruction").rows}
    # changed_outside_mask is declared here for its label and unit, but written by suite=inpainting
    assert set(declared) - {"changed_outside_mask"} == set(rows) and all(row.unit == declared[name].unit for name, row in rows.items())


def test_shape_mismatch_is_rejected() -> None:
    metrics = ReconstructionMetrics(lpips_net=None)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.update(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
