"""Untrusted inputs are bounded: checkpoint configs are checked (values, keys, an estimated size
against the memory budget) before anything is allocated; broken config.json / safetensors files
are named; oversized images are named (and skipped under on_bad_file=skip); a stage's guidance
override must be finite. Each error is one the app maps to exit 2."""
from __future__ import annotations

import json
import os
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from bench_runs import main_in_process, the_error_line
from PIL import Image

from bench.data import BadImageError
from bench.data.folder import FolderSource
from bench.data.images import decode_file
from bench.device import HardwareConfig
from models.core.checkpoint import CheckpointError, load_checkpoint, memory_budget_bytes, set_memory_budget
from models.core.interface import RequestError, SampleRequest
from models.core.registry import CHECKPOINT_DIR

REPO = Path(__file__).resolve().parent.parent
SHIPPED = CHECKPOINT_DIR / "pixel_ddpm_shapes32"


def copy_checkpoint(tmp_path: Path, edit=None, config_text: str | None = None) -> Path:
    """The shipped pixel checkpoint, with its config.json edited (a dict -> dict function) or replaced."""
    target = tmp_path / "ckpt"
    shutil.copytree(SHIPPED, target)
    if edit is not None:
        config = json.loads((target / "config.json").read_text())
        edit(config)
        (target / "config.json").write_text(json.dumps(config))
    if config_text is not None:
        (target / "config.json").write_text(config_text)
    return target


def _set_base(key, value):
    def edit(config):
        config["networks"]["base"]["config"][key] = value
    return edit


@pytest.fixture(autouse=True)
def default_budget():
    set_memory_budget(None)
    yield
    set_memory_budget(None)


def test_a_huge_config_is_refused_before_allocation_naming_file_estimate_and_budget(tmp_path):
    ckpt = copy_checkpoint(tmp_path, _set_base("base_channels", 4096))
    set_memory_budget(8)
    started = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ckpt)
    assert time.perf_counter() - started < 5            # estimated on the meta device, nothing allocated
    message = str(err.value)
    assert str(ckpt / "config.json") in message and "networks.base" in message
    assert "GiB" in message and "8.00 GiB" in message and "hardware.memory_budget_gb" in message


def test_the_budget_applies_to_shipped_checkpoints_too_and_defaults_to_half_the_ram(tmp_path):
    set_memory_budget(0.001)                           # ~1 MiB: the 4.5 MB pixel UNet is above it
    with pytest.raises(CheckpointError, match="above the memory budget of 0.00 GiB"):
        load_checkpoint(SHIPPED)
    set_memory_budget(None)
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert memory_budget_bytes() == physical // 2
    config, networks = load_checkpoint(SHIPPED)       # well within the default
    assert "base" in networks
    with pytest.raises(Exception, match="hardware.memory_budget_gb"):
        HardwareConfig(memory_budget_gb=-1.0)


@pytest.mark.parametrize("edit, key", [
    (_set_base("base_channels", -64), "networks.base.config.base_channels"),
    (_set_base("num_heads", 1 << 30), "networks.base.config.num_heads"),
    (_set_base("dropout", float("nan")), "networks.base.config.dropout"),
    (_set_base("bogus_width", 3), "bogus_width"),                               # the builder's key check
    (lambda c: c["networks"]["base"].update(weights="x"), "networks.base"),    # spec keys: type, config
    (lambda c: c["networks"]["base"].update(type="resnet9000"), "networks.base.type"),
    (lambda c: c.update(networks="unet"), "networks"),
])
def test_insane_or_unknown_config_values_name_the_file_and_key(tmp_path, edit, key):
    ckpt = copy_checkpoint(tmp_path, edit)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ckpt)
    assert str(ckpt / "config.json") in str(err.value) and key in str(err.value)


@pytest.mark.parametrize("text, why", [
    ("{not json", "not valid JSON"),
    ("[1, 2, 3]", "expected a JSON object, got list"),
    ("\xff\xfe garbage", "not valid JSON"),
])
def test_a_bad_config_json_is_named(tmp_path, text, why):
    ckpt = copy_checkpoint(tmp_path, config_text=text)
    with pytest.raises(CheckpointError, match=why) as err:
        load_checkpoint(ckpt)
    assert str(ckpt / "config.json") in str(err.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_truncated_or_garbage_safetensors_are_named(tmp_path, damage):
    ckpt = copy_checkpoint(tmp_path)
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as err:
        load_checkpoint(ckpt)
    assert str(weights) in str(err.value)


def test_weights_of_another_shape_are_named(tmp_path):
    ckpt = copy_checkpoint(tmp_path, _set_base("base_channels", 32))
    with pytest.raises(CheckpointError, match="the weights do not match config.json") as err:
        load_checkpoint(ckpt)
    assert str(ckpt / "model.safetensors") in str(err.value)


def test_the_app_exits_2_without_traceback_and_the_manifest_says_failed(tmp_path, monkeypatch, capsys):
    ckpt = copy_checkpoint(tmp_path, _set_base("base_channels", 4096))
    run = tmp_path / "run"
    # in this process (the entry point and its error boundary, no interpreter start-up); the budget it
    # sets is reset by default_budget
    code, output = main_in_process(monkeypatch, capsys, ["suite=speed", "pipeline=pixel_ddpm",
                                                         f"pipeline.checkpoint={ckpt}", "hardware=cpu",
                                                         "hardware.memory_budget_gb=4", f"hydra.run.dir={run}"])
    line = the_error_line(code, output)
    assert str(ckpt / "config.json") in line and "memory budget of 4.00 GiB" in line, line
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "CheckpointError" in manifest["error"]
    assert not (run / "results.csv").exists()


# -- images ------------------------------------------------------------------------------
def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height (1-bit grey) but holds one scanline: costs ~100 bytes,
    is refused from its header long before anyone decodes 196 Mpx."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 8))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side, why", [(14000, "too large to decode safely"),     # 196 Mpx: PIL's bomb limit
                                       (9000, "exceeds data.max_pixels")])       # 81 Mpx: the project's bound
def test_a_huge_image_is_a_named_bad_file(tmp_path, side, why):
    path = png_header_only(tmp_path / "huge.png", side, side)
    with pytest.raises(BadImageError, match=why) as err:
        decode_file(path, 32)
    assert str(path) in str(err.value)


def test_max_pixels_is_configurable_and_oversized_images_are_skipped_and_counted(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"ok_{i}.png")
    Image.fromarray(np.zeros((8, 40, 3), np.uint8)).save(tmp_path / "wide.png")      # 320 px
    png_header_only(tmp_path / "zbomb.png", 14000, 14000)
    with pytest.raises(BadImageError, match=r"wide.png: 40 x 8 = 0.0 Mpx exceeds data.max_pixels=100"):
        list(FolderSource(tmp_path, 8, max_pixels=100).iter_batches(8))
    skipping = FolderSource(tmp_path, 8, on_bad_file="skip", max_pixels=100)
    images = sum(len(batch) for batch in skipping.iter_batches(8))
    assert images == 3 and sorted(Path(p).name for p in skipping.skipped) == ["wide.png", "zbomb.png"]
    assert FolderSource(tmp_path, 8, max_pixels=100).fingerprint() != FolderSource(tmp_path, 8).fingerprint()


# -- requests ----------------------------------------------------------------------------
@pytest.mark.parametrize("setting, value", [("guidance_scale", float("inf")), ("guidance_scale", float("nan")),
                                            ("guidance_scale", -1.0), ("noise_aug", float("inf")),
                                            ("eta", "fast")])
def test_a_stage_override_must_be_finite_like_the_top_level_guidance(setting, value):
    with pytest.raises(RequestError, match=rf"stage_overrides\['sr1'\].{setting}: must be a finite number"):
        SampleRequest(n=1, stage_overrides={"sr1": {setting: value}})
    SampleRequest(n=1, stage_overrides={"sr1": {"guidance_scale": 3.0, "noise_aug": 0.1, "eta": 0.0}})


def test_max_pixels_must_be_positive():
    from bench.data.config import ConfigError, DataConfig
    with pytest.raises(ConfigError, match="data.max_pixels"):
        DataConfig(max_pixels=0)


def test_an_autoencoder_checkpoint_is_checked_the_same_way(tmp_path):
    from models.networks.autoencoder import load_autoencoder
    target = tmp_path / "ae"
    shutil.copytree(CHECKPOINT_DIR / "ae_kl_f4_shapes32", target)
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as err:
        load_autoencoder(target)
    assert str(weights) in str(err.value)
    config = json.loads((target / "config.json").read_text())
    config["networks"]["autoencoder"]["config"]["base_channels"] = 1 << 20
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="above the memory budget"):
        load_autoencoder(target)


def test_the_size_check_leaves_seeded_initialisation_unchanged():
    import torch

    from models.core.checkpoint import _NETWORK_TYPES, build_networks
    config = json.loads((SHIPPED / "config.json").read_text())
    torch.manual_seed(0)
    checked = build_networks(config)
    torch.manual_seed(0)
    direct = _NETWORK_TYPES["unet"](config["networks"]["base"]["config"])
    assert all(torch.equal(a, b) for a, b in zip(checked["base"].state_dict().values(), direct.state_dict().values()))
