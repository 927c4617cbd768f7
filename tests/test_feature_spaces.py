"""Feature spaces beside Inception (issue 27): the registry and its config checks, the DINOv2 and
CLIP networks against the reference code on identical (random) weights, FD and KID through
diffbench against torch-fidelity 0.4.0's `calculate_metrics` in the same space, one network pass
per batch for all metrics of a space, reference statistics cached per space, and missing weights
failing at start with the file, where it goes and how to fetch it.

Tiny networks here (the genuine architectures at small width); the true ViT-S/14 and ViT-B/32
sizes in the test marked slow."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from bench.config import ConfigError, DataConfig, MetricsConfig
from bench.data import build_source
from bench.metrics import build_metrics, feature_spaces
from bench.metrics.spaces import SpaceMetricSet, check_feature_weights, space_plan
from bench.metrics.vit_features import build_clip_network, build_dinov2_network, dinov2_pos_embed
from bench.weights import WeightsIntegrityError, WeightsNotFoundError
from bench.weights.formats import file_sha256
from bench.tools.random_vits import (TINY_CLIP, TINY_DINOV2, TINY_DINOV2_SWIGLU, VITB32, VITS14, clip_openai_state,
                                     dinov2_model, save_dinov2_hub, save_torchscript_state)
from feature_space_helpers import write_image_folders
from models.core.interface import SampleBatch
from reports.metric_kinds import LOWER, metric_kind

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- registry and config
def test_registry_names_and_row_names():
    names = feature_spaces.space_names()
    assert names[0] == "inception"
    assert {"dinov2-vit-s-14", "dinov2-vit-b-14", "dinov2-vit-l-14", "dinov2-vit-g-14", "clip-vit-b-32",
            "clip-vit-l-14", "clip-vit-l-14-336"} <= set(names)
    assert feature_spaces.row_name("fid", "inception") == "fid"
    assert feature_spaces.row_name("fid", "dinov2-vit-l-14") == "fd[dinov2-vit-l-14]"
    assert feature_spaces.row_name("precision", "clip-vit-b-32") == "precision[clip-vit-b-32]"
    assert feature_spaces.split_row_name("kid[dinov2-vit-l-14]") == ("kid", "dinov2-vit-l-14")
    assert feature_spaces.split_row_name("clip_score[ViT-B-32]") == ("clip_score[ViT-B-32]", "inception")
    assert feature_spaces.spec("dinov2-vit-g-14").dims == 1536


def test_report_kinds_read_the_space_names():
    for name in ("fd[dinov2-vit-l-14]", "kid[dinov2-vit-l-14]", "cmmd[clip-vit-l-14-336]"):
        kind = metric_kind(name)
        assert kind.direction == LOWER and kind.name == name.split("[")[0]
    assert metric_kind("fd[dinov2-vit-l-14]").label == "FD"
    assert metric_kind("coverage[clip-vit-b-32]").name == "coverage"


def test_config_validates_feature_space_names():
    with pytest.raises(ConfigError, match="metrics.features.*not feature spaces"):
        MetricsConfig(features=["inception", "dinov2-vit-x-14"])
    with pytest.raises(ConfigError, match="metrics.features"):
        MetricsConfig(features=["inception", "inception"])
    with pytest.raises(ConfigError, match="metrics.cmmd_space"):
        MetricsConfig(cmmd_space="dinov2-vit-l-14")     # CMMD needs a CLIP space
    cfg = MetricsConfig(names=["fid", "kid", "precision_recall", "density_coverage", "cmmd", "speed"],
                        features=["inception", "dinov2-vit-l-14"])
    plan = space_plan(cfg)
    assert plan["inception"] == plan["dinov2-vit-l-14"] == ["fid", "kid", "precision_recall", "density_coverage"]
    assert plan["clip-vit-l-14-336"] == ["cmmd"]


# ---------------------------------------------------------------------------- networks on identical weights
@pytest.mark.parametrize("arch", [TINY_DINOV2, TINY_DINOV2_SWIGLU], ids=["mlp", "swiglu"])
def test_dinov2_network_equals_facebookresearch_code(arch):
    reference = dinov2_model(arch, seed=1)
    ours = build_dinov2_network(reference.state_dict(), 224)
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = reference(x), ours(x)     # CLS token after the final norm, both
    assert got.shape == expected.shape == (4, arch["embed_dim"])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the position embedding: DINOv2's per-forward interpolation, done once
    torch.testing.assert_close(dinov2_pos_embed(reference.pos_embed.detach(), 16),
                               reference.interpolate_pos_encoding(torch.zeros(1, 257, arch["embed_dim"]), 224, 224),
                               rtol=0, atol=0)


def test_dinov2_reads_transformers_layout():
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, intermediate_size=256,
                                       patch_size=14, image_size=224, layerscale_value=1.0)
    torch.manual_seed(0)
    model = transformers.Dinov2Model(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = model(pixel_values=x).pooler_output
    # transformers 5's names (q_proj, ...), and those of the files on the Hub (attention.attention.query, ...)
    hub_names = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
                 "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense"}
    as_saved = {}
    for key, value in model.state_dict().items():
        for new, old in hub_names.items():
            key = key.replace(new, old)
        as_saved[key] = value
    for state in (model.state_dict(), as_saved):
        ours = build_dinov2_network(state, 224)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-4)


def test_clip_tower_equals_torch_fidelity(tmp_path):
    from torch_fidelity.feature_extractor_clip import FeatureExtractorCLIP
    path = save_torchscript_state(clip_openai_state(TINY_CLIP, seed=2), tmp_path / "random_openai_clip.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = FeatureExtractorCLIP("clip-vit-b-32", ["clip"], feature_extractor_weights_path=str(path)).eval()
    from bench.metrics.vit_features import VitExtractor, clip_input_size, clip_state_dict
    from bench.weights.formats import detect_format
    from bench.weights.resolver import ResolvedWeights
    network = build_clip_network(clip_state_dict(path, detect_format(path)))
    weights = ResolvedWeights("clip-vit-b-32", path, "0" * 64, "explicit", detect_format(path))
    ours = VitExtractor(feature_spaces.spec("clip-vit-b-32"), network, weights, input_size=clip_input_size(network))
    images = torch.randint(0, 256, (5, 3, 48, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(images)[0]
    got = ours(images)["embedding"]
    assert ours.input_size == 64 and got.shape == expected.shape == (5, 32)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- FD and KID vs torch-fidelity
def _ours(space: str, weights: Path, gen_dir: Path, ref_dir: Path, n: int, cache: Path, subset_size: int):
    cfg = MetricsConfig(names=["fid", "kid"], features=[space], feature_weights={space: str(weights)},
                        kid_subsets=10, kid_subset_size=subset_size, feature_batch_size=32)
    data = DataConfig(name="folder", root=str(ref_dir), resolution=32, n=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = build_metrics(cfg, data, device="cpu", quiet=True, cache_dir=cache)
        for batch in build_source(DataConfig(name="folder", root=str(gen_dir), resolution=32, n=n)).iter_batches(32):
            metrics.update(SampleBatch(batch.images, batch.indices, None, None, {}, {}))
        return {row.metric: row for row in metrics.compute()}, metrics


def _theirs(extractor: str, gen_dir: Path, ref_dir: Path, subset_size: int, **kwargs) -> dict:
    import torch_fidelity
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch_fidelity.calculate_metrics(
            input1=str(gen_dir), input2=str(ref_dir), fid=True, kid=True, kid_subsets=10, kid_subset_size=subset_size,
            feature_extractor=extractor, cuda=False, cache=False, verbose=False, save_cpu_ram=True, batch_size=32,
            **kwargs)


def _local_hub(monkeypatch, hub: Path) -> None:
    """torch-fidelity's `torch.hub.load("facebookresearch/dinov2", ...)` served by the local folder."""
    real_load = torch.hub.load
    monkeypatch.setattr(torch.hub, "load", lambda repo, model, *args, **kwargs:
                        real_load(str(hub), model, source="local", trust_repo=True))


def _agreement_dinov2(tmp_path, monkeypatch, arch: dict, n: int, subset_size: int) -> tuple[float, float]:
    weights, hub, _ = save_dinov2_hub(tmp_path, arch, seed=3)
    ref_dir, gen_dir = write_image_folders(tmp_path / "images", n)
    rows, metrics = _ours("dinov2-vit-s-14", weights, gen_dir, ref_dir, n, tmp_path / "cache", subset_size)
    _local_hub(monkeypatch, hub)
    theirs = _theirs("dinov2-vit-s-14", gen_dir, ref_dir, subset_size)
    fd, kid = rows["fd[dinov2-vit-s-14]"], rows["kid[dinov2-vit-s-14]"]
    assert fd.details["feature_space"] == "dinov2-vit-s-14" and fd.details["weights"]["path"] == str(weights.resolve())
    assert fd.details["weights"]["sha256"] == kid.details["weights"]["sha256"] == file_sha256(weights)   # into the rows
    assert fd.value > 1e-3 and kid.value > 1e-4   # not a degenerate space
    return (abs(fd.value - theirs["frechet_inception_distance"]) / theirs["frechet_inception_distance"],
            abs(kid.value - theirs["kernel_inception_distance_mean"]) / theirs["kernel_inception_distance_mean"])


def _agreement_clip(tmp_path, arch: dict, n: int, subset_size: int) -> tuple[float, float]:
    path = save_torchscript_state(clip_openai_state(arch, seed=4), tmp_path / "random_openai_clip.pt")
    ref_dir, gen_dir = write_image_folders(tmp_path / "images", n)
    rows, _ = _ours("clip-vit-b-32", path, gen_dir, ref_dir, n, tmp_path / "cache", subset_size)
    theirs = _theirs("clip-vit-b-32", gen_dir, ref_dir, subset_size, feature_extractor_weights_path=str(path))
    fd, kid = rows["fd[clip-vit-b-32]"], rows["kid[clip-vit-b-32]"]
    assert fd.value > 1e-3 and kid.value > 1e-4
    return (abs(fd.value - theirs["frechet_inception_distance"]) / theirs["frechet_inception_distance"],
            abs(kid.value - theirs["kernel_inception_distance_mean"]) / theirs["kernel_inception_distance_mean"])


def test_fd_kid_agree_with_torch_fidelity_dinov2(tmp_path, monkeypatch):
    fd_rel, kid_rel = _agreement_dinov2(tmp_path, monkeypatch, TINY_DINOV2, n=96, subset_size=50)
    assert fd_rel < 1e-5 and kid_rel < 1e-5, (fd_rel, kid_rel)


def test_fd_kid_agree_with_torch_fidelity_clip(tmp_path):
    fd_rel, kid_rel = _agreement_clip(tmp_path, TINY_CLIP, n=64, subset_size=40)
    assert fd_rel < 1e-5 and kid_rel < 1e-5, (fd_rel, kid_rel)


@pytest.mark.slow
def test_fd_kid_agree_with_torch_fidelity_true_sizes(tmp_path, monkeypatch):
    """ViT-S/14 (384-d) and ViT-B/32 (512-d) at their real sizes; n above the dimension."""
    fd_rel, kid_rel = _agreement_dinov2(tmp_path / "dinov2", monkeypatch, VITS14, n=400, subset_size=200)
    print(f"dinov2-vit-s-14: FD rel diff {fd_rel:.2e}, KID rel diff {kid_rel:.2e}")
    assert fd_rel < 1e-5 and kid_rel < 1e-5
    fd_rel, kid_rel = _agreement_clip(tmp_path / "clip", VITB32, n=520, subset_size=200)
    print(f"clip-vit-b-32: FD rel diff {fd_rel:.2e}, KID rel diff {kid_rel:.2e}")
    assert fd_rel < 1e-5 and kid_rel < 1e-5


# ---------------------------------------------------------------------------- one pass, cache per space
class _Counting:
    """Wraps an extractor and counts its calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, images):
        self.calls += 1
        return self.inner(images)


def test_two_spaces_one_pass_per_batch_and_cache_per_space(tmp_path):
    from bench.metrics.spaces import build_feature_extractor
    weights, _, _ = save_dinov2_hub(tmp_path, TINY_DINOV2, seed=5)
    clip_path = save_torchscript_state(clip_openai_state(TINY_CLIP, seed=6), tmp_path / "random_openai_clip.pt")
    cfg = MetricsConfig(names=["fid", "kid", "precision_recall", "density_coverage", "cmmd"],
                        features=["dinov2-vit-s-14", "clip-vit-b-32"], cmmd_space="clip-vit-b-32",
                        feature_weights={"dinov2-vit-s-14": str(weights), "clip-vit-b-32": str(clip_path)},
                        kid_subsets=5, kid_subset_size=20, feature_batch_size=16)
    extractors = {space: _Counting(build_feature_extractor(space, cfg)) for space in cfg.features}
    data = DataConfig(name="shapes", resolution=32, n=40)
    metrics = build_metrics(cfg, data, quiet=True, cache_dir=tmp_path / "cache", feature_extractors=extractors)
    assert isinstance(metrics, SpaceMetricSet) and set(metrics.sets) == set(cfg.features)
    reference_calls = {space: e.calls for space, e in extractors.items()}
    source = build_source(DataConfig(name="shapes", resolution=32, n=40, seed=9), split="train")
    batches = 0
    for batch in source.iter_batches(20):
        metrics.update(SampleBatch(batch.images, batch.indices, None, None, {}, {}))
        batches += 1
    for space, extractor in extractors.items():   # once per batch, for all five metrics of the space
        assert extractor.calls - reference_calls[space] == batches
    rows = {row.metric: row for row in metrics.compute()}
    for space in cfg.features:
        for metric in ("fd", "kid", "precision", "recall", "density", "coverage"):
            assert f"{metric}[{space}]" in rows
    assert "cmmd[clip-vit-b-32]" in rows and "fid" not in rows
    caches = sorted(p.name for p in (tmp_path / "cache" / "refstats").glob("*.npz"))
    assert len(caches) == 2    # one reference file per space (the key holds the space and weights sha256)
    again = build_metrics(cfg, data, quiet=True, cache_dir=tmp_path / "cache", feature_extractors=extractors)
    assert all(e.calls == reference_calls[s] + batches for s, e in extractors.items())   # read from the cache
    assert all(s.reference.description.get("cached") for s in again.sets.values())


# ---------------------------------------------------------------------------- missing weights
def test_missing_weights_name_file_place_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("DIFFBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFBENCH_WEIGHTS", raising=False)
    cfg = MetricsConfig(names=["fid", "kid"], features=["inception", "dinov2-vit-l-14"])
    with pytest.raises(WeightsNotFoundError) as caught:
        check_feature_weights(cfg)
    message = str(caught.value)
    assert "dinov2_vitl14_pretrain.pth" in message and str(tmp_path / "torch") in message
    assert "torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14')" in message
    assert check_feature_weights(MetricsConfig()) == {}     # Inception alone: nothing to find


def test_run_asking_for_fd_dinov2_exits_2_at_start(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "TORCH_HOME": str(tmp_path / "torch"),
           "DIFFBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_CACHE": str(tmp_path / "hf")}
    env.pop("DIFFBENCH_WEIGHTS", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench", "metrics.features=[inception,dinov2-vit-l-14]",
                           f"hydra.run.dir={tmp_path / 'run'}", "quiet=true"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - started
    assert done.returncode == 2, done.stderr[-2000:]
    assert "dinov2_vitl14_pretrain.pth" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "samples").exists()    # nothing sampled
    print(f"exit 2 after {elapsed:.1f} s")
    # the light start-up check (no torch import): ~1.5 s; generous for a loaded CI machine
    assert elapsed < 15, elapsed


def test_light_places_are_the_resolvers(tmp_path, monkeypatch):
    """bench.weights.places (torch-free, start-up) looks where the resolver looks, in its order."""
    from bench.weights import resolver, spec_for
    from bench.weights.places import candidate_paths
    monkeypatch.setenv("DIFFBENCH_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("dinov2-vit-l-14", "clip-vit-l-14-336", "inception-2015-12-05"):
        spec = spec_for(name)
        assert [path for _, path in candidate_paths(spec)] == [path for _, path, _ in resolver.candidates(spec) if path]


# ---------------------------------------------------------------------------- reports
def test_report_tables_carry_the_space_in_every_format(tmp_path):
    import json as _json
    from bench.results import MetricValue, RunContext, make_row, write_results
    from reports.load import load_runs
    from reports.sections import build_sections
    from reports.tables import to_csv, to_html, to_latex, to_markdown
    rows = []
    for k, pipeline in enumerate(("pixel_ddpm", "latent_ddpm")):
        ctx = RunContext("r", "smoke", pipeline, "pixel", {"steps": 2})
        rows += [make_row(ctx, MetricValue(name, value + k, 64)) for name, value in
                 (("fid", 30.0), ("kid", 0.02), ("fd[dinov2-vit-l-14]", 300.0), ("kid[dinov2-vit-l-14]", 0.5),
                  ("cmmd[clip-vit-l-14-336]", 1.5))]
    write_results(tmp_path / "r", rows)
    (tmp_path / "r" / "manifest.json").write_text(_json.dumps({"status": "complete", "run_id": "r"}))
    generation = build_sections(load_runs([tmp_path / "r"])[0])[0].pivot
    for render in (to_markdown, to_latex, to_csv, to_html):
        text = render(generation)
        for space in ("dinov2-vit-l-14", "clip-vit-l-14-336"):
            assert space in text, (render.__name__, text[:400])
        assert all(name in text.lower() for name in ("fid", "fd", "cmmd"))   # csv: metric names, others: labels
    assert "FD [dinov2-vit-l-14]" in to_markdown(generation) and "KID [dinov2-vit-l-14]" in to_markdown(generation)


def test_weights_listed_found_and_hashed(tmp_path, monkeypatch):
    """A user's copy (here in $DIFFBENCH_WEIGHTS under torch hub's file name) is listed by
    `python -m bench.weights` with its sha256, found at start, and its sha256 is the one recorded."""
    from bench.weights.cli import status_rows
    folder = tmp_path / "w"
    folder.mkdir()
    weights, _, _ = save_dinov2_hub(tmp_path, TINY_DINOV2, seed=8)
    (folder / "dinov2_vits14_pretrain.pth").write_bytes(weights.read_bytes())
    monkeypatch.setenv("DIFFBENCH_WEIGHTS", str(folder))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    sha = file_sha256(folder / "dinov2_vits14_pretrain.pth")
    rows, details, corrupt = status_rows(verbose=True)
    row = next(r for r in rows if r[0] == "dinov2-vit-s-14")
    assert row[1].startswith("ok") and row[2] == "env:DIFFBENCH_WEIGHTS" and row[4] == sha[:12] and not corrupt
    missing = next(r for r in rows if r[0] == "dinov2-vit-l-14")
    assert missing[1].startswith("missing") and any("dinov2_vitl14_pretrain.pth" in line for line in details)
    found = check_feature_weights(MetricsConfig(names=["fid"], features=["inception", "dinov2-vit-s-14"]))
    assert found["dinov2-vit-s-14"]["sha256"] == sha and found["dinov2-vit-s-14"]["source"] == "env:DIFFBENCH_WEIGHTS"
    # a pinned OpenAI file name with other bytes is refused, not used
    (folder / "ViT-B-32.pt").write_bytes(b"not the OpenAI file")
    with pytest.raises(WeightsIntegrityError, match="ViT-B-32.pt"):
        check_feature_weights(MetricsConfig(names=["fid"], features=["clip-vit-b-32"]))
