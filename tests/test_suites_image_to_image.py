"""Image-to-image tasks (issue 21): the cascade's SR stage alone behind the interface, and the
superres and inpainting suites end to end (tiny n and steps, no Inception: metrics.names=[speed]),
with their rows, grids and the LDM-shaped tables."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.config import ConfigError
from models.core.interface import RequestError, SampleRequest
from models.core.registry import CHECKPOINT_DIR, build_pipeline
from suite_helpers import run_suite
from suites.image_to_image import GRID_LABEL_WIDTH, GRID_TITLE_HEIGHT, masked_psnr

TINY_UNET = dict(base_channels=8, channel_mults=[1, 2], attention_resolutions=[4], num_heads=2, norm_groups=4)
FAST = ("suite.n=4", "data.n=8", "hardware.batch_size=4", "sampler.steps=2", "metrics.names=[speed]",
        "suite.params.grid_k=3")

pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs = pytest.mark.skipif(not (CHECKPOINT_DIR / "cascaded_shapes16_32" / "model.safetensors").is_file()
                           or not (CHECKPOINT_DIR / "pixel_ddpm_shapes32" / "model.safetensors").is_file(),
                           reason="shipped checkpoints not built")


@pytest.fixture(scope="module")
def cascade():
    p = build_pipeline("cascaded", "tiny_cascade", None, resolutions=[8, 16], num_classes=3, unet=TINY_UNET,
                       num_timesteps=100)
    with torch.no_grad():
        for k, net in enumerate(p.networks().values()):
            for prm in net.out.parameters():
                prm.normal_(0, 0.05, generator=torch.Generator().manual_seed(k))
    return p


def test_cascade_runs_its_sr_stage_alone_on_given_low_resolution_images(cascade):
    low = torch.randint(0, 256, (3, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    request = SampleRequest(n=3, labels=[0, 1, 2], steps=2, batch_size=3, task="superres", input_images=low)
    batch = next(cascade.sample(request))
    assert batch.images.shape == (3, 3, 16, 16)
    assert set(batch.stage_nfe) == {"sr1"} and "base" not in batch.stage_seconds   # the base never runs
    # the SR output follows its input: a different low-resolution image gives a different output
    other = next(cascade.sample(SampleRequest(**{**request.__dict__, "input_images": 255 - low})))
    assert not torch.equal(batch.images, other.images)
    # batch invariance holds for the superres task too
    ones = torch.cat([b.images for b in cascade.sample(SampleRequest(**{**request.__dict__, "batch_size": 1}))])
    assert torch.equal(ones, batch.images)
    with pytest.raises(RequestError, match=r"super-resolves 3-channel images of \[8\] px"):
        next(cascade.sample(SampleRequest(n=1, labels=[0], task="superres", input_images=low[..., :4, :4])))
    with pytest.raises(RequestError, match="cannot serve task 'inpaint'"):
        next(cascade.sample(SampleRequest(n=1, labels=[0], task="inpaint", input_images=low,
                                          masks=torch.ones(3, 1, 8, 8, dtype=torch.uint8))))


def test_psnr_inside_a_mask_and_its_cap():
    a = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    b = a.clone()
    b[0, :, 0, 0] = 255                                   # one wrong pixel, inside the mask of image 0
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    mask[:, :, :2, :2] = 1                                # 4 pixels
    psnr = masked_psnr(a, b, mask)
    assert psnr[0].item() == pytest.approx(10 * math.log10(4))   # MSE = 1/4 over the masked pixels
    assert math.isinf(psnr[1].item())                            # identical: infinite: the suites count it, out of the mean


@needs
def test_superres_suite_rows_grids_and_table(tmp_path: Path):
    from reports.load import load_runs
    from reports.table_spec import build_spec_table, load_spec, render
    frame = run_suite(tmp_path / "sr", "suite=superres", *FAST, "suite.params.degradations=[bicubic,blur_noise]",
                      "+suite.params.stage_overrides={sr1: {noise_aug: 0.0}}")
    assert set(frame[frame.pipeline == "cascaded_ddpm"].stage_overrides) == {'{"sr1": {"noise_aug": 0.0}}'}
    methods = {(p, f, d) for p, f, d in zip(frame.pipeline, frame.factor, frame.degradation)}
    assert ("identity", 1, "none") in methods
    for degradation in ("bicubic", "blur_noise"):
        assert {("bicubic", 2, degradation), ("nearest", 2, degradation), ("cascaded_ddpm", 2, degradation),
                ("bicubic", 4, degradation), ("nearest", 4, degradation)} <= methods
        assert ("cascaded_ddpm", 4, degradation) not in methods        # its SR stage takes 16 px, not 8 px
    identity = frame[frame.pipeline == "identity"].set_index("metric").value
    assert math.isinf(identity["psnr"]) and identity["ssim"] == pytest.approx(1.0) and identity["lpips"] == 0.0
    sr = frame[(frame.factor == 2) & (frame.degradation == "bicubic")].pivot(index="pipeline", columns="metric",
                                                                             values="value")
    assert {"psnr", "ssim", "lpips", "images_per_s"} <= set(sr.columns)
    assert (sr.psnr > 15).all() and np.isfinite(sr.psnr).all()
    grids = {p.name for p in (tmp_path / "sr" / "grids").glob("superres_*.png")}
    assert "superres_cascaded_ddpm_x2_bicubic.png" in grids and "superres_nearest_x4_blur_noise.png" in grids
    with Image.open(tmp_path / "sr" / "grids" / "superres_bicubic_x2_bicubic.png") as grid:
        # 3 examples x (input, output, truth), a column of row names and a title bar (issue 28)
        assert grid.size == (GRID_LABEL_WIDTH + 3 * (128 + 2) + 2, GRID_TITLE_HEIGHT + 3 * (128 + 2) + 2)
    sizes = set()
    for path in (tmp_path / "sr" / "grids").glob("superres_*.png"):
        with Image.open(path) as grid:
            sizes.add(grid.size)
    assert len(sizes) == 1   # one grid size in the run's report
    loaded, _ = load_runs([tmp_path / "sr"])
    table = render(build_spec_table(loaded, load_spec("ldm_superres")), "md")
    assert "| method" in table and "PSNR" in table and "SSIM" in table and "cascaded_ddpm" in table


@needs
def test_inpainting_suite_keeps_known_pixels_and_refuses_other_samplers(tmp_path: Path):
    from reports.load import load_runs
    from reports.table_spec import build_spec_table, load_spec, render
    frame = run_suite(tmp_path / "ip", "suite=inpainting", *FAST, "suite.params.masks=[{kind: box, ratio: 0.3}]",
                      "suite.params.jump_length=1", "suite.params.jump_n_sample=2")
    assert set(frame.pipeline) == {"pixel_ddpm", "latent_inpaint_shapes32", "mean_fill"}   # latent: test_latent_concat
    rows = frame.set_index(["pipeline", "metric"]).value
    for method in ("pixel_ddpm", "mean_fill"):
        assert rows[(method, "changed_outside_mask")] == 0                 # exact paste of the known pixels
        assert abs(rows[(method, "mask_area_ratio")] - 0.3) <= 0.02
        assert 5 < rows[(method, "psnr_in_mask")] < 100
    assert set(frame[frame.pipeline == "pixel_ddpm"].sampler) == {"ddpm"}
    assert (tmp_path / "ip" / "grids" / "inpainting_pixel_ddpm_box0.3.png").is_file()
    loaded, _ = load_runs([tmp_path / "ip"])
    table = render(build_spec_table(loaded, load_spec("ldm_inpainting")), "md")
    assert "LPIPS" in table and "changed outside" in table
    with pytest.raises(RequestError, match="use sampler=ddpm"):
        run_suite(tmp_path / "ip2", "suite=inpainting", *FAST, "sampler.name=ddim", "sampler.eta=0",
                  "suite.params.masks=[{kind: thin, ratio: 0.1}]", "suite.params.baselines=[]")


def test_suites_refuse_pipelines_that_cannot_serve_their_task(tmp_path: Path):
    with pytest.raises(ConfigError, match="'suite.pipelines'.*does not serve the superres task"):
        run_suite(tmp_path / "bad", "suite=superres", *FAST, "suite.pipelines=[pixel_untrained]")


# ---- issue 28: speed after a warm-up with its spread; changed_outside_mask counts pixels ----------

def test_throughput_is_timed_after_a_warm_up_and_states_the_spread():
    from suites.image_to_image import PIPELINE_WARMUP, throughput_row, warm_up
    row = throughput_row([(16, 1.0), (16, 0.5), (8, 0.5)], "x", PIPELINE_WARMUP)
    assert row.value == pytest.approx(40 / 2.0) and row.n == 40
    assert (row.ci_low, row.ci_high) == (pytest.approx(16.0), pytest.approx(32.0))
    assert row.details["ci_method"] == "min-max over batches" and row.details["warmup"] == PIPELINE_WARMUP
    single = throughput_row([(4, 2.0)], "x", PIPELINE_WARMUP)
    assert single.value == 2.0 and single.ci_low is None and single.details["ci_method"] == "none: one batch timed"

    class Counting:   # a pipeline that counts what it samples
        sampled = 0

        def sample(self, request):
            self.sampled += request.n
            yield None
    pipe = Counting()
    request = SampleRequest(n=64)
    warm_up(pipe, request)
    warm_up(pipe, request)   # once per pipeline and run, before its first timed batch (the one-time costs)
    assert pipe.sampled == 2


def test_changed_outside_mask_counts_pixels_as_a_share_of_those_outside():
    from suites.inpainting import _changed_outside, changed_row
    truth = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    masks = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    masks[:, :, :2] = 1                      # the top half to inpaint: 2 x 8 pixels outside
    output = truth.clone()
    output[0, :, 3, 3] = 255                 # one pixel outside, all three channels changed
    output[1, 0, 2, 0] = 9                   # one pixel outside, one channel
    output[:, :, 0, 0] = 7                   # inside the mask: not counted
    changed, outside = _changed_outside(truth, output, masks)
    assert (changed, outside) == (2, 16)     # pixels, not pixel-channels (4 before)
    row = changed_row(changed, outside, n=2)
    assert row.value == pytest.approx(12.5) and row.unit == "%"
    from reports.metric_kinds import metric_kind
    kind = metric_kind("changed_outside_mask")
    assert (kind.label, kind.unit, kind.direction) == ("changed outside mask", "%", "lower")
