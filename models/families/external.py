"""Family `external`: samples made elsewhere, served as a pipeline.

A folder of images or an ADM-style npz (`arr_0` uint8 NHWC, optional `arr_1` labels) becomes a
pipeline whose `generate` returns the stored image i for sample index i, so every suite and
metric works on it unchanged. With a prompts file it is text-conditioned: sample i's prompt is
line i of the file (for CLIP score), whatever prompts the request carried. Reading is timed as
the `loader` stage; there is no network, so no NFE.

`params.source: diffusers` instead wraps a diffusers pipeline (`models.families.diffusers`).

Config (conf/pipeline/external_*.yaml):
    family: external
    params: {path: samples.npz, prompts: prompts.txt, resolution: null, source: null, on_bad_file: error}
`source` is inferred from `path` (a directory -> folder, a file -> npz). Row label: `pipeline.name`,
except that a shipped option's name (`external_folder`, `external_npz`) is replaced by the samples'
own name (`samples_name`: the folder's name, the npz file's stem), as diffusers models are named after
the model (issue 26 follow-up: torch-fidelity's "input1" is the user's folder, not a config name).
`resolution` defaults
to the images' own size, as torch-fidelity and clean-fid score them: one square size per set, else
refused naming the sizes found (`bench.data.sizes`); a given `resolution` center-crops and resizes
every other size by the data rule (`bench.data.images`). `image_sizes` and `resize` say which, per row. `on_bad_file` (folders): `error`
stops at an unreadable file naming it; `skip` leaves such files out before sampling starts, so the
samples are the readable files in order (said in the log; their prompts stay matched to them).
Every problem with the files is a `DataError` naming the file and what to do (the app exits 2).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from bench.data import BadImageError, DataError, build_source
from bench.data.config import BAD_FILE_POLICIES, ConfigError, DataConfig
from bench.data.folder import scan_images
from bench.data.npz import check_image_array, npz_headers
from bench.data.sizes import array_sizes, folder_sizes
from bench.data.prompts import load_prompts
from models.core.interface import (
    BatchContext,
    Pipeline,
    PipelineInfo,
    RequestError,
    SampleBatch,
    SampleRequest,
    StageInfo,
)
from models.core.registry import register_family

log = logging.getLogger(__name__)
SOURCES = ("folder", "npz", "diffusers")
ALL = 2 ** 62        # DataConfig.n for "every image in the file"
PARAMS = ("path", "source", "prompts", "resolution", "n", "on_bad_file")
# the folder source's hint names data.on_bad_file; for samples it is the pipeline's own param
BAD_SAMPLE_HINT = "Remove or replace the file, or set pipeline.params.on_bad_file=skip to leave unreadable files out"
# The shipped options' names (conf/pipeline/external_*.yaml): they name the config option, not the
# samples, so the samples' own name replaces them in rows, grids and the manifest's labels.
OPTION_NAMES = ("external_folder", "external_npz")


class ExternalSamples(Pipeline):
    """Stored images as a pipeline: sample i is item i of an `ImageSource`."""

    samples_made_elsewhere = True
    image_sizes: str = ""   # the sizes found in the files (bench.data.sizes), for the rows
    resize: str = "none"    # what was done to them before the feature extractor

    def __init__(self, name: str, source: Any, prompts: Sequence[str] | None = None) -> None:
        self.source = source
        self.prompts = list(prompts) if prompts is not None else None
        if self.prompts is not None and len(self.prompts) < len(source):
            raise DataError(f"external pipeline {name!r}: {len(self.prompts)} prompts for {len(source)} images; "
                            "the prompts file needs one prompt per image, in the images' order")
        # on_bad_file=skip: sample i is the i-th readable file (decoded once here, before sampling)
        self.readable: list[int] | None = None
        if getattr(source, "skip_bad_files", False):
            self.readable = source.readable_indices()
            if not self.readable:
                raise DataError(f"external pipeline {name!r}: none of the {len(source)} files in {source.root} "
                                "can be read as an image; check pipeline.params.path")
            if len(self.readable) < len(source):
                log.warning("external pipeline %s: skipped %d unreadable file(s) of %d (pipeline.params.on_bad_file="
                            "skip), e.g. %s; scoring the %d readable ones", name, len(source) - len(self.readable),
                            len(source), source.skipped[0] if source.skipped else "?", len(self.readable))
            if self.prompts is not None:
                self.prompts = [self.prompts[i] for i in self.readable]
        self.info = PipelineInfo(name=name, family="external", resolution=source.resolution,
                                 conditioning="text" if self.prompts is not None else "none",
                                 stages=(StageInfo("loader", "loader", source.resolution),))
        # what the samples are, for the run manifest
        location = source.root if isinstance(getattr(source, "root", None), Path) else getattr(source, "path", "")
        self.provenance = {"source": source.name, "path": str(location), "images": len(source),
                           "fingerprint": source.fingerprint()}

    def __len__(self) -> int:
        return len(self.readable) if self.readable is not None else len(self.source)

    def networks(self) -> dict[str, torch.nn.Module]:
        return {}

    def bind(self, request: SampleRequest) -> SampleRequest:
        """The request as this pipeline serves it: prompts are the file's (sample i was made
        from prompt i), not whatever the request carried."""
        if self.prompts is None:
            return request
        if request.prompts is not None and list(request.prompts[:len(self.prompts)]) != self.prompts[:len(request.prompts)]:
            log.info("external pipeline %s: using the prompts of its prompts file, not the request's", self.info.name)
        return replace(request, prompts=self.prompts[:len(self)])

    def check_request(self, request: SampleRequest) -> None:
        super().check_request(request)
        end = request.start_index + request.n
        if end > len(self):
            raise RequestError(f"external pipeline {self.info.name!r} holds {len(self)} images "
                               f"({self.source!r}) but the request asks for indices up to {end - 1}; "
                               f"lower suite.n to at most {len(self)}")

    def sample(self, request: SampleRequest) -> Iterator[SampleBatch]:
        return super().sample(self.bind(request))

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        with ctx.stage("loader"):
            try:
                images, labels = self._load(ctx.indices)
            except BadImageError as err:   # name the key that works for samples
                raise BadImageError(err.path, err.reason, BAD_SAMPLE_HINT) from None
        if labels is not None and ctx.labels is None:
            ctx.labels = labels          # stored class labels (ADM npz arr_1) travel with the images
        return images

    def _load(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.readable is not None:
            indices = [self.readable[i] for i in indices]
        start, stop = indices[0], indices[-1] + 1
        if indices == list(range(start, stop)):
            batches = list(self.source.iter_batches(len(indices), start=start, stop=stop))
            if len(batches) == 1 and batches[0].indices.tolist() == indices:
                return batches[0].images, batches[0].labels
        images = torch.stack([torch.from_numpy(np.ascontiguousarray(self.source.load_image(i))).permute(2, 0, 1)
                              for i in indices])
        labels = None
        if getattr(self.source, "has_labels", False):
            labels = torch.tensor([self.source.label(i) for i in indices], dtype=torch.long)
        return images, labels


# -- building ------------------------------------------------------------------------------
def npz_image_shape(path: Path) -> tuple[int, ...]:
    """arr_0's shape from its .npy header, without reading the images (compressed or not), through
    the guarded reader every npz of every role goes through (bench.data.npz.npz_headers: not a zip,
    pickled arrays and damaged headers are refused naming the file)."""
    headers = npz_headers(path, "pipeline.params.path",
                          hint="it must be an ADM-style npz written by np.savez(path, images_uint8_nhwc[, labels])")
    if "arr_0" not in headers:
        raise DataError(f"npz file {path} (pipeline.params.path) has no arr_0 (found {sorted(headers)}); save the "
                        "images as the first positional array: np.savez(path, images_uint8_nhwc[, labels])")
    shape, dtype = headers["arr_0"]
    check_image_array(path, tuple(shape), np.dtype(dtype))   # NCHW, wrong dtype or no images: named here
    return tuple(int(s) for s in shape)


def build_external_samples(name: str, path: str | Path, source: str | None = None,
                           prompts: str | Path | None = None, resolution: int | None = None,
                           n: int | None = None, on_bad_file: str = "error") -> ExternalSamples:

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"external pipeline {name!r}: params.path {path} does not exist; "
                                "give a folder of images or an ADM-style .npz of samples")
    kind = source or ("folder" if path.is_dir() else "npz")
    if kind not in ("folder", "npz"):
        raise ConfigError(f"config key 'pipeline.params.source': {kind!r} is not allowed; choose one of {list(SOURCES)}")
    if on_bad_file not in BAD_FILE_POLICIES:
        raise ConfigError(f"config key 'pipeline.params.on_bad_file': {on_bad_file!r} is not allowed; "
                          f"choose one of {list(BAD_FILE_POLICIES)}")
    if kind == "npz" and on_bad_file != "error":
        raise ConfigError("config key 'pipeline.params.on_bad_file': applies to folders of image files; "
                          "an npz holds decoded arrays, remove it")
    # every image at its own size unless a resolution is asked for (issue 26: torch-fidelity and
    # clean-fid resize nothing before the Inception); the sizes found go into every row
    if kind == "npz":
        shape = npz_image_shape(path)
        sizes = array_sizes(shape, min(shape[0], n or shape[0]))
    else:
        sizes = folder_sizes(path, _folder_files(path)[:n], skip_bad=on_bad_file == "skip", hint=BAD_SAMPLE_HINT)
    if resolution is None:
        resolution = sizes.own_resolution(f"samples {kind} {path} (pipeline.params.path)", "pipeline.params.resolution")
    captions = None
    if kind == "folder" and prompts is not None and Path(prompts).suffix.lower() == ".csv" \
            and _csv_has_file_column(Path(prompts)):
        captions = str(prompts)           # a file,caption table: prompts matched to files by name
    cfg = DataConfig(name=kind, resolution=int(resolution), n=n or ALL, root=str(path), captions=captions,
                     on_bad_file=on_bad_file)
    data = build_source(cfg)
    if captions is not None:
        prompt_list = list(data.captions)
    else:
        prompt_list = load_prompts(prompts) if prompts is not None else None
    pipe = ExternalSamples(name, data, prompt_list)
    pipe.image_sizes = sizes.describe()
    pipe.resize = sizes.resize_note(int(resolution), "pipeline.params.resolution")
    return pipe


def _folder_files(path: Path) -> list[str]:
    files = scan_images(path).files
    if not files:
        raise DataError(f"image folder {path} (pipeline.params.path) contains no images (.png, .jpg, .jpeg, .webp, "
                        ".bmp, searched recursively); point pipeline.params.path at the folder of samples")
    return files


def _csv_has_file_column(path: Path) -> bool:
    with open(path, encoding="utf-8-sig") as handle:
        header = handle.readline()
    return "file" in [c.strip() for c in header.split(",")]


@register_family("external")
def build(name: str, checkpoint: Path | None = None, **params: Any) -> Pipeline:
    source = params.get("source")
    if checkpoint is not None:
        raise ConfigError(f"config key 'pipeline.checkpoint': external pipeline {name!r} does not use it; set "
                          "params.path (a folder or npz of samples) or params.model (diffusers) instead")
    if source == "diffusers":
        from models.families.diffusers import build_diffusers
        return build_diffusers(name, **{k: v for k, v in params.items() if k != "source"})
    unknown = set(params) - set(PARAMS)
    if unknown:
        raise ConfigError(f"config key 'pipeline.params.{sorted(unknown)[0]}': external pipeline {name!r}: unknown "
                          f"params {sorted(unknown)}; allowed: {list(PARAMS)} (or params.source=diffusers with "
                          "params.model)")
    if params.get("path") is None:
        raise ConfigError(f"config key 'pipeline.params.path': external pipeline {name!r} needs params.path "
                          "(a folder of images or an .npz), or params.source=diffusers with params.model")
    if name in OPTION_NAMES:
        label = samples_name(params["path"])
        log.info("pipeline %s: rows are labelled %r, after its samples (set pipeline.name to choose a label)",
                 name, label)
        name = label
    return build_external_samples(name, **params)


def samples_name(path: str | Path) -> str:
    """What a reader calls a set of samples: the folder's name, or the npz file's stem
    (`/x/ddpm_samples/` -> `ddpm_samples`, `/x/adm_256.npz` -> `adm_256`)."""
    path = Path(path).expanduser()
    path = path if path.name not in ("", ".", "..") else path.resolve()
    return (path.stem if path.suffix.lower() == ".npz" else path.name) or str(path)
