"""Random-initialised genuine networks in the formats the reference tools load (issue 27), for the
agreement tests (tests/test_feature_spaces.py) and the speed benchmark (bench.tools.feature_bench),
since no pretrained DINOv2 or CLIP weights can be had offline:

- DINOv2: the facebookresearch code itself (PyPI `dinov2`, the code torch hub's
  `facebookresearch/dinov2` serves), saved as a `dinov2_vit*14_pretrain.pth`-style state dict, and a
  local torch hub folder (hubconf.py) that builds the same model from it, for torch-fidelity 0.4.0's
  `torch.hub.load("facebookresearch/dinov2", "dinov2_vits14")`;
- CLIP: open_clip's CLIP in OpenAI's key layout with fp16 weights (as OpenAI's files hold them), saved
  as a TorchScript archive whose state_dict() holds exactly those keys, the file
  torch-fidelity's FeatureExtractorCLIP(feature_extractor_weights_path=...) reads.

Weights are drawn with fan-in scaled normals (not the near-zero inits of training code), so the
embeddings of different images differ clearly and the metrics are far from 0.
"""
from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import torch
from torch import nn

# true sizes: torch hub's dinov2_vits14 (518 px pretraining grid) and OpenAI's ViT-B/32
VITS14 = dict(img_size=518, embed_dim=384, depth=12, num_heads=6, ffn_layer="mlp")
TINY_DINOV2 = dict(img_size=70, embed_dim=64, depth=2, num_heads=1, ffn_layer="mlp")   # 5x5 grid -> 16x16
TINY_DINOV2_SWIGLU = dict(TINY_DINOV2, ffn_layer="swiglufused")
VITB32 = dict(embed_dim=512, vision=dict(layers=12, width=768, patch_size=32, image_size=224),
              text=dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12))
TINY_CLIP = dict(embed_dim=32, vision=dict(layers=2, width=64, patch_size=16, image_size=64),
                 text=dict(context_length=8, vocab_size=64, width=64, heads=1, layers=1))

HUBCONF = '''"""A local torch hub folder serving DINOv2 (the facebookresearch code from PyPI `dinov2`) with
the weights in this folder (diffbench tests, issue 27)."""
import json
import os
from functools import partial

import torch

dependencies = ["torch"]
HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name):
    from dinov2.layers import MemEffAttention, NestedTensorBlock
    from dinov2.models.vision_transformer import DinoVisionTransformer
    with open(os.path.join(HERE, "models.json")) as handle:
        entry = json.load(handle)[name]
    model = DinoVisionTransformer(patch_size=14, init_values=1.0, block_chunks=0,
                                  block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention), **entry["kwargs"])
    state = torch.load(os.path.join(HERE, entry["file"]), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


def dinov2_vits14(**kwargs):
    return _load("dinov2_vits14")
'''


def _randomise(module: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if parameter.ndim >= 2 and "pos" not in name:
                fan_in = math.prod(parameter.shape[1:])
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))
            elif name.endswith(("gamma", "ls1.gamma", "ls2.gamma")):
                parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator))
            elif "norm" in name or "ln_" in name:
                parameter.copy_((1.0 if name.endswith("weight") else 0.0)
                                + 0.1 * torch.randn(parameter.shape, generator=generator))
            else:   # biases, tokens, position embeddings
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


def dinov2_model(arch: dict, seed: int = 0) -> nn.Module:
    """The facebookresearch DinoVisionTransformer (patch 14, LayerScale), random weights."""
    # here, not at the top: the reference package (PyPI dinov2, installed --no-deps by `make install`)
    from dinov2.layers import MemEffAttention, NestedTensorBlock
    from dinov2.models.vision_transformer import DinoVisionTransformer
    model = DinoVisionTransformer(patch_size=14, init_values=1.0, block_chunks=0,
                                  block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention), **arch)
    _randomise(model, seed)
    return model.eval()


def save_dinov2_hub(root: Path, arch: dict, seed: int = 0) -> tuple[Path, Path, nn.Module]:
    """(dinov2_vits14_pretrain.pth, the local torch hub folder serving it, the model)."""
    model = dinov2_model(arch, seed)
    hub = root / "dinov2_hub"
    hub.mkdir(parents=True, exist_ok=True)
    weights = hub / "dinov2_vits14_pretrain.pth"
    torch.save(model.state_dict(), weights)
    (hub / "hubconf.py").write_text(HUBCONF)
    (hub / "models.json").write_text(json.dumps({"dinov2_vits14": {"file": weights.name, "kwargs": arch}}))
    return weights, hub, model


def clip_openai_state(arch: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """An OpenAI-layout CLIP ViT state dict (open_clip's CLIP keys, attn_mask left out), fp16."""
    # here, not at the top: open_clip is a heavy import only the CLIP spaces need
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    model = CLIP(arch["embed_dim"], CLIPVisionCfg(**arch["vision"]), CLIPTextCfg(**arch["text"]), quick_gelu=True)
    _randomise(model, seed)
    return {k: v.half() for k, v in model.state_dict().items() if k != "attn_mask"}


def save_torchscript_state(state: dict[str, torch.Tensor], path: Path) -> Path:
    """A TorchScript archive whose state_dict() is `state` (how OpenAI ships CLIP)."""
    root = nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        module = root
        for part in parents:
            if not isinstance(getattr(module, part, None), nn.Module):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_buffer(leaf, value.clone())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(root).save(str(path))
    return path


