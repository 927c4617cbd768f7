"""The generic training loop behind `python -m bench.train`.

AdamW with linear warm-up and optional cosine decay, global grad-norm clipping, an EMA of the
weights (what checkpoints ship), bf16 autocast on CUDA, condition dropout for classifier-free
guidance, optional fine-tuning from a checkpoint, periodic resumable checkpoints (killing the run
loses at most `checkpoint_every` steps; rerunning the same command continues bit-for-bit on CPU),
a progress bar with the loss. The family supplies the networks and the loss through
`bench.training.trainable`.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from bench.atomic import atomic_write_json
from bench.data import build_source
from bench.device import resolve_device
from bench.progress import progress
from bench.training.adapter import (adapter_record, adapter_run_dir, adapter_spec, attach_for_training,
                                    check_adapter_run)
from bench.training.batches import TrainingBatches
from bench.training.config import TrainingConfig, TrainRunConfig
from bench.training.state import list_checkpoints, load_state, save_state
from bench.training.trainable import make_trainable
from models.core.checkpoint import MODEL_FILE, load_config, load_weights, save_checkpoint
from models.core.registry import resolve_checkpoint
from models.networks.adapters import adapter_size_bytes, save_adapter

log = logging.getLogger("bench.train")


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def ema_decay_at(step: int, decay: float, warmup: bool) -> float:
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


def learning_rate(step: int, tc: TrainingConfig) -> float:
    """Linear warm-up, then constant, or cosine annealing to lr_min at the last step
    (Loshchilov & Hutter 2017)."""
    if tc.warmup_steps and step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "constant":
        return tc.lr
    done_fraction = min(1.0, (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps))
    return tc.lr_min + 0.5 * (tc.lr - tc.lr_min) * (1 + math.cos(math.pi * done_fraction))


def init_from_checkpoint(networks: nn.ModuleDict, checkpoint: str, config: dict[str, Any]) -> None:
    """Fine-tuning start: load a checkpoint's weights (a directory or a shipped name), refusing one
    whose networks or tensor shapes differ. Configs are compared loosely (an exported autoencoder
    records its fitted latent scale)."""
    directory = resolve_checkpoint(checkpoint)
    theirs, ours = load_config(directory).get("networks") or {}, config.get("networks") or {}
    if set(theirs) != set(ours):
        raise ValueError(f"train.init_from={checkpoint}: it holds networks {sorted(theirs)}, this run trains "
                         f"{sorted(ours)}; pass a checkpoint of the same pipeline")
    try:
        load_weights(directory, networks)
    except (ValueError, RuntimeError) as err:      # missing keys / size mismatch
        raise ValueError(f"train.init_from={checkpoint}: its weights do not fit this run's architecture "
                         f"(pipeline and train.model must match the checkpoint's config.json): {err}") from None
    if theirs != ours:
        log.warning("train.init_from=%s: its network config differs from this run's in settings that do not "
                    "change tensor shapes; this run's config is the one exported", checkpoint)


def drop_conditions(batch: dict[str, Any], p: float, generator: torch.Generator) -> dict[str, Any]:
    """Replace each row's label by -1 and caption by "" with probability p (one draw per row)."""
    if p <= 0:
        return batch
    drop = torch.rand(len(batch["label"]), generator=generator) < p
    labels = torch.where(drop, torch.full_like(batch["label"], -1), batch["label"])
    captions = ["" if d else c for d, c in zip(drop.tolist(), batch["caption"])]
    return {**batch, "label": labels, "caption": captions}


def train(cfg: TrainRunConfig, run_dir: Path) -> dict[str, Any]:
    tc = cfg.train
    run_dir = Path(run_dir)
    spec = adapter_spec(cfg.adapter)
    if spec is not None:
        check_adapter_run(spec, tc)
        run_dir = adapter_run_dir(run_dir, spec)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(cfg.hardware)
    torch.manual_seed(tc.seed)
    source = build_source(cfg.data, split="train")
    if source.num_classes is None and tc.p_uncond > 0:
        log.info("data %s has no labels: class conditioning is off", source.name)
    params = {**cfg.pipeline.params, **tc.model}
    trainable = make_trainable(cfg.pipeline.family, cfg.pipeline.name, params, resolution=source.resolution,
                               num_classes=source.num_classes,
                               class_names=list(source.class_names) if source.class_names else None)
    networks = trainable.networks.to(device)
    config = trainable.checkpoint_config()
    existing = list_checkpoints(run_dir) if tc.resume else []
    if tc.init_from and not existing:       # a resumed run continues from its own weights
        init_from_checkpoint(networks, tc.init_from, config)
        log.info("initialised the weights from %s", tc.init_from)
    if tc.channels_last:
        networks.to(memory_format=torch.channels_last)   # only 4-d weights change layout
    adapter_configs, trainable_count = {}, None
    if spec is not None:        # after init_from (the frozen base), before EMA, optimiser and resume; after
        # channels_last: peft's DoRA reads its conv factors with .view(), which a channels_last tensor refuses
        adapter_configs, trainable_count = attach_for_training(networks, spec, getattr(trainable, "text_encoder", None))
        log.info("adapter %s rank %d on %s: %d trainable parameters in %s", spec.variant, spec.rank, spec.targets,
                 trainable_count, sorted(adapter_configs))
    ema = copy.deepcopy(networks).requires_grad_(False)
    optimizer = torch.optim.AdamW(networks.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    generator = torch.Generator().manual_seed(tc.seed)

    start, loss_log, elapsed_before = 0, [], 0.0
    if existing:
        meta = load_state(existing[-1], networks=networks, ema=ema, optimizer=optimizer, generator=generator)
        start, loss_log, elapsed_before = meta["step"], meta["loss_log"], meta["elapsed_seconds"]
        log.info("resuming from %s (step %d)", existing[-1], start)
    if start >= tc.steps:
        log.info("already trained for %d >= train.steps=%d steps", start, tc.steps)

    batches = TrainingBatches(source, tc.batch_size, tc.seed, preload_max_mb=tc.preload_max_mb, quiet=cfg.quiet)
    n_params = {role: sum(p.numel() for p in net.parameters()) for role, net in networks.items()}
    if trainable_count is None:
        trainable_count = sum(p.numel() for p in networks.parameters() if p.requires_grad)
    log.info("training %s (%s) on %s: %s parameters, %d steps of %d on %s",
             cfg.pipeline.name, cfg.pipeline.family, source, n_params, tc.steps, tc.batch_size, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=tc.amp and device.type == "cuda")
    bar = progress(total=tc.steps, initial=start, desc=f"train {cfg.pipeline.name}", unit="step", disable=cfg.quiet)
    t0, window = time.perf_counter(), []

    def meta() -> dict[str, Any]:
        return {"loss_log": loss_log, "elapsed_seconds": elapsed_before + time.perf_counter() - t0,
                "parameters": n_params, "trainable_parameters": trainable_count, "device": str(device),
                "batch_size": tc.batch_size}

    networks.train()
    def out_of_time() -> bool:
        return bool(tc.max_seconds) and elapsed_before + time.perf_counter() - t0 >= tc.max_seconds

    done = start
    for step in range(start, start if out_of_time() else tc.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, tc)
        raw = drop_conditions(batches.batch(step), tc.p_uncond, generator)
        image = raw["image"].to(device).float() / 127.5 - 1.0
        if tc.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        batch = {"image": image, "label": raw["label"].to(device),
                 "caption": raw["caption"]}
        with autocast:
            loss = trainable.training_loss(batch, generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {step}; lower train.lr "
                                     f"(now {tc.lr}) or keep train.grad_clip > 0")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(networks.parameters(), tc.grad_clip)
        optimizer.step()
        ema_update(ema, networks, ema_decay_at(step, tc.ema_decay, tc.ema_warmup))
        window.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{sum(window[-20:]) / len(window[-20:]):.4f}")
        done = step + 1
        timed_out = out_of_time()
        last = done == tc.steps or timed_out      # the last step is always logged and checkpointed
        if done % tc.log_every == 0 or last:
            loss_log.append([done, sum(window) / len(window)])
            log.info("step %d loss %.5f", done, loss_log[-1][1])
            window = []
        if done % tc.checkpoint_every == 0 or last:
            save_state(run_dir, done, networks=networks, ema=ema, optimizer=optimizer, generator=generator,
                       config=config, meta=meta(), keep=tc.keep_checkpoints)
        if timed_out:
            log.info("wall-time budget train.max_seconds=%g reached after %d steps", tc.max_seconds, done)
            break
    bar.close()

    final = list_checkpoints(run_dir)[-1] if list_checkpoints(run_dir) else None
    summary = {"pipeline": cfg.pipeline.name, "family": cfg.pipeline.family, "steps": done,
               "final_loss": loss_log[-1][1] if loss_log else math.nan, "checkpoint": str(final),
               **meta()}
    if tc.export and spec is not None:
        training = {k: summary[k] for k in ("steps", "final_loss", "elapsed_seconds", "trainable_parameters",
                                            "device", "batch_size")}
        out = save_adapter(tc.export, ema.cpu(), adapter_configs, spec,
                           adapter_record(spec, tc, cfg.pipeline.name, cfg.pipeline.family,
                                          {**training, "data": cfg.data.__dict__}))
        summary["export"], summary["export_bytes"] = str(out), adapter_size_bytes(out)
        log.info("exported the adapter to %s (%.1f kB)", out, summary["export_bytes"] / 1e3)
    elif tc.export:
        training = {k: summary[k] for k in ("steps", "final_loss", "elapsed_seconds", "parameters", "device", "batch_size")}
        if tc.init_from:
            training["init_from"] = tc.init_from
        out = save_checkpoint(tc.export, ema.cpu(), {**config, "training": {**training, "data": cfg.data.__dict__}},
                              dtype=tc.export_dtype)
        summary["export"] = str(out)
        summary["export_bytes"] = (out / MODEL_FILE).stat().st_size
        log.info("exported EMA weights to %s (%.2f MB)", out, summary["export_bytes"] / 1e6)
    atomic_write_json(run_dir / "train_summary.json", summary)
    return summary
