"""Every setting that shapes a number is a column of each row, in single runs as in multiruns,
so a table merged from separate runs tells them apart (issue 17, deliverable 3)."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from suite_helpers import run_suite

# The shipped pixel DDPM timed on one image: the speed rows carry the request's settings
# without a feature extractor or reference set.
TINY = ("pipeline=pixel_ddpm", "metrics.names=[speed]", "suite.params.speed_n=1", "metrics.speed_repeats=1",
        "hardware=cpu", "hardware.batch_size=1")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("settings")
    run_suite(base / "steps1", *TINY, "sampler.steps=1")
    run_suite(base / "steps2", *TINY, "sampler.steps=2", "sampler.eta=0.5", "seed=3")
    return base / "steps1", base / "steps2"


def test_a_single_run_records_its_settings_as_columns(two_runs):
    rows = pd.read_csv(two_runs[1] / "results.csv")
    assert not rows.empty
    expected = {"sampler": "ddim", "steps": 2, "eta": 0.5, "thresholding": "none", "guidance_scale": 1.0, "seed": 3,
                "data": "shapes", "checkpoint": "pixel_ddpm_shapes32", "resize_mode": "tf1"}
    for column, value in expected.items():
        assert rows[column].tolist() == [value] * len(rows), column
    assert set(rows.pipeline) == {"pixel_ddpm"}                  # labelled by pipeline.name


def test_a_sweep_point_overrides_the_run_setting():
    from bench.results import MetricValue
    from bench.session import Session
    from hydra import compose, initialize_config_dir

    from bench.config import register_schema, validate
    from suite_helpers import CONF
    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = validate(compose(config_name="config", overrides=["pipeline=pixel_ddpm", "sampler.steps=9", "hardware=cpu"]))

    session = Session(cfg, Path("/nonexistent-run"), "r")
    pipe = session.load_pipeline()
    session.record(pipe, [MetricValue("fid", 1.0, 4)], {"steps": 3})
    session.record(pipe, [MetricValue("fid", 1.0, 4)], {})
    assert [row["steps"] for row in session.rows] == [3, 9]


def _steps_values(out: Path) -> set[str]:
    """Every value under a `steps` column of any table `python -m reports` wrote (CSV or Markdown),
    whatever sections or extra columns the layout has."""
    values: set[str] = set()
    for path in out.rglob("*.csv"):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("steps") not in (None, ""):
                    values.add(row["steps"].strip())
    for path in out.rglob("*.md"):
        header: list[str] | None = None
        for line in path.read_text().splitlines():
            if not line.startswith("|"):
                header = None
                continue
            cells = [c.strip().strip("*`") for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif "steps" in header and not set("".join(cells)) <= set("-: "):
                if len(cells) == len(header):
                    values.add(cells[header.index("steps")])
    return {v.removesuffix(".0") for v in values}


def test_two_runs_with_different_steps_merged_by_reports_show_a_steps_column_with_both(two_runs, tmp_path):
    from reports.__main__ import main
    out = tmp_path / "report"
    code = main([str(two_runs[0]), str(two_runs[1]), "--out", str(out), "--quiet", "--no-plots"])
    assert code in (0, None)
    assert {"1", "2"} <= _steps_values(out), sorted(p.name for p in out.rglob("*"))


def test_a_multirun_jobs_setting_is_the_column_a_single_run_has():
    """`-m sampler.steps=10,20` jobs fill the `steps` column, not a second `sampler.steps` one."""
    from bench.app import multirun_params
    assert multirun_params(["sampler.steps=20", "guidance_scale=2", "seed=1", "suite.params.speed_n=3", "debug=true",
                            "pipeline=pixel_ddpm", "hydra.sweep.dir=x"]) == \
        {"steps": 20, "guidance_scale": 2, "seed": 1, "suite.params.speed_n": 3}


def test_a_baseline_from_before_the_setting_columns_still_gates_runs_that_have_them():
    from bench.regress import compare, make_baseline
    from bench.results import rows_to_frame

    def frame(value: float, **settings):
        return rows_to_frame([{"run_id": "r", "suite": "regression", "pipeline": "pixel_ddpm", "family": "pixel",
                               "metric": "fid", "value": value, "ci_low": float("nan"), "ci_high": float("nan"),
                               "n": 64, "unit": "", **settings, "details": "{}"}])
    old = make_baseline(frame(80.0))                                  # no setting columns at all
    now = dict(sampler="ddim", steps=50, seed=0, data="shapes")
    assert [c.status for c in compare(old, frame(80.1, **now))] == ["ok"]
    assert [c.status for c in compare(old, frame(95.0, **now))] == ["regressed"]
    pinned = make_baseline(frame(80.0, **now))    # a baseline with them: still value against value (issue 28.4),
    compared = compare(pinned, frame(80.0, **{**now, "steps": 10}))   # the differing setting named beside it
    assert [c.status for c in compared] == ["ok"] and compared[0].settings == {"steps": (50, 10)}
