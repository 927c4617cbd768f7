"""What every diffusers adapter shares: the optional import, per-sample generators, the
scheduler modes (the model's own scheduler as saved, or the request's sampler mapped onto a
diffusers scheduler), and measuring a diffusers `__call__` through `BatchContext`.

diffusers pipelines are monolithic calls, so the adapters measure them from outside:
- NFE: a forward pre-hook on each denoising network feeds `ctx.counted`, which adds
  rows / images per call (a CFG call on the doubled batch counts 2 per image);
- stage time: the whole call runs under `ctx.stage(main)`; sub-networks of other stages
  (text encoder, VAE decoder, prior, super-resolution) are timed by forward hooks that enter
  and leave `ctx.stage(theirs)`, and their time is taken off the main stage, so each second
  is counted once. Scheduler arithmetic between network calls belongs to the main stage.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
from typing import Any, Iterator, Mapping, Sequence

import torch

from models.core.interface import BatchContext, NonFiniteError, RequestError, StageSettings, count_nonfinite
from models.core.seeding import derive_seed


INSTALL_HINT = "install the optional extra: pip install 'diffbench[diffusers]' (diffusers, transformers, accelerate)"

# params.scheduler: "saved" (default) runs the model's own scheduler class and config as saved, as
# calling the pipeline does; "request" maps the request's sampler onto a diffusers scheduler (SCHEDULERS).
# "native" is the earlier name of "saved", still accepted.
SCHEDULER_MODES = ("saved", "request")
SCHEDULER_ALIASES = {"native": "saved"}

# the project's sampler names -> diffusers scheduler classes (+ settings that make them that sampler)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "heun": ("HeunDiscreteScheduler", {}),
}


def require_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as err:
        raise ImportError(f"the diffusers adapters need the `diffusers` package ({err}); {INSTALL_HINT}") from None
    return diffusers


def sample_generators(ctx: BatchContext, stream: str) -> list[torch.Generator]:
    """One CPU generator per sample, seeded from (seed, index, stream): diffusers draws each
    row from its own generator when given a list (randn_tensor), on the CPU, then moves it."""
    return [torch.Generator().manual_seed(derive_seed(ctx.request.seed, i, stream)) for i in ctx.indices]


def init_parameters(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters)


def make_scheduler(native: Any, settings: StageSettings, *, pixel_space: bool, pipeline: str) -> Any:
    """The request's sampler as a diffusers scheduler, built from the pipeline's own scheduler
    config (its noise schedule, prediction type and timestep spacing stay the model's)."""
    if settings.sampler not in SCHEDULERS:
        raise RequestError(f"pipeline {pipeline!r}: sampler {settings.sampler!r} has no diffusers scheduler; "
                           f"choose one of {sorted(SCHEDULERS)}")
    diffusers = require_diffusers()
    class_name, fixed = SCHEDULERS[settings.sampler]
    cls = getattr(diffusers, class_name)
    accepted = init_parameters(cls)
    config = {k: v for k, v in dict(native.config).items() if not k.startswith("_")}
    config.update(fixed)
    if config.get("variance_type") in ("learned", "learned_range") and "variance_type" not in accepted:
        # the pipeline must drop the predicted variance before a scheduler that cannot use it
        config["variance_type"] = None
    wanted = thresholding_config(settings, pixel_space, pipeline)
    missing = [k for k, v in wanted.items() if k not in accepted and v]
    if missing:
        raise RequestError(f"pipeline {pipeline!r}: diffusers' {class_name} (sampler {settings.sampler}) has no "
                           f"{'/'.join(missing)}; use thresholding=none or sampler ddpm, ddim or dpmpp_2m")
    config.update({k: v for k, v in wanted.items() if k in accepted})
    return cls.from_config(config)


def scheduler_mode(value: str, pipeline: str) -> str:
    mode = SCHEDULER_ALIASES.get(value, value)
    if mode not in SCHEDULER_MODES:
        raise ValueError(f"diffusers pipeline {pipeline!r}: params.scheduler={value!r}; choose one of {SCHEDULER_MODES} "
                         "(saved: the model's own scheduler as saved; request: the request's sampler)")
    return mode


def scheduler_record(scheduler: Any) -> dict[str, Any]:
    """A scheduler's class and config as JSON sees them (for rows, the sample store key and the
    manifest): every config entry but diffusers' private `_class_name` / `_diffusers_version`."""
    config = {k: _plain(v) for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    return {"class": type(scheduler).__name__, "config": dict(sorted(config.items()))}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):          # numpy arrays / scalars (trained_betas)
        return value.tolist()
    return value


def thresholding_config(settings: StageSettings, pixel_space: bool, pipeline: str) -> dict[str, Any]:
    """Request thresholding -> diffusers scheduler settings. Static = clip x0 to [-1, 1];
    dynamic = Imagen's per-sample percentile (Saharia et al. 2022, sec. 2.3)."""
    mode = settings.thresholding
    if not pixel_space:
        if mode != "none":
            raise RequestError(f"pipeline {pipeline!r} denoises latents; thresholding={mode} applies to pixels "
                               "(x0 in [-1, 1]); use thresholding=none")
        return {"clip_sample": False, "thresholding": False}
    if mode == "static":
        return {"clip_sample": True, "thresholding": False}
    if mode == "dynamic":
        return {"clip_sample": False, "thresholding": True,
                "dynamic_thresholding_ratio": settings.dynamic_threshold_percentile}
    return {"clip_sample": False, "thresholding": False}


class SeededSteps:
    """A scheduler whose `step` always gets the batch's per-sample generators and eta.

    Some diffusers pipelines (DiT, LDM, LDMTextToImage) call `step` without a generator, so a
    stochastic sampler would draw from the global RNG and sample i would depend on its batch.
    A call on a CFG-doubled batch whose halves are identical (DiT keeps them in sync) steps the
    first half with the generators and repeats the result."""

    def __init__(self, scheduler: Any, generators: Sequence[torch.Generator], eta: float) -> None:
        object.__setattr__(self, "_scheduler", scheduler)
        object.__setattr__(self, "_generators", list(generators))
        object.__setattr__(self, "_eta", eta)
        object.__setattr__(self, "_params", set(inspect.signature(scheduler.step).parameters))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scheduler, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._scheduler, name, value)

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if args:
            return self._scheduler.step(model_output, timestep, sample, *args, **kwargs)
        if "eta" in self._params and "eta" not in kwargs:
            kwargs["eta"] = self._eta
        if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(self._scheduler.step).parameters.values()):
            # a pipeline's loop is written for its own scheduler: DDIMPipeline passes DDIM's `eta` and
            # `use_clipped_model_output`, which DDPM / DPM-Solver steps do not take (TypeError, issue 26).
            # The request's eta is a DDIM setting, so the other samplers have nothing to take it as.
            kwargs = {k: v for k, v in kwargs.items() if k in self._params}
        if "generator" not in self._params or kwargs.get("generator") is not None:
            return self._scheduler.step(model_output, timestep, sample, **kwargs)
        n, rows = len(self._generators), sample.shape[0]
        if rows == n:
            return self._scheduler.step(model_output, timestep, sample, generator=self._generators, **kwargs)
        copies = rows // n
        if rows % n or not torch.equal(sample[:n].repeat(copies, *[1] * (sample.ndim - 1)), sample):
            raise RuntimeError(f"scheduler step on {rows} rows for {n} samples: cannot seed it per sample")
        out = self._scheduler.step(model_output[:n], timestep, sample[:n], generator=self._generators, **kwargs)
        return _repeat_rows(out, copies)


def _repeat_rows(out: Any, copies: int) -> Any:
    def rep(x: Any) -> Any:
        return torch.cat([x] * copies) if isinstance(x, torch.Tensor) else x
    if isinstance(out, tuple):
        return tuple(rep(x) for x in out)
    for field in dataclasses.fields(out):
        setattr(out, field.name, rep(getattr(out, field.name)))
    return out


@contextlib.contextmanager
def scheduler_swapped(pipe: Any, attribute: str, scheduler: Any) -> Iterator[None]:
    """Put `scheduler` on `pipe` for one call, bypassing diffusers' component registration (the
    pipeline's saved config keeps naming its own scheduler)."""
    original = getattr(pipe, attribute)
    object.__setattr__(pipe, attribute, scheduler)
    try:
        yield
    finally:
        object.__setattr__(pipe, attribute, original)


def _first_tensor(args: tuple, kwargs: Mapping[str, Any]) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for key in ("sample", "hidden_states", "x"):
        if isinstance(kwargs.get(key), torch.Tensor):
            return kwargs[key]
    return next(v for v in kwargs.values() if isinstance(v, torch.Tensor))


@contextlib.contextmanager
def measured(ctx: BatchContext, main_stage: str, counted: Mapping[str, Sequence[torch.nn.Module]],
             timed: Mapping[str, Sequence[torch.nn.Module]]) -> Iterator[None]:
    """Run a diffusers call under `ctx.stage(main_stage)`, counting NFE of `counted` networks
    per stage and timing `timed` sub-networks as their own stages (see the module docstring)."""
    handles = []
    for stage, modules in counted.items():
        count = ctx.counted(stage, lambda x: None)

        def pre_count(module: Any, args: tuple, kwargs: dict, count=count) -> None:
            count(_first_tensor(args, kwargs))
        handles += [m.register_forward_pre_hook(pre_count, with_kwargs=True) for m in modules if m is not None]
    before = {stage: ctx.stage_seconds.get(stage, 0.0) for stage in timed}
    for stage, modules in timed.items():
        open_stages: list[Any] = []

        def pre_time(module: Any, args: tuple, stage=stage, open_stages=open_stages) -> None:
            timer = ctx.stage(stage)
            timer.__enter__()
            open_stages.append(timer)

        def post_time(module: Any, args: tuple, output: Any, open_stages=open_stages) -> None:
            open_stages.pop().__exit__(None, None, None)
        for module in modules:
            if module is not None:
                handles += [module.register_forward_pre_hook(pre_time), module.register_forward_hook(post_time)]
    try:
        with ctx.stage(main_stage):
            yield
    finally:
        for handle in handles:
            handle.remove()
    nested = sum(ctx.stage_seconds.get(stage, 0.0) - before[stage] for stage in timed)
    ctx.stage_seconds[main_stage] = max(0.0, ctx.stage_seconds[main_stage] - nested)


def images_01_to_uint8(images: Any) -> torch.Tensor:
    """diffusers' [0, 1] output (numpy NHWC or torch NCHW) -> uint8 NCHW, rounded as diffusers'
    own `numpy_to_pil` does, so the images equal the PIL images a diffusers user gets."""
    if not isinstance(images, torch.Tensor):
        images = torch.from_numpy(images).permute(0, 3, 1, 2)
    bad = count_nonfinite(images)
    if bad:   # NaN would become black pixels and an FID of a few hundred, with exit code 0
        raise NonFiniteError(f"the diffusers pipeline produced {bad} non-finite values in {len(images)} images "
                             "(NaN weights, an overflowing dtype or an extreme guidance scale); nothing was scored")
    return (images.float().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
