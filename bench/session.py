"""What a suite works with: loaded pipelines, requests built from config, metric sets with
cached reference statistics, the sample store, and result rows for one run.

Models and metric sets are loaded once per session and reused across sweep points
(a guidance sweep must not reload the network or recompute reference statistics per point).
"""
from __future__ import annotations

import json
import logging
import time
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf

from bench.config import Config, ConfigError, DataConfig, MetricsConfig, PipelineConfig
from bench.data import build_source
from bench.data.config import BUNDLED_DATASETS
from bench.data.folder import BAD_FILE_HINT as FOLDER_BAD_FILE_HINT, FolderSource
from bench.data.npz import stored_array_layout
from bench.data.sizes import array_sizes, folder_sizes
from bench.data.prompts import load_prompts, shapes_prompts
from bench.device import apply_memory_budget, resolve_device, resolve_dtype
from bench.distributed import World, barrier, reduce_metrics, shard
from bench.metrics import build_metrics
from bench.metrics.feature_spaces import INCEPTION, space_plan
from bench.metrics.inception import build_inception
from bench.metrics.registry import INCEPTION_INPUTS, INCEPTION_LOGITS, needs_of
from bench.progress import progress
from bench.results import MetricValue, RunContext, make_row
from bench.store import SampleStore
from models.core.images import fingerprint, is_images
from models.core.interface import Pipeline, SampleBatch, SampleRequest
from models.families.adapted import build_adapted_pipeline

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class Session:
    def __init__(self, cfg: Config, run_dir: Path, run_id: str,
                 job_params: Mapping[str, Any] | None = None, world: World | None = None, *,
                 suite_n_given: bool = False, given: Sequence[str] = ()) -> None:
        self.cfg = cfg
        # the config keys given on the command line (`data.n`, `data.resolution`): for a reference
        # folder or npz they apply only when given; a suite's pinned data.n is for bundled data
        self.given = frozenset(given)
        # suite.n given by the user (command line), not the suite's default: samples made
        # elsewhere are all scored unless it is
        self.suite_n_given = suite_n_given
        self.job_params = dict(job_params or {})  # a multirun job's overrides: columns of every row
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.world = world or World()
        apply_memory_budget(cfg.hardware)   # checkpoints are refused past it, before allocation
        self.device = resolve_device(cfg.hardware)
        if self.world.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.world.local_rank)
        self.dtype = resolve_dtype(cfg.hardware, self.device)
        self.quiet = cfg.quiet
        self.rows: list[dict[str, Any]] = []
        self.weights_used: dict[str, str] = {}     # name -> sha256, for the manifest
        self.warnings: list[str] = []              # said in the log and recorded in the manifest
        self._said: set[Any] = set()
        self._pipelines: dict[str, Pipeline] = {}
        self._metric_sets: dict[tuple, Any] = {}   # loaded metric networks, by kind
        self._references: dict[str, ReferenceSide] = {}   # the reference as measured, per data + pipeline
        self._measured: dict[str, tuple[Pipeline, ReferenceSide]] = {}   # by pipeline name, for the manifest

    # -- pipelines ---------------------------------------------------------------------
    def pipeline_config(self, name: str | None = None) -> PipelineConfig:
        """The selected `pipeline` group, or another option of that group by name."""
        if name is None or name == self.cfg.pipeline.name:
            return self.cfg.pipeline
        path = CONF_DIR / "pipeline" / f"{name}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in (CONF_DIR / "pipeline").glob("*.yaml"))
            raise ValueError(f"config key 'suite.pipelines': no pipeline config {name!r} "
                             f"(looked for {path}); available: {known}")
        merged = OmegaConf.merge(OmegaConf.structured(PipelineConfig), OmegaConf.load(path))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]

    def pipeline_names(self) -> list[str]:
        return list(self.cfg.suite.pipelines or [self.cfg.pipeline.name])

    def load_pipeline(self, name: str | None = None) -> Pipeline:
        spec = self.pipeline_config(name)
        if spec.name not in self._pipelines:
            log.info("loading pipeline %s (family %s, checkpoint %s)", spec.name, spec.family, spec.checkpoint)
            try:
                pipe = build_adapted_pipeline(spec.family, spec.name, spec.checkpoint, **spec.params)
            except ValueError as err:   # a family builder's plain complaint about its params or files
                if type(err) is not ValueError:
                    raise                # ConfigError, DataError, ...: already say which input
                raise ConfigError(f"pipeline {spec.name} (family {spec.family}, pipeline.params "
                                  f"{dict(spec.params)}): {err}") from err
            pipe.to(self.device, self.dtype)
            self._apply_hardware(pipe)
            self._pipelines[spec.name] = pipe
        return self._pipelines[spec.name]

    def loaded_pipelines(self) -> dict[str, Pipeline]:
        """The pipelines loaded so far, by name (the manifest records their checkpoints)."""
        return dict(self._pipelines)

    def _apply_hardware(self, pipe: Pipeline) -> None:
        hw = self.cfg.hardware
        for net in pipe.networks().values():
            if hw.channels_last:
                net.to(memory_format=torch.channels_last)
        if hw.compile:
            pipe.compile_networks()

    # -- requests ----------------------------------------------------------------------
    def request(self, pipe: Pipeline, n: int | None = None, **overrides: Any) -> SampleRequest:
        """A request from the config (sampler, guidance, seed, batch size), with conditions
        for the pipeline's conditioning kind: class labels cycling over all classes, or
        prompts from the shapes caption grammar / the suite's prompt file."""
        cfg = self.cfg
        if n is None and pipe.samples_made_elsewhere:
            n = self.external_n(pipe)
        fields: dict[str, Any] = dict(
            n=cfg.suite.n if n is None else n, seed=cfg.seed, guidance_scale=cfg.guidance_scale,
            sampler=cfg.sampler.name, steps=cfg.sampler.steps, eta=cfg.sampler.eta,
            thresholding=cfg.sampler.thresholding,
            dynamic_threshold_percentile=cfg.sampler.dynamic_threshold_percentile,
            batch_size=cfg.hardware.batch_size,
        )
        cond = pipe.info.conditioning
        if cond == "class":
            fields["labels"] = list(range(pipe.info.num_classes or 1))
        elif cond == "text":
            fields["prompts"] = self.prompts(fields["n"])
        stage_overrides = cfg.suite.params.get("stage_overrides", {})
        if stage_overrides:
            known = set(pipe.info.stage_names)
            fields["stage_overrides"] = {k: dict(v) for k, v in stage_overrides.items() if k in known}
        fields.update(overrides)
        self._check_prompt_reuse(pipe, fields)
        return SampleRequest(**fields)

    def external_n(self, pipe: Pipeline) -> int:
        """How many samples made elsewhere to score: all of them (as torch-fidelity and clean-fid
        do), unless suite.n was given; the suite's default n is for pipelines that sample."""
        available, n = len(pipe), self.cfg.suite.n
        if not self.suite_n_given:
            self.say(f"external pipeline {pipe.info.name}: scoring all {available} of its samples "
                     f"(suite.n not given; the suite's default n={n} applies to pipelines that sample)")
            return available
        if n < available:
            self.say(f"external pipeline {pipe.info.name}: scoring the first {n} of its {available} samples "
                     f"(suite.n={n}); unset suite.n to score all")
        return n

    def _check_prompt_reuse(self, pipe: Pipeline, fields: Mapping[str, Any]) -> None:
        """Prompts cycle over samples (sample i gets prompt i mod k): fewer prompts than samples
        means repeated prompts, which the numbers then measure. A warning, not an error."""
        prompts, n = fields.get("prompts"), fields["n"]
        if prompts is None or len(prompts) >= n or pipe.samples_made_elsewhere and pipe.prompts is not None:
            return   # enough prompts, or samples made elsewhere that bring one each (ExternalSamples.bind)
        source = self.cfg.suite.params.get("prompts") or "the request"
        self.say(f"pipeline {pipe.info.name}: {len(prompts)} prompt(s) for {n} samples (prompts from {source}); "
                 f"prompts are reused in turn (sample i gets prompt i mod {len(prompts)}), so the metrics measure "
                 f"repeated prompts, not {n} different ones. Give at least {n} prompts for one per sample",
                 warning=True, once=("prompts", pipe.info.name))

    def say(self, message: str, warning: bool = False, once: Any = None) -> None:
        """Log a statement about the run once (per `once`, default the message); warnings are
        also recorded in the manifest."""
        key = message if once is None else once
        if key in self._said:
            return
        self._said.add(key)
        if warning:
            log.warning(message)
            self.warnings.append(message)
        else:
            log.info(message)

    def prompts(self, n: int) -> list[str]:
        prompt_file = self.cfg.suite.params.get("prompts")
        if prompt_file:
            return load_prompts(prompt_file)
        return shapes_prompts(n, self.cfg.data.seed)

    # -- metrics -----------------------------------------------------------------------
    def data_for(self, pipe: Pipeline) -> DataConfig:
        """The reference data as it is measured (`reference_side`)."""
        return self.reference_side(pipe).data

    def reference_side(self, pipe: Pipeline) -> "ReferenceSide":
        """The reference as it is measured against `pipe`, with its real n, sizes and resize
        (issues 26 and 29): bundled sources render at the pipeline's output resolution; a folder or
        npz gives every file at its own size, as torch-fidelity and clean-fid do, unless `data.n` /
        `data.resolution` were given on the command line (the smoke suite's pinned data.n=128 and
        the folder.yaml resolution are for bundled data, not for a user's own set). A request that
        cannot be met as asked (more files than there are, another resolution than the pipeline
        makes) is warned once and recorded in the manifest; the rows say what was measured."""
        data = self.cfg.data
        key = f"{key_of(data)} {pipe.info.resolution}"
        if key not in self._references:
            self._references[key] = self._resolve_reference(data, pipe)
        # by config name, as the manifest's checkpoints (an external pipeline's label is its samples' name)
        self._measured[self._config_name(pipe) or pipe.info.name] = (pipe, self._references[key])
        return self._references[key]

    def measured_inputs(self) -> dict[str, dict[str, Any]]:
        """Per pipeline measured against a reference: both sides as measured (n, the image sizes
        found, the resize applied), for the manifest's `inputs` (the rows carry the same columns)."""
        out: dict[str, dict[str, Any]] = {}
        for name, (pipe, side) in self._measured.items():
            samples: dict[str, Any] = {"n_available": len(pipe), "sizes": pipe.image_sizes, "resize": pipe.resize} \
                if pipe.samples_made_elsewhere else {"sizes": f"{pipe.info.resolution}x{pipe.info.resolution}",
                                                     "resize": "none (sampled)"}
            out[name] = {"samples": samples,
                         "reference": {"data": side.column, "root": side.data.root, "n": side.n,
                                       "resolution": side.data.resolution, "sizes": side.sizes, "resize": side.resize}}
        return out

    def _resolve_reference(self, data: DataConfig, pipe: Pipeline) -> "ReferenceSide":
        res = pipe.info.resolution
        if self.cfg.metrics.reference:   # statistics made elsewhere: their n, no images to describe
            return ReferenceSide(data, _statistics_n(self.cfg.metrics.reference), "unknown (statistics file)",
                                 "unknown (statistics file)", name="statistics")
        if data.name in BUNDLED_DATASETS:
            if data.resolution != res and "data.resolution" in self.given:
                self.say(f"data.resolution={data.resolution} was asked, but pipeline {pipe.info.name} makes {res} px "
                         f"images: the reference ({data.name}) is rendered at {res} px to match (column "
                         f"data_resolution={res})", warning=True, once=("data.resolution", data.resolution, res))
            data = replace(data, resolution=res)
            return ReferenceSide(data, data.n, f"{res}x{res}", f"none (rendered at {res} px)")
        if data.name not in FILE_DATASETS:
            side = data.resolution
            return ReferenceSide(data, data.n, f"{side}x{side}", f"none (rendered at {side} px)")
        n_given, resolution_given = "data.n" in self.given, "data.resolution" in self.given
        source = build_source(replace(data, n=ALL_IMAGES))   # lists every file (reads no image)
        available = len(source)
        n = min(data.n, available) if n_given else available
        if isinstance(source, FolderSource):
            where = f"reference folder {source.root} (data.root)"
            sizes = folder_sizes(source.root, source.files[:n], skip_bad=source.skip_bad_files,
                                 hint=FOLDER_BAD_FILE_HINT)
        else:
            where = f"reference npz {source.path} (data.root)"
            sizes = array_sizes((source.total, *source.image_shape), n)
        if n_given and data.n > available:
            self.say(f"data.n={data.n} was asked, but the {where} holds {available} images: all {available} are used "
                     f"(column data_n={available})", warning=True, once=("data.n", data.n, data.root))
        resolution = data.resolution if resolution_given else sizes.own_resolution(where, "data.resolution")
        resize = sizes.resize_note(resolution, "data.resolution")
        if resize != "none":
            self.say(f"{where}: images of {sizes.describe()} are center-cropped and resized to {resolution}x{resolution} "
                     f"(data.resolution={resolution}) before the feature extractor", once=("resize", key_of(data)))
        measured = sizes.total if source.skip_bad_files else n   # skip mode: the readable files
        return ReferenceSide(replace(data, resolution=resolution, n=n), measured, sizes.describe(), resize)

    def metric_set(self, names: Sequence[str], data: DataConfig | None = None,
                   metrics: MetricsConfig | None = None):
        """A fresh accumulator set; reference statistics come from the on-disk cache, so
        building one per sweep point costs no recomputation."""
        mcfg = replace(metrics or self.cfg.metrics, names=list(names))
        # Inception only for the metrics computed in its space: `fid`/`kid` with metrics.features
        # lacking inception run in the other spaces alone, and the network is not loaded (issue 27)
        in_inception = space_plan(mcfg).get(INCEPTION, [])
        extractor = self.inception(mcfg) if needs_of(in_inception) & INCEPTION_INPUTS else None

        def build():
            return build_metrics(mcfg, data or self.cfg.data, device=self.device, quiet=self.quiet,
                                 cache_dir=None, num_workers=self.cfg.hardware.num_workers,
                                 extractor=extractor)
        if not self.world.distributed:
            return build()
        # Rank 0 computes (or reads) the cached reference statistics; the others then read them.
        metrics = build() if self.world.is_main else None
        barrier(self.world)
        return metrics if metrics is not None else build()

    def inception(self, metrics: MetricsConfig | None = None):
        """The Inception feature extractor, loaded once per (resize mode, logits) and shared."""
        mcfg = metrics or self.cfg.metrics
        need_logits = INCEPTION_LOGITS in needs_of(mcfg.names)
        key = ("inception", mcfg.resize_mode, need_logits)
        if key not in self._metric_sets:
            self._metric_sets[key] = build_inception(resize_mode=mcfg.resize_mode, device=self.device,
                                                     batch_size=mcfg.feature_batch_size,
                                                     need_logits=need_logits)
        return self._metric_sets[key]

    def sample_stream(self, pipe: Pipeline, request: SampleRequest, point: Mapping[str, Any]
                      ) -> Iterator[SampleBatch]:
        """Batches in index order: read back from the run's sample store where a previous
        (killed) run already made them, sampled and stored otherwise."""
        store = self._store(pipe, request, point)
        bar = progress(total=request.n, desc=f"sample {pipe.info.name}", disable=self.quiet, unit="img")
        end = request.start_index + request.n
        for start in range(request.start_index, end, request.batch_size):
            idx = list(range(start, min(start + request.batch_size, end)))
            if store is not None and store.has(idx):
                batch = store.read(idx)
            else:
                batch = next(iter(pipe.sample(request.with_range(start, len(idx)))))
                if store is not None:
                    store.write(batch)
            bar.update(len(idx))
            yield batch
        bar.close()
        if store is not None:
            store.finalize()   # the last, partly filled shard: written out, so the store is complete

    def _store(self, pipe: Pipeline, request: SampleRequest, point: Mapping[str, Any]):
        if not self.cfg.store_samples:
            return None
        point_id = "_".join(f"{k}={v}" for k, v in sorted(point.items())) or "default"
        key = {"pipeline": pipe.info.name, "request": _request_key(request), "point": dict(point),
               "dtype": str(self.dtype)}
        sampling = pipe.sampling_details(request)   # an external model's scheduler class + config
        if sampling:
            key["sampling"] = sampling
        # a damaged shard of a pipeline that samples is moved aside and sampled again, with a warning (issue
        # 29); samples made elsewhere are refused instead (StoreError, exit 2): the operator decides
        regenerate = None if pipe.samples_made_elsewhere else (lambda message: self.say(message, warning=True))
        return SampleStore(self.run_dir / "samples" / pipe.info.name / point_id, key, on_damaged=regenerate)

    def evaluate(self, pipe: Pipeline, request: SampleRequest, metric_names: Sequence[str],
                 point: Mapping[str, Any] | None = None, data: DataConfig | None = None) -> list[MetricValue]:
        """Sample (through the store) and accumulate the named metrics; record rows."""
        point = dict(point or {})
        metrics = self.metric_set(metric_names, self.data_for(pipe) if data is None else data)   # as measured
        started = time.perf_counter()
        own = request.with_range(*shard(request.start_index, request.n, self.world))
        for batch in self.sample_stream(pipe, own, point):
            metrics.update(batch)
        if not reduce_metrics(metrics, self.world):
            return []   # not rank 0: its share went to rank 0, which records the rows
        with warnings.catch_warnings(record=True) as caught:   # e.g. small-n FID/KID warnings, per point
            warnings.simplefilter("always")
            values = metrics.compute()
        for caught_warning in caught:   # said once per run (per kind and place), recorded in the manifest
            self.say(f"{caught_warning.category.__name__}: {caught_warning.message} (said once per run)", warning=True,
                     once=(caught_warning.category, caught_warning.filename, caught_warning.lineno))
        if pipe.samples_made_elsewhere:   # how many samples there were to score, beside the n scored
            values = [replace(value, details={**value.details, "n_available": len(pipe)}) for value in values]
        log.info("%s %s: %d metrics in %.1fs", pipe.info.name, point, len(values), time.perf_counter() - started)
        self.record(pipe, values, point, request=request)
        return values

    def record(self, pipe: Pipeline | None, values: Sequence[MetricValue], point: Mapping[str, Any],
               pipeline_name: str | None = None, family: str | None = None,
               request: SampleRequest | None = None) -> None:
        if not self.world.is_main:
            return
        settings = self.row_settings(pipe, request)
        params = {**settings, **self.job_params, **point}
        # what was measured wins over what a multirun job asked for (issue 29: `data.n=1000` on 32 files)
        params.update({k: settings[k] for k in MEASURED_SETTINGS if k in settings and k not in point})
        sampling = pipe.sampling_details(request) if pipe else {}
        if sampling.get("sampler"):   # the model ran its own scheduler, not the request's sampler
            params["sampler"] = sampling["sampler"]
            if "sampler.name" in params:   # a multirun job's `sampler.name=...` column, too
                params["sampler.name"] = sampling["sampler"]
            if "thresholding" in sampling:   # and its own clipping / thresholding
                params["thresholding"] = sampling["thresholding"]
        ctx = RunContext(self.run_id, self.cfg.suite.name,
                         pipeline_name or (pipe.info.name if pipe else ""),   # `pipeline.name` (issue 17)
                         family or (pipe.info.family if pipe else ""), params)
        for value in values:
            if sampling:
                value = replace(value, details={**value.details, "sampling": sampling})
            weights = value.details.get("weights")
            if isinstance(weights, Mapping):
                self.weights_used[str(weights.get("name"))] = str(weights.get("sha256"))
            self.rows.append(make_row(ctx, value))

    def _config_name(self, pipe: Pipeline) -> str | None:
        """The `pipeline.name` a loaded pipeline was loaded under (the key of its config)."""
        return next((name for name, loaded in self._pipelines.items() if loaded is pipe), None)

    def row_settings(self, pipe: Pipeline | None, request: SampleRequest | None = None) -> dict[str, Any]:
        """The run's settings that shape a row's numbers, as columns of the row (issue 17), so a
        table merged from separate runs tells them apart: the pipeline's checkpoint and params, the
        sampler settings (from the request that ran where there is one; none for samples made
        elsewhere), the reference data, and the metric options. A suite's sweep point and a
        multirun job's overrides come after them in the row and win. Rows of no pipeline (e.g.
        autoencoders) carry the metric options only; their suite names their data in the point."""
        metrics = self.cfg.metrics
        settings: dict[str, Any] = {}
        if pipe is not None:
            name = self._config_name(pipe)
            if name in self._pipelines:
                spec = self.pipeline_config(name)
                if spec.checkpoint:
                    settings["checkpoint"] = spec.checkpoint
                if spec.params:
                    settings["pipeline_params"] = json.dumps(spec.params, sort_keys=True, default=str)
            if not pipe.samples_made_elsewhere:
                source = request or self.cfg.sampler
                settings.update(
                    sampler=request.sampler if request else self.cfg.sampler.name, steps=source.steps,
                    eta=source.eta, thresholding=source.thresholding,
                    guidance_scale=request.guidance_scale if request else self.cfg.guidance_scale,
                    seed=request.seed if request else self.cfg.seed)
                if source.thresholding == "dynamic":
                    settings["threshold_percentile"] = source.dynamic_threshold_percentile
            if pipe.samples_made_elsewhere:   # what the sample files were, and what was done to them
                settings.update(samples_n=request.n if request else len(pipe), samples_sizes=pipe.image_sizes,
                                samples_resize=pipe.resize)
            side = self.reference_side(pipe)
            data = side.data
            settings.update(data=side.column, data_n=side.n, data_resolution=data.resolution, data_sizes=side.sizes,
                            data_resize=side.resize)
            if data.root is not None:
                settings["data_root"] = data.root
            if data.name in BUNDLED_DATASETS:
                settings["data_seed"] = data.seed
        settings["resize_mode"] = metrics.resize_mode
        if metrics.reference:
            settings["reference"] = metrics.reference
        return settings


FILE_DATASETS = ("folder", "npz")
MEASURED_SETTINGS = ("data_n", "data_resolution", "data_sizes", "data_resize", "samples_n", "samples_sizes",
                     "samples_resize")
ALL_IMAGES = 2 ** 62   # DataConfig.n for "every file"


@dataclass(frozen=True)
class ReferenceSide:
    """The reference as measured: the data config the metrics read (its resolution the size the
    images reach the feature extractor at), the real n, the sizes found and the resize applied."""
    data: DataConfig
    n: int
    sizes: str
    resize: str
    name: str = ""   # the `data` column; default the data config's name

    @property
    def column(self) -> str:
        return self.name or self.data.name


def _statistics_n(path: str) -> int | None:
    """How many images a statistics npz was computed from (`n`, or the rows of an ADM reference
    batch's `arr_0`, read from its header); None when the file does not say (or cannot be read:
    the metric set names the file then)."""
    try:
        with np.load(Path(path).expanduser(), allow_pickle=False) as stats:
            if "n" in stats.files:
                return int(stats["n"])
        with zipfile.ZipFile(Path(path).expanduser()) as archive:
            members = archive.namelist()
        if "arr_0.npy" in members:
            layout = stored_array_layout(Path(path).expanduser(), "arr_0.npy")
            return int(layout[1][0]) if layout is not None else None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None
    return None


def key_of(data: DataConfig) -> str:
    return json.dumps(vars(data), sort_keys=True, default=str)


# Command-line keys of a multirun job -> the row column that already carries the same setting
# (Session.row_settings), so a job's `sampler.steps=20` is the `steps` column, not a second one.
SETTING_COLUMNS = {"sampler.name": "sampler", "sampler": "sampler", "sampler.steps": "steps", "sampler.eta": "eta",
                   "sampler.thresholding": "thresholding",
                   "sampler.dynamic_threshold_percentile": "threshold_percentile",
                   "guidance_scale": "guidance_scale", "seed": "seed", "data.name": "data", "data": "data",
                   "data.n": "data_n", "data.resolution": "data_resolution", "data.root": "data_root", "data.seed": "data_seed",
                   "metrics.resize_mode": "resize_mode", "metrics.reference": "reference",
                   "pipeline.checkpoint": "checkpoint"}


def _request_key(request: SampleRequest) -> dict[str, Any]:
    """The request minus where it starts and how it is batched: what defines the images."""
    fields = {k: v for k, v in vars(request).items() if k not in ("n", "start_index", "batch_size")}
    fields["prompts"] = list(request.prompts) if request.prompts is not None else None
    fields["labels"] = list(request.labels) if request.labels is not None else None
    fields["stage_overrides"] = {k: dict(v) for k, v in request.stage_overrides.items()}
    # image-to-image inputs (issue 21) by content fingerprint; left out for plain generation, so
    # stores written before tasks existed keep their key
    for key in ("task", "input_images", "masks"):
        value = fields.pop(key, None)
        if request.task != "generate":
            fields[key] = fingerprint(value) if is_images(value) else value
    return fields
