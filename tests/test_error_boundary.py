"""The run's error boundary (issue 29): a write that fails (full disk, read-only folder) at any
site of a run, and a damaged sample store, end in exit 2 and one `error:` line naming the file,
what is wrong and what to do; the manifest says `failed`, no results are left, and the same
command rerun once there is space resumes to the numbers of a clean run. A damaged shard is set
aside and sampled again with a warning; a kill while the results were written leaves no
temporary file after the resume.

Failing writes come from a patched `tempfile.mkstemp`, the call every atomic write of the project
starts with (bench.atomic): for ENOSPC it hands back /dev/full, so the failure comes from write()
itself, naming no file, as on a full disk; for EROFS / EACCES the create fails, as in a
read-only folder. Runs go through the real entry point (`bench.app.main`) in this process, so
each costs a model load and a few Inception batches, not an interpreter start. A real full
tmpfs (root only, where mounting works) checks the same contract without any patching."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
from bench_runs import main_in_process, the_error_line

from bench.atomic import TEMP_NAME, describe_io_error

REPO = Path(__file__).resolve().parent.parent
# Samples from an npz (no network to run: the write sites are the same for every pipeline), 4 of
# them in 2 batches (two parts, then a shard), FID against 8 cached reference images.
SAMPLES = Path(tempfile.gettempdir()) / f"diffbench-error-boundary-{os.getpid()}.npz"
COMMON = ("suite.n=4", "data.n=8", "metrics.names=[fid]", "hardware=cpu", "hardware.batch_size=2", "quiet=true")
RUN = ("pipeline=external_npz", f"pipeline.params.path={SAMPLES}", *COMMON)
SAMPLING = ("pipeline=pixel_ddpm", "sampler.steps=2", *COMMON)   # where damaged samples are sampled again


@pytest.fixture(scope="module", autouse=True)
def samples_and_one_inception():
    """The samples file; and one Inception for the module's in-process runs (loading it is no
    write site, and costs seconds a run)."""
    import functools

    import numpy as np

    import bench.session
    np.savez(SAMPLES, np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench.session, "build_inception", functools.lru_cache(bench.session.build_inception))
        yield
    SAMPLES.unlink(missing_ok=True)


def run_app(monkeypatch, capsys, run_dir: Path, *extra: str, base: tuple[str, ...] = RUN) -> tuple[int, str]:
    """`python -m bench RUN... hydra.run.dir=run_dir` in this process: (exit code, stderr + stdout)."""
    return main_in_process(monkeypatch, capsys, [*base, *extra, f"hydra.run.dir={run_dir}"])


def fid(run_dir: Path) -> float:
    rows = pd.read_csv(run_dir / "results.csv")
    return float(rows.loc[rows.metric == "fid", "value"].item())


def status(run_dir: Path) -> str | None:
    path = run_dir / "manifest.json"
    return json.loads(path.read_text())["status"] if path.exists() else None


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP_NAME.match(p.name)]


def failing_writes(monkeypatch, match: Callable[[Path], bool], code: int) -> list[Path]:
    """Make every atomic write whose target `match`es fail with `code`; returns the targets hit."""
    real, hits = tempfile.mkstemp, []

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        if suffix == ".tmp" and prefix and prefix.startswith(".") and dir is not None:
            target = Path(dir) / prefix[1:-1]            # bench.atomic's temporary name is .{name}.XXXXXXXX.tmp
            if match(target):
                hits.append(target)
                if code == errno.ENOSPC:
                    fd, tmp = real(suffix=suffix, prefix=prefix, dir=dir)
                    os.close(fd)
                    return os.open("/dev/full", os.O_WRONLY), tmp
                raise OSError(code, os.strerror(code), str(Path(dir) / f"{prefix}a1b2c3d4{suffix}"))
        return real(suffix=suffix, prefix=prefix, dir=dir, text=text)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return hits


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One reference-statistics cache for the module (the cache site gets its own)."""
    return tmp_path_factory.mktemp("cache")


def clean_run(tmp_path_factory, cache, base: tuple[str, ...]) -> float:
    run_dir = tmp_path_factory.mktemp("clean") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("DIFFBENCH_CACHE", str(cache))
        assert run_app(monkeypatch, None, run_dir, base=base)[0] == 0
    return fid(run_dir)


@pytest.fixture(scope="module")
def clean_fid(cache, tmp_path_factory) -> float:
    return clean_run(tmp_path_factory, cache, RUN)


@pytest.fixture(scope="module")
def clean_sampled_fid(cache, tmp_path_factory) -> float:
    return clean_run(tmp_path_factory, cache, SAMPLING)


def in_folder(name: str, suffix: str = ".npz") -> Callable[[Path], bool]:
    return lambda path: path.parent.name == name and path.suffix == suffix


SITES: dict[str, Callable[[Path], bool]] = {
    "sample part": lambda path: path.parent.parent.name == "parts",
    "shard": in_folder("shards"),
    "shard timings": in_folder("timings"),
    "shard sha256": lambda path: path.name.endswith(".npz.sha256"),
    "store.json": lambda path: path.name == "store.json",
    "reference statistics cache": in_folder("refstats"),
    "results.csv": lambda path: path.name == "results.csv",
    "results.parquet": lambda path: path.name == "results.parquet",
    "report.md": lambda path: path.name == "report.md",
    "report.html": lambda path: path.name == "report.html",
    "sample grid": in_folder("grids", ".png"),
}   # plots: a one-pipeline run draws none (one bar per panel would repeat the table); see the test below
RESUMED = ("sample part", "shard", "reference statistics cache", "results.parquet")


# Every site runs with --runslow; by default one per kind of writer: the sample store (part), the
# shared cache, the results, the report.
QUICK_SITES = ("sample part", "reference statistics cache", "results.parquet", "report.html")


@pytest.mark.parametrize("site", [site if site in QUICK_SITES else pytest.param(site, marks=pytest.mark.slow)
                                  for site in SITES])
def test_a_full_disk_at_each_write_site_is_one_line_naming_the_file_and_the_run_resumes(
        monkeypatch, capsys, tmp_path, cache, clean_fid, site):
    own_cache = tmp_path / "cache" if site == "reference statistics cache" else cache   # so it is written
    monkeypatch.setenv("DIFFBENCH_CACHE", str(own_cache))
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        hits = failing_writes(patch, SITES[site], errno.ENOSPC)
        code, out = run_app(monkeypatch, capsys, run_dir)
    assert hits, f"the run never wrote its {site}"
    line = the_error_line(code, out)
    assert str(hits[0]) in line and "No space left on device" in line and "ENOSPC" in line, line
    assert "free space" in line and "rerun" in line, line
    if site == "reference statistics cache":
        assert "DIFFBENCH_CACHE" in line, line
    assert status(run_dir) == "failed"
    assert not any((run_dir / name).exists() for name in ("results.csv", "results.parquet", "report.md", "report.html"))
    assert temp_files(run_dir) == [] and temp_files(own_cache) == []       # nothing half-written left
    if site in RESUMED:   # the same command once there is space: resumes, same numbers
        code, out = run_app(monkeypatch, capsys, run_dir)
        assert code == 0, out[-3000:]
        assert status(run_dir) == "complete" and fid(run_dir) == pytest.approx(clean_fid, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("site, code", [("sample part", errno.EROFS),
                                        pytest.param("reference statistics cache", errno.EROFS, marks=pytest.mark.slow),
                                        ("reference statistics cache", errno.EACCES),
                                        pytest.param("results.parquet", errno.EACCES, marks=pytest.mark.slow)])
def test_a_read_only_folder_at_a_write_site_is_one_line_saying_where_to_write_instead(
        monkeypatch, capsys, tmp_path, cache, site, code):
    own_cache = tmp_path / "cache" if site == "reference statistics cache" else cache
    monkeypatch.setenv("DIFFBENCH_CACHE", str(own_cache))
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        hits = failing_writes(patch, SITES[site], code)
        exit_code, out = run_app(monkeypatch, capsys, run_dir)
    assert hits
    line = the_error_line(exit_code, out)
    assert str(hits[0]) in line and errno.errorcode[code] in line and "writable" in line, line
    assert ("DIFFBENCH_CACHE" if "cache" in site else "hydra.run.dir") in line, line
    assert status(run_dir) == "failed" and not (run_dir / "results.csv").exists()


def test_debug_true_keeps_the_traceback(monkeypatch, capsys, tmp_path, cache):
    monkeypatch.setenv("DIFFBENCH_CACHE", str(cache))
    with monkeypatch.context() as patch:
        failing_writes(patch, SITES["shard"], errno.ENOSPC)
        code, out = run_app(monkeypatch, capsys, tmp_path / "run", "debug=true")
    assert code == 2 and "Traceback" in out and "OSError" in out
    assert len([line for line in out.splitlines() if line.startswith("error: ")]) == 1


# -- a damaged sample store, through the command line ------------------------------------------------
def stored_shard(run_dir: Path) -> Path:
    (shard,) = run_dir.glob("samples/*/*/shards/shard-*.npz")
    return shard


@pytest.mark.slow   # 30 s through a sampling run; tests/test_store.py checks the same at the store
def test_a_flipped_byte_in_a_shard_is_set_aside_sampled_again_and_warned(monkeypatch, capsys, tmp_path, cache,
                                                                          clean_sampled_fid):
    monkeypatch.setenv("DIFFBENCH_CACHE", str(cache))
    run_dir = tmp_path / "run"
    assert run_app(monkeypatch, capsys, run_dir, base=SAMPLING)[0] == 0
    shard = stored_shard(run_dir)
    clean_bytes = shard.read_bytes()
    damaged = bytearray(clean_bytes)
    damaged[len(damaged) // 2] ^= 0x10                 # one bit of one image
    shard.write_bytes(bytes(damaged))
    (run_dir / "manifest.json").write_text(json.dumps({**json.loads((run_dir / "manifest.json").read_text()),
                                                       "status": "failed"}))   # as a run killed later would
    code, out = run_app(monkeypatch, capsys, run_dir, base=SAMPLING)
    assert code == 0, out[-3000:]
    assert fid(run_dir) == pytest.approx(clean_sampled_fid, rel=1e-9, abs=1e-9)
    assert shard.read_bytes() == clean_bytes                                        # sampled again, same bytes
    (kept,) = run_dir.glob("samples/*/*/damaged/shards/shard-*.npz")
    assert kept.read_bytes() == bytes(damaged)                                      # the evidence is kept
    warnings = json.loads((run_dir / "manifest.json").read_text())["warnings"]
    assert [w for w in warnings if "damaged" in w and shard.name in w and "sha256" in w], warnings


@pytest.mark.parametrize("damage", ["truncated shard", "store.json"])
def test_a_damaged_store_of_samples_made_elsewhere_is_one_line(monkeypatch, capsys, tmp_path, cache, damage):
    """Samples made elsewhere are not sampled again (brief of issue 29): a damaged copy in the store
    is refused with one line naming it. A damaged store.json is refused for every pipeline (more
    kinds of damage: tests/test_store.py)."""
    monkeypatch.setenv("DIFFBENCH_CACHE", str(cache))
    run_dir = tmp_path / "run"
    assert run_app(monkeypatch, capsys, run_dir)[0] == 0
    shard, meta = stored_shard(run_dir), stored_shard(run_dir).parent.parent / "store.json"
    target = meta if "store.json" in damage else shard
    target.write_bytes({"truncated shard": shard.read_bytes()[:300],
                        "store.json": b'{"format": "diffbench-samples/1", "key": {'}[damage])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**manifest, "status": "failed"}))
    line = the_error_line(*run_app(monkeypatch, capsys, run_dir))
    assert str(target) in line and "damaged" in line, line
    assert ("move" in line and "rerun" in line) if target == meta else ("Delete it" in line and "rerun" in line)
    assert status(run_dir) == "failed" and not (run_dir / "results.csv").exists()


# -- the line itself: errno-specific advice, damaged zip files named --------------------------------
@pytest.mark.parametrize("code, words", [(errno.ENOSPC, ("free space", "ENOSPC")), (errno.EDQUOT, ("free space",)),
                                         (errno.EROFS, ("writable", "EROFS")), (errno.EACCES, ("writable", "EACCES")),
                                         (errno.EIO, ("check the disk",))])
def test_the_advice_follows_the_errno_and_the_place(tmp_path, monkeypatch, code, words):
    monkeypatch.setenv("DIFFBENCH_CACHE", str(tmp_path / "cache"))
    cached = OSError(code, os.strerror(code), str(tmp_path / "cache" / "refstats" / "x.npz"))
    in_run = OSError(code, os.strerror(code), str(tmp_path / "run" / "results.csv"))
    for err, place in ((cached, "DIFFBENCH_CACHE"), (in_run, "hydra.run.dir")):
        line = describe_io_error(err, tmp_path / "run")
        assert err.filename in line and "\n" not in line and (place in line or code == errno.EIO), line
        assert all(word in line for word in words), line


def test_a_write_error_without_a_file_name_gets_the_file_being_written(tmp_path):
    from bench.atomic import atomic_write
    target = tmp_path / "out.bin"
    with pytest.raises(OSError) as err:
        with atomic_write(target, "wb"):
            raise OSError(errno.ENOSPC, "No space left on device")   # as write() or fsync report it
    assert err.value.filename == str(target) and temp_files(tmp_path) == []


def test_a_damaged_zip_is_named_from_the_reader_that_found_it(tmp_path):
    import numpy as np
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(zipfile.BadZipFile) as err:
        np.load(path)
    line = describe_io_error(err.value)
    assert str(path) in line and "damaged" in line


# -- temporary files do not survive a resume ---------------------------------------------------------
def test_a_kill_while_the_results_are_written_leaves_no_temporary_file_after_the_resume(
        monkeypatch, capsys, tmp_path, cache, clean_fid):
    """A real SIGKILL while results.parquet's temporary file is open: the resumed run finishes
    and sweeps it. The child stops itself at that point (a sitecustomize hook), so the kill
    lands exactly there, not at a guessed time. The resume runs in this process (what it finds is
    on disk; no second interpreter start-up)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal, tempfile\n"
        "real = tempfile.mkstemp\n"
        "def mkstemp(suffix=None, prefix=None, dir=None, text=False):\n"
        "    fd, path = real(suffix=suffix, prefix=prefix, dir=dir, text=text)\n"
        "    if prefix == '.results.parquet.':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return fd, path\n"
        "tempfile.mkstemp = mkstemp\n")
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DIFFBENCH_CACHE": str(cache)}
    command = [sys.executable, "-m", "bench", *RUN, f"hydra.run.dir={run_dir}"]
    killed = subprocess.run(command, cwd=REPO, env={**env, "PYTHONPATH": f"{hook}{os.pathsep}{REPO}"},
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [p.name.startswith(".results.parquet.") for p in temp_files(run_dir)] == [True]
    monkeypatch.setenv("DIFFBENCH_CACHE", str(cache))
    code, output = run_app(monkeypatch, capsys, run_dir)
    assert code == 0, output[-3000:]
    assert temp_files(run_dir) == [] and status(run_dir) == "complete"
    assert fid(run_dir) == pytest.approx(clean_fid, rel=1e-9, abs=1e-9)


# -- a real full file system ----------------------------------------------------------------------
@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MiB tmpfs (root, where mounting is allowed); skipped elsewhere."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root and the privilege to mount")
    try:
        yield mount
    finally:
        # lazily: the run's log file (Hydra's handler in this process) may still hold the mount open
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_real_full_disk_under_the_run_directory(monkeypatch, capsys, tmp_path, tiny_tmpfs, cache, clean_fid):
    """1 MiB holds the manifest but not the samples of 6 images + report: a real ENOSPC from the
    kernel, then the run moved (its samples with it) to a disk with space resumes."""
    monkeypatch.setenv("DIFFBENCH_CACHE", str(cache))
    (tiny_tmpfs / "filler").write_bytes(b"\0" * (1024 * 1024 - 96 * 1024))
    run_dir = tiny_tmpfs / "run"
    code, out = run_app(monkeypatch, capsys, run_dir)
    line = the_error_line(code, out)
    assert str(run_dir) in line and "No space left on device" in line and "free space" in line, line
    assert temp_files(run_dir) == [] and not (run_dir / "results.csv").exists()
    (tiny_tmpfs / "filler").unlink()    # space again
    code, out = run_app(monkeypatch, capsys, run_dir)
    assert code == 0, out[-3000:]
    assert fid(run_dir) == pytest.approx(clean_fid, rel=1e-9, abs=1e-9)


def test_a_full_weights_store_is_one_line_naming_the_file(monkeypatch, capsys, tmp_path):
    """`python -m bench.weights import`: the copy into $DIFFBENCH_CACHE/weights fails on a full disk."""
    from bench.weights.cli import main
    monkeypatch.setenv("DIFFBENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(REPO / "bench" / "weights" / "files" / "alexnet_imagenet_features.safetensors", folder)
    with monkeypatch.context() as patch:
        hits = failing_writes(patch, lambda path: path.parent.name == "weights", errno.ENOSPC)
        code = main(["import", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and hits and "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert str(hits[0]) in line and "ENOSPC" in line and "DIFFBENCH_CACHE" in line, line
    assert temp_files(tmp_path / "cache") == []


def test_the_sweep_removes_only_the_projects_temporary_files_outside_the_sample_stores(tmp_path):
    from bench.atomic import sweep_temp_files
    ours = [tmp_path / ".results.parquet.k3j_x9a0.tmp", tmp_path / "plots" / ".overview.png.abcdefgh.tmp"]
    others = [tmp_path / "notes.tmp", tmp_path / ".hidden.tmp", tmp_path / "results.csv",
              tmp_path / "samples" / "p" / "default" / ".store.json.abcdefgh.tmp"]   # the store sweeps under its lock
    for path in ours + others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    assert sorted(sweep_temp_files(tmp_path, skip=["samples"])) == sorted(ours)
    assert all(path.exists() for path in others) and not any(path.exists() for path in ours)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_plot_that_cannot_be_written_names_its_file_and_leaves_nothing_half_drawn(monkeypatch, tmp_path, code):
    """The plots site (reports.plots, as the run report draws them) with two pipelines' rows."""
    from bench.results import MetricValue, RunContext, make_row, rows_to_frame
    from reports.plots import write_plots
    frame = rows_to_frame([make_row(RunContext("r", "smoke", name, "pixel"), MetricValue("fid", value, 4))
                           for name, value in (("a", 10.0), ("b", 12.0))])
    with monkeypatch.context() as patch:
        hits = failing_writes(patch, in_folder("plots", ".png"), code)
        with pytest.raises(OSError) as err:
            write_plots(frame, tmp_path / "plots")
    assert hits and err.value.filename == str(hits[0]) and err.value.errno == code
    line = describe_io_error(err.value, tmp_path)
    assert str(hits[0]) in line and ("free space" if code == errno.ENOSPC else "writable") in line
    assert list((tmp_path / "plots").iterdir()) == []                       # no half-drawn png, no temporary file
    assert write_plots(frame, tmp_path / "plots") == [tmp_path / "plots" / "overview.png"]   # and with space: drawn


def test_a_shared_cache_is_swept_only_while_no_process_writes_there(tmp_path):
    """A kill while the reference cache was written leaves `.NAME.npz.XXXXXXXX.tmp` there; the next
    run removes it, but never a temporary file another run (sharing the cache) is writing now."""
    from bench.atomic import shared_folder_write, sweep_shared_folder
    folder = tmp_path / "refstats"
    folder.mkdir()
    stale = folder / ".shapes-0123456789abcdef0123.npz.k2j4h6g8.tmp"
    stale.write_bytes(b"")
    below = folder / "sub" / ".x.npz.abcdefgh.tmp"            # one folder only: nothing below it
    below.parent.mkdir()
    below.write_bytes(b"")
    with shared_folder_write(folder):                        # a writer at work (its own lock description)
        assert sweep_shared_folder(folder) == [] and stale.exists()
    assert sweep_shared_folder(folder) == [stale] and not stale.exists() and below.exists()
