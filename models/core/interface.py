"""The one interface every pipeline family implements (DESIGN.md, "The one interface").

A pipeline turns a `SampleRequest` into a stream of `SampleBatch`es. The base class owns
everything that must be identical across families, so no family re-implements it:

- batching over global sample indices (sample i is the same image whatever the batch size,
  world size or resume point: its noise comes only from (seed, i), see `models.core.seeding`);
- per-stage wall time (CUDA-synchronised) and network-evaluation counts via `BatchContext`,
  under the one NFE convention (`NFE_CONVENTION`) that every family and adapter follows;
- conversion of the final [-1, 1] float images to uint8.

A family implements `info`, `networks()` and `generate(ctx)`.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from models.core.images import ImageSequence, is_images
from models.core.names import THRESHOLDING_MODES  # noqa: F401  (re-exported; its home is torch-free)
from models.core.seeding import NoiseSource

CONDITIONING_KINDS = ("none", "class", "text")
STAGE_KINDS = ("text_encoder", "prior", "denoiser", "super_resolution", "decoder", "loader")
# NFE, the one convention (every family, every diffusers adapter): evaluations of the networks a
# sampler integrates, i.e. of stages of these kinds, per image. As in EDM / k-diffusion, one
# denoiser call on a batch counts 1 per image; classifier-free guidance's call on the doubled
# (cond + uncond) batch counts 2, since it costs two evaluations however it is batched. Single
# passes that are not function evaluations of a sampler (text encoders, autoencoder decoders,
# loaders) are timed as stages but not counted; `BatchContext.counted` refuses them.
NFE_STAGE_KINDS = ("prior", "denoiser", "super_resolution")
NFE_CONVENTION = ("per image, evaluations of the sampled networks (prior, denoiser and super-resolution "
                  "stages); a classifier-free-guidance call on the doubled batch counts 2; text encoders "
                  "and autoencoder decoders are not counted")
# Settings a request may override per stage (e.g. a super-resolution stage's own steps or
# its noise-conditioning-augmentation level, Ho et al. 2022 sec. 3.2).
STAGE_SETTINGS = (
    "guidance_scale", "sampler", "steps", "eta", "thresholding",
    "dynamic_threshold_percentile", "noise_aug", "jump_length", "jump_n_sample",
)
# What a request asks a pipeline to do (issue 21). "generate": from noise (and labels / prompts);
# "superres": upsample `input_images` (low resolution); "inpaint": fill where `masks` is 1 in
# `input_images` (masked image + mask). A pipeline lists the ones it serves in `supported_tasks`.
TASKS = ("generate", "superres", "inpaint")


class RequestError(ValueError):
    """A request that cannot be served by this pipeline; the message says what to change."""


def check_mask_values(masks: torch.Tensor, what: str) -> None:
    """RequestError unless `masks` holds only 0 (known) and 1 (to inpaint)."""
    if not bool(((masks == 0) | (masks == 1)).all()):
        raise RequestError(f"{what}: must hold only 0 (known) and 1 (to inpaint)")


class NonFiniteError(ValueError):
    """NaN or infinite values where numbers are needed (a pipeline's images, a batch's features,
    reference statistics): they would become black images or empty metrics, so the evaluation
    stops here, the message naming what held them and where."""


def count_nonfinite(values: torch.Tensor) -> int:
    """How many entries of a float tensor are NaN or +-inf (0 for integer tensors); one cheap
    `isfinite().all()` when there are none."""
    if not values.is_floating_point() or bool(torch.isfinite(values).all()):
        return 0
    return int((~torch.isfinite(values)).sum())


@dataclass(frozen=True)
class StageInfo:
    name: str                      # unique within a pipeline: "base", "sr1", "prior", "decoder", ...
    kind: str                      # one of STAGE_KINDS
    resolution: int | None = None  # spatial size of what the stage outputs, where it outputs images

    def __post_init__(self) -> None:
        if self.kind not in STAGE_KINDS:
            raise ValueError(f"stage {self.name!r}: kind {self.kind!r} is not one of {STAGE_KINDS}")


@dataclass(frozen=True)
class PipelineInfo:
    name: str
    family: str
    resolution: int
    conditioning: str              # one of CONDITIONING_KINDS
    stages: tuple[StageInfo, ...]
    num_classes: int | None = None  # for class conditioning

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONING_KINDS:
            raise ValueError(f"conditioning {self.conditioning!r} is not one of {CONDITIONING_KINDS}")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)


@dataclass(frozen=True)
class StageSettings:
    """The effective sampling settings of one stage: request defaults + that stage's overrides."""
    guidance_scale: float
    sampler: str
    steps: int
    eta: float
    thresholding: str
    dynamic_threshold_percentile: float
    noise_aug: float | None = None
    jump_length: int = 1       # RePaint's resampling schedule (Lugmayr et al. 2022, sec. 4.2): jump back
    jump_n_sample: int = 1     # jump_length steps, jump_n_sample times; 1, 1 = plain ancestral sampling


@dataclass(frozen=True)
class SampleRequest:
    """What to sample. Conditions cycle over global indices: sample i gets
    prompts[i % len(prompts)] (or labels[...]), so any index range is self-contained."""
    n: int
    seed: int = 0
    start_index: int = 0
    prompts: Sequence[str] | None = None
    labels: Sequence[int] | None = None
    guidance_scale: float = 1.0
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    thresholding: str = "none"
    dynamic_threshold_percentile: float = 0.995
    stage_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    batch_size: int = 16
    # Image-to-image tasks (TASKS): per-sample inputs, uint8 NCHW, cycling over global indices as
    # prompts do (sample i gets input_images[i % len]); masks are (K, 1, H, W) with 1 = unknown
    # (to be inpainted), 0 = known, so a mask of zeros asks for the input back. Either may be an
    # ImageSequence (models.core.images), read a batch at a time, so the inputs need not fit in memory.
    task: str = "generate"
    input_images: torch.Tensor | ImageSequence | None = None
    masks: torch.Tensor | ImageSequence | None = None

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> RequestError:
            return RequestError(f"SampleRequest.{key}: {why}")
        if self.n < 0:
            raise bad("n", f"must be >= 0, got {self.n}")
        if self.start_index < 0:
            raise bad("start_index", f"must be >= 0, got {self.start_index}")
        if self.batch_size < 1:
            raise bad("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.thresholding not in THRESHOLDING_MODES:
            raise bad("thresholding", f"{self.thresholding!r} is not one of {THRESHOLDING_MODES}")
        if not 0.0 < self.dynamic_threshold_percentile <= 1.0:
            raise bad("dynamic_threshold_percentile", "must be in (0, 1]")
        if self.prompts is not None and len(self.prompts) == 0:
            raise bad("prompts", "is empty; pass at least one prompt or None")
        if self.labels is not None and len(self.labels) == 0:
            raise bad("labels", "is empty; pass at least one label or None")
        for stage, overrides in self.stage_overrides.items():
            unknown = set(overrides) - set(STAGE_SETTINGS)
            if unknown:
                raise bad(f"stage_overrides[{stage!r}]", f"unknown settings {sorted(unknown)}; allowed: {STAGE_SETTINGS}")
            for key in ("jump_length", "jump_n_sample"):
                value = overrides.get(key, 1)
                if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                    raise bad(f"stage_overrides[{stage!r}].{key}", f"must be an integer >= 1, got {value!r}")
                if value != 1 and self.task != "inpaint":   # would be ignored: say so instead
                    raise bad(f"stage_overrides[{stage!r}].{key}", "RePaint's resampling schedule applies to "
                              f"task 'inpaint' only; this request's task is {self.task!r}")
        self._check_task_inputs(bad)
        # the samplers trust this check of steps, for the request and every stage's override
        steps = {"steps": self.steps, **{f"stage_overrides[{stage!r}].steps": overrides["steps"]
                                         for stage, overrides in self.stage_overrides.items() if "steps" in overrides}}
        for key, value in steps.items():
            if value < 1:
                raise bad(key, f"must be >= 1, got {value}")
        # a stage's guidance, eta and noise level: finite and >= 0, as bench.config checks the top-level
        # guidance_scale at start-up (an inf or NaN scale turns every image black; the request-level
        # value is left to `Pipeline._check_finite`, which names the non-finite images it makes)
        for setting in ("guidance_scale", "eta", "noise_aug"):
            values = {f"stage_overrides[{stage!r}].{setting}": overrides[setting]
                      for stage, overrides in self.stage_overrides.items() if overrides.get(setting) is not None}
            for key, value in values.items():
                if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                    raise bad(key, f"must be a finite number >= 0, got {value!r}")

    def _check_task_inputs(self, bad: Callable[[str, str], RequestError]) -> None:
        if self.task not in TASKS:
            raise bad("task", f"{self.task!r} is not one of {TASKS}")
        needs = {"generate": (), "superres": ("input_images",), "inpaint": ("input_images", "masks")}[self.task]
        for key in ("input_images", "masks"):
            value = getattr(self, key)
            if key in needs and value is None:
                raise bad(key, f"task {self.task!r} needs it (uint8 NCHW images, one per sample or cycled)")
            if key not in needs and value is not None:
                raise bad(key, f"task {self.task!r} takes no {key}; set task to one of {TASKS[1:]} or drop it")
        images, masks = self.input_images, self.masks
        if images is not None and not is_images(images):
            raise bad("input_images", "must be a non-empty uint8 NCHW tensor or ImageSequence, got "
                      f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
        if masks is not None:
            if not is_images(masks) or masks.shape[1] != 1:
                raise bad("masks", "must be a (K, 1, H, W) uint8 tensor or ImageSequence, got "
                          f"{tuple(getattr(masks, 'shape', ()))}")
            if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
                raise bad("masks", f"shape {tuple(masks.shape)} does not match input_images {tuple(images.shape)}: "
                          "give one (1, H, W) mask per input image, of its size")
            if isinstance(masks, torch.Tensor):   # an ImageSequence's masks are checked batch by batch
                check_mask_values(masks, "SampleRequest.masks")

    @property
    def indices(self) -> range:
        return range(self.start_index, self.start_index + self.n)

    def inputs_for(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (input images, masks) of samples `indices` as uint8 batches: one contiguous read when
        the indices do not wrap around the inputs (the usual case), else image by image."""
        k = [i % self.input_images.shape[0] for i in indices]
        if k == list(range(k[0], k[0] + len(k))):
            span = slice(k[0], k[0] + len(k))
            return self.input_images[span], None if self.masks is None else self.masks[span]
        images = torch.stack([self.input_images[i] for i in k])
        return images, None if self.masks is None else torch.stack([self.masks[i] for i in k])

    def with_range(self, start_index: int, n: int) -> "SampleRequest":
        return replace(self, start_index=start_index, n=n)

    def prompt_for(self, index: int) -> str | None:
        return None if self.prompts is None else self.prompts[index % len(self.prompts)]

    def label_for(self, index: int) -> int | None:
        return None if self.labels is None else int(self.labels[index % len(self.labels)])

    def settings_for(self, stage: str) -> StageSettings:
        base = dict(
            guidance_scale=self.guidance_scale, sampler=self.sampler, steps=self.steps, eta=self.eta,
            thresholding=self.thresholding, dynamic_threshold_percentile=self.dynamic_threshold_percentile,
            noise_aug=None,
        )
        base.update(self.stage_overrides.get(stage, {}))
        return StageSettings(**base)


@dataclass
class SampleBatch:
    images: torch.Tensor                 # uint8, NCHW, on CPU
    indices: torch.Tensor                # int64 global sample indices, shape (N,)
    prompts: list[str] | None
    labels: torch.Tensor | None          # int64 (N,) or None
    stage_seconds: dict[str, float]      # wall time per stage for this batch
    stage_nfe: dict[str, float]          # network evaluations per image per stage
    stage_outputs: dict[str, torch.Tensor] = field(default_factory=dict)  # uint8 intermediates (cascades)

    def __len__(self) -> int:
        return int(self.indices.numel())


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float NCHW -> uint8 NCHW on CPU (round to nearest, clip)."""
    if images.dtype == torch.uint8:
        return images.cpu()
    return ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BatchContext:
    """Everything `Pipeline.generate` needs for one batch, and the one place that measures it."""

    def __init__(self, request: SampleRequest, indices: Sequence[int], device: torch.device,
                 dtype: torch.dtype, stage_kinds: Mapping[str, str] | None = None) -> None:
        self.request = request
        self.stage_kinds = dict(stage_kinds or {})   # stage name -> kind, for the NFE convention
        self.indices = list(indices)
        self.device = device
        self.dtype = dtype
        self.prompts = None if request.prompts is None else [request.prompt_for(i) for i in self.indices]
        self.labels = None if request.labels is None else torch.tensor(
            [request.label_for(i) for i in self.indices], dtype=torch.long)
        self.stage_seconds: dict[str, float] = {}
        self.stage_nfe: dict[str, float] = {}
        self.stage_outputs: dict[str, torch.Tensor] = {}
        self.input_images: torch.Tensor | None = None   # [-1, 1] float on device, for image-to-image tasks
        self.masks: torch.Tensor | None = None          # float (N, 1, H, W), 1 = to inpaint
        if request.input_images is not None:
            images, masks = request.inputs_for(self.indices)
            self.input_images = images.to(device).float() / 127.5 - 1.0
            if masks is not None:
                check_mask_values(masks, f"SampleRequest.masks (samples {self.indices[0]}..{self.indices[-1]})")
                self.masks = masks.to(device).float()
        self.nonfinite: dict[str, int] = {}   # stage -> non-finite values in its kept float output

    def __len__(self) -> int:
        return len(self.indices)

    def settings(self, stage: str) -> StageSettings:
        return self.request.settings_for(stage)

    def noise(self, stream: str) -> NoiseSource:
        """Per-sample random streams for one purpose (e.g. "base", "sr1:aug"); see models.core.seeding."""
        return NoiseSource(self.request.seed, self.indices, stream, self.device, self.dtype)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage. CUDA work is asynchronous, so synchronise on both edges."""
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - start

    def counted(self, stage: str, network: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a network so each call adds (rows evaluated / images in batch) to the stage's NFE.
        A CFG call on the doubled batch thus counts 2 per image, honestly. Only stages of the
        kinds in NFE_STAGE_KINDS are counted (`NFE_CONVENTION`); counting another is a bug."""
        kind = self.stage_kinds.get(stage)
        if kind is not None and kind not in NFE_STAGE_KINDS:
            raise ValueError(f"stage {stage!r} is a {kind} stage: its passes are not NFE under the project's "
                             f"convention ({NFE_CONVENTION}); time it with ctx.stage, do not count it")

        def call(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.stage_nfe[stage] = self.stage_nfe.get(stage, 0.0) + x.shape[0] / len(self.indices)
            return network(x, *args, **kwargs)
        return call

    def keep(self, stage: str, images: torch.Tensor) -> None:
        """Expose an intermediate stage output (e.g. a cascade's base images) as uint8; NaN or inf
        in it is counted (`Pipeline.sample` then stops, naming the first such stage)."""
        bad = count_nonfinite(images)
        if bad:
            self.nonfinite.setdefault(stage, bad)
        self.stage_outputs[stage] = to_uint8(images)


class Pipeline(ABC):
    """Base class of every family. Subclasses set `info` and implement `networks` and `generate`."""

    info: PipelineInfo
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    # A loader of samples made elsewhere (models.families.external): it has `len()` samples, all
    # scored unless suite.n is given, and nothing to time.
    samples_made_elsewhere: bool = False

    @property
    def supported_tasks(self) -> frozenset[str]:
        """The request tasks (TASKS) this pipeline serves; families that do more override it."""
        return frozenset({"generate"})

    @property
    def superres_input_sizes(self) -> tuple[int, ...]:
        """Square input sizes (px) that task "superres" takes up to info.resolution (the superres
        suite runs the factors these give); () where the pipeline serves no superres."""
        return ()

    # Whether task "inpaint" runs RePaint's resampling (Lugmayr et al. 2022; the stage settings
    # jump_length / jump_n_sample): suites pass that schedule only to pipelines that set this.
    inpaints_by_resampling: bool = False

    @abstractmethod
    def networks(self) -> Mapping[str, torch.nn.Module]:
        """The torch modules this pipeline runs, by stage or role (moved by `to`, counted in reports)."""

    @abstractmethod
    def generate(self, ctx: BatchContext) -> torch.Tensor:
        """Produce images for ctx.indices as float NCHW in [-1, 1] (or uint8), timing each
        stage with `ctx.stage(name)` and wrapping networks with `ctx.counted(name, net)`."""

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> "Pipeline":
        self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        for net in self.networks().values():
            net.to(device=self.device, dtype=self.dtype)
        return self

    def compile_networks(self, **options: Any) -> None:
        """torch.compile every network in place (nn.Module.compile: weights, state_dict keys and
        `to` are unchanged); `options` go to torch.compile, e.g. backend="eager" in tests."""
        for net in self.networks().values():
            net.compile(**options)

    def check_request(self, request: SampleRequest) -> None:
        """Reject requests this pipeline cannot honour, with an actionable message."""
        if request.task not in self.supported_tasks:
            raise RequestError(f"pipeline {self.info.name!r} (family {self.info.family}) cannot serve task "
                               f"{request.task!r}; it serves {sorted(self.supported_tasks)}. Choose a pipeline "
                               "that lists the task, or drop the task's inputs")
        cond = self.info.conditioning
        if cond == "text" and request.prompts is None:
            raise RequestError(f"pipeline {self.info.name!r} is text-conditioned: the request needs prompts")
        if cond == "class":
            if request.labels is None:
                raise RequestError(f"pipeline {self.info.name!r} is class-conditioned: the request needs labels")
            bad = [lab for lab in request.labels if not 0 <= int(lab) < (self.info.num_classes or 0)]
            if bad:
                raise RequestError(f"pipeline {self.info.name!r}: labels {bad[:5]} outside [0, {self.info.num_classes})")
        unknown = set(request.stage_overrides) - set(self.info.stage_names)
        if unknown:
            raise RequestError(f"stage_overrides names stages {sorted(unknown)} that pipeline "
                               f"{self.info.name!r} does not have; its stages: {list(self.info.stage_names)}")

    def sampling_details(self, request: SampleRequest | None = None) -> dict[str, Any]:
        """What samples, where the request's sampler name does not say it all: an external model's
        scheduler class and config (models.families.diffusers). The sample store keys on it and
        rows carry it in `details`; its `sampler` and `thresholding`, if any, replace the request's
        in the rows (the model runs its own scheduler, not the request's sampler). Families that
        run the request's sampler: {}."""
        return {}

    def sample(self, request: SampleRequest) -> Iterator[SampleBatch]:
        self.check_request(request)
        for net in self.networks().values():
            net.eval()
        end = request.start_index + request.n
        for start in range(request.start_index, end, request.batch_size):
            indices = range(start, min(start + request.batch_size, end))
            ctx = BatchContext(request, indices, self.device, self.dtype,
                               {stage.name: stage.kind for stage in self.info.stages})
            with torch.inference_mode():
                images = self.generate(ctx)
            self._check_finite(images, ctx)
            yield SampleBatch(
                images=to_uint8(images),
                indices=torch.tensor(list(indices), dtype=torch.long),
                prompts=ctx.prompts,
                labels=ctx.labels,
                stage_seconds=ctx.stage_seconds,
                stage_nfe=ctx.stage_nfe,
                stage_outputs=ctx.stage_outputs,
            )

    def _check_finite(self, images: torch.Tensor, ctx: BatchContext) -> None:
        """NaN or inf images would become black uint8 images and a plausible-looking FID: stop
        instead, naming the pipeline, the first stage whose output held them and how many."""
        final = count_nonfinite(images)
        if not final and not ctx.nonfinite:
            return
        last = self.info.stages[-1].name if self.info.stages else None
        stage, bad = next(iter(ctx.nonfinite.items())) if ctx.nonfinite else (last, final)
        where = f"stage {stage!r}" if stage else "its final images"
        settings = ctx.settings(stage) if stage else ctx.request
        raise NonFiniteError(
            f"pipeline {self.info.name!r} produced {bad} non-finite values (NaN or inf) in the images of {where} "
            f"for samples {ctx.indices[0]}-{ctx.indices[-1]} (guidance_scale={settings.guidance_scale:g}, "
            f"sampler={settings.sampler}, steps={settings.steps}); nothing was scored. Use a finite, moderate "
            "guidance_scale and check the checkpoint's weights for NaN or inf")

    def parameter_count(self) -> int:
        return sum(p.numel() for net in self.networks().values() for p in net.parameters())
