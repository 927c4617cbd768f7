"""f_sweep: LDM's downsampling-factor trade-off (Rombach et al. 2022, sec. 4.1, Figs. 6-7).

For each f: train one latent pipeline on the f autoencoder with the same budget (train steps,
or wall time via train.max_seconds), using the generic trainer (bench.training) and one
train recipe (conf/train/<preset>.yaml) for every f; then FID/KID (and precision/recall) and
sample throughput per f. The report plots FID vs f, throughput vs f and FID vs throughput.

Resumable: each f trains in RUN_DIR/f_sweep/f<F>/ (the trainer resumes from its checkpoints)
and exports there; a finished export whose recorded budget matches is reused as is, and the
samples go through the run's sample store like every suite's. Rerun with the same
hydra.run.dir to continue a killed sweep.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from bench.results import MetricValue
from suites.common import quality_and_speed

log = logging.getLogger(__name__)

CONF_TRAIN = Path(__file__).resolve().parent.parent / "conf" / "train"
DEFAULT_PATTERN = "ae_kl_f{f}_{data}{resolution}"   # the shipped autoencoders' naming


def autoencoder_for(f: int, params: Mapping[str, Any], data) -> Any:
    """suite.params.autoencoders[f] (a checkpoint name/dir, or an AutoencoderConfig mapping),
    else the shipped name from suite.params.autoencoder_pattern."""
    table = {int(k): v for k, v in (params.get("autoencoders") or {}).items()}
    if f in table:
        value = table[f]
        return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    pattern = params.get("autoencoder_pattern", DEFAULT_PATTERN)
    return pattern.format(f=f, data=data.name, resolution=data.resolution)


def downsample_factor(autoencoder: Any) -> int:
    """f of an autoencoder checkpoint (name/dir) or AutoencoderConfig mapping, without building it."""
    from models.autoencoder import AutoencoderConfig
    from models.checkpoint import load_config
    from models.registry import resolve_checkpoint
    if isinstance(autoencoder, Mapping):
        return AutoencoderConfig(**autoencoder).downsample_factor
    config = load_config(resolve_checkpoint(str(autoencoder)))
    return int(config["networks"]["autoencoder"]["config"]["downsample_factor"])


def train_config(session, f: int, autoencoder: Any):
    """The TrainRunConfig for one f: the recipe conf/train/<params.train>.yaml, its model params
    with this f's autoencoder, the budget of params.budget, exported into the f's directory."""
    from bench.config import PipelineConfig
    from bench.training.config import TrainingConfig, TrainRunConfig

    params = session.cfg.suite.params
    preset = str(params.get("train", "latent_unet_shapes32"))
    path = CONF_TRAIN / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONF_TRAIN.glob("*.yaml"))
        raise ValueError(f"config key 'suite.params.train': no train recipe {path}; available: {known}")
    budget = {k: v for k, v in dict(params.get("budget") or {}).items() if v}
    unknown = sorted(set(budget) - {"steps", "seconds"})
    if unknown or not budget:
        raise ValueError(f"config key 'suite.params.budget': {budget} must give steps and/or seconds "
                         "(e.g. {steps: 300} or {steps: null, seconds: 120})")
    recipe = OmegaConf.merge(OmegaConf.structured(TrainingConfig), OmegaConf.load(path),
                             params.get("train_overrides") or {})
    recipe.model.autoencoder = autoencoder
    recipe.steps = int(budget.get("steps", 10 ** 9))           # a wall-time budget alone: steps unbounded
    recipe.max_seconds = float(budget.get("seconds", 0.0))
    recipe.export = str(f_dir(session, f) / "model")
    recipe.resume = True
    family = str(params.get("family", "latent_unet"))
    data = replace(session.cfg.data, n=int(params.get("train_data_n", session.cfg.data.n)))
    return TrainRunConfig(pipeline=PipelineConfig(name=f"{family}_f{f}", family=family),
                          data=data, hardware=session.cfg.hardware,
                          train=OmegaConf.to_object(recipe), quiet=session.quiet)


def f_dir(session, f: int) -> Path:
    return session.run_dir / "f_sweep" / f"f{f}"


def budget_key(cfg) -> dict[str, Any]:
    """What makes a trained model reusable: recipe, autoencoder, data, budget."""
    return json.loads(json.dumps({"train": vars(cfg.train), "data": vars(cfg.data),
                                  "family": cfg.pipeline.family}, default=str))


def train_one(session, f: int, autoencoder: Any) -> dict[str, Any]:
    """Train (or resume, or reuse) the model for f; returns the trainer's summary."""
    from bench.training.trainer import train
    cfg = train_config(session, f, autoencoder)
    out = f_dir(session, f)
    done_file = out / "trained.json"
    key = budget_key(cfg)
    if done_file.is_file():
        record = json.loads(done_file.read_text())
        if record.get("key") == key and (Path(cfg.train.export) / "model.safetensors").is_file():
            log.info("f=%d: reusing the trained model in %s", f, cfg.train.export)
            return record["summary"]
    log.info("f=%d: training %s on autoencoder %s", f, cfg.pipeline.family, autoencoder)
    import torch
    threads = torch.get_num_threads()
    try:
        summary = train(cfg, out / "train")
    finally:   # the recipe's train.threads must not slow the sampling that follows
        torch.set_num_threads(threads)
    from bench.atomic import atomic_write_json
    atomic_write_json(done_file, {"key": key, "summary": summary})
    return summary


def run(session) -> None:
    from models.registry import build_pipeline

    cfg = session.cfg
    params = cfg.suite.params
    factors = [int(f) for f in cfg.suite.sweep.get("f", [4, 8])]
    family = str(params.get("family", "latent_unet"))
    name = f"{family}_fsweep"          # one pipeline name, so every f lands on one curve
    for f in factors:
        autoencoder = autoencoder_for(f, params, cfg.data)
        try:
            actual = downsample_factor(autoencoder)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"suite f_sweep: no autoencoder for f={f} ({err}); train one (e.g. conf/train/ae_kl_f{f}_shapes32.yaml) "
                f"or map f to a checkpoint: suite.params.autoencoders={{{f}: DIR}}") from None
        if actual != f:
            raise ValueError(f"suite f_sweep: autoencoder {autoencoder!r} for f={f} downsamples by {actual}; "
                             "fix suite.params.autoencoders")
        summary = train_one(session, f, autoencoder)
        pipe = build_pipeline(family, name, summary["export"])
        pipe.to(session.device, session.dtype)
        point = {"f": f}
        trained = {"autoencoder": autoencoder, "checkpoint": summary["export"], "final_loss": summary["final_loss"]}
        session.record(pipe, [MetricValue("train_steps", float(summary["steps"]), 1, unit="steps", details=trained),
                              MetricValue("train_seconds", float(summary["elapsed_seconds"]), 1, unit="s")],
                       point)
        quality_and_speed(session, pipe, point)
