"""Issue 26, what was seen 3-7: a run directory keeps its finished run (rerun, kill and rerun in
every way, compared byte for byte); `dry_run=true` opens every input and names what will really
run; configuration errors come before the heavy imports; a local path is called a path; the
manifest records the thread count. (Case 5, `scheduler=request` on every diffusers kind, is
tests/test_diffusers_scheduler_matrix.py.)"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bench_runs import main_in_process, the_error_line

REPO = Path(__file__).resolve().parent.parent
# The shipped pixel DDPM, 3 DDIM steps, 4 samples, FID against 8 shapes images: a finished run
# with stored samples, results, manifest and reports in a few seconds of CPU.
RUN = ("pipeline=pixel_ddpm", "suite=smoke", "suite.n=4", "data.n=8", "sampler.steps=3", "metrics.names=[fid]",
       "hardware=cpu", "hardware.batch_size=4", "quiet=true")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "DIFFBENCH_QUIET": "1", "OMP_NUM_THREADS": "1"}


def run_app(monkeypatch, capsys, run_dir: Path, *overrides: str) -> tuple[int, str]:
    """`python -m bench *overrides hydra.run.dir=run_dir` in this process: (exit code, stderr + stdout)."""
    return main_in_process(monkeypatch, capsys, [*overrides, f"hydra.run.dir={run_dir}"])


error_line = the_error_line


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file under the run directory, by relative path, with its bytes."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run (made once; each test works on a copy)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    proc = subprocess.run([sys.executable, "-m", "bench", *RUN, f"hydra.run.dir={run_dir}"], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    assert list((run_dir / "samples").rglob("shards/*.npz")), "the run stores its samples"
    return run_dir


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(finished, target)
    return target


# -- 3: a run directory keeps what it holds ------------------------------------------------------
@pytest.mark.parametrize("change, named", [
    (("sampler.steps=5",), "sampler.steps: 3 there, 5 now"),
    (("pipeline=pixel_untrained",), "pipeline.name: pixel_ddpm there, pixel_untrained now"),
])
def test_a_rerun_with_other_settings_is_refused_and_touches_nothing(copy, monkeypatch, capsys, change, named):
    before = snapshot(copy)
    for dry in ((), ("dry_run=true",)):          # the dry run says the same line the run would
        code, output = run_app(monkeypatch, capsys, copy, *RUN, *change, *dry)
        line = error_line(code, output)
        assert named in line and "overwrite=true" in line and "hydra.run.dir" in line, line
        assert len(line) - len(str(copy)) < 400, line   # one short line, not a JSON dump
        assert snapshot(copy) == before           # results, manifest (complete), reports, samples: byte-identical
    assert json.loads((copy / "manifest.json").read_text())["status"] == "complete"


def test_the_in_process_runner_refuses_too(copy):
    """bench.app.run (multirun jobs, notebooks) checks the directory before writing anything."""
    from bench.preflight import RunDirError
    from suite_helpers import run_suite
    before = snapshot(copy)
    with pytest.raises(RunDirError, match="sampler.steps: 3 there, 5 now"):
        run_suite(copy, *RUN, "sampler.steps=5")
    assert snapshot(copy) == before


def test_a_finished_run_rerun_with_the_same_settings_is_left_as_it_is(copy, monkeypatch, capsys):
    """A finished run is never changed by a later one: the same command again does nothing to it
    (Hydra's own .hydra/ and log files aside, which it writes for every invocation)."""
    def ours(files: dict[str, bytes]) -> dict[str, bytes]:
        return {k: v for k, v in files.items() if not k.startswith(".hydra/") and not k.endswith(".log")}
    before = ours(snapshot(copy))
    code, output = run_app(monkeypatch, capsys, copy, *RUN)
    assert code == 0, output[-3000:]
    assert ours(snapshot(copy)) == before
    assert json.loads((copy / "manifest.json").read_text())["status"] == "complete"


def test_the_same_settings_resume_an_unfinished_run_from_the_stored_samples(copy, monkeypatch, capsys):
    for name in ("results.csv", "results.parquet"):   # as a kill after the shards left it
        (copy / name).unlink()
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    before = snapshot(copy)
    code, output = run_app(monkeypatch, capsys, copy, *RUN)
    assert code == 0, output[-3000:]
    after = snapshot(copy)
    shards = [name for name in before if "/shards/" in name]
    assert shards and all(after[name] == before[name] for name in shards)     # reused, not resampled
    assert json.loads(after["manifest.json"])["status"] == "complete"
    assert (copy / "results.csv").is_file()


def test_overwrite_replaces_the_run_and_leaves_nothing_of_the_old_pipeline(copy, monkeypatch, capsys):
    assert (copy / "samples" / "pixel_ddpm").is_dir()
    code, output = run_app(monkeypatch, capsys, copy, *RUN, "pipeline=pixel_untrained", "overwrite=true")
    assert code == 0, output[-3000:]
    files = snapshot(copy)
    assert not any("pixel_ddpm" in name and name.startswith("samples/") for name in files)
    import pandas as pd
    assert set(pd.read_csv(copy / "results.csv").pipeline) == {"pixel_untrained"}
    assert {p.name for p in (copy / "samples").iterdir()} == {"pixel_untrained"}
    manifest = json.loads(files["manifest.json"])
    assert manifest["status"] == "complete" and manifest["config"]["pipeline"]["name"] == "pixel_untrained"


@pytest.mark.usefixtures("one_torch_thread")   # the in-process resume samples with the tiny UNet
def test_a_killed_overwrite_is_resumed_and_the_old_run_never_comes_back(copy, monkeypatch, capsys):
    """Kill an overwriting run (a real process) mid-sampling; a rerun of the new settings resumes it (the
    old run is gone, not mixed in); a rerun of the old settings is then refused as other settings. The
    reruns go in this process (no interpreter start-up): what they find is on disk."""
    cmd = [sys.executable, "-m", "bench", *RUN, "sampler.steps=40", "suite.n=16", "overwrite=true",
           f"hydra.run.dir={copy}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            parts = list((copy / "samples").rglob("parts/*/p*.npz")) if (copy / "samples").exists() else []
            if parts:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["config"]["sampler"]["steps"] == 40
    assert not (copy / "results.csv").exists() and not (copy / "report.md").exists()
    code, output = run_app(monkeypatch, capsys, copy, *RUN, "sampler.steps=40", "suite.n=16")   # no overwrite: resumes
    assert code == 0, output[-3000:]
    assert json.loads((copy / "manifest.json").read_text())["status"] == "complete"
    line = error_line(*run_app(monkeypatch, capsys, copy, *RUN))
    assert "sampler.steps: 40 there, 3 now" in line and "suite.n: 16 there, 4 now" in line


# -- 4: a dry run opens every input and names what will run -------------------------------------
def samples_npz(path: Path, nchw: bool = False) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.savez(path, images.transpose(0, 3, 1, 2) if nchw else images)
    return path


EXTERNAL = ("pipeline=external_npz", "metrics.names=[fid]", "hardware=cpu", "quiet=true")


def test_a_dry_run_refuses_what_the_run_refuses(tmp_path, monkeypatch, capsys):
    nchw = samples_npz(tmp_path / "nchw.npz", nchw=True)
    bad_reference = tmp_path / "ref.npz"
    np.savez(bad_reference, mu=np.zeros(3))
    cases = [
        ((f"pipeline.params.path={nchw}",), "nchw.npz"),
        ((f"pipeline.params.path={samples_npz(tmp_path / 'ok.npz')}", f"+suite.params.prompts={tmp_path}/none.txt"),
         "suite.params.prompts"),
        ((f"pipeline.params.path={tmp_path / 'ok.npz'}", f"metrics.reference={bad_reference}"), "ref.npz"),
    ]
    for overrides, named in cases:
        lines = []
        for dry in (("dry_run=true",), ()):
            code, output = run_app(monkeypatch, capsys, tmp_path / "out", *EXTERNAL, *overrides, *dry)
            lines.append(error_line(code, output))
            assert named in lines[-1], lines[-1]
        assert lines[0] == lines[1]
        assert not (tmp_path / "out").exists()


def test_a_dry_run_names_what_will_really_sample(tmp_path, monkeypatch, capsys):
    diffusers = pytest.importorskip("diffusers")
    from test_diffusers_as_saved import tiny_ddim_clipped
    folder = tmp_path / "tiny-ddim"
    tiny_ddim_clipped().save_pretrained(folder)
    code, output = run_app(monkeypatch, capsys, tmp_path / "a", "pipeline=diffusers_ddpm",
                           f"pipeline.params.model={folder}", "sampler.steps=7", "dry_run=true")
    assert code == 0, output
    assert "sampler: DDIMScheduler as saved x 7 steps" in output, output
    code, output = run_app(monkeypatch, capsys, tmp_path / "a", *EXTERNAL,
                           f"pipeline.params.path={samples_npz(tmp_path / 'ok.npz')}", "dry_run=true")
    assert code == 0 and "sampler: no sampling (samples made elsewhere)" in output, output
    # scheduler=request: refused at start where the saved class cannot take the sampler
    code, output = run_app(monkeypatch, capsys, tmp_path / "a", "pipeline=diffusers_ddpm",
                           f"pipeline.params.model={folder}", "pipeline.params.scheduler=request", "sampler=heun",
                           "dry_run=true")
    assert "heun" in error_line(code, output)
    # a folder without model_index.json
    (folder / "model_index.json").unlink()
    code, output = run_app(monkeypatch, capsys, tmp_path / "a", "pipeline=diffusers_ddpm",
                           f"pipeline.params.model={folder}", "dry_run=true")
    line = error_line(code, output)
    assert "model_index.json" in line and str(folder) in line
    assert diffusers


# -- 6: configuration errors before the heavy imports ------------------------------------------
@pytest.mark.parametrize("bad, named", [
    ("typo_key=1", "typo_key"),
    ("metrics.names=[fid,kdi]", "kdi"),
    ("+suite.params.prompts=/no/such/prompts.txt", "/no/such/prompts.txt"),
    ("pipeline.checkpoint=/no/such/checkpoint", "/no/such/checkpoint"),
])
def test_config_errors_exit_2_before_torch_is_imported(bad, named, tmp_path):
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "bench", bad, f"hydra.run.dir={tmp_path}/r"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - started
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and named in errors[0], proc.stderr[-2000:]
    assert not {"torch", "pandas", "diffusers", "suites"} & imported, sorted({"torch", "pandas"} & imported)
    print(f"{bad}: exit 2 in {wall:.2f} s wall")


# -- 7: a local path is called a path; the manifest records the thread count --------------------
def test_a_missing_local_model_folder_is_called_a_path(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no-such-model"
    code, output = run_app(monkeypatch, capsys, tmp_path / "a", "pipeline=diffusers_ddpm",
                           f"pipeline.params.model={missing}")
    line = error_line(code, output)
    assert f"path {missing} does not exist" in line and "model id" not in line.split(";")[0], line
    pytest.importorskip("diffusers")
    from models.core.registry import build_pipeline
    with pytest.raises(FileNotFoundError) as err:
        build_pipeline("external", "x", source="diffusers", model=str(missing))
    assert "folder" in str(err.value) and "model id" not in str(err.value).split(";")[0]


def test_the_manifest_records_the_thread_count(finished):
    device = json.loads((finished / "manifest.json").read_text())["device"]
    assert device["threads"] == 1          # OMP_NUM_THREADS=1 in env(): torch's intra-op threads
    import torch
    assert device["cpu_capability"] == torch.backends.cpu.get_cpu_capability()   # AVX2 vs AVX512 kernels
