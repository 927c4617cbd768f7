"""Accounting across a run: suite=speed does not time samples made elsewhere (skipped, said and
recorded; refused when nothing is left to time), and a warning that every sweep point would
repeat (small-n FID/KID) is said once per run and recorded in the manifest."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bench.config import ConfigError
from suite_helpers import run_suite

pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tiny models: intra-op threads only spin

SPEED_GRID = ("suite=speed", "suite.sweep.sampler=[ddim]", "suite.sweep.steps=[2]", "suite.sweep.batch_size=[2]",
              "metrics.speed_repeats=1", "hardware=cpu")


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(images / f"{i}.png")
    return images


def test_speed_skips_samples_made_elsewhere_saying_so_in_log_and_manifest(tmp_path, folder):
    run = tmp_path / "run"
    frame = run_suite(run, *SPEED_GRID, "pipeline=external_folder", f"pipeline.params.path={folder}",
                      "suite.pipelines=[external_folder,pixel_untrained]")
    assert set(frame.pipeline) == {"pixel_untrained"} and "images_per_s" in set(frame.metric)
    nfe = frame[frame.metric == "nfe_per_image"]
    assert list(nfe.value) == [2.0]                                    # 2 DDIM steps, no CFG at scale 1
    warnings = json.loads((run / "manifest.json").read_text())["warnings"]
    assert any("skipped pipeline external_folder" in w and "made elsewhere" in w for w in warnings)


def test_speed_with_only_samples_made_elsewhere_is_refused(tmp_path, folder):
    with pytest.raises(ConfigError, match="every pipeline .*external_folder.* nothing to time"):
        run_suite(tmp_path / "run", *SPEED_GRID, "pipeline=external_folder", f"pipeline.params.path={folder}")
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "failed"


class SmallNMetrics:
    """A metric set whose compute warns as FID and KID do at small n (the text varies by point)."""

    def __init__(self, point: int) -> None:
        self.point = point

    def update(self, batch) -> None:
        pass

    def compute(self):
        import warnings

        from bench.metrics.frechet import FrechetWarning
        from bench.results import MetricValue
        warnings.warn(f"Fréchet distance: a covariance is singular (rank {self.point} < 2048 dimensions)",
                      FrechetWarning)
        return [MetricValue("fid", 1.0 + self.point, n=2)]


def test_small_n_warnings_are_said_once_per_run(tmp_path, caplog):
    from hydra import compose, initialize_config_dir

    from bench.config import register_schema, validate
    from bench.session import Session
    from suite_helpers import CONF
    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = validate(compose("config", overrides=["pipeline=pixel_untrained", "sampler.steps=1", "hardware=cpu",
                                                    "quiet=true", "store_samples=false"]))
    session = Session(cfg, tmp_path / "run", "run")
    pipe = session.load_pipeline()
    for point in (1, 2, 3):   # three sweep points, each warning with its own numbers
        session.metric_set = lambda names, data=None, metrics=None, point=point: SmallNMetrics(point)
        session.evaluate(pipe, session.request(pipe, n=2), ["fid"], {"guidance_scale": float(point)})
    assert len(session.rows) == 3
    said = [w for w in session.warnings if "covariance is singular" in w]
    assert len(said) == 1 and "rank 1 <" in said[0]                 # the first, once
    assert sum("covariance is singular" in r.message for r in caplog.records) == 1
