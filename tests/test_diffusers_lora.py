"""A LoRA for a tiny StableDiffusionPipeline (diffusers' own classes), made with peft and saved with
`save_lora_weights`, loads through the diffusers adapter (`pipeline.params.lora` / `lora_scale`):
scale 0 gives the base model's images exactly, scale > 0 changes them, and the scale is a plain
pipeline param (sweepable with a multirun)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from peft import LoraConfig  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402

from models.core.interface import SampleRequest  # noqa: E402
from models.core.registry import build_pipeline  # noqa: E402
from test_diffusers import tiny_stable_diffusion  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """The base model saved with save_pretrained, and a random (non-zero) LoRA on its UNet's attention
    projections, saved in diffusers' LoRA layout. (Text-encoder LoRAs go through transformers' peft
    integration, which wants peft >= 0.22 with transformers 5.x; PyPI's newest peft is 0.21.2.)"""
    root = tmp_path_factory.mktemp("sd_lora")
    pipe = tiny_stable_diffusion()
    pipe.save_pretrained(root / "base")
    torch.manual_seed(1)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    diffusers.StableDiffusionPipeline.save_lora_weights(
        root / "lora", unet_lora_layers=get_peft_model_state_dict(pipe.unet))
    return root


def images(root: Path, **params) -> torch.Tensor:
    pipe = build_pipeline("external", "tiny-sd", source="diffusers", model=str(root / "base"), **params)
    request = SampleRequest(n=2, prompts=PROMPTS, steps=2, seed=0, guidance_scale=2.0, batch_size=2)
    return torch.cat([b.images for b in pipe.sample(request)]), pipe


def test_lora_scale_zero_is_the_base_model_and_scale_changes_images(saved: Path) -> None:
    base, _ = images(saved)
    off, _ = images(saved, lora=str(saved / "lora"), lora_scale=0.0)
    assert torch.equal(off, base)
    half, pipe = images(saved, lora=str(saved / "lora"), lora_scale=0.5)
    full, _ = images(saved, lora=str(saved / "lora" / "pytorch_lora_weights.safetensors"))
    assert not torch.equal(half, base) and not torch.equal(full, half)
    record = pipe.provenance["lora"]
    assert record["scale"] == 0.5 and record["components"] == ["unet"]


def test_bad_lora_params_say_what_to_do(saved: Path) -> None:
    with pytest.raises(FileNotFoundError, match="params.lora="):
        images(saved, lora=str(saved / "nope"))
    with pytest.raises(ValueError, match="lora_scale needs params.lora"):
        images(saved, lora_scale=0.5)
    with pytest.raises(ValueError, match="lora_scale must be a number >= 0"):
        images(saved, lora=str(saved / "lora"), lora_scale=-1)
