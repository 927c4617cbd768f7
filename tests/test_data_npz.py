"""`npz` data: streaming an ADM-style sample file, its fallbacks and its errors."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import DataError
from bench.data.npz import NpzSource

RNG = np.random.default_rng(0)


def _images(n=11, size=8):
    return RNG.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _all(source, **kwargs):
    batches = list(source.iter_batches(4, **kwargs))
    return batches, torch.cat([b.images for b in batches])


def test_streaming_round_trip(tmp_path):
    images, labels = _images(), RNG.integers(0, 5, size=11)
    np.savez(tmp_path / "samples.npz", images, labels)
    src = NpzSource(tmp_path / "samples.npz", resolution=8)
    assert src._layout is not None, "an np.savez file must be memory-mapped, not loaded"
    assert len(src) == 11 and src.num_classes == int(labels.max()) + 1
    batches, stacked = _all(src)
    assert src._array is None, "rows are read one by one (np.fromfile), never through a memory map"
    assert torch.equal(stacked, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert torch.cat([b.labels for b in batches]).tolist() == labels.tolist()
    assert torch.cat([b.indices for b in batches]).tolist() == list(range(11))
    _, with_workers = _all(NpzSource(tmp_path / "samples.npz", resolution=8), num_workers=2)
    assert torch.equal(stacked, with_workers)


def test_n_caps_and_ranges(tmp_path):
    images = _images()
    np.savez(tmp_path / "s.npz", images)
    src = NpzSource(tmp_path / "s.npz", resolution=8, n=6)
    assert len(src) == 6 and src.num_classes is None
    batches = list(src.iter_batches(4, start=3))
    assert [b.indices.tolist() for b in batches] == [[3, 4, 5]] and batches[0].labels is None
    assert torch.equal(batches[0].images, torch.from_numpy(images[3:6]).permute(0, 3, 1, 2))


def test_compressed_file_loads_whole_with_a_warning(tmp_path, caplog):
    images = _images()
    np.savez_compressed(tmp_path / "c.npz", images)
    with caplog.at_level(logging.WARNING):
        src = NpzSource(tmp_path / "c.npz", resolution=8)
    assert "compressed" in caplog.text and src._layout is None
    assert torch.equal(_all(src)[1], torch.from_numpy(images).permute(0, 3, 1, 2))


def test_other_resolution_is_center_cropped_and_resized(tmp_path):
    images = _images(n=2, size=16)
    np.savez(tmp_path / "s.npz", images)
    got = NpzSource(tmp_path / "s.npz", resolution=8).load_image(1)
    assert np.array_equal(got, np.asarray(Image.fromarray(images[1]).resize((8, 8), Image.BICUBIC)))


def test_clear_errors(tmp_path):
    np.savez(tmp_path / "named.npz", samples=_images())
    with pytest.raises(DataError, match=r"has no arr_0 \(found \['samples'\]\)"):
        NpzSource(tmp_path / "named.npz", resolution=8)
    np.savez(tmp_path / "float.npz", _images().astype(np.float32))
    with pytest.raises(DataError, match="arr_0 has dtype float32, expected uint8"):
        NpzSource(tmp_path / "float.npz", resolution=8)
    np.savez(tmp_path / "nchw.npz", _images().transpose(0, 3, 1, 2).copy()[:, :, :, :5])
    with pytest.raises(DataError, match="looks like NCHW"):
        NpzSource(tmp_path / "nchw.npz", resolution=8)
    np.savez(tmp_path / "labels.npz", _images(), np.arange(3))
    with pytest.raises(DataError, match=r"arr_1 \(labels\)"):
        NpzSource(tmp_path / "labels.npz", resolution=8)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match="not an .npz"):
        NpzSource(tmp_path / "text.npz", resolution=8)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        NpzSource(tmp_path / "missing.npz", resolution=8)


def test_fingerprint_detects_changed_samples(tmp_path):
    images = _images()
    np.savez(tmp_path / "s.npz", images)
    before = NpzSource(tmp_path / "s.npz", resolution=8).fingerprint()
    assert before == NpzSource(tmp_path / "s.npz", resolution=8).fingerprint()
    images[5, 3, 3, 0] ^= 1
    np.savez(tmp_path / "s.npz", images)
    assert before != NpzSource(tmp_path / "s.npz", resolution=8).fingerprint()
