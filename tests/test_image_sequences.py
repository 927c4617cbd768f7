"""Image-to-image inputs that are not held in memory (issue 21): the held-out ground truth spooled
to a file and read by range, degraded inputs and masks made a batch at a time, and a request
that takes them as it takes tensors (same images, same store key for the same content)."""
from __future__ import annotations

import gc
from types import SimpleNamespace

import pytest
import torch

from bench.data import build_source
from bench.data.config import DataConfig
from bench.data.degrade import degrade, degraded
from bench.data.masks import make_masks, mask_sequence
from bench.data.spooled import SpooledImages
from bench.session import _request_key
from models.core.images import ImageSequence, MappedImages, fingerprint
from models.core.interface import BatchContext, RequestError, SampleRequest
from suites.image_to_image import held_out


def _images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_spooled_images_read_back_exactly_by_range_and_remove_their_file():
    images = _images(10)
    spooled = SpooledImages((images[s:s + 3] for s in range(0, 10, 3)), "test images")
    assert isinstance(spooled, ImageSequence) and spooled.shape == (10, 3, 8, 8) and len(spooled) == 10
    assert torch.equal(spooled[0:10], images) and torch.equal(spooled[4:7], images[4:7])
    assert torch.equal(spooled[-1], images[-1]) and torch.equal(spooled[2:2], images[2:2])
    with pytest.raises(IndexError):
        spooled[10]
    path = spooled.path
    assert path.stat().st_size == images.numel()
    del spooled
    gc.collect()
    assert not path.exists()


def test_spooled_images_refuse_mixed_shapes_and_leave_no_file(tmp_path):
    with pytest.raises(ValueError, match="test images: batch of"):
        SpooledImages(iter([_images(2), _images(2, size=4)]), "test images", directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_held_out_set_streams_the_same_images_as_the_source(tmp_path):
    data = DataConfig(name="shapes", resolution=16, n=12)
    session = SimpleNamespace(cfg=SimpleNamespace(hardware=SimpleNamespace(batch_size=5, num_workers=0)))
    truth, labels = held_out(session, data, n=7)
    assert isinstance(truth, SpooledImages) and len(truth) == 7 == len(labels)
    batches = list(build_source(DataConfig(name="shapes", resolution=16, n=7), split="test").iter_batches(7))
    assert torch.equal(truth[0:7], batches[0].images)
    assert labels == [int(v) for v in batches[0].labels]


@pytest.mark.parametrize("kind", ["bicubic", "blur_noise"])
def test_degraded_sequence_equals_degrading_the_whole_set(kind):
    images = _images(6, size=16)
    lazy = degraded(images, 2, kind, seed=3, noise_std=0.05)
    assert lazy.shape == (6, 3, 8, 8)
    whole = degrade(images, 2, kind, seed=3, noise_std=0.05)
    assert torch.equal(torch.cat([lazy[0:4], lazy[4:6]]), whole)
    assert lazy.fingerprint() != degraded(images, 2, kind, seed=4, noise_std=0.05).fingerprint()


def test_mask_sequence_equals_make_masks():
    lazy = mask_sequence("thick", 0.3, 16, seed=1, n=5)
    assert lazy.shape == (5, 1, 16, 16)
    assert torch.equal(lazy[1:5], make_masks("thick", 0.3, 16, 1, range(1, 5)))


def test_request_reads_sequences_batch_by_batch_as_it_reads_tensors():
    images, masks = _images(5), make_masks("box", 0.25, 8, 0, range(5))
    eager = SampleRequest(n=7, task="inpaint", input_images=images, masks=masks, batch_size=3)
    lazy = SampleRequest(n=7, task="inpaint", input_images=SpooledImages([images], "x"),
                         masks=mask_sequence("box", 0.25, 8, seed=0, n=5), batch_size=3)
    for indices in ([0, 1, 2], [3, 4, 5, 6]):   # the second wraps around the 5 inputs
        a = BatchContext(eager, indices, torch.device("cpu"), torch.float32)
        b = BatchContext(lazy, indices, torch.device("cpu"), torch.float32)
        assert torch.equal(a.input_images, b.input_images) and torch.equal(a.masks, b.masks)
    # the store key follows the content: equal for the same masks, different for others
    same = SampleRequest(n=7, task="inpaint", input_images=lazy.input_images,
                         masks=mask_sequence("box", 0.25, 8, seed=0, n=5))
    other = SampleRequest(n=7, task="inpaint", input_images=lazy.input_images,
                          masks=mask_sequence("box", 0.25, 8, seed=1, n=5))
    assert _request_key(same) == _request_key(lazy) != _request_key(other)
    assert fingerprint(images) == fingerprint(images.clone())


def test_a_sequence_of_bad_masks_is_refused_at_its_batch():
    bad = MappedImages(None, lambda _, idx: torch.full((len(idx), 1, 8, 8), 2, dtype=torch.uint8), (1, 8, 8),
                       "bad masks", n=2)
    request = SampleRequest(n=2, task="inpaint", input_images=_images(2), masks=bad)
    with pytest.raises(RequestError, match=r"SampleRequest.masks \(samples 0..1\): must hold only 0"):
        BatchContext(request, [0, 1], torch.device("cpu"), torch.float32)
    with pytest.raises(RequestError, match="input_images: must be a non-empty uint8"):
        SampleRequest(n=1, task="superres", input_images=SpooledImages([], "empty"))


def test_heldout_memory_bench_modes_read_the_same_pixels():
    from bench.tools.heldout_memory_bench import child
    spooled, in_memory = child("spooled", 40, 16, 8), child("in_memory", 40, 16, 8)
    assert spooled["n"] == in_memory["n"] == 40 and spooled["checksum"] == in_memory["checksum"] > 0
