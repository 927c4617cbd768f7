"""bench.metrics.registry: the one list of metrics. Config validation, MetricSet, the torchrun
merge, the report kinds and the regression gate all follow from it, so a metric registered
here (a toy one below, from this module alone) works everywhere with nothing else changed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.config import ConfigError, DataConfig, MetricsConfig
from bench.distributed import World, merge_metric_states, metric_state, shard
from bench.metrics import MetricSet, build_metrics, registry
from bench.metrics.base import Metric
from bench.metrics.refstats import ReferenceStats
from bench.regress import default_spec
from bench.results import MetricValue
from models.core.interface import SampleBatch
from reports.metric_kinds import metric_kind

ROOT = Path(__file__).resolve().parents[1]


def test_every_metric_loads_and_declares_consistently() -> None:
    names = registry.metric_names()
    assert {"fid", "kid", "precision_recall", "inception_score", "clip_score", "speed", "reconstruction"} <= set(names)
    rows = [kind.name for kind in registry.row_kinds()]
    assert len(rows) == len(set(rows)), "two metrics declare the same row"
    for name in names:
        spec = registry.spec(name)
        code = registry.load(name)
        assert spec.keeps <= spec.needs and spec.rows
        assert spec.sampled == (isinstance(code, type) and issubclass(code, Metric)), name
        for kind in spec.rows:
            assert kind.direction in registry.DIRECTIONS, kind
            assert kind.variants is None or kind.variants == kind.variants.lower(), kind   # names are lowered
    assert {"fid", "kid", "precision_recall", "inception_score", "clip_score"} <= set(registry.sampled_names())
    assert not {"speed", "reconstruction"} & set(registry.sampled_names())


@pytest.mark.parametrize("bad", [["bogus"], ["FID"], ["fid", "precision-recall"]])
def test_config_rejects_names_that_are_not_metrics(bad: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        MetricsConfig(names=bad)
    message = str(err.value)
    unknown = [n for n in bad if n not in registry.metric_names()]
    assert message.startswith("config key 'metrics.names':") and str(unknown) in message
    assert str(sorted(registry.metric_names())) in message


def test_config_accepts_every_registered_name() -> None:
    assert MetricsConfig(names=list(registry.metric_names())).names == list(registry.metric_names())


def test_registry_and_report_kinds_import_without_torch() -> None:
    code = ("import sys, bench.metrics.registry, reports.metric_kinds; "
            "heavy = [m for m in ('torch', 'torch_fidelity', 'open_clip') if m in sys.modules]; "
            "assert not heavy, heavy; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_metric_set_holds_only_sample_metrics() -> None:
    with pytest.raises(ValueError, match=r"\['speed'\] are not accumulated from generated samples"):
        MetricSet(["fid", "speed"], MetricsConfig(names=["fid", "speed"]))


# ---- a metric added by registration alone ----------------------------------------------------

class MeanPoolNormMetric(Metric):
    """Toy metric with state of its own: the mean L2 norm of the generated pool features."""

    def __init__(self, cfg, resources) -> None:
        super().__init__(cfg, resources)
        self.total, self.count = 0.0, 0

    def update(self, inputs) -> None:
        norms = inputs.features[registry.INCEPTION_POOL].double().norm(dim=1)
        self.total, self.count = self.total + float(norms.sum()), self.count + len(norms)

    def state(self) -> dict:
        return {"total": self.total, "count": self.count}

    def merge(self, state: dict) -> None:
        self.total, self.count = self.total + state["total"], self.count + state["count"]

    def compute(self, context) -> list[MetricValue]:
        return [MetricValue("pool_norm", self.total / self.count, n=context.n, unit="au",
                            details=context.extractor_details)]


TOY = registry.MetricSpec("pool_norm", f"{__name__}:MeanPoolNormMetric", frozenset({registry.INCEPTION_POOL}), (
    registry.MetricKind("pool_norm", "pool norm", registry.LOWER, registry.GateDefaults(abs=0.1, rel=0.0), unit="au",
                        decimals=3, rank=5, group="pool_norm"),))


class Projection:
    """Pixels -> 16-d features: a cheap stand-in for the Inception."""
    name, dims, has_logits = "projection-16", 16, False
    weight = torch.randn(3 * 8 * 8, 16, generator=torch.Generator().manual_seed(0))

    def cache_key(self) -> dict:
        return {"extractor": self.name, "weights_sha256": "none", "resize_mode": "none"}

    def describe(self) -> dict:
        return {"feature_extractor": self.name}

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"2048": images.flatten(1).float() / 255 @ self.weight}


def test_a_registered_metric_works_everywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register(TOY)
    cfg = MetricsConfig(names=["pool_norm", "speed"])                       # config validation
    images = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))

    def batch(lo: int, hi: int) -> SampleBatch:
        return SampleBatch(images[lo:hi], torch.arange(lo, hi), None, None, {}, {})

    single = build_metrics(cfg, DataConfig(), cache_dir=tmp_path, extractor=Projection())   # no reference needed
    assert single.reference is None and list(single.metrics) == ["pool_norm"]
    single.update(batch(0, 30))
    [row] = single.compute()
    expected = float((images.flatten(1).float() / 255 @ Projection.weight).double().norm(dim=1).mean())
    assert row.metric == "pool_norm" and row.value == pytest.approx(expected, rel=1e-12) and row.n == 30

    ranks = [MetricSet(["pool_norm"], cfg, extractor=Projection()) for _ in range(2)]   # torchrun's merge
    for rank, metrics in enumerate(ranks):
        start, count = shard(0, 30, World(rank, 2))
        metrics.update(batch(start, start + count))
    merge_metric_states(ranks[0], [metric_state(ranks[1])])
    assert ranks[0].compute()[0].value == pytest.approx(row.value, rel=1e-12)

    kind = metric_kind("pool_norm")                                         # reports and the gate
    assert (kind.direction, kind.unit, kind.decimals, kind.rank) == (registry.LOWER, "au", 3, 5)
    assert default_spec("pool_norm") == {"direction": "lower", "abs": 0.1, "rel": 0.0, "ci_k": 1.0, "skip": False}


def test_reference_is_loaded_only_for_what_the_metrics_compare_against(tmp_path: Path) -> None:
    """fid needs the reference moments (an external npz will do), kid the reference features."""
    acc = np.random.default_rng(0).normal(size=(40, 16))
    np.savez(tmp_path / "ref.npz", mu=acc.mean(0), sigma=np.cov(acc, rowvar=False))
    metrics = build_metrics(MetricsConfig(names=["fid"], reference=str(tmp_path / "ref.npz")), DataConfig(),
                            extractor=Projection())
    assert isinstance(metrics.reference, ReferenceStats) and metrics.kept == {}
    with pytest.raises(ValueError, match="kid needs reference features"):
        build_metrics(MetricsConfig(names=["kid"], reference=str(tmp_path / "ref.npz")), DataConfig(),
                      extractor=Projection())
