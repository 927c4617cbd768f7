"""f_sweep: one latent pipeline trained per f with the same budget (steps, or wall time), then
FID/KID and throughput per f, FID-vs-f / throughput-vs-f / FID-vs-throughput plots; trained
models are cached in the run directory, so a rerun reuses them. Tiny budgets (seconds)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from suite_helpers import run_suite

# Randomly initialised KL autoencoders per f (an f may name any checkpoint, or an AutoencoderConfig
# as here), so the test depends on no trained first stage; the shipped ones are the default.
RANDOM_AES = ("suite.params.autoencoders={4: {regularizer: kl, downsample_factor: 4, latent_channels: 4, "
              "base_channels: 8}, 8: {regularizer: kl, downsample_factor: 8, latent_channels: 4, base_channels: 8}}")
TINY = ("suite=f_sweep", "suite.n=8", "data.n=24", "sampler.steps=2", "metrics.kid_subsets=10",
        "metrics.speed_repeats=1", "suite.params.speed_n=4", "suite.params.train_data_n=32",
        "suite.params.train_overrides={batch_size: 8, checkpoint_every: 2, log_every: 1, warmup_steps: 1}")


def by_f(frame, metric):
    return frame[frame.metric == metric].set_index("f")["value"].to_dict()


@pytest.mark.slow   # two FIDs (2048-d eigendecompositions), two trainings, a rerun: ~1 CPU minute
def test_f_sweep_trains_each_f_with_one_budget_and_plots_the_trade_off(tmp_path: Path):
    run = tmp_path / "fs"
    frame = run_suite(run, *TINY, "suite.sweep.f=[4,8]", "suite.params.budget={steps: 3}", RANDOM_AES,
                      "metrics.names=[fid,kid,speed]")
    assert by_f(frame, "train_steps") == {4: 3.0, 8: 3.0}                 # the same budget per f
    for metric in ("fid", "kid", "images_per_s"):
        assert set(by_f(frame, metric)) == {4, 8}, metric
    assert frame.pipeline.nunique() == 1                                   # one curve over f
    plots = {p.name for p in (run / "plots").glob("*.png")}
    assert {"fid_vs_f.png", "images_per_s_vs_f.png", "pareto_fid_vs_images_per_s.png"} <= plots, plots
    for f in (4, 8):
        trained = json.loads((run / "f_sweep" / f"f{f}" / "trained.json").read_text())
        assert trained["summary"]["steps"] == 3
        assert (run / "f_sweep" / f"f{f}" / "model" / "model.safetensors").is_file()
    config = json.loads((run / "f_sweep" / "f8" / "model" / "config.json").read_text())
    assert config["latent_shape"] == [4, 4, 4]                             # 32 px / f=8

    # Resumable: a rerun into the same directory retrains nothing and reuses the samples.
    weights = run / "f_sweep" / "f4" / "model" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = run_suite(run, *TINY, "suite.sweep.f=[4,8]", "suite.params.budget={steps: 3}", RANDOM_AES,
                      "metrics.names=[kid]")
    assert weights.stat().st_mtime_ns == stamp
    assert by_f(again, "kid") == by_f(frame, "kid")


@pytest.mark.slow   # a timing budget, meaningful on a quiet machine
def test_f_sweep_wall_time_budget(tmp_path: Path):
    frame = run_suite(tmp_path / "wall", *TINY, "suite.sweep.f=[8]", RANDOM_AES,
                      "suite.params.budget={steps: null, seconds: 1.5}", "metrics.names=[kid]")
    steps, seconds = by_f(frame, "train_steps")[8], by_f(frame, "train_seconds")[8]
    assert 1 <= steps < 10 ** 6
    assert seconds >= 1.5


def test_f_sweep_rejects_a_mislabelled_autoencoder(tmp_path: Path):
    with pytest.raises(ValueError, match="downsamples by 8"):
        run_suite(tmp_path / "bad", *TINY, "suite.sweep.f=[2]", "suite.params.budget={steps: 1}",
                  "suite.params.autoencoders={2: {regularizer: kl, downsample_factor: 8, base_channels: 8}}",
                  "metrics.names=[kid]")
