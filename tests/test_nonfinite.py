"""Non-finite values never become numbers (issue 17): NaN/inf images, features or reference
statistics stop the evaluation naming what and where (exit 2, manifest `failed`, no results);
guidance_scale must be finite; one prompt for many samples is a warning, logged and in the manifest."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from bench_runs import main_in_process
from metric_helpers import PooledPixels, batches
from safetensors.torch import load_file, save_file

from bench.config import DataConfig, MetricsConfig
from bench.data.config import ConfigError
from bench.metrics import build_metrics
from models.core.interface import BatchContext, NonFiniteError, Pipeline, PipelineInfo, SampleRequest, StageInfo
from models.core.registry import build_pipeline

REPO = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO / "models" / "checkpoints"
# The cheapest run that reaches sampling and FID: 4 samples, 2 steps, 8 reference images.
SMALL = ("pipeline=pixel_ddpm", "suite.n=4", "data.n=8", "sampler.steps=2", "metrics.names=[fid]",
         "hardware=cpu", "hardware.batch_size=4", "quiet=true")


def run_bench(monkeypatch, capsys, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m bench *overrides` in this process (the entry point, its error boundary and manifest; no
    interpreter start-up): its exit code, and its stderr + stdout as `stderr`."""
    code, output = main_in_process(monkeypatch, capsys, [*overrides, f"hydra.run.dir={run_dir}"])
    return subprocess.CompletedProcess(["python", "-m", "bench", *overrides], code, "", output)


def assert_failed_without_results(proc: subprocess.CompletedProcess, run_dir: Path) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"
    assert not (run_dir / "results.csv").exists() and not (run_dir / "results.parquet").exists()


class Constant(Pipeline):
    """Two stages; `generate` keeps the first stage's output and returns the second's."""

    def __init__(self, base: float, final: float) -> None:
        self.base, self.final = base, final
        self.info = PipelineInfo("constant", "pixel", 4, "none", (StageInfo("base", "denoiser", 2),
                                                                  StageInfo("sr1", "super_resolution", 4)))

    def networks(self) -> dict:
        return {}

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        ctx.keep("base", torch.full((len(ctx), 3, 2, 2), self.base))
        return torch.full((len(ctx), 3, 4, 4), self.final)


def test_non_finite_images_stop_sampling_naming_pipeline_stage_and_count():
    with pytest.raises(NonFiniteError, match=r"pipeline 'constant' produced 96 non-finite values .* stage 'sr1' "
                                             r"for samples 0-1"):
        next(Constant(0.0, float("nan")).sample(SampleRequest(n=2, batch_size=2)))
    # a NaN intermediate is reported at the stage where it first appeared
    with pytest.raises(NonFiniteError, match=r"24 non-finite values .* stage 'base'"):
        next(Constant(float("inf"), float("nan")).sample(SampleRequest(n=2, batch_size=2)))
    batch = next(Constant(0.5, -0.5).sample(SampleRequest(n=2, batch_size=2)))   # finite: unchanged
    assert batch.images.dtype == torch.uint8 and batch.stage_outputs["base"].dtype == torch.uint8


def test_infinite_guidance_makes_nan_images_and_stops_with_their_count():
    pipe = build_pipeline("pixel", "pixel_untrained", "pixel_ddpm_shapes32", untrained=True, init_seed=0)
    with pytest.raises(NonFiniteError, match=r"pipeline 'pixel_untrained' produced 6144 non-finite values .*"
                                             r"guidance_scale=inf"):
        next(pipe.sample(SampleRequest(n=2, labels=[0], guidance_scale=float("inf"), steps=2, batch_size=2)))


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_guidance_scale_must_be_finite(value):
    from hydra import compose, initialize_config_dir

    from bench.config import register_schema, validate
    register_schema()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        raw = compose(config_name="config", overrides=[f"guidance_scale={value}"])
    with pytest.raises(ConfigError, match="guidance_scale.*finite"):
        validate(raw)


class NaNFeatures(PooledPixels):
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = super().__call__(images)
        features["2048"][1, :3] = float("nan")
        return features


def test_nan_features_name_nan_and_the_generated_side(tmp_path):
    metrics = build_metrics(MetricsConfig(names=["fid", "kid"], kid_subsets=2, kid_subset_size=4),
                            DataConfig(name="shapes", resolution=16, n=20), cache_dir=tmp_path, extractor=PooledPixels())
    metrics.extractor = metrics.features.extractor = NaNFeatures()
    with pytest.raises(NonFiniteError) as info:
        metrics.update(next(batches(8, size=8)))
    message = str(info.value)
    assert "generated side" in message and "'inception_pool'" in message and "3 NaN" in message
    assert metrics.n == 0                   # nothing of the bad batch was accumulated


@pytest.mark.slow   # a full run; the statistics check itself is tested in test_metrics_refstats
def test_nan_in_the_reference_file_stops_naming_the_file_and_side(tmp_path, monkeypatch, capsys):
    reference = tmp_path / "ref_nan.npz"
    mu = np.zeros(2048)
    mu[7] = np.nan
    np.savez(reference, mu=mu, sigma=np.eye(2048, dtype=np.float32))
    with pytest.raises(NonFiniteError, match=r"ref_nan\.npz: mu of the reference side: 1 of 2048 values .*1 NaN"):
        build_metrics(MetricsConfig(names=["fid"], reference=str(reference)), DataConfig(name="shapes", n=8),
                      extractor=PooledPixels())   # the NaN check comes before the 48-vs-2048 dims check

    run_dir = tmp_path / "run"
    proc = run_bench(monkeypatch, capsys, run_dir, *SMALL, f"metrics.reference={reference}")
    assert_failed_without_results(proc, run_dir)
    assert str(reference) in proc.stderr and "reference side" in proc.stderr and "NaN" in proc.stderr


def test_nan_weights_fail_the_run_naming_the_pipeline_and_the_count(tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "nan_ckpt"
    shutil.copytree(CHECKPOINTS / "pixel_ddpm_shapes32", checkpoint)
    # a user's own checkpoint (no recorded sha256): a copy keeping the shipped SHA256SUMS is refused
    # at load for its changed weights before it could sample NaN (tests/test_guarded_inputs.py)
    (checkpoint / "SHA256SUMS").unlink()
    weights = load_file(checkpoint / "model.safetensors")
    first = min(weights)
    weights[first] = torch.full_like(weights[first], float("nan"))
    save_file(weights, checkpoint / "model.safetensors")
    run_dir = tmp_path / "run"
    proc = run_bench(monkeypatch, capsys, run_dir, *SMALL, f"pipeline.checkpoint={checkpoint}")
    assert_failed_without_results(proc, run_dir)
    assert "pipeline 'pixel_ddpm' produced 12288 non-finite values" in proc.stderr, proc.stderr[-2000:]
    assert not list((run_dir / "samples").rglob("shards/*.npz"))   # no black images stored either


def test_one_prompt_for_many_samples_is_a_warning_in_log_and_manifest(tmp_path, caplog):
    from suite_helpers import run_suite
    prompts = tmp_path / "one.txt"
    prompts.write_text("a red circle\n")
    with caplog.at_level(logging.WARNING, logger="bench.session"):
        frame = run_suite(tmp_path / "run", "pipeline=imagen_shapes", f"+suite.params.prompts={prompts}",
                          "suite.n=16", "metrics.names=[speed]", "suite.params.speed_n=16", "metrics.speed_repeats=1",
                          "sampler.steps=1", "hardware=cpu", "hardware.batch_size=16")
    said = [r.getMessage() for r in caplog.records if "1 prompt(s) for 16 samples" in r.getMessage()]
    assert len(said) == 1, caplog.text
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["warnings"] == said
    assert "images_per_s" in set(frame.metric)


def test_diffusers_output_with_nan_is_refused_not_turned_black() -> None:
    """diffusers pipelines convert their own [0, 1] output; NaN there is stopped the same way."""
    from models.families.diffusers_common import images_01_to_uint8   # diffusers is an optional extra
    images = np.full((2, 8, 8, 3), 0.5, dtype=np.float32)
    assert images_01_to_uint8(images).eq(128).all()
    images[1, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="1 non-finite values in 2 images"):
        images_01_to_uint8(images)
