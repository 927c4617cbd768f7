"""`natural` data: crops of the photographs bundled with scikit-image / scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.data.natural import PHOTOGRAPHS, SPLIT_PHOTOGRAPHS, NaturalSource, load_photograph


def test_bundled_photographs_load_offline():
    for name in PHOTOGRAPHS:
        photo = load_photograph(name)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3 and min(photo.shape[:2]) >= 256


def test_splits_use_disjoint_photographs():
    assert not set(SPLIT_PHOTOGRAPHS["train"]) & set(SPLIT_PHOTOGRAPHS["test"])
    assert set(SPLIT_PHOTOGRAPHS["train"]) | set(SPLIT_PHOTOGRAPHS["test"]) == set(PHOTOGRAPHS)
    train, test = NaturalSource(16, n=60, split="train"), NaturalSource(16, n=60, split="test")
    train_names = {train.caption(i) for i in range(60)}
    test_names = {test.caption(i) for i in range(60)}
    assert train_names <= set(SPLIT_PHOTOGRAPHS["train"]) and test_names <= set(SPLIT_PHOTOGRAPHS["test"])
    assert len(test_names) == len(SPLIT_PHOTOGRAPHS["test"])   # every test photograph is used


def test_deterministic_seeded_crops():
    a, b = NaturalSource(32, n=8, seed=1), NaturalSource(32, n=100, seed=1)
    assert all(np.array_equal(a.load_image(i), b.load_image(i)) for i in range(8))
    c = NaturalSource(32, n=8, seed=2)
    assert not all(np.array_equal(a.load_image(i), c.load_image(i)) for i in range(8))
    image = a.load_image(0)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and image.std() > 5


def test_batches_have_no_labels_and_name_their_source():
    src = NaturalSource(16, n=6, seed=0)
    batch = next(src.iter_batches(6))
    assert batch.labels is None and src.num_classes is None
    assert batch.captions == [src.caption(i) for i in range(6)]
    same = next(NaturalSource(16, n=6, seed=0).iter_batches(6, num_workers=2))
    assert torch.equal(batch.images, same.images)


def test_fingerprint_tracks_content():
    base = NaturalSource(16, 10, 0, "test").fingerprint()
    assert base == NaturalSource(16, 10, 0, "test").fingerprint()
    assert base != NaturalSource(16, 10, 0, "train").fingerprint()
    assert base != NaturalSource(16, 10, 1, "test").fingerprint()
    with pytest.raises(ValueError, match="split"):
        NaturalSource(16, 10, 0, "holdout")
