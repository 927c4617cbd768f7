"""Training of the `unclip` family through the generic trainer (`python -m bench.train`): the
prior and the decoder train jointly on each batch (loss = prior loss + decoder loss); the CLIP
is frozen and the super-resolution stages come from a trained `cascaded` checkpoint.

Conditioning dropout (Ramesh et al. 2022, sec. 2.1 and Appendix C): the trainer's `p_uncond`
drops the caption for the prior ("" = null); the decoder additionally sees a zero image
embedding with probability `p_drop_image` (10%) and the empty prompt with probability
`p_drop_text` (50%). Captions are replaced by random shapes caption variants, as for the
reference CLIP (bench/tools/train_reference_clip.py).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from models.sampling.augment import downsample
from models.sampling.diffusion import training_loss
from bench.training.families.imagen import caption_variants
from models.networks.reference_clip import ClipEmbedder
from models.core.checkpoint import build_networks
from models.families.unclip import NULL_PROMPT, UnclipPipeline, new_config


class UnclipTrainable:
    def __init__(self, config: dict[str, Any], networks: nn.ModuleDict, clip: ClipEmbedder,
                 p_drop_image: float = 0.1, p_drop_text: float = 0.5) -> None:
        self.config, self.networks, self.clip = config, networks, clip
        self.pipeline = UnclipPipeline("train", config, networks, clip)
        self.p_drop_image, self.p_drop_text = p_drop_image, p_drop_text

    @torch.no_grad()
    def clip_inputs(self, images: torch.Tensor, prior_captions: list[str], decoder_captions: list[str]
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Frozen CLIP: unit image embeddings of the [-1, 1] images, the prior's text inputs, and the
        decoder's (separately dropped) text tokens."""
        self.clip.to(images.device)
        image_embed = self.clip.encode_images((images.float() + 1.0) * 127.5)
        n = len(prior_captions)
        enc = self.clip.text_encoder.encode(prior_captions + decoder_captions)
        text_embed = torch.nn.functional.normalize(enc.pooled.float(), dim=-1)
        prior = {"text_tokens": enc.sequence[:n], "text_mask": enc.mask[:n], "text_embed": text_embed[:n]}
        return image_embed, prior, enc.sequence[n:]

    def training_loss(self, batch: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor:
        p, images = self.pipeline, batch["image"]
        n = len(images)
        prior_captions = caption_variants(list(batch["caption"]), generator)
        drop_text = (torch.rand(n, generator=generator) < self.p_drop_text).tolist()
        decoder_captions = [NULL_PROMPT if d else c for c, d in zip(prior_captions, drop_text)]
        image_embed, prior_text, decoder_text = self.clip_inputs(images, prior_captions, decoder_captions)
        scaled = (image_embed * p.scale).to(images.dtype)
        prior_loss = training_loss(self.networks["prior"], scaled, p.schedules["prior"],
                                   prediction=p.specs["prior"].prediction, generator=generator,
                                   **{k: v.to(images.device) for k, v in prior_text.items()})
        keep = (torch.rand(n, generator=generator) >= self.p_drop_image).to(scaled)[:, None]
        embed = scaled * keep
        target = downsample(images, p.decoder_resolution) if images.shape[-1] != p.decoder_resolution else images
        decoder_loss = training_loss(self.networks["decoder"], target, p.schedules["decoder"],
                                     prediction=p.specs["decoder"].prediction, generator=generator,
                                     context=self.networks["decoder_cond"](embed, decoder_text.to(embed)), extra=embed)
        return prior_loss + decoder_loss

    def checkpoint_config(self) -> dict[str, Any]:
        return self.config


def make_trainable(name: str, params: Mapping[str, Any], *, resolution: int, num_classes: int | None,
                   class_names: list[str] | None) -> Any:
    """Training entry for `python -m bench.train` (see bench/training/families/unclip.py). The SR stages are
    not trained here: `super_resolution` names the cascaded checkpoint the pipeline will use."""
    params = dict(params)
    drops = {k: float(params.pop(k)) for k in ("p_drop_image", "p_drop_text") if k in params}
    params.pop("untrained", None)
    config, clip = new_config(params, int(params.pop("init_seed", 0)))
    if resolution < config["decoder_resolution"]:
        raise ValueError(f"unclip decoder trains at {config['decoder_resolution']} px but the data is {resolution} px; "
                         f"set data.resolution >= {config['decoder_resolution']}")
    return UnclipTrainable(config, build_networks(config), clip, **drops)
