"""Samples made elsewhere are all scored by default, and get no speed rows (issue 17)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image
from suite_helpers import run_suite

pytestmark = pytest.mark.filterwarnings("ignore::bench.metrics.frechet.FrechetWarning")   # 16-64 samples
QUALITY = ("metrics.names=[fid,speed]", "data.n=16", "hardware=cpu", "hardware.batch_size=32")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("external") / "samples"
    root.mkdir()
    arrays = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(root / f"{i:05d}.png")
    return root


@pytest.mark.slow   # tests/test_score.py covers every file scored in the default suite
def test_every_external_sample_is_scored_without_suite_n_and_no_speed_is_claimed(folder, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        frame = run_suite(tmp_path / "run", "pipeline=external_folder", f"pipeline.params.path={folder}", *QUALITY)
    assert list(frame.metric) == ["fid"]                       # no images_per_s, s_per_image, nfe, ...
    assert (frame.n == 64).all()                               # not the smoke suite's default 32
    assert json.loads(frame.details[0])["n_available"] == 64
    assert "scoring all 64 of its samples (suite.n not given" in caplog.text
    assert "speed: not measured for external pipeline samples" in caplog.text   # labelled after its folder


def test_an_explicit_smaller_suite_n_is_honoured_and_stated(folder, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        frame = run_suite(tmp_path / "run", "pipeline=external_folder", f"pipeline.params.path={folder}",
                          "suite.n=16", *QUALITY)
    assert list(frame.metric) == ["fid"] and (frame.n == 16).all()
    assert json.loads(frame.details[0])["n_available"] == 64
    assert "scoring the first 16 of its 64 samples (suite.n=16)" in caplog.text
