"""lora_sweep: which adapter rank and variant buy concept fidelity without forgetting, at what cost.

From one shipped text-conditioned model (default imagen_shapes16_32), every point of
rank x variant x targets trains an adapter (bench.training, `adapter=...`, models/networks/adapters.py)
on the `concept` set (hearts, bench/data/shapes.py ConceptSource), all with the same recipe, step
budget and seed; full fine-tuning of the same model with the same budget is the baseline row
(variant=full, at its own learning rate suite.params.full_lr: a low-rank update needs a larger one).
Any target set trains, text-encoder ones included (the frozen encoder then runs with gradients).
Rows per point (the sweep columns: variant, rank, targets):
- cost: trainable_parameters, adapter_bytes (the saved adapter, or the full checkpoint),
  train_s_per_step, train_state_mib (trainable tensors + gradients + Adam moments, analytic; the CPU has
  no per-run peak counter) and, on CUDA, train_peak_memory_mib (torch.cuda.max_memory_allocated);
- concept fidelity, on the held-out concept captions (the concept set's test split): concept_clip_i
  (DreamBooth's CLIP-I, Ruiz et al. 2023: mean pairwise cosine between the reference CLIP's
  embeddings of the samples and of the held-out concept images) and concept_clip_t (the reference
  CLIP's text-image score of the concept prompt, as bench/metrics/clip_score.py);
- prior preservation: FID and CLIP score on the base prompts (data / suite.n, as every suite), and
  their change from the base model (fid_drift, clip_score_drift = forgetting);
- latency: s_per_image unmerged and merged (`merged` column) and merge_max_abs_diff (uint8 images of
  the merged vs unmerged adapter, same seeds: merging is exact up to float rounding).
The base model itself is a row too (variant=base). Adapters live in RUN_DIR/lora_sweep/<point>/ (resumable:
rerun with the same hydra.run.dir). Table and plot: `python -m reports.lora_sweep RUN_DIR`.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bench.atomic import atomic_write_json
from bench.config import DataConfig, PipelineConfig
from bench.data import build_source
from bench.data.config import choice, require
from bench.metrics.clip_score import ClipScore, clip_metric_name, reference_clip_embedder
from bench.results import MetricValue
from bench.training.config import ADAPTER_TARGETS, AdapterConfig, TrainingConfig, TrainRunConfig
from bench.training.trainer import train
from models.core.registry import build_pipeline
from models.networks.adapters import VARIANTS, load_adapter, merge, unmerge
from suites.params import SuiteParams, check_checkpoint

log = logging.getLogger(__name__)

CONF_TRAIN = Path(__file__).resolve().parent.parent / "conf" / "train"


@dataclass
class Params(SuiteParams):
    family: str = "imagen"
    base: str = "imagen_shapes16_32"       # the shipped text-conditioned checkpoint adapted
    train: str = "adapter_concept"         # conf/train/<name>.yaml: one recipe for every point
    steps: int = 300                       # the step budget of every point (and of full fine-tuning)
    adapter_lr: Optional[float] = None     # learning rate of the adapter points (None: the recipe's)
    full_lr: Optional[float] = 2e-3        # full fine-tuning's learning rate (None: the recipe's); LoRA wants a
                                           # larger one than full fine-tuning (its update is a low-rank product)
    train_data_n: int = 64                 # concept training images
    concept: str = "concept"               # data name of the concept set
    concept_n: int = 16                    # held-out concept captions sampled / images compared
    ranks: List[int] = field(default_factory=lambda: [1, 4, 8])
    variants: List[str] = field(default_factory=lambda: ["lora", "dora"])
    targets: List[str] = field(default_factory=lambda: ["attention", "all"])
    full_finetune: bool = True             # the baseline row (variant=full)
    speed_n: int = 4                       # images per timed repeat (unmerged vs merged)

    def __post_init__(self) -> None:
        require((CONF_TRAIN / f"{self.train}.yaml").is_file(), "suite.params.train",
                f"no train recipe {CONF_TRAIN / (self.train + '.yaml')}")
        for key in ("adapter_lr", "full_lr"):
            value = getattr(self, key)
            require(value is None or value > 0, f"suite.params.{key}", f"must be > 0 or null, got {value}")
        for key in ("steps", "train_data_n", "concept_n", "speed_n"):
            require(getattr(self, key) >= 1, f"suite.params.{key}", f"must be >= 1, got {getattr(self, key)}")
        require(bool(self.ranks) and all(r >= 1 for r in self.ranks), "suite.params.ranks",
                f"must be ranks >= 1, got {self.ranks}")
        for v in self.variants:
            choice(v, "suite.params.variants", VARIANTS)
        for t in self.targets:
            choice(t, "suite.params.targets", ADAPTER_TARGETS)
        check_checkpoint(self.base, "suite.params.base", self.family)   # at start, not after the first point trains


def point_dir(session, point: dict[str, Any]) -> Path:
    name = "_".join(f"{k}{v}" for k, v in point.items()).replace("+", "_")
    return session.run_dir / "lora_sweep" / name


def train_point(session, params: Params, point: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume, or reuse) one point's adapter / fine-tuned model; the trainer's summary."""
    recipe = OmegaConf.merge(OmegaConf.structured(TrainingConfig), OmegaConf.load(CONF_TRAIN / f"{params.train}.yaml"))
    recipe.steps, recipe.init_from, recipe.resume = params.steps, params.base, True
    out = point_dir(session, point)
    recipe.export = str(out / "export")
    lr = params.full_lr if point["variant"] == "full" else params.adapter_lr
    if lr is not None:
        recipe.lr = lr
    adapter = (AdapterConfig() if point["variant"] == "full" else
               AdapterConfig(variant=point["variant"], rank=point["rank"], targets=point["targets"]))
    data = DataConfig(name=params.concept, resolution=session.cfg.data.resolution, n=params.train_data_n,
                      seed=session.cfg.data.seed)
    cfg = TrainRunConfig(pipeline=PipelineConfig(name="lora_sweep", family=params.family), data=data,
                         hardware=session.cfg.hardware, train=OmegaConf.to_object(recipe), adapter=adapter,
                         quiet=session.quiet)
    key = json.loads(json.dumps({"train": vars(cfg.train), "adapter": vars(adapter), "data": vars(data)}, default=str))
    done = out / "trained.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key and Path(cfg.train.export).exists():
        return json.loads(done.read_text())["summary"]
    threads = torch.get_num_threads()
    cuda = session.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(session.device)
    try:
        summary = train(cfg, out / "train")
    finally:      # the recipe's train.threads must not slow the sampling that follows
        torch.set_num_threads(threads)
    if cuda:
        summary["peak_memory_mib"] = torch.cuda.max_memory_allocated(session.device) / 2 ** 20
    atomic_write_json(done, {"key": key, "summary": summary})
    return summary


def build_point_pipeline(session, params: Params, point: dict[str, Any], summary: dict[str, Any] | None):
    if point["variant"] == "full":
        pipe = build_pipeline(params.family, "lora_sweep", summary["export"])
    else:
        pipe = build_pipeline(params.family, "lora_sweep", params.base)
        if point["variant"] != "base":
            load_adapter(summary["export"], dict(pipe.networks()))
    return pipe.to(session.device, session.dtype)


def concept_fidelity(session, params: Params, pipe, reference: torch.Tensor, prompts: list[str],
                     embedder) -> list[MetricValue]:
    """CLIP-I (mean pairwise cosine, samples x held-out images) and CLIP-T of the concept prompts."""
    request = session.request(pipe, n=len(prompts), prompts=prompts)
    images = torch.cat([b.images for b in pipe.sample(request)])
    with torch.inference_mode():
        ours = F.normalize(embedder.encode_images(images).float(), dim=-1)
        theirs = F.normalize(embedder.encode_images(reference).float(), dim=-1).to(ours.device)
    pairwise = ours @ theirs.T
    clip_t = ClipScore(embedder)
    clip_t.update(images, prompts)
    t = clip_t.compute()
    clip_name = clip_metric_name(embedder)
    return [MetricValue("concept_clip_i", float(pairwise.mean()), len(images), details={"clip": clip_name}),
            MetricValue("concept_clip_t", t.value, t.n, ci_low=t.ci_low, ci_high=t.ci_high, details={"clip": clip_name})]


def latency(session, params: Params, pipe, prompts: list[str]) -> tuple[list[tuple[bool, float]], float]:
    """s/image unmerged and merged (one warm-up, then the best of metrics.speed_repeats) and the
    largest uint8 difference between their images."""
    cycled = (prompts * (params.speed_n // len(prompts) + 1))[:params.speed_n]
    request = session.request(pipe, n=params.speed_n, prompts=cycled, batch_size=params.speed_n)
    out, images = [], {}
    for merged in (False, True):
        if merged:
            merge(dict(pipe.networks()))
        next(iter(pipe.sample(request)))          # warm-up
        best = float("inf")
        for _ in range(max(1, session.cfg.metrics.speed_repeats)):
            start = time.perf_counter()
            batch = next(iter(pipe.sample(request)))
            best = min(best, time.perf_counter() - start)
        images[merged] = batch.images
        out.append((merged, best / params.speed_n))
    unmerge(dict(pipe.networks()))
    return out, float((images[True].int() - images[False].int()).abs().max())


ROLES = {"base": "baseline", "full": "reference"}   # every adapter point: "method"


def points(params: Params) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"variant": "base", "rank": 0, "targets": "none"}]
    if params.full_finetune:
        out.append({"variant": "full", "rank": 0, "targets": "all_weights"})
    out += [{"variant": v, "rank": int(r), "targets": t} for t in params.targets for v in params.variants
            for r in params.ranks]
    return out


def run(session, params: Params) -> None:
    cfg = session.cfg
    concept = build_source(DataConfig(name=params.concept, resolution=cfg.data.resolution, n=params.concept_n,
                                      seed=cfg.data.seed), split="test")
    batch = next(concept.iter_batches(params.concept_n))
    reference, prompts = batch.images, list(batch.captions)
    embedder = reference_clip_embedder(session.device)
    base_quality: dict[str, float] = {}
    for point in points(params):
        summary = None if point["variant"] == "base" else train_point(session, params, point)
        # the rows' role: the base model is the floor, full fine-tuning the reference the adapters are
        # measured against; reports bold the best adapter only (issue 28)
        row_point = {**point, "role": ROLES.get(point["variant"], "method")}
        pipe = build_point_pipeline(session, params, point, summary)
        values = concept_fidelity(session, params, pipe, reference, prompts, embedder)
        if summary is not None:
            steps = max(1, int(summary["steps"]))
            trainable = int(summary["trainable_parameters"])
            values += [MetricValue("trainable_parameters", float(trainable), 1, unit="params"),
                       MetricValue("adapter_bytes", float(summary["export_bytes"]), 1, unit="B",
                                   details={"path": summary["export"]}),
                       MetricValue("train_s_per_step", float(summary["elapsed_seconds"]) / steps, steps, unit="s"),
                       MetricValue("train_state_mib", 16 * trainable / 2 ** 20, 1, unit="MiB",
                                   details={"what": "trainable fp32 params + grads + Adam m, v (analytic)"}),
                       MetricValue("final_loss", float(summary["final_loss"]), 1)]
            if "peak_memory_mib" in summary:
                values.append(MetricValue("train_peak_memory_mib", float(summary["peak_memory_mib"]), 1, unit="MiB"))
        session.record(pipe, values, row_point)
        prior = session.evaluate(pipe, session.request(pipe), ["fid", "clip_score"], row_point,
                                 data=session.data_for(pipe))
        for value in prior:
            if point["variant"] == "base":
                base_quality[value.metric] = value.value
            elif value.metric in base_quality:
                drift = value.value - base_quality[value.metric]
                session.record(pipe, [MetricValue(f"{value.metric.split('[')[0]}_drift", drift, value.n,
                                                  details={"base": base_quality[value.metric]})], row_point)
        if point["variant"] not in ("base", "full"):
            timings, diff = latency(session, params, pipe, prompts)
            for merged, seconds in timings:
                session.record(pipe, [MetricValue("s_per_image", seconds, params.speed_n, unit="s")],
                               {**row_point, "merged": merged})
            session.record(pipe, [MetricValue("merge_max_abs_diff", diff, params.speed_n, unit="uint8")], row_point)
