"""Which scheduler a diffusers adapter (models.families.diffusers) runs, what its rows and manifest
say ran, and what it refuses.

`params.scheduler: saved` (default) runs the model as saved, with its own scheduler class and config
(e.g. DDIM with clip_sample=True, Euler), as calling the pipeline does; the request's sampler and
thresholding cannot apply, so the rows' `sampler` column holds the scheduler class (e.g.
`EulerDiscreteScheduler`), `thresholding` what its config does to x0 (clip_sample=True -> static),
and a requested thresholding other than none is refused (a sampler other than ddim, the default, is
warned about). `params.scheduler: request` maps the request's sampler / eta / thresholding onto a
diffusers scheduler built `from_config` of the model's own (`diffusers_common.make_scheduler`: its
noise schedule and prediction type are kept). Either way `sampling_details` names the scheduler
class and config that run: rows carry it in `details`, the sample store in its key, the manifest in
`schedulers_ran`. The refusals that bench.app makes at start (`diffusers_preflight`) use the same
lines as the adapters' (`unclip_refusal`, `heun_refusal`).
"""
from __future__ import annotations

import json
import logging
from typing import Any

from models.core.interface import RequestError, SampleRequest
from models.families.diffusers_common import make_scheduler, scheduler_record

# the family's logger, not this module's: the adapters' warnings are filtered by it (as before the split)
log = logging.getLogger("models.families.diffusers")


def unclip_refusal(name: str) -> str:
    """Why UnCLIP takes no `params.scheduler=request`."""
    return (f"diffusers pipeline {name!r}: UnCLIP runs only with its own UnCLIPSchedulers (their steps take "
            "prev_timestep); set params.scheduler=saved")


def heun_refusal(name: str, pipeline_class: str) -> str:
    """Why a pipeline whose loop does not scale model inputs cannot run heun."""
    return (f"pipeline {name!r}: diffusers' {pipeline_class} loop does not scale model inputs by the sampler's "
            "sigmas, which heun (Karras sigmas) needs; use sampler ddpm, ddim or dpmpp_2m")


class SchedulerChoice:
    """The scheduler side of `DiffusersAdapter` (a mixin before `Pipeline`): reads the adapter's
    `pipe`, `info`, `scheduler_mode`, `scheduler_attribute`, `pixel_space`, `scales_model_input`,
    `provenance` and `_warned`."""

    def saved_schedulers(self) -> dict[str, Any]:
        """The model's own scheduler per denoising stage, as saved."""
        return {"base": getattr(self.pipe, self.scheduler_attribute or "scheduler")}

    def saved_sampler(self) -> str:
        """The saved scheduler classes, in stage order (`+`-joined where stages differ): what the
        rows' sampler column holds when the model runs as saved."""
        names = [type(s).__name__ for s in self.saved_schedulers().values()]
        return "+".join(dict.fromkeys(names))

    def saved_thresholding(self) -> str:
        """What the saved schedulers do to x0, in the request's terms: `dynamic` (thresholding=True,
        Imagen's percentile), `static` (clip_sample=True: clip to +-clip_sample_range) or `none`;
        `+`-joined where stages differ. It replaces the request's thresholding in the rows."""
        def mode(config: Any) -> str:
            if config.get("thresholding"):
                return "dynamic"
            return "static" if config.get("clip_sample") else "none"
        return "+".join(dict.fromkeys(mode(dict(s.config)) for s in self.saved_schedulers().values()))

    def scheduler_for(self, stage: str, settings: Any, saved: Any) -> Any:
        if self.scheduler_mode == "saved":
            return saved
        return make_scheduler(saved, settings, pixel_space=self.pixel_space, pipeline=self.info.name)

    def sampling_details(self, request: SampleRequest | None = None) -> dict[str, Any]:
        """The scheduler class and config each denoising stage runs for `request` (in request
        mode they depend on it; without one, only the mode is known). `sampler`, when the model
        runs as saved, replaces the request's sampler name in the rows."""
        details: dict[str, Any] = {"scheduler_mode": self.scheduler_mode}
        if self.scheduler_mode == "saved":
            details["sampler"] = self.saved_sampler()
            details["thresholding"] = self.saved_thresholding()
        if self.scheduler_mode == "saved" or request is not None:
            details["schedulers"] = {
                stage: scheduler_record(self.scheduler_for(stage, request.settings_for(stage) if request else None, saved))
                for stage, saved in self.saved_schedulers().items()}
        return details

    def _warn_sampler_unused(self, sampler: str) -> None:
        """A sampler other than the config's default (ddim) was likely asked for: say, once, that
        the saved scheduler runs instead (the rows' sampler column names it)."""
        if sampler == SampleRequest.sampler or sampler in self._warned:
            return
        self._warned.add(sampler)
        log.warning("pipeline %s runs as saved with %s; the requested sampler %s is not used (the rows' sampler "
                    "column says %s); set pipeline.params.scheduler=request to map it onto a diffusers scheduler",
                    self.info.name, self.saved_sampler(), sampler, self.saved_sampler())

    def _note_ran(self, stage: str, scheduler: Any) -> None:
        ran = self.provenance["schedulers_ran"].setdefault(stage, [])
        record = scheduler_record(scheduler)
        text = json.dumps(record, sort_keys=True, default=str)
        if all(json.dumps(r, sort_keys=True, default=str) != text for r in ran):
            ran.append(record)

    def check_request(self, request: SampleRequest) -> None:
        """Also refuse, before any sampling, settings the diffusers schedulers cannot honour."""
        super().check_request(request)
        if self.scheduler_mode == "saved":
            for stage in self.saved_schedulers():
                self._warn_sampler_unused(request.settings_for(stage).sampler)
                mode = request.settings_for(stage).thresholding
                if mode != "none":
                    raise RequestError(
                        f"pipeline {self.info.name!r} runs its saved {self.saved_sampler()} (params.scheduler=saved), "
                        f"which keeps its own clipping/thresholding config; thresholding={mode} needs "
                        "pipeline.params.scheduler=request, or use sampler.thresholding=none")
            return
        for stage in self.info.stages:
            if stage.kind not in ("denoiser", "super_resolution"):
                continue
            settings = request.settings_for(stage.name)
            if settings.sampler == "heun" and not self.scales_model_input:
                raise RequestError(heun_refusal(self.info.name, type(self.pipe).__name__))
            make_scheduler(getattr(self.pipe, self.scheduler_attribute), settings, pixel_space=self.pixel_space,
                           pipeline=self.info.name)
