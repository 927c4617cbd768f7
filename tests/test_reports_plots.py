"""Which plots the reports draw for which results: line plots only against numeric axes with a
series of 2+ points, per-model bar charts (FID with CI, per-stage time), the FID-vs-CLIP Pareto
over every model that has both, the f-sweep trade-off, `--plot METRIC:pipeline` as a bar chart."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from bench.results import MetricValue, RunContext, make_row, write_results
from reports.__main__ import main as reports_main
from reports.plots import _paired, auto_bars, auto_specs, plot_bars, write_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(pipeline: str, metric: str, value: float, suite: str = "smoke", ci: float | None = None, **params) -> dict:
    ctx = RunContext("r1", suite, pipeline, "latent", params)
    low, high = (value - ci, value + ci) if ci is not None else (None, None)
    return make_row(ctx, MetricValue(metric, value, 32, ci_low=low, ci_high=high))


def autoencoder_rows() -> list[dict]:
    """The smoke suite's reconstruction rows: one f per autoencoder, two evaluation datasets."""
    rows = []
    for name, f, reg in (("ae_kl_f4", 4, "kl"), ("ae_kl_f8", 8, "kl"), ("ae_vq_f4", 4, "vq")):
        for k, data in enumerate(("shapes", "natural")):
            for metric, value in (("psnr", 30.0 - f - 5 * k), ("rfid", 50.0 + 10 * f + 100 * k)):
                rows.append(row(name, metric, value, f=f, regularizer=reg, data=data))
    return rows


def generation_rows() -> list[dict]:
    """Five models: two text models swept over guidance (FID and CLIP score), three others."""
    rows = []
    for k, text_model in enumerate(("imagen", "unclip")):
        for scale in (1.0, 3.0, 5.0):
            rows.append(row(text_model, "fid", 40 + 10 * k + (scale - 3) ** 2, ci=1.0, guidance_scale=scale))
            rows.append(row(text_model, "clip_score[shapes-clip]", 20 + scale - k, guidance_scale=scale))
    for k, model in enumerate(("pixel", "cascaded", "latent_dit")):
        rows.append(row(model, "fid", 60.0 + k, ci=2.0))
    return rows


def speed_rows() -> list[dict]:
    rows = []
    for model, stages in (("cascaded", {"base": 0.02, "sr1": 0.025}), ("pixel", {})):
        total = sum(stages.values()) or 0.03
        rows += [row(model, "s_per_image", total), row(model, "images_per_s", 1 / total)]
        rows += [row(model, f"stage_s_per_image[{stage}]", s) for stage, s in stages.items()]
    return rows


def names(paths: list[Path]) -> list[str]:
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in paths)
    return sorted(p.name for p in paths)


def test_no_line_plots_against_categorical_axes_or_one_point_per_series(tmp_path: Path) -> None:
    frame = pd.DataFrame(autoencoder_rows())
    assert auto_specs(frame) == ([], [])      # f: one per autoencoder; data, regularizer: categorical
    # nothing varies along a line: one bar panel per metric, no "psnr_vs_data" or "rfid_vs_f"
    assert names(write_plots(frame, tmp_path)) == ["overview.png"]


def test_merged_models_get_bars_and_a_pareto_over_every_text_model(tmp_path: Path) -> None:
    frame = pd.DataFrame(generation_rows())
    plots, paretos = auto_specs(frame)
    assert ("fid", "guidance_scale") in plots and paretos == [("clip_score[shapes-clip]", "fid")]
    assert set(_paired(frame, "clip_score[shapes-clip]", "fid")["pipeline"]) == {"imagen", "unclip"}
    assert auto_bars(frame, plots) == ["fid"]   # the three models outside the sweep are on no line
    assert names(write_plots(frame, tmp_path)) == [
        "clip_score-shapes-clip_vs_guidance_scale.png", "fid_by_pipeline.png", "fid_vs_guidance_scale.png",
        "pareto_fid_vs_clip_score-shapes-clip.png"]


def test_no_bars_when_the_sweep_shows_every_value_and_no_pareto_from_one_point(tmp_path: Path) -> None:
    swept = pd.DataFrame([r for r in generation_rows() if r["pipeline"] in ("imagen", "unclip")])
    assert auto_bars(swept, auto_specs(swept)[0]) == []
    one_text_model = pd.DataFrame([row("unclip", "fid", 50.0), row("unclip", "clip_score", 20.0),
                                   row("pixel", "fid", 60.0)])
    assert auto_specs(one_text_model) == ([], [])


def test_f_sweep_draws_its_trade_off_and_lines_over_f(tmp_path: Path) -> None:
    rows = []
    for f in (4, 8, 16):
        rows += [row("latent_f", "fid", 30.0 + f, suite="f_sweep", f=f),
                 row("latent_f", "images_per_s", 100.0 * f, suite="f_sweep", f=f)]
    frame = pd.DataFrame(rows)
    plots, paretos = auto_specs(frame)
    assert plots == [("fid", "f"), ("images_per_s", "f")] and paretos == [("images_per_s", "fid")]
    assert list(_paired(frame, "images_per_s", "fid")["f"]) == [4, 8, 16]   # one labelled point per f
    assert names(write_plots(frame, tmp_path)) == ["fid_vs_f.png", "images_per_s_vs_f.png",
                                                   "pareto_fid_vs_images_per_s.png"]


def test_stage_times_are_stacked_where_stages_were_timed(tmp_path: Path) -> None:
    assert "time_per_image_by_stage.png" in names(write_plots(pd.DataFrame(speed_rows()), tmp_path / "a"))
    no_stages = [r for r in speed_rows() if not r["metric"].startswith("stage_")]
    assert "time_per_image_by_stage.png" not in names(write_plots(pd.DataFrame(no_stages), tmp_path / "b"))


def test_bar_chart_is_deterministic(tmp_path: Path) -> None:
    frame = pd.DataFrame(generation_rows())
    first = plot_bars(frame, "fid", tmp_path / "a.png").read_bytes()
    assert plot_bars(frame, "fid", tmp_path / "b.png").read_bytes() == first


def test_cli_plots_a_metric_by_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    write_results(run, autoencoder_rows())
    (run / "manifest.json").write_text(json.dumps({"status": "complete"}))
    out = tmp_path / "out"
    assert reports_main([str(run), "--out", str(out), "--quiet", "--plot", "rfid:pipeline", "psnr:data"]) == 0
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["psnr_by_data.png", "rfid_by_pipeline.png"]
    assert reports_main([str(run), "--quiet", "--out", str(out), "--plot", "rfid:nonsense"]) == 2
    assert "axis 'nonsense' is not in the results; available: ['pipeline'" in capsys.readouterr().err


# ---- issue 28: plots a person reads at a glance ------------------------------------------------

def steps_rows() -> list[dict]:
    """Two smoke runs of one single-stage pipeline differing in steps (the issue's 12 plots)."""
    rows = []
    for steps in (10, 20):
        values = {"fid": 90.0 - steps, "kid": 0.05 - steps / 1000, "precision": 0.2 + steps / 100,
                  "recall": 0.5, "images_per_s": 400.0 / steps, "s_per_image": steps / 400.0,
                  "nfe_per_image": float(steps), "nfe_per_image[base]": float(steps),
                  "stage_s_per_image[base]": steps / 400.0, "stage_share[base]": 1.0, "peak_memory_mib": 300.0}
        rows += [row("pixel_ddpm", metric, value, steps=steps) for metric, value in values.items()]
    return rows


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list:
    from matplotlib.figure import Figure
    saved, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (saved.append(self), save(self, *a, **k))[1])
    return saved


def test_no_plot_of_a_constant_or_repeated_series(tmp_path: Path) -> None:
    written = names(write_plots(pd.DataFrame(steps_rows()), tmp_path))
    # stage_share[base] = 1.0 at both points, recall and peak memory flat; the one stage repeats the totals
    assert written == ["fid_vs_steps.png", "images_per_s_vs_steps.png", "kid_vs_steps.png",
                       "nfe_per_image_vs_steps.png", "precision_vs_steps.png", "s_per_image_vs_steps.png"]


def test_axes_and_titles_say_what_is_plotted_in_words(tmp_path: Path, figures: list) -> None:
    write_plots(pd.DataFrame(steps_rows()), tmp_path / "a")
    write_plots(pd.DataFrame(speed_rows()), tmp_path / "b")
    texts = [t for fig in figures for ax in fig.axes for t in (ax.get_xlabel(), ax.get_ylabel(), ax.get_title())]
    assert "FID, lower is better" in texts and "sampling steps" in texts and "FID vs sampling steps" in texts
    assert "images/s, higher is better" in texts
    raw = re.compile(r"\b(fid|kid)\b|[a-z]_[a-z]|\[")   # a lower-case key, snake_case or a "[stage]" suffix
    assert not [t for t in texts if raw.search(t)], texts


def test_pareto_needs_three_points(tmp_path: Path) -> None:
    two = pd.DataFrame([row("pixel", "fid", 60.0), row("pixel", "clip_score", 20.0),
                        row("imagen", "fid", 50.0), row("imagen", "clip_score", 25.0)])
    assert auto_specs(two)[1] == []   # the smoke run's two models: a table says who wins
    three = pd.DataFrame([*two.to_dict("records"), row("unclip", "fid", 55.0), row("unclip", "clip_score", 30.0)])
    assert auto_specs(three)[1] == [("clip_score", "fid")]


def test_no_overview_of_single_values(tmp_path: Path) -> None:
    one_model = pd.DataFrame([row("pixel", "fid", 60.0), row("pixel", "kid", 0.02)])
    assert write_plots(one_model, tmp_path) == []   # one bar per panel would only repeat the table


# ---- issue 28 (items 3, 5): image-to-image overviews read like their tables ----------------------

def sr_rows() -> list[dict]:
    """suite=superres's shape: the identity reference (x1, PSNR = inf), interpolation baselines at
    ~12,000 img/s and one model per factor at ~10 img/s, written in the suite's own order."""
    rows = []

    def add(name: str, family: str, role: str, factor: int, degradation: str, values: dict) -> None:
        ctx = RunContext("r1", "superres", name, family, {"task": "superres", "factor": factor,
                                                          "degradation": degradation, "role": role,
                                                          "input_resolution": 32 // factor})
        rows.extend(make_row(ctx, MetricValue(m, v, 32, ci_low=ci and v - ci, ci_high=ci and v + ci))
                    for m, (v, ci) in values.items())

    add("identity", "reference", "reference", 1, "none", {"fid": (46.7, None), "psnr": (math.inf, None)})
    for factor, model, ips in ((2, "cascaded_ddpm", 8.7), (4, "latent_sr", 20.3)):
        for k, name in enumerate(("nearest", "bicubic")):
            add(name, "baseline", "baseline", factor, "bicubic",
                {"fid": (70.0 + 10 * k + factor, None), "psnr": (30.0 - factor + k, 1.0),
                 "images_per_s": (12000.0 + k, 500.0)})
        add(model, "cascaded", "method", factor, "bicubic",
            {"fid": (90.0 + factor, None), "psnr": (31.0 - factor, 1.0), "images_per_s": (ips, 0.3)})
    return rows


def panels(figure) -> dict[str, object]:
    """Panel title (without its direction and scale) -> axes."""
    return {ax.get_title().split(",")[0]: ax for ax in figure.axes}


def bar_rows(ax) -> list[tuple[str, str, bool]]:
    """(tick label, hatch, italic) per bar from the top, read from the figure's objects."""
    ticks = {round(y, 3): t for y, t in zip(ax.get_yticks(), ax.get_yticklabels())}
    bars = sorted((round(p.get_y() + p.get_height() / 2, 3), p.get_hatch() or "") for p in ax.patches)
    return [(ticks[y].get_text(), hatch, ticks[y].get_fontstyle() == "italic") for y, hatch in bars]


def test_overview_is_in_table_order_with_references_and_baselines_apart(tmp_path: Path, figures: list) -> None:
    assert names(write_plots(pd.DataFrame(sr_rows()), tmp_path)) == ["overview.png"]
    fig = figures[-1]
    fid = panels(fig)["FID"]
    # as the ldm_superres table: by factor then degradation, the reference / baselines first
    assert [label for label, _, _ in bar_rows(fid)] == [
        "identity", "bicubic", "nearest", "cascaded_ddpm", "bicubic", "nearest", "latent_sr"]
    assert all(bool(hatch) == italic == (label != "cascaded_ddpm" and label != "latent_sr")
               for label, hatch, italic in bar_rows(fid))
    headings = [t.get_text() for t in fid.texts if t.get_fontweight() == "bold"]
    assert headings == ["×1, degradation none", "×2, degradation bicubic", "×4, degradation bicubic"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["method", "reference / baseline"]
    # the rows line up across panels: one label column
    assert not [t.get_text() for t in panels(fig)["images/s"].get_yticklabels() if t.get_text()]


def test_throughput_spanning_orders_of_magnitude_is_on_a_log_axis_with_values(tmp_path: Path, figures: list) -> None:
    write_plots(pd.DataFrame(sr_rows()), tmp_path)
    axes = panels(figures[-1])
    speed = axes["images/s"]
    assert speed.get_xscale() == "log" and speed.get_title().endswith("(log scale)")
    printed = [t.get_text() for t in speed.texts]
    assert "8.7" in printed and "20.3" in printed and "12,000" in printed
    assert "–" in printed   # the identity reference is not timed: said, not an empty slot
    assert axes["FID"].get_xscale() == "linear"   # 46.7 .. 94: no need


def test_an_infinite_value_is_printed_not_left_an_empty_bar(tmp_path: Path, figures: list) -> None:
    write_plots(pd.DataFrame(sr_rows()), tmp_path)
    psnr = panels(figures[-1])["PSNR"]
    assert "∞ (exact)" in [t.get_text() for t in psnr.texts]
    assert len(psnr.patches) == 6   # the six finite values are bars; the identity's is the text


def test_inpainting_overview_has_no_mask_area_panel_and_says_it_in_the_headings(tmp_path: Path,
                                                                                 figures: list) -> None:
    from reports.load import load_runs
    from reports.metric_kinds import is_descriptor
    from reports.tables import build_pivot, mark_best

    frame, _ = load_runs([Path(__file__).parent / "data" / "reports_issue28" / "inpainting"])
    assert "mask_area_ratio" in set(frame["metric"]) and is_descriptor("mask_area_ratio")
    write_plots(frame, tmp_path)
    axes = panels(figures[-1])
    assert not [t for t in axes if "mask area" in t], list(axes)
    assert axes["images/s"].get_xscale() == "log"   # mean fill at ~30,000 img/s beside diffusion at ~2
    lpips = [title for title in axes if title.startswith("LPIPS")]
    assert lpips and all(axes[t].get_xscale() == "linear" for t in lpips)   # quality: a bar's length is its value
    headings = [t.get_text() for t in axes["FID"].texts if t.get_fontweight() == "bold"]
    assert headings == ["box mask, area ratio 0.25 (measured 0.25)", "thick mask, area ratio 0.35 (measured 0.35)",
                        "thin mask, area ratio 0.15 (measured 0.15)"]
    pivot = build_pivot(frame)
    mark_best(pivot)
    assert not [cell for cell in pivot.bold if cell[1] == "mask_area_ratio"]


def test_bars_by_pipeline_are_grouped_by_data_set(tmp_path: Path, figures: list) -> None:
    plot_bars(pd.DataFrame(autoencoder_rows()), "rfid", tmp_path / "rfid.png")
    ax = figures[-1].axes[0]
    assert [label for label, _, _ in bar_rows(ax)] == ["ae_kl_f4", "ae_kl_f8", "ae_vq_f4"] * 2
    assert [t.get_text() for t in ax.texts if t.get_fontweight() == "bold"] == ["data set natural", "data set shapes"]
