"""The 50,000-sample protocol benchmark (python -m bench.tools.protocol_bench) at a tiny size, and
the two properties it relies on: its sample file is a genuine ADM-layout npz, and reading an npz
does not keep the file resident (the figures at 1k-10k images are measured by hand: README)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data.npz import NpzSource
from bench.data.shapes import ShapesSource
from bench.tools.protocol_bench import main, status_kib, write_samples_npz


def test_sample_file_is_an_adm_npz_of_the_shapes_data(tmp_path: Path) -> None:
    path = write_samples_npz(tmp_path / "s.npz", 70, 16, chunk=32)
    with np.load(path) as data:
        images = data["arr_0"]
    assert images.dtype == np.uint8 and images.shape == (70, 16, 16, 3)
    expected = torch.cat([b.images for b in ShapesSource(16, 70, 1, "train").iter_batches(70)])
    assert np.array_equal(images, expected.permute(0, 2, 3, 1).numpy())
    source = NpzSource(path, 16)
    assert np.array_equal(source.load_image(69), images[69])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssFile from /proc")
def test_reading_an_npz_does_not_keep_the_file_resident(tmp_path: Path) -> None:
    """A memory map keeps every page it touched in the resident set (RSS would grow by the whole
    sample file over one pass); rows are read on their own instead."""
    rows = np.random.default_rng(0).integers(0, 256, (600, 64, 64, 3), dtype=np.uint8)   # 7 MiB
    np.savez(tmp_path / "big.npz", rows)
    del rows
    source = NpzSource(tmp_path / "big.npz", 64)
    before = status_kib("RssFile")
    for index in range(len(source)):
        source.load_image(index)
    assert status_kib("RssFile") - before < 2 * 1024      # KiB; the file is 7 * 1024 KiB


@pytest.mark.slow   # 20 s: one interpreter per size
def test_protocol_runs_each_size_in_its_own_process(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    summary = main(["--n", "6", "--compare", "3", "--ref-n", "6", "--batch", "3", "--threads", "1",
                    "--work-dir", str(tmp_path)])
    runs = summary["runs"]
    assert sorted(runs) == [3, 6]
    for n, run in runs.items():
        assert run["n"] == n and run["peak_rss_mib"] >= run["setup_rss_mib"] > 100
        assert math.isfinite(run["values"]["fid"]) and run["seconds"] > 0
    assert list((tmp_path / "reference_cache").rglob("*.npz"))       # the reference was cached once
    assert summary["rss_ratio"] > 0 and summary["protocol_hours"] > 0
    out = capsys.readouterr().out
    assert "peak RSS n=6 / n=3" in out and "50,000 samples" in out


def test_compare_must_be_smaller_than_n() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--n", "5", "--compare", "5"])
    assert exit_info.value.code == 2
