"""Feature-space weights given as a Hugging Face folder (issue 27, deliver 4): a folder saved by
transformers' `Dinov2Model.save_pretrained` (config.json + model.safetensors, the layout of
facebook/dinov2-*) and an open_clip hf-hub folder (open_clip_config.json + open_clip_model.safetensors
or open_clip_pytorch_model.bin, the layout of timm/vit_*_clip_*.openai), passed as
`metrics.feature_weights.<space>=FOLDER`: found at start, the sha256 of the file used recorded, and
the features equal to those of the library that wrote the folder (transformers' own Dinov2Model;
torch-fidelity's CLIP extractor on the same weights) to 1e-5."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from bench.config import MetricsConfig
from bench.metrics import feature_spaces
from bench.metrics.spaces import build_feature_extractor, check_feature_weights
from bench.tools.random_vits import TINY_CLIP, clip_openai_state, save_torchscript_state
from bench.weights import WeightsNotFoundError, resolve
from bench.weights.formats import file_sha256, save_safetensors

DINO = "dinov2-vit-s-14"
CLIP = "clip-vit-b-32"


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _max_rel(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


def _transformers_folder(folder: Path, seed: int = 0):
    """A tiny random Dinov2Model saved by transformers itself. image_size 224: a 16x16 position grid,
    the grid of the 224 px input, so neither side interpolates it (transformers resizes the grid to
    a size, DINOv2 and torch-fidelity by a scale factor: not the same bicubic samples)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=1,
                                       intermediate_size=256, patch_size=14, image_size=224, layerscale_value=1.0)
    torch.manual_seed(seed)
    model = transformers.Dinov2Model(config).eval()
    with torch.no_grad():   # away from the near-zero init, so every weight matters
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    return model


def test_transformers_folder_gives_transformers_features_and_its_sha256(tmp_path):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    folder = tmp_path / "dinov2-small"
    model = _transformers_folder(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    cfg = MetricsConfig(names=["fid"], features=[DINO], feature_weights={DINO: str(folder)})
    found = check_feature_weights(cfg)[DINO]
    sha = file_sha256(folder / "model.safetensors")
    assert found["sha256"] == sha and found["source"] == "explicit"
    assert found["path"] == str((folder / "model.safetensors").resolve())
    extractor = build_feature_extractor(DINO, cfg)
    assert extractor.weights.sha256 == sha and extractor.describe()["weights"]["sha256"] == sha
    images = _images(6, seed=3)
    # the reference: torch-fidelity 0.4.0's preprocessing (its own resize), transformers' network
    space = feature_spaces.spec(DINO)
    x = interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(224, 224), align_corners=False)
    mean = torch.tensor([255 * m for m in space.mean]).view(1, 3, 1, 1)
    std = torch.tensor([255 * s for s in space.std]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(pixel_values=(x - mean) / std).pooler_output
    got = extractor(images)["embedding"]
    assert got.shape == expected.shape == (6, 64)
    print(f"transformers folder vs Dinov2Model: largest difference {_max_rel(got, expected):.1e} of the largest feature")
    assert _max_rel(got, expected) < 1e-5
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("filename", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
def test_open_clip_folder_equals_torch_fidelity_on_the_same_weights(tmp_path, filename):
    from torch_fidelity.feature_extractor_clip import FeatureExtractorCLIP
    state = clip_openai_state(TINY_CLIP, seed=4)
    folder = tmp_path / "vit_base_patch32_clip_224.openai"
    folder.mkdir()
    if filename.endswith(".safetensors"):
        save_safetensors(state, folder / filename)
    else:
        torch.save(state, folder / filename)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": TINY_CLIP["embed_dim"]}}))
    openai = save_torchscript_state(state, tmp_path / "random_openai_clip.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = FeatureExtractorCLIP(CLIP, ["clip"], feature_extractor_weights_path=str(openai)).eval()
    cfg = MetricsConfig(names=["fid"], features=[CLIP], feature_weights={CLIP: str(folder)})
    assert check_feature_weights(cfg)[CLIP]["sha256"] == file_sha256(folder / filename)
    ours = build_feature_extractor(CLIP, cfg)
    assert ours.weights.path == (folder / filename).resolve()
    images = _images(5, seed=5)
    with torch.no_grad():
        expected = theirs(images)[0]
    got = ours(images)["embedding"]
    assert got.shape == expected.shape == (5, TINY_CLIP["embed_dim"])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_folder_without_weights_is_refused_at_start_naming_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "model.safetensors.index.json").write_text("{}")
    for folder, why in ((empty, "without any of"), (sharded, "sharded checkpoint"),
                        (tmp_path / "nowhere", "no such file or folder")):
        cfg = MetricsConfig(names=["fid"], features=[DINO], feature_weights={DINO: str(folder)})
        with pytest.raises(WeightsNotFoundError, match=why) as caught:
            check_feature_weights(cfg)
        assert f"metrics.feature_weights.{DINO}={folder}" in str(caught.value)
        assert "model.safetensors" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(WeightsNotFoundError, match="explicit path .*empty does not exist or is not a file or a folder"):
        resolve(DINO, empty)


def test_folder_prefers_the_catalog_file_name(tmp_path):
    """A folder holding torch hub's file and a transformers copy: the catalog's name comes first."""
    folder = tmp_path / "both"
    _transformers_folder(folder, seed=1)
    pinned = folder / "dinov2_vits14_pretrain.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 64)}, pinned)
    assert resolve(DINO, folder).path == pinned.resolve()
