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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
from omegaconf import OmegaConf

from bench.atomic import atomic_write_json
from bench.config import PipelineConfig
from bench.data.config import ConfigError, choice, require
from bench.results import MetricValue
from bench.training.config import TrainingConfig, TrainRunConfig
from bench.training.trainer import train
from models.core.checkpoint import load_config
from models.core.registry import FAMILY_MODULES, build_pipeline, resolve_checkpoint
from models.networks.autoencoder import AutoencoderConfig
from suites.common import quality_and_speed
from suites.params import QualityParams, check_autoencoder, check_downsample_factor

log = logging.getLogger(__name__)

CONF_TRAIN = Path(__file__).resolve().parent.parent / "conf" / "train"
DEFAULT_PATTERN = "ae_kl_f{f}_{data}{resolution}"   # the shipped autoencoders' naming
DEFAULT_FACTORS = (4, 8)
TRAINS_ON_AUTOENCODER = ("latent_unet", "latent_dit")   # families whose training takes params.autoencoder


@dataclass
class Budget:
    """The same for every f: train steps and/or wall-time seconds (null or 0 = no limit)."""
    steps: Optional[int] = 1000
    seconds: Optional[float] = None

    def __post_init__(self) -> None:
        given = f"got steps={self.steps}, seconds={self.seconds}"
        require(bool(self.steps) or bool(self.seconds), "suite.params.budget",
                f"must give steps and/or seconds, {given} (e.g. {{steps: 300}} or {{steps: null, seconds: 120}})")
        require((self.steps or 0) >= 0 and (self.seconds or 0) >= 0, "suite.params.budget",
                f"steps and seconds must be >= 0, {given}")


@dataclass
class Params(QualityParams):
    family: str = "latent_unet"        # any family whose make_trainable takes `autoencoder`
    train: str = "latent_unet_shapes32"   # conf/train/<name>.yaml: the one recipe used for every f
    train_overrides: Optional[Dict[str, Any]] = None   # merged over the recipe
    budget: Budget = field(default_factory=Budget)
    train_data_n: Optional[int] = None  # training images; None = data.n
    autoencoder_pattern: str = DEFAULT_PATTERN         # the shipped autoencoder per f
    autoencoders: Optional[Dict[int, Any]] = None      # f -> checkpoint name/dir or AutoencoderConfig mapping

    def __post_init__(self) -> None:
        super().__post_init__()
        choice(self.family, "suite.params.family", tuple(FAMILY_MODULES))
        require(recipe_path(self.train).is_file(), "suite.params.train",
                f"no train recipe {recipe_path(self.train)}; available: {sorted(p.stem for p in CONF_TRAIN.glob('*.yaml'))}")
        require(self.train_data_n is None or self.train_data_n >= 1, "suite.params.train_data_n",
                f"must be >= 1, got {self.train_data_n}")
        require(self.family in TRAINS_ON_AUTOENCODER, "suite.params.family",
                f"{self.family!r} does not train on an autoencoder; choose one of {list(TRAINS_ON_AUTOENCODER)}")
        for f, autoencoder in (self.autoencoders or {}).items():   # at start, not when f's turn comes
            check_downsample_factor(f, f"suite.params.autoencoders.{f}")
            check_autoencoder(autoencoder, f"suite.params.autoencoders.{f}", f=f)

    def check_config(self, cfg) -> None:
        """Every f of the sweep is one an autoencoder supports and has one: suite.params.autoencoders[f]
        (checked above) or the name autoencoder_pattern gives for it, which must exist with that f."""
        factors = list(cfg.suite.sweep.get("f", DEFAULT_FACTORS))
        require(bool(factors), "suite.sweep.f", f"give at least one f, e.g. {list(DEFAULT_FACTORS)}")
        for f in factors:
            check_downsample_factor(f, "suite.sweep.f")
            if f in (self.autoencoders or {}):
                continue
            try:
                name = autoencoder_for(f, self, cfg.data)
            except (KeyError, IndexError, ValueError) as err:
                raise ConfigError(f"config key 'suite.params.autoencoder_pattern': {self.autoencoder_pattern!r} cannot "
                                  f"be filled in ({type(err).__name__}: {err}); its fields are {{f}}, {{data}} and "
                                  "{resolution}") from None
            check_autoencoder(name, "suite.params.autoencoder_pattern", f=f)


def recipe_path(name: str) -> Path:
    return CONF_TRAIN / f"{name}.yaml"


def autoencoder_for(f: int, params: Params, data) -> Any:
    """suite.params.autoencoders[f] (a checkpoint name/dir, or an AutoencoderConfig mapping),
    else the shipped name from suite.params.autoencoder_pattern."""
    table = params.autoencoders or {}
    if f in table:
        return table[f]
    return params.autoencoder_pattern.format(f=f, data=data.name, resolution=data.resolution)


def downsample_factor(autoencoder: Any) -> int:
    """f of an autoencoder checkpoint (name/dir) or AutoencoderConfig mapping, without building it."""
    if isinstance(autoencoder, Mapping):
        return AutoencoderConfig(**autoencoder).downsample_factor
    config = load_config(resolve_checkpoint(str(autoencoder)))
    return int(config["networks"]["autoencoder"]["config"]["downsample_factor"])


def train_config(session, params: Params, f: int, autoencoder: Any) -> TrainRunConfig:
    """The TrainRunConfig for one f: the recipe conf/train/<params.train>.yaml, its model params
    with this f's autoencoder, the budget of params.budget, exported into the f's directory."""
    recipe = OmegaConf.merge(OmegaConf.structured(TrainingConfig), OmegaConf.load(recipe_path(params.train)),
                             params.train_overrides or {})
    recipe.model.autoencoder = autoencoder
    recipe.steps = params.budget.steps or 10 ** 9          # a wall-time budget alone: steps unbounded
    recipe.max_seconds = float(params.budget.seconds or 0.0)
    recipe.export = str(f_dir(session, f) / "model")
    recipe.resume = True
    family = params.family
    n = session.cfg.data.n if params.train_data_n is None else params.train_data_n
    data = replace(session.cfg.data, n=n)
    return TrainRunConfig(pipeline=PipelineConfig(name=f"{family}_f{f}", family=family),
                          data=data, hardware=session.cfg.hardware,
                          train=OmegaConf.to_object(recipe), quiet=session.quiet)


def f_dir(session, f: int) -> Path:
    return session.run_dir / "f_sweep" / f"f{f}"


def budget_key(cfg) -> dict[str, Any]:
    """What makes a trained model reusable: recipe, autoencoder, data, budget."""
    return json.loads(json.dumps({"train": vars(cfg.train), "data": vars(cfg.data),
                                  "family": cfg.pipeline.family}, default=str))


def train_one(session, params: Params, f: int, autoencoder: Any) -> dict[str, Any]:
    """Train (or resume, or reuse) the model for f; returns the trainer's summary."""
    cfg = train_config(session, params, f, autoencoder)
    out = f_dir(session, f)
    done_file = out / "trained.json"
    key = budget_key(cfg)
    if done_file.is_file():
        record = json.loads(done_file.read_text())
        if record.get("key") == key and (Path(cfg.train.export) / "model.safetensors").is_file():
            log.info("f=%d: reusing the trained model in %s", f, cfg.train.export)
            return record["summary"]
    log.info("f=%d: training %s on autoencoder %s", f, cfg.pipeline.family, autoencoder)
    threads = torch.get_num_threads()
    try:
        summary = train(cfg, out / "train")
    finally:   # the recipe's train.threads must not slow the sampling that follows
        torch.set_num_threads(threads)
    atomic_write_json(done_file, {"key": key, "summary": summary})
    return summary


def run(session, params: Params) -> None:
    cfg = session.cfg
    factors = [int(f) for f in cfg.suite.sweep.get("f", DEFAULT_FACTORS)]
    family = params.family
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
        summary = train_one(session, params, f, autoencoder)
        pipe = build_pipeline(family, name, summary["export"])
        pipe.to(session.device, session.dtype)
        point = {"f": f}
        trained = {"autoencoder": autoencoder, "checkpoint": summary["export"], "final_loss": summary["final_loss"]}
        session.record(pipe, [MetricValue("train_steps", float(summary["steps"]), 1, unit="steps", details=trained),
                              MetricValue("train_seconds", float(summary["elapsed_seconds"]), 1, unit="s")],
                       point)
        quality_and_speed(session, pipe, point, speed_n=params.speed_n)
