"""The Inception network is loaded only when a metric is computed in its space (issue 27): a run
with `metrics.features=[dinov2-vit-s-14]` and only `fid`/`kid` (rows `fd[...]`, `kid[...]`) never
constructs it; the default configuration, and one listing inception beside another space, do."""
from __future__ import annotations

import pytest

from bench.config import DataConfig, MetricsConfig
from bench.data import build_source
from bench.metrics.spaces import SpaceMetricSet
from bench.tools.random_vits import TINY_DINOV2, save_dinov2_hub
from models.core.interface import SampleBatch

DINO = "dinov2-vit-s-14"


class InceptionLoaded(Exception):
    pass


@pytest.fixture
def session(tmp_path, monkeypatch):
    """A Session of the shipped smoke config whose Inception constructors all raise."""
    from hydra import compose, initialize_config_dir

    import bench.metrics.inception
    import bench.metrics.metric_set
    import bench.session
    from bench.config import register_schema, validate
    from suite_helpers import CONF
    monkeypatch.setenv("DIFFBENCH_CACHE", str(tmp_path / "cache"))
    calls: list[dict] = []

    def refuse(**kwargs):
        calls.append(kwargs)
        raise InceptionLoaded("the Inception network was constructed")
    for module in (bench.session, bench.metrics.metric_set, bench.metrics.inception):
        monkeypatch.setattr(module, "build_inception", refuse)
    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = validate(compose("config", overrides=["pipeline=pixel_untrained", "hardware=cpu", "quiet=true"]))
    out = bench.session.Session(cfg, tmp_path / "run", "run")
    out.inception_calls = calls
    return out


def _metrics(tmp_path, features: list[str]) -> MetricsConfig:
    weights, _, _ = save_dinov2_hub(tmp_path, TINY_DINOV2, seed=3)
    return MetricsConfig(names=["fid", "kid"], features=features, feature_weights={DINO: str(weights)},
                         kid_subsets=3, kid_subset_size=10, feature_batch_size=20)


def test_other_space_alone_never_constructs_inception(session, tmp_path):
    data = DataConfig(name="shapes", resolution=32, n=30)
    metrics = session.metric_set(["fid", "kid"], data=data, metrics=_metrics(tmp_path, [DINO]))
    assert isinstance(metrics, SpaceMetricSet) and list(metrics.sets) == [DINO]
    for batch in build_source(DataConfig(name="shapes", resolution=32, n=30, seed=4), split="train").iter_batches(15):
        metrics.update(SampleBatch(batch.images, batch.indices, None, None, {}, {}))
    assert sorted(row.metric for row in metrics.compute()) == [f"fd[{DINO}]", f"kid[{DINO}]"]
    assert session.inception_calls == []


@pytest.mark.parametrize("features", [None, ["inception"], ["inception", DINO]], ids=["config", "inception", "both"])
def test_inception_space_still_constructs_it(session, tmp_path, features):
    data = DataConfig(name="shapes", resolution=32, n=30)
    metrics = None if features is None else _metrics(tmp_path, features)   # None: the run's own (default) config
    with pytest.raises(InceptionLoaded):
        session.metric_set(["fid", "kid"], data=data, metrics=metrics)
    assert len(session.inception_calls) == 1
