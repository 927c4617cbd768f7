"""reports.sections and reports.table_spec: one table per section that fits a terminal, settings
that differ shown as columns, table specs (presets and YAML files) with clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.results import MetricValue, RunContext, make_row, write_results
from reports.__main__ import main as reports_main
from reports.load import load_runs
from reports.sections import TERMINAL_WIDTH, build_sections, section_of, terminal_text
from reports.table_spec import SpecError, build_spec_table, load_spec, parse_spec, preset_names, render
from reports.tables import to_markdown

LONG = "latent_unet_text_conditioned_shapes32_ema"   # a long pipeline name, as real ones are


def generation_rows(run_id: str, steps: int = 2, guidance: float | None = None, seed: int = 0) -> list[dict]:
    rows = []
    for k, (pipeline, family) in enumerate((("pixel_ddpm", "pixel"), ("cascaded_ddpm", "cascaded"),
                                            (LONG, "latent_unet"))):
        params = {"sampler": "ddim", "steps": steps, "seed": seed, "dtype": "float32"}
        if guidance is not None:
            params["guidance_scale"] = guidance
        ctx = RunContext(run_id, "smoke", pipeline, family, params)
        fid = 300.0 - 20 * k - steps
        rows += [make_row(ctx, MetricValue("fid", fid, 8, ci_low=fid - 12.5, ci_high=fid + 12.5)),
                 make_row(ctx, MetricValue("kid", 0.3 - 0.01 * k, 8, ci_low=0.28 - 0.01 * k, ci_high=0.32 - 0.01 * k)),
                 make_row(ctx, MetricValue("precision", 0.1 * k, 8, ci_low=0.0, ci_high=0.3 + 0.1 * k)),
                 make_row(ctx, MetricValue("recall", 0.05 * k, 8, ci_low=0.0, ci_high=0.2 + 0.1 * k)),
                 make_row(ctx, MetricValue("density", 0.5, 8)), make_row(ctx, MetricValue("coverage", 0.25, 8)),
                 make_row(ctx, MetricValue("images_per_s", 10.0 + k, 4, unit="img/s", ci_low=9.0 + k, ci_high=11.0 + k)),
                 make_row(ctx, MetricValue("s_per_image", 0.1 / (1 + k), 4, unit="s")),
                 make_row(ctx, MetricValue("nfe_per_image", 2.0 * (k + 1), 4, ci_low=2.0 * (k + 1), ci_high=2.0 * (k + 1))),
                 make_row(ctx, MetricValue("nfe_per_image[base]", 2.0, 4)),
                 make_row(ctx, MetricValue("peak_memory_mib", 1400.0 + k, 4, unit="MiB")),
                 make_row(ctx, MetricValue("gflops_per_forward", 1.5, 1, unit="GFLOPs"))]
        stages = {"pixel_ddpm": {"base": 1.0}, "cascaded_ddpm": {"base": 0.45, "sr1": 0.55},
                  LONG: {"text_encoder": 0.02, "prior": 0.15, "decoder": 0.6, "sr1": 0.23}}[pipeline]
        rows += [make_row(ctx, MetricValue(f"stage_share[{s}]", v, 4)) for s, v in stages.items()]
        rows += [make_row(ctx, MetricValue(f"stage_s_per_image[{s}]", v / 10, 4, unit="s")) for s, v in stages.items()]
        if family == "latent_unet":
            rows.append(make_row(ctx, MetricValue("clip_score[ViT-B-32/openai]", 25.0, 8, ci_low=24.0, ci_high=26.0)))
    return rows


def autoencoder_rows(run_id: str, names=(("ae_kl_f4_shapes32", 4, 4, "kl"), ("ae_vq_f8_shapes32", 8, 3, "vq")),
                     datasets=("shapes", "natural")) -> list[dict]:
    rows = []
    for name, f, c, reg in names:
        for d, data in enumerate(datasets):
            ctx = RunContext(run_id, "smoke", name, "autoencoder",
                             {"f": f, "c": c, "regularizer": reg, "codebook_size": 256 if reg == "vq" else None,
                              "data": data, "resolution": 32})
            rows += [make_row(ctx, MetricValue("rfid", 80.0 * f / 4 + 100 * d, 64)),
                     make_row(ctx, MetricValue("psnr", 36.0 - f - 10 * d, 64, unit="dB", ci_low=35.0 - f - 10 * d,
                                               ci_high=37.0 - f - 10 * d)),
                     make_row(ctx, MetricValue("ssim", 0.97 - 0.01 * f, 64)),
                     make_row(ctx, MetricValue("lpips", 0.003 * f, 64))]
    return rows


def make_run(run_dir: Path, rows: list[dict]) -> Path:
    write_results(run_dir, rows)
    (run_dir / "manifest.json").write_text(json.dumps({"status": "complete", "run_id": run_dir.name}))
    return run_dir


@pytest.fixture
def smoke_frame() -> pd.DataFrame:
    return pd.DataFrame(generation_rows("r1") + autoencoder_rows("r1"))


# ---- sections -------------------------------------------------------------------------------

@pytest.mark.parametrize("metric,section", [
    ("fid", "generation"), ("kid", "generation"), ("precision", "generation"), ("inception_score", "generation"),
    ("density", "generation"), ("clip_score[ViT-B-32/openai]", "text"), ("shapes_clip_score", "text"),
    ("rfid", "reconstruction"), ("psnr", "reconstruction"), ("lpips", "reconstruction"),
    ("images_per_s", "speed"), ("nfe_per_image", "speed"), ("stage_share[sr1]", "speed"),
    ("peak_memory_mib", "speed"), ("train_loss", "other")])
def test_each_metric_has_its_section(metric: str, section: str):
    assert section_of(metric) == section


def test_smoke_report_has_one_narrow_table_per_section(smoke_frame: pd.DataFrame):
    tables = build_sections(smoke_frame)
    assert [t.section.key for t in tables] == ["generation", "text", "reconstruction", "speed"]
    for t in tables:
        assert len(t.pivot.index_columns) + len(t.pivot.metrics) + len(t.pivot.text_columns) <= 10, t.title
    generation = tables[0].pivot
    assert generation.metrics == ["fid", "kid", "precision", "recall"]   # density/coverage: details
    assert generation.index_columns == ["pipeline"] and {r[0] for r in generation.rows} == {
        "pixel_ddpm", "cascaded_ddpm", LONG}   # no autoencoder rows, no f/c columns
    assert generation.caption == "Settings shared by every row: dtype=float32, sampler=ddim, seed=0, steps=2."
    assert any("density" in note and "coverage" in note for note in generation.notes)
    recon = tables[2].pivot
    # the evaluation data set leads (rows of two data sets are not compared), then the LDM Table 8 columns
    assert recon.index_columns[:5] == ["data", "pipeline", "f", "c", "regularizer"] and recon.group_by == ["data"]
    assert [recon.labels[m] for m in recon.metrics] == ["rFID", "PSNR (dB)", "SSIM", "LPIPS"]
    speed = tables[3].pivot
    assert speed.metrics == ["images_per_s", "s_per_image", "nfe_per_image", "peak_memory_mib"]
    shares = speed.text_columns["stage share"]
    assert shares[("cascaded_ddpm",)] == "base 45% · sr1 55%"
    text = terminal_text(tables)
    assert [line for line in text.splitlines() if line.startswith("== ")] == [
        "== Generation quality ==", "== Text alignment ==", "== Reconstruction ==", "== Speed =="]
    assert max(len(line) for line in text.splitlines()) <= TERMINAL_WIDTH, text
    assert "| 4 ± 0" not in text and " 2 " in text   # exact counts without a zero-width interval


def test_terminal_drops_intervals_only_where_a_table_would_not_fit(smoke_frame: pd.DataFrame):
    text = terminal_text(build_sections(smoke_frame))
    generation, rest = text.split("== Text alignment ==")
    assert "278 ± 12" in generation   # fits with its intervals
    wide = terminal_text(build_sections(smoke_frame), width=70)
    assert "Confidence intervals: in report.md" in wide


def test_settings_that_differ_between_merged_runs_become_columns(tmp_path: Path):
    a = make_run(tmp_path / "a", generation_rows("a", steps=2, guidance=3.0))
    b = make_run(tmp_path / "b", generation_rows("b", steps=10, guidance=7.5, seed=1))
    tables = build_sections(load_runs([a, b])[0])
    generation = tables[0].pivot
    assert {"steps", "guidance_scale", "seed"} <= set(generation.index_columns)
    assert "sampler=ddim" in generation.caption and "steps=" not in generation.caption
    steps_at = generation.index_columns.index("steps")
    assert sorted({row[steps_at] for row in generation.rows}) == [2, 10] and len(generation.rows) == 6
    assert max(len(line) for line in terminal_text(tables).splitlines()) <= TERMINAL_WIDTH


def test_best_value_per_column_is_bold(smoke_frame: pd.DataFrame):
    generation = build_sections(smoke_frame)[0].pivot
    best_fid = min((c.value, row) for (row, m), c in generation.cells.items() if m == "fid")[1]
    assert (best_fid, "fid") in generation.bold and "**" in to_markdown(generation)
    assert not any(m == "density" for _, m in generation.bold)


# ---- table specs --------------------------------------------------------------------------

def test_presets_are_the_tables_the_field_prints():
    assert {"ldm_autoencoder", "f_sweep", "guidance_sweep", "sampler", "model_comparison"} <= set(preset_names())
    for name in preset_names():
        load_spec(name)   # every preset passes its own validation


def test_ldm_autoencoder_latex_from_two_runs(tmp_path: Path, capsys):
    a = make_run(tmp_path / "A", autoencoder_rows("A", names=(("ae_kl_f4_shapes32", 4, 4, "kl"),), datasets=("shapes",)))
    b = make_run(tmp_path / "B", autoencoder_rows("B", names=(("ae_vq_f8_shapes32", 8, 3, "vq"),), datasets=("shapes",))
                 + generation_rows("B"))
    assert reports_main([str(a), str(b), "table=ldm_autoencoder", "format=latex", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("% Autoencoders (LDM Table 8)")
    for token in (r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule"):
        assert token in out
    header = out.split(r"\toprule")[1].split(r"\midrule")[0].strip()
    assert header == r"autoencoder & f & c & rFID & PSNR & SSIM & LPIPS \\"
    body = out.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert [line.split(" & ")[:3] for line in body] == [[r"ae\_kl\_f4\_shapes32", "4", "4"],
                                                         [r"ae\_vq\_f8\_shapes32", "8", "3"]]
    assert r"\textbf{80.00}" in body[0] and r"$\pm$" in body[0]   # best rFID bold; CI as $\pm$
    assert (tmp_path / "o" / "table_ldm_autoencoder.tex").read_text() == out
    assert (tmp_path / "o" / "report.html").is_file()


def test_user_spec_picks_rows_columns_order_precision_and_format(tmp_path: Path):
    frame = pd.DataFrame(generation_rows("a", steps=2) + generation_rows("b", steps=10))
    spec_file = tmp_path / "mine.yaml"
    spec_file.write_text(
        "title: Steps\nrows: [pipeline, steps]\nwhere: {pipeline: [pixel_ddpm, cascaded_ddpm]}\n"
        "columns:\n  - metric: s_per_image\n    label: sec\n    decimals: 3\n  - fid\n"
        "sort: [-steps, pipeline]\nci: none\nbold_best: false\nformat: csv\n")
    spec = load_spec(spec_file)
    pivot = build_spec_table(frame, spec)
    md = render(pivot, "md")
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0].split("|")[1:5] == [" pipeline      ", " steps ", "   sec ", "    FID "]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["cascaded_ddpm", "pixel_ddpm"] * 2
    assert [line.split("|")[2].strip() for line in lines[2:]] == ["10", "10", "2", "2"]
    assert "0.050" in md and "±" not in md and "**" not in md
    assert spec.format == "csv" and render(pivot, "csv").startswith("pipeline,steps,")


@pytest.mark.parametrize("text,message", [
    ("columns: [fid]\ncolour: red\n", r"unknown key\(s\) \['colour'\]"),
    ("rows: [pipeline]\n", "'columns' is missing"),
    ("columns: [{metric: fid, width: 3}]\n", r"unknown key\(s\) \['width'\]"),
    ("columns: [{metric: fid, setting: f}]\n", "exactly one of"),
    ("columns: [fid]\nci: maybe\n", "'ci' is 'maybe'"),
    ("columns: [fid]\nformat: docx\n", "unknown format 'docx'"),
])
def test_bad_spec_files_are_refused(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_unknown_metric_or_setting_exits_2(tmp_path: Path, capsys):
    run = make_run(tmp_path / "run", generation_rows("r"))
    spec = tmp_path / "s.yaml"
    spec.write_text("columns: [{metric: fidd}]\n")
    assert reports_main([str(run), f"table={spec}", "--quiet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: table s: 'fidd' is neither a metric") and "Traceback" not in err
    assert not (tmp_path / "o").exists()   # nothing half-written
    assert reports_main([str(run), "table=no_such_preset"]) == 2
    assert "neither a preset nor a YAML file; presets: [" in capsys.readouterr().err
    assert reports_main([str(run), "table=ldm_autoencoder", "--quiet"]) == 2   # no autoencoder rows
    assert "column 'f' is not in the results; settings there: ['sampler'" in capsys.readouterr().err
    assert reports_main([str(run), "format=latex"]) == 2
    assert "give table=SPEC too" in capsys.readouterr().err


def test_parse_spec_rejects_non_mapping():
    with pytest.raises(SpecError, match="a table spec is a mapping"):
        parse_spec(["fid"], "x")


def test_spec_over_two_runs_of_the_same_points_keeps_each_runs_row(tmp_path: Path):
    a = make_run(tmp_path / "a", generation_rows("a"))
    b = make_run(tmp_path / "b", generation_rows("b"))
    pivot = build_spec_table(load_runs([a, b])[0], load_spec("model_comparison"))
    assert pivot.index_columns == ["pipeline", "run_id"] and len(pivot.rows) == 6
    header = next(line for line in render(pivot, "md").splitlines() if line.startswith("| "))
    assert header.split("|")[1:3] == [" pipeline                                  ", " run_id "]


def test_identity_settings_are_columns_only_where_one_pipeline_has_several(tmp_path: Path):
    rows = generation_rows("a")
    for row in rows:
        row["checkpoint"] = f"{row['pipeline']}_ckpt"
    generation = build_sections(pd.DataFrame(rows))[0].pivot
    assert "checkpoint" not in generation.index_columns and "checkpoint" not in generation.caption
    other = generation_rows("b")
    for row in other:
        row["checkpoint"] = f"{row['pipeline']}_ckpt_v2"
    generation = build_sections(pd.DataFrame(rows + other))[0].pivot
    assert "checkpoint" in generation.index_columns and len(generation.rows) == 6


def test_preset_for_another_kind_of_run_says_so(tmp_path: Path, capsys):
    run = make_run(tmp_path / "run", generation_rows("r") + autoencoder_rows("r"))   # f only on autoencoders
    assert reports_main([str(run), "table=f_sweep", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "['f'] has no value in any row with its metrics ['fid', 'kid', 'images_per_s', 's_per_image']" in err


def test_f_sweep_and_guidance_presets_on_their_sweeps():
    rows = []
    for f in (8, 4, 16):
        for row in generation_rows("fs")[:12]:   # pixel_ddpm's rows, relabelled as the f-sweep's model
            rows.append({**row, "pipeline": "latent_f", "f": f,
                         "value": row["value"] * (f / 8 if row["metric"] == "fid" else 1)})
    pivot = build_spec_table(pd.DataFrame(rows), load_spec("f_sweep"))
    assert pivot.index_columns == ["f"] and [r[0] for r in pivot.rows] == [4, 8, 16]
    assert ((4,), "fid") in pivot.bold
    rows = [{**row, "guidance_scale": g} for g in (1.0, 3.0) for row in generation_rows("g")]
    pivot = build_spec_table(pd.DataFrame(rows), load_spec("guidance_sweep"))
    assert pivot.index_columns == ["pipeline", "guidance_scale"] and len(pivot.rows) == 6
    assert pivot.metrics == ["fid", "clip_score[ViT-B-32/openai]"] and pivot.labels[pivot.metrics[1]] == "CLIP score"
