"""Family `latent_concat`: latent diffusion conditioned by concatenation to the denoiser's input
(Rombach et al. 2022, "LDM", sec. 3.3: "for spatially aligned conditioning ... concatenation").

One checkpoint serves one image-to-image task (config key "task"):
- "superres" (LDM sec. 4.4): the low-resolution image, at the latent's spatial size (x f: with the
  f = 4 autoencoder, 8 px in for 32 px out, as LDM's x4 on f = 4), concatenated to z_t:
  UNet input c + 3 channels. Other input sizes (other factors) are refused by `check_request`, not
  resized: the model was trained on x f bicubic inputs only.
- "inpaint" (LDM sec. 4.5): z_t concatenated with the autoencoder's encoding of the masked image
  (pixels to inpaint set to 0, mid-grey in [-1, 1]) and the mask at latent size: c + c + 1 channels.
  The mask is area-downsampled (the fraction of each latent cell to inpaint), so a thin stroke is
  not lost between latent cells as nearest-neighbour resizing would lose it.

The UNet (models/networks/unet.py) concatenates `cond_image` (its `cond_channels`) to its input;
it is unconditional otherwise (no class or text condition, so no classifier-free guidance).
Output: the decoded latents. Inpainting does not paste the known pixels back (LDM does not), so
pixels outside the mask change by the autoencoder's reconstruction error; the pipeline param
`paste_known: true` pastes them (a sampling-time choice, recorded with the pipeline's params).

Params without a checkpoint (architecture): task, autoencoder (a calibrated checkpoint name/dir,
or an AutoencoderConfig mapping), resolution, preset (UNET_PRESETS), unet (UNetConfig overrides),
schedule, num_timesteps, prediction. With a checkpoint: untrained, init_seed, paste_known.
Training: bench/training/families/latent_concat.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from models.core.interface import BatchContext, RequestError, SampleRequest
from models.core.registry import register_family
from models.families.latent import LatentPipeline, build_latent_networks, frozen_autoencoder, latent_base_config
from models.networks.autoencoder import Autoencoder
from models.networks.unet import unet_config
from models.sampling.diffusion import DiffusionSpec

FAMILY = "latent_concat"
CONCAT_TASKS = ("superres", "inpaint")
SAMPLING_PARAMS = ("paste_known",)


def condition_channels(task: str, latent_channels: int) -> int:
    """Channels concatenated to z_t: the low-resolution RGB image, or encoded masked image + mask."""
    return 3 if task == "superres" else latent_channels + 1


def superres_condition(low: torch.Tensor, latent_size: int) -> torch.Tensor:
    """The low-resolution image ([-1, 1], N 3 h w) as it is concatenated: it must already be at the
    latent's size (LDM concatenates it unchanged)."""
    if low.shape[-2:] != (latent_size, latent_size):
        raise ValueError(f"superres condition: input is {tuple(low.shape[-2:])} px, the latents {latent_size} px")
    return low


def inpaint_condition(autoencoder: Autoencoder, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """cat(E(masked image), mask at latent size): images [-1, 1] (N 3 H W), masks (N 1 H W), 1 = to
    inpaint. The masked pixels are set to 0; E gives the scaled latents the denoiser works on."""
    masked = images * (1.0 - masks)
    latents = autoencoder.encode(masked.to(next(autoencoder.parameters()).dtype))
    small = F.adaptive_avg_pool2d(masks.to(latents.dtype), latents.shape[-2:])   # fraction to inpaint per cell
    return torch.cat([latents, small], dim=1)


def latent_concat_config(autoencoder: str | Mapping[str, Any], task: str, resolution: int = 32,
                         preset: str = "tiny", unet: Mapping[str, Any] | None = None, schedule: str = "linear",
                         num_timesteps: int = 1000, prediction: str = "eps") -> tuple[dict[str, Any], Autoencoder]:
    """A checkpoint config for a fresh concat-conditioned latent UNet, and the autoencoder it runs on."""
    if task not in CONCAT_TASKS:
        raise ValueError(f"latent_concat task {task!r} is not one of {list(CONCAT_TASKS)}")
    ae, provenance = frozen_autoencoder(autoencoder)
    c, h, _ = ae.latent_shape(resolution)
    config = latent_base_config(FAMILY, resolution=resolution, autoencoder=ae, provenance=provenance,
                                conditioning="none", num_classes=None, class_names=None,
                                diffusion=DiffusionSpec(schedule, num_timesteps, prediction))
    config["task"] = task
    net = unet_config(preset, **{"resolution": h, "in_channels": c, "out_channels": c, "num_classes": None,
                                 "context_dim": None, **dict(unet or {}),
                                 "cond_channels": condition_channels(task, c)})
    config["networks"]["denoiser"] = {"type": "unet", "config": net.to_dict()}
    return config, ae


class LatentConcatPipeline(LatentPipeline):
    family = FAMILY

    def __init__(self, name: str, config: Mapping[str, Any], networks, paste_known: bool = False) -> None:
        super().__init__(name, config, networks)
        self.task = str(self.config["task"])
        if self.task not in CONCAT_TASKS:
            raise ValueError(f"checkpoint config task {self.task!r} is not one of {list(CONCAT_TASKS)}")
        self.paste_known = bool(paste_known)
        if self.paste_known and self.task != "inpaint":
            raise ValueError(f"pipeline {name!r}: paste_known applies to inpainting; this checkpoint does {self.task}")

    @property
    def supported_tasks(self) -> frozenset[str]:
        return frozenset({self.task})

    @property
    def superres_input_sizes(self) -> tuple[int, ...]:
        """x f only: the low-resolution image has the latent's size (LDM sec. 4.4)."""
        return (self.latent_shape[-1],) if self.task == "superres" else ()

    def check_request(self, request: SampleRequest) -> None:
        super().check_request(request)
        size = tuple(request.input_images.shape[1:])
        res, lat = self.info.resolution, self.latent_shape[-1]
        if self.task == "superres" and size != (3, lat, lat):
            raise RequestError(f"pipeline {self.info.name!r} super-resolves 3x{lat}x{lat} images to {res} px "
                               f"(x{res // lat}, the latent size, as LDM); input_images are {size}: use "
                               f"factor {res // lat} or a pipeline that takes {size[-1]} px")
        if self.task == "inpaint" and size != (3, res, res):
            raise RequestError(f"pipeline {self.info.name!r} inpaints 3x{res}x{res} images; input_images are {size}: "
                               "resize them or use data at the pipeline's resolution")
        settings = request.settings_for("denoiser")
        if settings.jump_length != 1 or settings.jump_n_sample != 1:
            raise RequestError(f"pipeline {self.info.name!r} is conditioned on the masked image and samples once: "
                               "RePaint's resampling (jump_length / jump_n_sample) does not apply; leave them at 1")
        if settings.guidance_scale != 1:
            raise RequestError(f"pipeline {self.info.name!r} has no unconditional input for classifier-free "
                               f"guidance; use guidance_scale=1 (got {settings.guidance_scale:g})")

    def conditioning_kwargs(self, ctx: BatchContext) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The concatenated condition; for inpainting one encoder pass, timed within the denoiser
        stage (a single pass, not NFE: interface.NFE_CONVENTION)."""
        if self.task == "superres":
            cond = superres_condition(ctx.input_images, self.latent_shape[-1])
        else:
            cond = inpaint_condition(self.autoencoder, ctx.input_images.to(self.dtype), ctx.masks.to(self.dtype))
        return {"cond_image": cond.to(self.dtype)}, None

    def generate(self, ctx: BatchContext) -> torch.Tensor:
        images = super().generate(ctx)
        if self.paste_known:   # opt-in (LDM does not paste): the known pixels exactly as given
            images = torch.where(ctx.masks.bool().expand_as(images), images, ctx.input_images.to(images.dtype))
        return images


@register_family(FAMILY)
def build(name: str, checkpoint: Path | None, **params: Any) -> LatentConcatPipeline:
    params = dict(params)
    sampling = {key: params.pop(key) for key in SAMPLING_PARAMS if key in params}
    config, networks = build_latent_networks(FAMILY, checkpoint, params, latent_concat_config)
    return LatentConcatPipeline(name, config, networks, **sampling)
