"""The bundled `shapes` data: determinism, resolution agreement, splits, batches, labels."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.prompts import BACKGROUNDS, COLOURS, KINDS, POSITIONS, SIZES, caption_for
from bench.data.shapes import BACKGROUND_RGB, COLOUR_RGB, ShapesSource, item_geometry


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_vocabulary_is_rich_enough():
    assert len(KINDS) >= 5 and len(COLOURS) >= 6 and len(SIZES) == 3 and len(POSITIONS) == 9
    assert len(BACKGROUNDS) >= 3 and not set(COLOURS) & set(BACKGROUNDS)


def test_item_depends_only_on_seed_split_index():
    a = ShapesSource(32, n=10, seed=3, split="test")
    b = ShapesSource(32, n=500, seed=3, split="test")
    for i in (0, 4, 9):
        assert np.array_equal(a.load_image(i), b.load_image(i))
        assert a.caption(i) == b.caption(i) and a.label(i) == b.label(i)
    other_seed = ShapesSource(32, n=10, seed=4, split="test")
    assert [a.caption(i) for i in range(10)] != [other_seed.caption(i) for i in range(10)]


def test_image_format():
    image = ShapesSource(24, n=1).load_image(0)
    assert image.shape == (24, 24, 3) and image.dtype == np.uint8


@pytest.mark.parametrize("high,low", [(128, 32), (64, 16)])
def test_resolution_views_agree(high, low):
    big, small = ShapesSource(high, n=24, seed=1), ShapesSource(low, n=24, seed=1)
    for i in range(24):
        reduced = np.asarray(Image.fromarray(big.load_image(i)).resize((low, low), Image.BOX), dtype=np.int16)
        diff = np.abs(reduced - small.load_image(i).astype(np.int16))
        assert diff.max() <= 2, (i, diff.max())
        assert diff.mean() < 0.2


def test_views_are_not_trivially_equal_across_items():
    # guards the agreement test above: different items must differ by far more than 2 levels
    src = ShapesSource(32, n=2, seed=1)
    assert np.abs(src.load_image(0).astype(int) - src.load_image(1).astype(int)).max() > 50


def test_train_and_test_splits_differ():
    train, test = ShapesSource(32, n=200, split="train"), ShapesSource(32, n=200, split="test")
    train_hashes = {_digest(train.load_image(i)) for i in range(200)}
    test_hashes = {_digest(test.load_image(i)) for i in range(200)}
    assert len(train_hashes) == 200 and len(test_hashes) == 200
    assert not train_hashes & test_hashes
    with pytest.raises(ValueError, match="split"):
        ShapesSource(32, n=1, split="validation")


def test_labels_captions_and_attributes_agree():
    src = ShapesSource(32, n=300, seed=0)
    kinds_seen = set()
    for i in range(300):
        attrs = src.item_attributes(i)
        assert set(attrs) == {"kind", "colour", "size", "position", "background"}
        assert src.label(i) == KINDS.index(attrs["kind"])
        assert src.caption(i) == caption_for(attrs)
        kinds_seen.add(attrs["kind"])
    assert kinds_seen == set(KINDS)
    assert src.num_classes == len(KINDS) and tuple(src.class_names) == KINDS


def test_pixels_show_the_named_colours():
    """The shape's centre has the caption's colour, and the far corner the background's."""
    src = ShapesSource(64, n=200, seed=2)
    checked = 0
    for i in range(200):
        attrs = src.item_attributes(i)
        if attrs["kind"] not in ("circle", "square", "hexagon") or attrs["size"] == "small":
            continue
        image = src.load_image(i)
        geo = item_geometry(2, "test", i, attrs)
        cy, cx = int(geo["cy"] * 64), int(geo["cx"] * 64)
        assert tuple(image[cy, cx]) == COLOUR_RGB[attrs["colour"]]
        row, col = divmod(POSITIONS.index(attrs["position"]), 3)
        corner = image[63 if row == 0 else 0, 63 if col == 0 else 0]
        assert tuple(corner) == BACKGROUND_RGB[attrs["background"]]
        checked += 1
    assert checked >= 20


def test_batches_identical_with_and_without_workers():
    src = ShapesSource(16, n=23, seed=5)
    plain = list(src.iter_batches(5, start=2, stop=21))
    workers = list(src.iter_batches(5, start=2, stop=21, num_workers=2))
    assert [len(b) for b in plain] == [5, 5, 5, 4]
    assert len(plain) == len(workers)
    for a, b in zip(plain, workers):
        assert torch.equal(a.images, b.images) and torch.equal(a.indices, b.indices)
        assert torch.equal(a.labels, b.labels) and a.captions == b.captions
    first = plain[0]
    assert first.images.dtype == torch.uint8 and first.images.shape == (5, 3, 16, 16)
    assert first.indices.tolist() == [2, 3, 4, 5, 6]
    assert torch.equal(first.images[1], torch.from_numpy(src.load_image(3)).permute(2, 0, 1))
    assert first.labels.tolist() == [src.label(i) for i in range(2, 7)]


def test_batch_size_does_not_change_items():
    src = ShapesSource(16, n=12, seed=5)
    a = torch.cat([b.images for b in src.iter_batches(5)])
    b = torch.cat([b.images for b in src.iter_batches(12)])
    assert torch.equal(a, b)


def test_dataset_view():
    src = ShapesSource(16, n=6, seed=0)
    item = src.dataset()[4]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.uint8
    assert item["index"] == 4 and item["label"] == src.label(4) and item["caption"] == src.caption(4)
    assert len(src.dataset()) == 6


def test_fingerprint_tracks_content():
    base = ShapesSource(32, n=10, seed=0, split="test").fingerprint()
    assert base == ShapesSource(32, n=10, seed=0, split="test").fingerprint()
    variants = [ShapesSource(64, 10, 0, "test"), ShapesSource(32, 11, 0, "test"),
                ShapesSource(32, 10, 1, "test"), ShapesSource(32, 10, 0, "train")]
    assert len({base, *(v.fingerprint() for v in variants)}) == 5
