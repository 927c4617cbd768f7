"""Bad inputs end in exit code 2 and one line naming the input and what to do: no traceback
(unless debug=true), and no results files beside a `failed` manifest (issue 17, deliverable 8).

The app runs in-process through its real entry point (`bench.app.main`: the start-up checks,
then Hydra's main), so each case costs no interpreter start-up; the cases that need a model
or features use samples from an npz and the Inception only where the check needs it."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from bench_runs import main_in_process, the_error_line
from PIL import Image

QUICK = ("quiet=true", "hardware=cpu", "hardware.batch_size=4")


def run_app(monkeypatch, capsys, *overrides: str) -> tuple[int, str]:
    """`python -m bench *overrides` in this process: (exit code, stderr + stdout)."""
    return main_in_process(monkeypatch, capsys, [*QUICK, *overrides])


def assert_refused(code: int, output: str, *named: str) -> str:
    """Exit 2, one `error:` line naming every string in `named`, no traceback."""
    line = the_error_line(code, output)
    for name in named:
        assert name in line, line
    return line


def assert_nothing_half_written(run_dir: Path) -> None:
    for name in ("results.csv", "results.parquet", "report.md"):
        assert not (run_dir / name).exists(), name
    if (run_dir / "manifest.json").exists():
        assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"


def samples_npz(path: Path, n: int = 8, nchw: bool = False, key: str | None = None) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    if nchw:
        images = images.transpose(0, 3, 1, 2)
    if key is None:
        np.savez(path, images)
    else:
        np.savez(path, **{key: images})
    return path


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    return samples_npz(tmp_path / "samples.npz")


def test_empty_prompts_file(monkeypatch, capsys, tmp_path, npz):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n  \n\n")
    run = tmp_path / "run"
    code, out = run_app(monkeypatch, capsys, "pipeline=external_npz", f"pipeline.params.path={npz}",
                        f"pipeline.params.prompts={prompts}", f"hydra.run.dir={run}")
    assert_refused(code, out, str(prompts), "no prompts")
    assert_nothing_half_written(run)


def test_empty_external_folder(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    run = tmp_path / "run"
    code, out = run_app(monkeypatch, capsys, "pipeline=external_folder", f"pipeline.params.path={folder}",
                        f"hydra.run.dir={run}")
    assert_refused(code, out, str(folder), "no images", "pipeline.params.path")
    assert_nothing_half_written(run)


def test_npz_without_arr_0(monkeypatch, capsys, tmp_path):
    path = samples_npz(tmp_path / "wrong_key.npz", key="images")
    run = tmp_path / "run"
    code, out = run_app(monkeypatch, capsys, "pipeline=external_npz", f"pipeline.params.path={path}",
                        f"hydra.run.dir={run}")
    line = assert_refused(code, out, str(path), "arr_0", "images")
    assert "np.savez" in line
    assert_nothing_half_written(run)


def test_npz_in_nchw_is_named_as_such_not_blamed_on_the_resolution(monkeypatch, capsys, tmp_path):
    path = samples_npz(tmp_path / "nchw.npz", nchw=True)
    run = tmp_path / "run"
    code, out = run_app(monkeypatch, capsys, "pipeline=external_npz", f"pipeline.params.path={path}",
                        f"hydra.run.dir={run}")
    line = assert_refused(code, out, str(path), "NCHW", "NHWC")
    assert "resolution" not in line
    assert_nothing_half_written(run)


def test_reference_npz_of_another_dimension(monkeypatch, capsys, tmp_path, npz):
    reference = tmp_path / "ref64.npz"
    np.savez(reference, mu=np.zeros(64), sigma=np.eye(64))
    run = tmp_path / "run"
    code, out = run_app(monkeypatch, capsys, "pipeline=external_npz", f"pipeline.params.path={npz}",
                        f"metrics.reference={reference}", "metrics.names=[fid]", f"hydra.run.dir={run}")
    assert_refused(code, out, str(reference), "64", "2048")
    assert_nothing_half_written(run)


def test_run_dir_that_cannot_be_made(monkeypatch, capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, out = run_app(monkeypatch, capsys, "pipeline=pixel_ddpm", f"hydra.run.dir={blocker}/run")
    assert_refused(code, out, "hydra.run.dir", str(blocker))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_run_dir(monkeypatch, capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, out = run_app(monkeypatch, capsys, "pipeline=pixel_ddpm", f"hydra.run.dir={locked}/run")
    finally:
        locked.chmod(0o755)
    assert_refused(code, out, "hydra.run.dir", str(locked))


@pytest.mark.parametrize("override, key", [("foo=1", "foo"), ("+foo=1", "foo"), ("sampler.stepz=3", "sampler.stepz"),
                                           ("+pipeline.params.bogus=1", "bogus"), ("metrics.names=[FID]", "FID")])
def test_unknown_keys_names_and_params(monkeypatch, capsys, tmp_path, override, key):
    run = tmp_path / "run"
    code, out = run_app(monkeypatch, capsys, "pipeline=pixel_ddpm", "suite.n=2", "metrics.names=[fid]", override,
                        f"hydra.run.dir={run}")
    assert_refused(code, out, key)
    assert_nothing_half_written(run)


def test_debug_true_prints_the_traceback(monkeypatch, capsys, tmp_path):
    code, out = run_app(monkeypatch, capsys, "foo=1", "debug=true", f"hydra.run.dir={tmp_path}/run")
    assert code == 2 and "Traceback" in out and "error: config key 'foo'" in out


def test_a_failed_results_write_marks_the_manifest_failed_and_leaves_no_results(monkeypatch, capsys, tmp_path, npz):
    """A full disk while the results are written: the csv went through, the parquet did not."""
    import bench.results
    real = bench.results.atomic_write
    calls = []

    def full_disk(path, *args, **kwargs):
        calls.append(Path(path).name)
        if Path(path).suffix == ".parquet":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(bench.results, "atomic_write", full_disk)
    run = tmp_path / "run"
    code, out = run_app(monkeypatch, capsys, "pipeline=external_npz", f"pipeline.params.path={npz}",
                        "data=npz", f"data.root={npz}", "metrics.names=[fid]", f"hydra.run.dir={run}")
    assert calls == ["results.csv", "results.parquet"], calls       # the csv was written, then removed
    assert_refused(code, out, str(run), "No space left on device")
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"
    assert_nothing_half_written(run)


def test_external_folder_bad_file_hint_names_the_key_that_works(monkeypatch, capsys, tmp_path, npz):
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (60 * i, 20, 200)).save(folder / f"{i}.png")
    (folder / "3b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    common = ("pipeline=external_folder", f"pipeline.params.path={folder}", "data=npz", f"data.root={npz}",
              "metrics.names=[fid]")
    run = tmp_path / "run"
    code, out = run_app(monkeypatch, capsys, *common, f"hydra.run.dir={run}")
    line = assert_refused(code, out, "3b_broken.png", "pipeline.params.on_bad_file=skip")
    assert "data.on_bad_file" not in line
    assert_nothing_half_written(run)

    skipped = tmp_path / "skipped"       # the hint, followed, works: the 4 readable files are scored
    code, out = run_app(monkeypatch, capsys, *common, "pipeline.params.on_bad_file=skip", f"hydra.run.dir={skipped}")
    assert code == 0, out[-3000:]
    import pandas as pd
    rows = pd.read_csv(skipped / "results.csv")
    assert rows.loc[rows.metric == "fid", "n"].tolist() == [4]
    assert json.loads((skipped / "manifest.json").read_text())["status"] == "complete"


def test_debug_true_prints_the_traceback_of_a_runtime_input_error(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    code, out = run_app(monkeypatch, capsys, "pipeline=external_folder", f"pipeline.params.path={folder}", "debug=true",
                        f"hydra.run.dir={tmp_path}/run")
    assert code == 2 and "Traceback" in out and f"error: image folder {folder}" in out


def test_unknown_metric_in_a_suites_own_metric_list(monkeypatch, capsys, tmp_path):
    code, out = run_app(monkeypatch, capsys, "suite=regression", "suite.params.metrics=[fid,bogus]",
                        f"hydra.run.dir={tmp_path}/run")
    assert_refused(code, out, "suite.params.metrics", "bogus", "precision_recall")
    assert not (tmp_path / "run").exists()
