"""`build_source` and the conf/data group files against the DataConfig schema."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from bench.config import DataConfig
from bench.data import ImageSource, build_source
from bench.data.folder import FolderSource
from bench.data.natural import NaturalSource
from bench.data.npz import NpzSource
from bench.data.shapes import ShapesSource

CONF = Path(__file__).resolve().parent.parent / "conf" / "data"


def _compose(name: str, **overrides) -> DataConfig:
    """Merge a group file onto the structured schema: unknown keys or wrong types fail here."""
    merged = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(CONF / f"{name}.yaml"), overrides)
    return OmegaConf.to_object(merged)


@pytest.mark.parametrize("name", ["shapes", "natural", "folder", "npz"])
def test_group_files_fit_the_schema(name):
    raw = OmegaConf.load(CONF / f"{name}.yaml")
    assert set(raw) <= set(DataConfig.__dataclass_fields__) and raw.name == name


def test_build_each_source(tmp_path):
    shapes = build_source(_compose("shapes", n=4))
    assert isinstance(shapes, ShapesSource) and shapes.split == "test" and len(shapes) == 4
    assert build_source(_compose("shapes", n=4), split="train").split == "train"
    assert isinstance(build_source(_compose("natural", n=3, resolution=16)), NaturalSource)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / f"{i}.png")
    folder = build_source(_compose("folder", root=str(tmp_path), resolution=8, n=2))
    assert isinstance(folder, FolderSource) and len(folder) == 2
    np.savez(tmp_path / "s.npz", np.zeros((5, 8, 8, 3), np.uint8))
    npz = build_source(_compose("npz", root=str(tmp_path / "s.npz"), resolution=8))
    assert isinstance(npz, NpzSource) and len(npz) == 5
    assert all(isinstance(s, ImageSource) for s in (shapes, folder, npz))


def test_folder_without_root_is_rejected_naming_the_key():
    with pytest.raises(Exception, match="data.root"):
        _compose("folder")
