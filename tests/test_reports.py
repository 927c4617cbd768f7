"""reports/: finding runs, the pivot table in four formats, plots, the CLI. Synthetic run
directories are written with bench.results (the reports only read stored files)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.results import MetricValue, RunContext, make_row, write_results
from reports.__main__ import main as reports_main
from reports.load import ReportError, find_run_dirs, load_runs
from reports.metric_kinds import EITHER, HIGHER, LOWER, metric_kind
from reports.plots import auto_specs, pareto_front, parse_spec, write_plots
from reports.run_report import write_run_report
from reports.tables import Cell, build_pivot, format_cell, to_csv, to_html, to_latex, to_markdown

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(run_dir: Path, rows: list[dict], status: str = "complete") -> Path:
    write_results(run_dir, rows)
    (run_dir / "manifest.json").write_text(json.dumps({"status": status}))
    return run_dir


def guidance_rows(run_id: str, scale: float, pipelines=("pixel_tiny", "latent_f4")) -> list[dict]:
    rows = []
    for k, pipeline in enumerate(pipelines):
        ctx = RunContext(run_id, "guidance_sweep", pipeline, "pixel", {"guidance_scale": scale})
        fid = 40.0 + 10 * k + (scale - 3) ** 2
        clip = 20.0 + scale - k
        rows.append(make_row(ctx, MetricValue("fid", fid, 64)))
        rows.append(make_row(ctx, MetricValue("clip_score", clip, 64, ci_low=clip - 0.5, ci_high=clip + 0.5)))
        rows.append(make_row(ctx, MetricValue("images_per_s", 10.0 / scale, 3, unit="img/s")))
    return rows


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    root = tmp_path / "multirun"
    for job, scale in enumerate([10.0, 2.0, 4.0]):  # job order != numeric order on purpose
        make_run(root / str(job), guidance_rows(f"job{job}", scale))
    (root / ".hydra").mkdir()
    make_run(root / "3", guidance_rows("job3", 8.0), status="running")  # an unfinished job
    return root


# ---- loading --------------------------------------------------------------------------------

def test_find_run_dirs_merges_complete_jobs_and_skips_unfinished(multirun: Path):
    assert find_run_dirs(multirun) == [multirun / "0", multirun / "1", multirun / "2"]
    frame, dirs = load_runs([multirun])
    assert len(dirs) == 3 and len(frame) == 3 * 2 * 3
    assert sorted(set(frame["guidance_scale"])) == [2, 4, 10]


def test_clear_errors_for_dirs_without_a_complete_run(tmp_path: Path, multirun: Path):
    with pytest.raises(ReportError, match="no such directory"):
        find_run_dirs(tmp_path / "nope")
    with pytest.raises(ReportError, match="status='running'"):
        find_run_dirs(multirun / "3")
    empty = tmp_path / "empty"
    make_run(empty / "a", guidance_rows("a", 1.0), status="failed")
    with pytest.raises(ReportError, match="no complete run found.*did not finish"):
        find_run_dirs(empty)


def test_parquet_and_csv_copies_give_the_same_table(tmp_path: Path):
    # a sweep column mixing text and numbers is stored as strings in parquet, inferred by CSV
    rows = []
    for pct, ema in ((None, True), (0.995, None), ("auto", False)):
        ctx = RunContext("r", "s", "p", "pixel", {"percentile": pct, "steps": 10, "ema": ema})
        rows.append(make_row(ctx, MetricValue("fid", 5.0, 8)))
    run = make_run(tmp_path / "run", rows)
    from_parquet = to_markdown(build_pivot(load_runs(run)[0]))
    (run / "results.parquet").unlink()
    from_csv = to_markdown(build_pivot(load_runs(run)[0]))
    assert from_parquet == from_csv
    assert from_parquet.splitlines()[2:5] == [
        "| p        | 0.995      | 10    | –     | 5.00 |",
        "| p        | auto       | 10    | False | 5.00 |",
        "| p        | –          | 10    | True  | 5.00 |"]


# ---- tables -------------------------------------------------------------------------------

def test_pivot_rows_sorted_numerically_and_cells_formatted(multirun: Path):
    pivot = build_pivot(load_runs(multirun)[0])
    assert pivot.index_columns == ["pipeline", "guidance_scale"]
    assert pivot.metrics == ["fid", "clip_score", "images_per_s"]  # quality first, timings last
    assert [r for r in pivot.rows if r[0] == "pixel_tiny"] == [("pixel_tiny", 2), ("pixel_tiny", 4),
                                                               ("pixel_tiny", 10)]
    md = to_markdown(pivot)
    assert "| pixel_tiny | 10             | 89.00 | 30.00 ± 0.50 |                 1.00 |" in md
    assert "images_per_s (img/s)" in md
    assert "n = 3 (images_per_s); n = 64 (fid, clip_score)" in md


def test_cell_formatting_follows_the_ci():
    assert format_cell(Cell(12.3456, 12.3333, 12.3579, 64), "fid") == "12.346 ± 0.012"
    assert format_cell(Cell(0.5, 0.1, 0.6, 64), "precision") == "0.50 [0.10, 0.60]"
    # ci: pm never writes "±" for an asymmetric interval (issue 28: 0.031 [0.006, 0.157] read 0.031 ± 0.076)
    assert format_cell(Cell(0.5, 0.1, 0.6, 64), "precision", ci_style="pm") == "0.50 [0.10, 0.60]"
    assert format_cell(Cell(0.5, 0.4, 0.6, 64), "precision", ci_style="pm") == "0.50 ± 0.10"
    # a Wilson interval or a min-max spread that happens to be symmetric is still no "± CI"
    assert format_cell(Cell(0.5, 0.4, 0.6, 64, bracket=True), "precision") == "0.50 [0.40, 0.60]"
    assert format_cell(Cell(39.61, 37.5, 41.7, 7, note="1 of 8 exact"), "psnr") == "39.6 ± 2.1 (1 of 8 exact)"
    assert format_cell(Cell(float("inf"), float("nan"), float("nan"), 8), "psnr") == "∞"
    assert format_cell(Cell(float("nan"), float("nan"), float("nan"), 8), "psnr") == "–"   # never "nan"
    assert format_cell(Cell(1.0, 1.0 - 1e-9, 1.0 + 1e-9, 8), "ssim", decimals=4) == "1.0000"   # no "± 0.0000"
    assert format_cell(Cell(27.123456, float("nan"), float("nan"), 8), "psnr") == "27.12"
    assert format_cell(Cell(0.012345, float("nan"), float("nan"), 8), "kid") == "0.0123"
    assert format_cell(None, "fid") == "–"


def test_n_column_when_n_is_per_row(tmp_path: Path):
    rows = [make_row(RunContext("r", "s", p, "pixel"), MetricValue(m, 1.0, n))
            for p, n in (("a", 16), ("b", 32)) for m in ("fid", "kid")]
    pivot = build_pivot(pd.DataFrame(rows))
    assert pivot.n_by_row == {("a",): 16, ("b",): 32}
    assert to_markdown(pivot).splitlines()[0].startswith("| pipeline | n ")
    rows[0] = make_row(RunContext("r", "s", "a", "pixel"), MetricValue("fid", 1.0, 8))  # n varies both ways
    pivot = build_pivot(pd.DataFrame(rows))
    assert pivot.n_by_row is None and "| a        |  1.00 (n=8) | 1.0000 (n=16) |" in to_markdown(pivot)


def test_repeated_points_from_two_runs_keep_both_rows(tmp_path: Path):
    a = make_run(tmp_path / "a", guidance_rows("ra", 2.0))
    b = make_run(tmp_path / "b", guidance_rows("rb", 2.0))
    pivot = build_pivot(load_runs([a, b])[0])
    assert pivot.index_columns[-1] == "run_id" and len(pivot.rows) == 4


def test_latex_html_csv(multirun: Path):
    pivot = build_pivot(load_runs(multirun)[0])
    tex = to_latex(pivot)
    for token in (r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule", r"pixel\_tiny", r"$\pm$"):
        assert token in tex
    assert "±" not in tex.split(r"\end{tabular}")[0]
    page = to_html(pivot)
    assert page.count("<tr") == 1 + len(pivot.rows) and "<table" in page
    back = pd.read_csv(pd.io.common.StringIO(to_csv(pivot)))
    row = back[(back["pipeline"] == "latent_f4") & (back["guidance_scale"] == 4)].iloc[0]
    assert row["fid"] == 51.0 and row["clip_score_ci_high"] == 23.5 and row["images_per_s_n"] == 3


# ---- plots --------------------------------------------------------------------------------

def test_plot_specs_split_outside_brackets():
    assert parse_spec("clip_score[hf-hub:org/m]:fid", "--pareto") == ("clip_score[hf-hub:org/m]", "fid")
    with pytest.raises(ReportError, match="must look like A:B"):
        parse_spec("fid", "--plot")


def test_pareto_front_is_direction_aware():
    xs, ys = [20, 22, 24, 21, 25], [10, 8, 9, 12, 15]  # x = clip (higher), y = fid (lower)
    assert pareto_front(xs, ys, HIGHER, LOWER) == [1, 2, 4]
    assert pareto_front(xs, ys, LOWER, LOWER) == [0, 1]


def test_auto_plots_metric_vs_axis_and_fid_clip_pareto(multirun: Path, tmp_path: Path):
    frame = load_runs(multirun)[0]
    plots, paretos = auto_specs(frame)
    assert ("fid", "guidance_scale") in plots and paretos == [("clip_score", "fid")]
    out = write_plots(frame, tmp_path / "plots", plots=[("fid", "guidance_scale")], paretos=paretos)
    assert [p.name for p in out] == ["fid_vs_guidance_scale.png", "pareto_fid_vs_clip_score.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in out)


def test_run_report_without_sweep_writes_overview(tmp_path: Path, capsys):
    rows = [make_row(RunContext("r1", "smoke", p, "pixel"), MetricValue("fid", v, 16))
            for p, v in (("a", 3.0), ("b", 4.0))]
    run = tmp_path / "run"
    report = write_run_report(run, pd.DataFrame(rows))
    text = report.read_text()
    assert report == run / "report.md" and "| a        | **3.00** |" in text   # the best FID in bold
    assert "![overview](plots/overview.png)" in text
    assert (run / "plots" / "overview.png").read_bytes().startswith(PNG_MAGIC)
    assert "| a        | 3.00 |" in capsys.readouterr().out


# ---- command line -------------------------------------------------------------------------

def test_cli_tables_are_byte_identical_when_regenerated(multirun: Path, tmp_path: Path):
    single = make_run(tmp_path / "single", guidance_rows("s", 1.0))
    outs = [tmp_path / "out1", tmp_path / "out2"]
    for out in outs:
        assert reports_main([str(multirun), str(single), "--out", str(out), "--quiet",
                             "--plot", "fid:guidance_scale"]) == 0
    for name in ("table.md", "table.tex", "table.csv", "table.html", "report.md"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    assert sorted(p.name for p in (outs[0] / "plots").iterdir()) == ["fid_vs_guidance_scale.png"]
    assert "| pixel_tiny | 1 " in (outs[0] / "table.md").read_text()


def test_cli_errors_name_the_problem(multirun: Path, capsys):
    assert reports_main([str(multirun / "3")]) == 2
    assert "did not finish" in capsys.readouterr().err
    assert reports_main([str(multirun), "--plot", "psnr:guidance_scale", "--quiet"]) == 2
    assert "metric 'psnr' is not in the results; available: ['fid'" in capsys.readouterr().err
    assert reports_main([str(multirun), "--formats", "md,docx"]) == 2
    assert "docx" in capsys.readouterr().err


def test_cli_does_not_import_torch(multirun: Path, tmp_path: Path):
    code = ("import sys; from reports.__main__ import main; "
            f"rc = main([{str(multirun)!r}, '--out', {str(tmp_path / 'o')!r}, '--quiet', "
            "'--pareto', 'clip_score:fid']); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert (tmp_path / "o" / "plots" / "pareto_fid_vs_clip_score.png").exists()


@pytest.mark.parametrize("name,direction,timing", [
    ("fid", LOWER, False), ("rfid", LOWER, False), ("kid", LOWER, False), ("lpips", LOWER, False),
    ("inception_score", HIGHER, False), ("clip_score", HIGHER, False), ("shapes_clip_score", HIGHER, False),
    ("clip_score[ViT-B-32/laion2b_s34b_b79k]", HIGHER, False), ("psnr", HIGHER, False), ("ssim", HIGHER, False), ("precision", HIGHER, False), ("recall", HIGHER, False),
    ("images_per_s", HIGHER, True), ("s_per_image", LOWER, True), ("peak_memory_mb", LOWER, True),
    ("stage_time_base", LOWER, True), ("nfe", LOWER, False),
])
def test_metric_directions(name: str, direction: str, timing: bool):
    kind = metric_kind(name)
    assert (kind.direction, kind.timing) == (direction, timing)


# (direction, timing, decimals, rank, group) of the rows registered when the kinds moved from name
# patterns into bench.metrics.registry: exactly what the patterns gave them.
REGISTERED_KINDS = {
    "fid": (LOWER, False, 2, 0, "fid"), "rfid": (LOWER, False, 2, 0, "fid"), "kid": (LOWER, False, 4, 1, "kid"),
    "precision": (HIGHER, False, 3, 2, "fraction"), "recall": (HIGHER, False, 3, 2, "fraction"),
    "inception_score": (HIGHER, False, 2, 3, "inception_score"), "clip_score": (HIGHER, False, 2, 4, "clip_score"),
    "psnr": (HIGHER, False, 2, 6, "psnr"), "ssim": (HIGHER, False, 4, 7, "ssim"),
    "lpips": (LOWER, False, 4, 8, "lpips"),
    "images_per_s": (HIGHER, True, 2, 20, "timing"), "s_per_image": (LOWER, True, None, 21, "timing"),
    "stage_s_per_image": (LOWER, True, None, 21, "timing"), "gflops_per_forward": (LOWER, True, None, 21, "timing"),
    "nfe_per_image": (LOWER, False, 1, 22, "count"), "peak_memory_mib": (LOWER, True, 1, 23, "timing"),
    "stage_share": (EITHER, True, 3, 24, "timing"),
}


def test_registered_rows_keep_their_kinds():
    from bench.metrics.registry import row_kinds
    assert set(REGISTERED_KINDS) <= {kind.name for kind in row_kinds()}
    for name, expected in REGISTERED_KINDS.items():
        kind = metric_kind(f"{name}[x]")
        assert (kind.direction, kind.timing, kind.decimals, kind.rank, kind.group) == expected, name
        assert kind.name == name and kind.label


@pytest.mark.parametrize("variant,of", [("fid_clean", "fid"), ("shapes_clip_score", "clip_score"),
                                        ("stage_time_base", "s_per_image"), ("peak_memory_mb", "peak_memory_mib"),
                                        ("nfe", "nfe_per_image"), ("train_seconds", "s_per_image")])
def test_variant_names_take_the_registered_kind(variant: str, of: str):
    kind, registered = metric_kind(variant), metric_kind(of)
    assert kind.name == variant and (kind.direction, kind.timing, kind.rank, kind.gate) == \
        (registered.direction, registered.timing, registered.rank, registered.gate)
