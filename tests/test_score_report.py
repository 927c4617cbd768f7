"""The report of a score run reads right (issue 26 follow-up): samples made elsewhere are named by
their own name (the folder's name, the npz file's stem), not the config option `external_folder`;
the caption names both sides by folder or file name with n, image size and resize, the mode and the
feature network, with no JSON and no absolute path (the full paths are in report.html's provenance);
the sample grid's title says which files it shows, not a seed they were never made with.

Real runs, in this process: `python -m bench.score GEN REF` and `python -m bench pipeline=external_npz`
on tiny sets (the Inception on 8 + 12 + 8 images; the reference statistics are computed once per
test session), then `python -m reports` over both runs."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bench_runs import main_in_process
from PIL import Image

from reports.captions import settings_caption
from reports.grids import write_grids

pytestmark = [pytest.mark.filterwarnings("ignore::bench.metrics.frechet.FrechetWarning"),   # n < 2048
              pytest.mark.filterwarnings("ignore:KID. subset size:UserWarning")]
N_GEN, N_REF, SIZE = 8, 12, 32


def write_set(folder: Path, n: int, seed: int) -> Path:
    """n random-ish 32 px PNGs (a smooth colour field plus noise), as tests/test_score.py writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        field = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(field).resize((SIZE, SIZE), Image.BICUBIC), np.float32)
        image = image + rng.normal(0, 10, image.shape)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"img_{i:05d}.png")
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("score_report")
    npz = root / "adm_samples.npz"
    rng = np.random.default_rng(3)
    np.savez(npz, rng.integers(0, 256, (N_GEN, SIZE, SIZE, 3), dtype=np.uint8))
    return {"root": root, "gen": write_set(root / "ddpm_samples", N_GEN, seed=2),
            "ref": write_set(root / "cifar_ref", N_REF, seed=1), "npz": npz}


def record_titles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The suptitle of every figure saved with one (the sample grids), as drawn."""
    from matplotlib.figure import Figure
    found, save = [], Figure.savefig

    def saving(self, *args, **kwargs):
        if self._suptitle is not None:
            found.append(self._suptitle.get_text().replace("\n", " "))
        return save(self, *args, **kwargs)
    monkeypatch.setattr(Figure, "savefig", saving)
    return found


@pytest.fixture
def titles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return record_titles(monkeypatch)


@pytest.fixture(scope="module")
def score_run(sets, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """`python -m bench.score GEN REF --out RUN hardware=cpu`, in this process: (RUN, grid titles)."""
    from bench.score import main
    run = tmp_path_factory.mktemp("score_run") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", list(sys.argv))   # bench.score sets it for Hydra
        drawn = record_titles(patch)
        main([str(sets["gen"]), str(sets["ref"]), "--out", str(run), "hardware=cpu", "quiet=true"])
    return run, drawn


def caption_of(report_md: str) -> str:
    """The caption line above the generation table of a report.md."""
    section = report_md.split("## Generation quality", 1)[1]
    return next(line for line in section.splitlines() if line.strip() and not line.startswith("|"))


def test_a_score_run_is_named_after_its_samples_not_the_config_option(score_run, sets) -> None:
    score_run, _ = score_run
    frame = pd.read_csv(score_run / "results.csv")
    assert set(frame.pipeline) == {"ddpm_samples"}
    md = (score_run / "report.md").read_text()
    assert re.search(r"^\| ddpm_samples +\|", md, re.M), md
    assert "external_folder" not in md
    manifest = json.loads((score_run / "manifest.json").read_text())
    assert manifest["checkpoints"]["external_folder"]["label"] == "ddpm_samples"   # config name -> label
    assert manifest["inputs"]["external_folder"]["samples"]["n_available"] == N_GEN
    assert [p.name for p in (score_run / "grids").iterdir()] == ["ddpm_samples.png"]


def test_the_caption_names_both_sides_mode_and_network_without_json_or_paths(score_run, sets) -> None:
    score_run, _ = score_run
    md = (score_run / "report.md").read_text()
    caption = caption_of(md)
    assert caption == (
        f"Samples: ddpm_samples ({N_GEN} images, {SIZE}×{SIZE} px, as stored). "
        f"Reference: cifar_ref (image folder; {N_REF} images, {SIZE}×{SIZE} px, as stored). "
        "Features: Inception-v3 (TF-FID) with tf1 resize (TF1 bilinear to 299 px, as torch-fidelity)."), caption
    for text in (md, caption):
        assert str(sets["root"]) not in text and "pipeline_params" not in text and "{" not in text
    page = (score_run / "report.html").read_text()
    captions = re.findall(r'<p class="caption">(.*?)</p>', page)
    assert captions[0] == caption
    results = page.split("<h2>Provenance</h2>")[0]
    assert str(sets["root"]) not in results   # no path above the provenance ...
    provenance = page.split("<h2>Provenance</h2>")[1]
    assert f"<td>{sets['gen']}</td>" in provenance and f"<td>{sets['ref']}</td>" in provenance   # ... all of it here


def test_the_grid_title_says_which_files_it_shows_not_a_seed(score_run) -> None:
    (title,) = score_run[1]   # drawn by the run itself, at its end
    assert title == f"ddpm_samples: first {N_GEN} files of the folder (sorted by path; made elsewhere)"
    assert "seed" not in title


def test_two_external_inputs_compared_are_told_apart_by_their_names(score_run, sets, tmp_path: Path,
                                                                      monkeypatch, capsys, titles) -> None:
    """`python -m bench pipeline=external_npz ...` is named after the npz's stem too; `python -m
    reports` over both runs has one row per set of samples, each by its own name, and one caption for
    the reference they share."""
    score_run, npz_run = score_run[0], tmp_path / "npz_run"
    code, out = main_in_process(monkeypatch, capsys, [
        "suite=score", "pipeline=external_npz", f"pipeline.params.path={sets['npz']}", "data=folder",
        f"data.root={sets['ref']}", "metrics.names=[fid]", "hardware=cpu", "quiet=true", f"hydra.run.dir={npz_run}"])
    assert code == 0, out[-3000:]
    assert set(pd.read_csv(npz_run / "results.csv").pipeline) == {"adm_samples"}
    assert titles == [f"adm_samples: first {N_GEN} images of the npz (in array order; made elsewhere)"]
    assert "external_npz" not in (npz_run / "report.md").read_text()

    from reports.__main__ import main as reports_main
    titles.clear()
    reports_main([str(score_run), str(npz_run), "--out", str(tmp_path / "both"), "--quiet"])
    md = (tmp_path / "both" / "report.md").read_text()
    tables = md.split("## Generation quality", 1)[1]   # (the run ids above it hold this test's name)
    rows = re.findall(r"^\| (\w+) +\|", tables, re.M)
    assert rows[1:] == ["adm_samples", "ddpm_samples"], md    # rows[0]: the header
    assert "external_" not in tables and str(sets["root"]) not in md and "{" not in md
    assert caption_of(md).startswith(f"Samples: {N_GEN} images, {SIZE}×{SIZE} px, as stored. Reference: cifar_ref "
                                     f"(image folder; {N_REF} images"), caption_of(md)
    assert sorted(titles) == [f"adm_samples: first {N_GEN} images of the npz (in array order; made elsewhere)",
                              f"ddpm_samples: first {N_GEN} files of the folder (sorted by path; made elsewhere)"]


# ---- the pieces alone (no Inception) ---------------------------------------------------------------

def test_a_statistics_reference_in_clean_mode_is_captioned_by_file_name() -> None:
    constant = {"data": "statistics", "data_n": 50000, "data_resolution": 32, "data_sizes": "unknown (statistics file)",
                "data_resize": "unknown (statistics file)", "reference": "/data/stats/cifar10_train.npz",
                "resize_mode": "clean", "samples_n": 1000, "samples_sizes": "256x256",
                "samples_resize": "center-crop + PIL bicubic to 64x64 (pipeline.params.resolution=64)",
                "pipeline_params": json.dumps({"path": "/runs/x/edm.npz", "prompts": None, "resolution": 64})}
    assert settings_caption(constant, ["fid", "fd[dinov2-vit-l-14]"]) == (
        "Samples: edm (1000 images, 256×256 px, resized: center-crop + PIL bicubic to 64x64 "
        "(pipeline.params.resolution=64)). Reference: cifar10_train.npz (statistics: mu, sigma; 50000 images). "
        "Features: Inception-v3 (TF-FID) with clean resize (PIL bicubic to 299 px, as clean-fid), dinov2-vit-l-14.")


def test_a_run_that_samples_keeps_its_settings_and_names_bundled_data() -> None:
    constant = {"data": "shapes", "data_n": 16, "data_resolution": 32, "data_sizes": "32x32", "data_resize": "none",
                "data_seed": 0, "resize_mode": "tf1", "sampler": "ddim", "steps": 10, "seed": 0,
                "checkpoint": "/home/me/ckpts/pixel_ddpm", "pipeline_params": json.dumps({"adapter": None})}
    assert settings_caption(constant, ["fid", "images_per_s"]) == (
        "Reference: shapes (seed 0; 16 images, 32×32 px). Features: Inception-v3 (TF-FID) with tf1 resize (TF1 "
        "bilinear to 299 px, as torch-fidelity). Settings shared by every row: checkpoint=pixel_ddpm, sampler=ddim, "
        "seed=0, steps=10.")
    # no feature metric shown (a speed table): the resize mode is a plain setting
    assert settings_caption({"resize_mode": "tf1", "steps": 2}, ["images_per_s"]) == \
        "Settings shared by every row: resize_mode=tf1, steps=2."


def test_samples_scored_without_a_store_are_titled_by_their_label_and_order(tmp_path: Path, titles) -> None:
    """store_samples=false: the grid is read from the path the manifest records, named by the label
    the run gave its rows (the manifest's checkpoints), and titled by the files it shows."""
    folder = write_set(tmp_path / "their_samples", 3, seed=5)
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"status": "complete", "run_id": "r", "config": {
        "store_samples": False, "pipeline": {"name": "external_folder", "family": "external",
                                             "params": {"path": str(folder)}}},
        "checkpoints": {"external_folder": {"label": "their_samples"}}}))
    (grid,) = write_grids([run], tmp_path / "out", k=2)
    assert grid.name == "their_samples.png"
    assert titles == ["their_samples: first 2 files of the folder (sorted by path; made elsewhere)"]
