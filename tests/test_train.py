"""The generic trainer: config composition, checkpoints, bit-exact resume after a kill, export."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.config import ConfigError, DataConfig, HardwareConfig, PipelineConfig, validate
from bench.training import trainer as trainer_module
from bench.training.config import TrainingConfig, TrainRunConfig, register_train_schema
from bench.training.state import list_checkpoints
from bench.training.trainer import drop_conditions, learning_rate, train
from models.core.interface import SampleRequest
from models.core.registry import build_pipeline

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = {"unet": {"base_channels": 8, "channel_mults": [1, 2], "attention_resolutions": [4], "num_heads": 2,
                       "norm_groups": 4}, "num_timesteps": 100}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(steps: int, family: str = "pixel", **train_kw) -> TrainRunConfig:
    model = dict(TINY_MODEL)
    if family == "cascaded":
        model["resolutions"] = [8, 16]
    train_kw = {"batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "checkpoint_every": 2, "log_every": 1,
                "ema_decay": 0.9, **train_kw}
    return TrainRunConfig(
        pipeline=PipelineConfig(name=f"tiny_{family}", family=family),
        data=DataConfig(name="shapes", resolution=16 if family == "cascaded" else 8, n=32),
        hardware=HardwareConfig(device="cpu"),
        train=TrainingConfig(steps=steps, model=model, **train_kw), quiet=True)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_checkpoints(run_dir)[-1] / "train_state.safetensors"))


def test_resume_after_a_kill_is_bit_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight = train(config(5), tmp_path / "straight")
    assert straight["steps"] == 5 and len(straight["loss_log"]) == 5

    calls = {"n": 0}
    real_update = trainer_module.ema_update

    def killed_at_step_4(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated kill")
        return real_update(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "ema_update", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(config(5), tmp_path / "killed")
    monkeypatch.setattr(trainer_module, "ema_update", real_update)
    assert [p.name for p in list_checkpoints(tmp_path / "killed")] == ["step_0000002"]
    resumed = train(config(5), tmp_path / "killed")
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for key in a:   # weights, optimiser moments, RNG state: all identical
        assert torch.equal(a[key], b[key]), key
    assert resumed["loss_log"] == straight["loss_log"]


def test_checkpoints_rotate_and_export_is_a_pipeline(tmp_path: Path) -> None:
    summary = train(config(6, export=str(tmp_path / "export"), keep_checkpoints=2), tmp_path / "run")
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_0000004", "step_0000006"]
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in summary["loss_log"])
    meta = json.loads((tmp_path / "export" / "config.json").read_text())
    assert meta["family"] == "pixel" and meta["training"]["steps"] == 6 and meta["num_classes"] == 8
    pipe = build_pipeline("pixel", "trained", str(tmp_path / "export"))
    batch = next(pipe.sample(SampleRequest(n=2, labels=[0, 5], steps=2, batch_size=2)))
    assert batch.images.shape == (2, 3, 8, 8)
    # Each periodic checkpoint is itself a loadable pipeline checkpoint (the EMA weights).
    build_pipeline("pixel", "ckpt", str(list_checkpoints(tmp_path / "run")[-1]))


def test_cascade_trains_through_the_same_loop(tmp_path: Path) -> None:
    summary = train(config(2, family="cascaded", export=str(tmp_path / "c")), tmp_path / "run")
    assert set(summary["parameters"]) == {"base", "sr1"}
    pipe = build_pipeline("cascaded", "c", str(tmp_path / "c"))
    assert pipe.info.resolution == 16


def test_learning_rate_warms_up_then_decays_to_lr_min() -> None:
    tc = TrainingConfig(steps=110, lr=1e-3, warmup_steps=10, lr_schedule="cosine", lr_min=1e-5)
    rates = [learning_rate(step, tc) for step in range(110)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert rates[10] == pytest.approx(1e-3)
    assert rates[60] == pytest.approx((1e-3 + 1e-5) / 2)          # half-way through the decay
    assert all(a >= b for a, b in zip(rates[9:], rates[10:])) and rates[-1] == pytest.approx(1e-5, rel=0.05)
    constant = TrainingConfig(steps=110, lr=1e-3, warmup_steps=10)
    assert learning_rate(100, constant) == 1e-3
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        TrainingConfig(lr_schedule="step")
    with pytest.raises(ConfigError, match="train.lr_min"):
        TrainingConfig(lr=1e-3, lr_min=1e-2)


def test_fine_tuning_starts_from_a_checkpoint_and_refuses_another_architecture(tmp_path: Path) -> None:
    train(config(2, export=str(tmp_path / "first")), tmp_path / "run1")
    start = load_file(str(tmp_path / "first" / "model.safetensors"))
    # One step at a tiny rate barely moves the weights: they start from the checkpoint, not at random.
    train(config(1, init_from=str(tmp_path / "first"), lr=1e-8, warmup_steps=0, ema_decay=0.0,
                 export=str(tmp_path / "tuned")), tmp_path / "run2")
    tuned = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    assert all(torch.allclose(tuned[k], start[k], atol=1e-6) for k in start)
    tuned_config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert tuned_config["training"]["init_from"] == str(tmp_path / "first")     # provenance
    other = config(1, init_from=str(tmp_path / "first"))
    other.train.model = {**TINY_MODEL, "unet": {**TINY_MODEL["unet"], "base_channels": 16}}
    with pytest.raises(ValueError, match="train.init_from"):
        train(other, tmp_path / "run3")


def test_condition_dropout_rate() -> None:
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.zeros(4000, 1), "label": torch.full((4000,), 3), "caption": ["a"] * 4000}
    out = drop_conditions(batch, 0.2, g)
    dropped = (out["label"] == -1).float().mean().item()
    assert abs(dropped - 0.2) < 0.03
    assert [c == "" for c in out["caption"]] == (out["label"] == -1).tolist()
    assert drop_conditions(batch, 0.0, g) is batch


def test_config_composes_and_bad_values_are_named() -> None:
    from hydra import compose, initialize_config_dir
    register_train_schema()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = validate(compose("train", overrides=["train=pixel_shapes32"]))
        assert cfg.pipeline.family == "pixel" and cfg.train.steps > 0
        assert cfg.train.model, "the shipped recipe sets the architecture in train.model"
        cascade = validate(compose("train", overrides=["pipeline=cascaded_ddpm", "train=cascaded_shapes16_32"]))
        assert cascade.pipeline.family == "cascaded"
        with pytest.raises(ConfigError, match="train.lr"):
            validate(compose("train", overrides=["train.lr=-1"]))


@pytest.mark.slow   # a training run through the CLI
def test_cli_runs_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIFFBENCH_QUIET": "1"}
    cmd = [sys.executable, "-m", "bench.train", "data.n=16", "data.resolution=8", "train.steps=2",
           "train.batch_size=8", "train.threads=1", f"hydra.run.dir={tmp_path}",
           "+train.model.unet={base_channels: 8, channel_mults: [1, 2], attention_resolutions: [4], norm_groups: 4}"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "train_summary.json").read_text())["steps"] == 2
    bad = subprocess.run(cmd[:3] + ["train.batch_size=0", f"hydra.run.dir={tmp_path}/bad"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "train.batch_size" in bad.stderr


def test_a_half_written_checkpoint_from_a_kill_is_ignored(tmp_path: Path) -> None:
    """A kill during `save_state` leaves only `.step_N.tmp` (checkpoints are renamed into place):
    the rerun resumes from the last complete checkpoint and ends where a straight run ends."""
    straight = train(config(4), tmp_path / "straight")
    train(config(2), tmp_path / "killed")
    partial = tmp_path / "killed" / "checkpoints" / ".step_0000004.tmp"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")
    assert [p.name for p in list_checkpoints(tmp_path / "killed")] == ["step_0000002"]
    resumed = train(config(4), tmp_path / "killed")
    assert resumed["loss_log"] == straight["loss_log"]
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_cli_resumes_after_sigkill(tmp_path: Path) -> None:
    """A real `kill -9` of `python -m bench.train`, then the same command: it resumes from the
    last checkpoint and finishes with the weights of an uninterrupted run."""
    import signal
    import time
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIFFBENCH_QUIET": "1"}
    common = [sys.executable, "-m", "bench.train", "data.n=16", "data.resolution=8", "train.batch_size=8",
              "train.threads=1", "train.checkpoint_every=1", "train.keep_checkpoints=100", "quiet=true",
              "+train.model.unet={base_channels: 8, channel_mults: [1, 2], attention_resolutions: [4], norm_groups: 4}"]
    victim = subprocess.Popen(common + ["train.steps=100000", f"hydra.run.dir={tmp_path}/killed"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while len(list_checkpoints(tmp_path / "killed")) < 3 and time.time() < deadline:
            time.sleep(0.2)
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    done = list_checkpoints(tmp_path / "killed")
    assert len(done) >= 3, "the victim wrote no checkpoints in time"
    steps = int(done[-1].name.split("_")[1]) + 2
    before = {p.name: (p / "train_state.safetensors").stat().st_mtime_ns for p in done}
    for run_dir in ("killed", "straight"):
        finished = subprocess.run(common + [f"train.steps={steps}", f"hydra.run.dir={tmp_path}/{run_dir}"], cwd=ROOT,
                                  env=env, capture_output=True, text=True, timeout=300)
        assert finished.returncode == 0, finished.stderr[-2000:]
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    assert json.loads((tmp_path / "killed" / "train_summary.json").read_text())["steps"] == steps
    # It resumed: the checkpoints written before the kill were not redone.
    assert {p.name: (p / "train_state.safetensors").stat().st_mtime_ns
            for p in list_checkpoints(tmp_path / "killed") if p.name in before} == before
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.gpu
def test_mixed_precision_training_on_cuda(tmp_path: Path) -> None:
    """bf16 autocast on CUDA (train.amp): finite losses, float32 master weights and EMA export."""
    cfg = config(4, export=str(tmp_path / "export"))
    cfg.hardware = HardwareConfig(device="cuda")
    summary = train(cfg, tmp_path / "run")
    assert summary["device"].startswith("cuda")
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in summary["loss_log"])
    exported = load_file(str(tmp_path / "export" / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in exported.values())
