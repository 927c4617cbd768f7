"""Suites: every suite has a config that composes (so `-m` multiruns work for each), smoke lists
every shipped reference pipeline, and autoencoder_zoo / guidance_sweep write the rows, table and
plots their issue names. Runs go in-process (tests/suite_helpers.py) with tiny n."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir

from bench.config import ConfigError, register_schema, validate
from models.core.registry import CHECKPOINT_DIR
from suites import SUITES, load_suite, prepare_suite
from suite_helpers import CONF, run_suite

SMALL = ("data.n=24", "metrics.kid_subsets=10", "metrics.speed_repeats=1", "suite.params.speed_n=4")


def shipped_reference_pipelines() -> set[str]:
    """conf/pipeline options that run a shipped checkpoint as trained (not the untrained
    baselines, not adapters for external models)."""
    names = set()
    for path in sorted((CONF / "pipeline").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        params = spec.get("params") or {}
        if spec.get("family") == "external" or params.get("untrained") or not spec.get("checkpoint"):
            continue
        if (CHECKPOINT_DIR / spec["checkpoint"] / "model.safetensors").is_file():
            task = json.loads((CHECKPOINT_DIR / spec["checkpoint"] / "config.json").read_text()).get("task")
            if task in ("superres", "inpaint"):   # image-to-image only (latent_concat): in those suites' defaults
                continue
            names.add(path.stem)
    return names


def compose_suite(name: str, *overrides: str):
    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[f"suite={name}", *overrides])


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_suite_has_a_config_that_validates(name: str):
    assert (CONF / "suite" / f"{name}.yaml").is_file(), f"conf/suite/{name}.yaml missing"
    cfg = validate(compose_suite(name))
    assert cfg.suite.name == name
    suite, params = prepare_suite(cfg.suite.name, cfg.suite.params)
    assert isinstance(params, suite.Params)     # suite.params typed by the suite's own dataclass
    # a sweep axis given on the command line (what `-m ... suite.n=8,16` does per job) is accepted
    assert validate(compose_suite(name, "suite.n=8")).suite.n == 8


@pytest.mark.parametrize("overrides, key, allowed", [
    (("smoke", "+suite.params.no_such=1"), "suite.params.no_such", "'reconstruction'"),   # unknown keys
    (("smoke", "suite.params.speed_n=many"), "suite.params.speed_n", "int or null"),       # types
    (("smoke", "suite.params.reconstruction.data=[folder]"), "suite.params.reconstruction.data", "'natural'"),
    (("smoke", "+suite.params.reconstruction.size=3"), "suite.params.reconstruction.size", "'resolution'"),
    (("smoke", "+suite.params.stage_overrides={sr1: {stepz: 2}}"), "suite.params.stage_overrides.sr1", "'steps'"),
    (("f_sweep", "suite.params.budget={steps: null}"), "suite.params.budget", "seconds"),
    (("f_sweep", "suite.params.train=no_such_recipe"), "suite.params.train", "latent_unet_shapes32"),
    (("autoencoder_zoo", "+suite.params.prompts=p.txt"), "suite.params.prompts", "'autoencoders'"),
    (("speed", "suite.params.batches_per_repeat=0"), "suite.params.batches_per_repeat", ">= 1"),
])
def test_bad_suite_params_fail_at_start_up_naming_the_key(overrides, key, allowed):
    cfg = validate(compose_suite(*overrides))
    with pytest.raises(ConfigError, match=f"'{key}'") as err:
        prepare_suite(cfg.suite.name, cfg.suite.params)
    assert allowed in str(err.value), str(err.value)


def test_an_unknown_suite_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="'suite.name'") as err:
        load_suite("nosuchsuite")
    assert all(name in str(err.value) for name in SUITES)


def test_smoke_is_the_default_and_lists_every_shipped_pipeline():
    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = validate(compose(config_name="config"))
    assert cfg.suite.name == "smoke"
    listed = set(cfg.suite.pipelines or [])
    missing = shipped_reference_pipelines() - listed
    assert not missing, f"shipped pipelines not in conf/suite/smoke.yaml: {sorted(missing)}"
    for name in listed:   # and nothing listed lacks its checkpoint
        spec = yaml.safe_load((CONF / "pipeline" / f"{name}.yaml").read_text())
        assert (CHECKPOINT_DIR / spec["checkpoint"] / "model.safetensors").is_file(), name


def test_command_line_pipeline_narrows_a_suite_that_lists_its_own():
    from omegaconf import OmegaConf

    from bench.app import narrow_to_chosen_pipeline
    raw = compose_suite("smoke", "pipeline=pixel_untrained")
    narrow_to_chosen_pipeline(raw, ["pipeline=pixel_untrained"])
    assert raw.suite.pipelines is None
    assert raw.suite.params.reconstruction is None        # the autoencoder rows go with the other pipelines
    raw = compose_suite("smoke", "pipeline=pixel_untrained", "suite.pipelines=[pixel_ddpm]")
    narrow_to_chosen_pipeline(raw, ["pipeline=pixel_untrained", "suite.pipelines=[pixel_ddpm]"])
    assert OmegaConf.to_container(raw.suite.pipelines) == ["pixel_ddpm"]


def test_a_command_line_setting_the_suite_sweeps_narrows_the_sweep_or_is_refused():
    """`-m suite=guidance_sweep guidance_scale=1,2` is one job per scale: each job's own scale is
    the one it measures, never dropped by the suite's sweep (issue 17)."""
    from omegaconf import OmegaConf

    from bench.app import narrow_sweep_to_overrides
    for suite, override, axis, expected in (("guidance_sweep", "guidance_scale=2", "guidance_scale", [2.0]),
                                            ("speed", "sampler.steps=7", "steps", [7]),
                                            ("speed", "sampler=heun", "sampler", ["heun"])):
        raw = compose_suite(suite, override)
        untouched = {k: list(v) for k, v in raw.suite.sweep.items() if k != axis}
        narrow_sweep_to_overrides(raw, [override])
        assert OmegaConf.to_container(raw.suite.sweep[axis]) == expected, (suite, override)
        assert {k: list(v) for k, v in raw.suite.sweep.items() if k != axis} == untouched
    raw = compose_suite("guidance_sweep", "guidance_scale=2", "suite.sweep.guidance_scale=[1.0,3.0]")
    with pytest.raises(ConfigError, match=r"'guidance_scale': given together with suite.sweep.guidance_scale"):
        narrow_sweep_to_overrides(raw, ["guidance_scale=2", "suite.sweep.guidance_scale=[1.0,3.0]"])
    raw = compose_suite("guidance_sweep", "suite.sweep.guidance_scale=[1.0,3.0]")   # the sweep alone stays
    narrow_sweep_to_overrides(raw, ["suite.sweep.guidance_scale=[1.0,3.0]"])
    assert OmegaConf.to_container(raw.suite.sweep.guidance_scale) == [1.0, 3.0]


def test_a_guidance_sweep_job_measures_its_own_scale(tmp_path: Path):
    frame = run_suite(tmp_path / "gs", "suite=guidance_sweep", "pipeline=pixel_untrained", "guidance_scale=2",
                      *SMALL, "suite.n=4", "sampler.steps=2", "metrics.names=[fid]")
    assert sorted(frame.guidance_scale.dropna().unique()) == [2.0]
    assert set(frame.metric) >= {"fid"}


def test_smoke_reports_every_shipped_autoencoder_on_held_out_shapes_and_natural(tmp_path: Path):
    from suites.autoencoder_zoo import shipped_autoencoders
    frame = run_suite(tmp_path / "smoke_ae", "suite.pipelines=[pixel_untrained]", "metrics.names=[]", "suite.params.reconstruction.n=4",
                      "suite.params.reconstruction.rfid=false", "hardware.batch_size=4")
    rows = frame[frame.family == "autoencoder"]
    assert set(rows.pipeline) == set(shipped_autoencoders())
    for data in ("shapes", "natural"):
        metrics = set(rows[rows.data == data].metric)
        assert {"psnr", "ssim", "lpips"} <= metrics, (data, metrics)
    assert set(rows.resolution) == {32}


def test_autoencoder_zoo_writes_the_ldm_style_table(tmp_path: Path):
    from reports.load import load_runs
    from reports.tables import build_pivot, to_markdown
    from suites.autoencoder_zoo import shipped_autoencoders
    shipped = shipped_autoencoders()
    assert shipped, "no shipped autoencoder"
    frame = run_suite(tmp_path / "zoo", "suite=autoencoder_zoo", "suite.n=8", "data.n=8",
                      "hardware.batch_size=8", "suite.params.rfid=false")
    assert set(frame.pipeline) == set(shipped)
    assert {"psnr", "ssim", "lpips"} <= set(frame.metric)
    for col in ("f", "c", "regularizer", "codebook_size"):
        assert col in frame.columns
    frame, _ = load_runs([tmp_path / "zoo"])
    pivot = build_pivot(frame)
    table = to_markdown(pivot)
    header = table.splitlines()[0]
    for col in ("f", "c", "psnr", "ssim", "lpips"):
        assert col in header, header
    rows = [line for line in table.splitlines() if line.startswith("|")][2:]
    assert len(rows) == len(shipped)                           # one row per autoencoder
    assert all("±" in row for row in rows)                                       # metrics with their CI, as LDM's +- std
    psnr = frame.set_index("metric").loc["psnr", "value"]
    assert 10 < float(psnr if not isinstance(psnr, pd.Series) else psnr.iloc[0]) < 60


@pytest.mark.slow   # two FIDs + CLIP over a text cascade: ~35 CPU s
def test_guidance_sweep_rows_per_pipeline_and_scale_with_pareto(tmp_path: Path):
    # the suite's own pipeline list (the shipped text-to-image pipelines), tiny n and steps
    for checkpoint in ("shapes_clip", "imagen_shapes16_32"):
        if not (CHECKPOINT_DIR / checkpoint / "model.safetensors").is_file():
            pytest.skip(f"models/checkpoints/{checkpoint} not trained yet")
    frame = run_suite(tmp_path / "gs", "suite=guidance_sweep", "suite.pipelines=[imagen_shapes]", *SMALL, "suite.n=8",
                      "sampler.steps=2", "suite.sweep.guidance_scale=[1.0,3.0]",
                      "metrics.names=[fid,kid,clip_score]")
    quality = frame[frame.metric.isin(["fid", "kid"]) | frame.metric.str.startswith("clip_score")]
    per_point = quality.groupby(["pipeline", "guidance_scale"]).metric.apply(set)
    assert list(per_point.index) == [("imagen_shapes", 1.0), ("imagen_shapes", 3.0)]
    for metrics in per_point:
        assert {"fid", "kid"} <= metrics and any(m.startswith("clip_score") for m in metrics), metrics
    assert all(math.isfinite(v) for v in quality.value)
    plots = {p.name for p in (tmp_path / "gs" / "plots").glob("*.png")}
    assert any(p.startswith("pareto_fid_vs_clip_score") for p in plots), plots
    assert "fid_vs_guidance_scale.png" in plots
    report = (tmp_path / "gs" / "report.md").read_text()
    assert "pareto_fid_vs_clip_score" in report
    manifest = json.loads((tmp_path / "gs" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
