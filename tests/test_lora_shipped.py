"""The shipped concept adapter (models/checkpoints/heart_lora_r4, peft's layout): it loads by name like a
checkpoint, its provenance names the base checkpoint's sha256, at scale 0 it gives the base model's images
bit for bit, at scale 1 it changes the concept prompt's images, and the grid tool draws it."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from bench.tools.adapter_grid import main as grid_main
from bench.weights.formats import file_sha256
from models.core.checkpoint import MODEL_FILE
from models.core.interface import SampleRequest
from models.core.registry import CHECKPOINT_DIR, build_pipeline
from models.families.adapted import build_adapted_pipeline
from models.networks import adapters as A

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAME = "heart_lora_r4"
SHIPPED = CHECKPOINT_DIR / NAME
CONCEPT_PROMPTS = ["a large pink heart at the center right on a black background",
                   "a small red heart at the top left on a white background"]


def concept_images(pipe) -> torch.Tensor:
    request = SampleRequest(n=2, prompts=CONCEPT_PROMPTS, steps=4, seed=0, guidance_scale=3.0, batch_size=2)
    return torch.cat([b.images for b in pipe.sample(request)])


def test_shipped_adapter_is_found_by_name_with_provenance() -> None:
    assert NAME in A.shipped_adapters()
    assert A.resolve_adapter(NAME) == SHIPPED
    record = json.loads((SHIPPED / A.ADAPTER_JSON).read_text())
    assert record["base"] == "imagen_shapes16_32"
    assert record["base_sha256"] == file_sha256(CHECKPOINT_DIR / "imagen_shapes16_32" / MODEL_FILE)
    assert record["spec"]["rank"] == 4 and record["spec"]["variant"] == "lora"
    for role in record["roles"]:       # peft's layout: one safetensors + adapter_config.json per network
        tensors = load_file(str(SHIPPED / role / A.WEIGHTS_FILE))
        assert tensors and all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in tensors)
        assert json.loads((SHIPPED / role / A.PEFT_CONFIG_FILE).read_text())["r"] == 4
    assert A.adapter_size_bytes(SHIPPED) < 400_000
    assert "sha256" in (SHIPPED / "README.md").read_text()


def test_shipped_adapter_at_scale_zero_is_the_base_model_and_at_one_changes_the_concept() -> None:
    base = concept_images(build_pipeline("imagen", "imagen_shapes", "imagen_shapes16_32"))
    off = build_adapted_pipeline("imagen", "x", "imagen_shapes16_32", adapter=NAME, adapter_scale=0.0)
    assert torch.equal(concept_images(off), base)
    on = build_adapted_pipeline("imagen", "x", "imagen_shapes16_32", adapter=NAME)
    assert on.adapter["same_base"] is True
    adapted = concept_images(on)
    assert (adapted.float() - base.float()).abs().mean() > 2.0      # uint8 levels: a visible change


def test_unknown_adapter_names_the_shipped_ones(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=NAME):
        A.resolve_adapter("no_such_adapter")
    assert grid_main(["no_such_adapter", "--out", str(tmp_path / "g.png")]) == 2
    assert not (tmp_path / "g.png").exists()
