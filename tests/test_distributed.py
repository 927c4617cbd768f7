"""Sharded evaluation: slices and the cross-rank merge of metric state (bench.distributed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.config import MetricsConfig
from bench.distributed import World, merge_metric_states, metric_state, shard
from bench.metrics import MetricSet
from bench.metrics.refstats import ReferenceStats
from bench.metrics.registry import INCEPTION_POOL


@pytest.mark.parametrize("n, size", [(10, 1), (10, 2), (10, 3), (7, 4), (2, 3)])
def test_shards_partition_the_index_range(n, size):
    slices = [shard(5, n, World(rank, size)) for rank in range(size)]
    indices = [i for start, count in slices for i in range(start, start + count)]
    assert indices == list(range(5, 5 + n))
    assert max(c for _, c in slices) - min(c for _, c in slices) <= 1


class RandomProjection:
    """Pixels -> 64-d features through a fixed random matrix: a stand-in extractor, enough to
    test that merging per-rank states reproduces one process's numbers."""

    def __init__(self) -> None:
        self.weight = torch.randn(3 * 8 * 8, 64, generator=torch.Generator().manual_seed(0))

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = images.flatten(1).float() / 255 @ self.weight
        return {"2048": feats, "logits_unbiased": feats[:, :10]}

    def describe(self) -> dict:
        return {"feature_extractor": "random-projection-64"}


class FixedEmbedder:
    name = "fixed"

    def encode_images(self, images):
        return images.flatten(1).float()[:, :16]

    def encode_texts(self, prompts):
        return torch.stack([torch.full((16,), float(len(p))) for p in prompts])

    def describe(self):
        return {"model": self.name}


def make_set(reference):
    cfg = MetricsConfig(names=["fid", "kid", "precision_recall", "clip_score"], kid_subsets=5,
                        kid_subset_size=20, max_kept_features=50)
    return MetricSet(cfg.names, cfg, extractor=RandomProjection(), reference=reference, clip_embedder=FixedEmbedder())


def test_merged_rank_states_equal_a_single_process():
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (60, 3, 8, 8), dtype=torch.uint8, generator=gen)
    ref_feats = RandomProjection()(torch.randint(0, 256, (80, 3, 8, 8), dtype=torch.uint8, generator=gen))["2048"]
    reference = ReferenceStats(mu=ref_feats.double().mean(0).numpy(), sigma=np.cov(ref_feats.double().numpy(), rowvar=False),
                               n=80, features=ref_feats)
    prompts = [f"p{'x' * (i % 5)}" for i in range(60)]

    class Batch:
        def __init__(self, lo, hi):
            self.images, self.prompts = images[lo:hi], prompts[lo:hi]

    single = make_set(reference)
    for lo in range(0, 60, 16):
        single.update(Batch(lo, min(lo + 16, 60)))
    ranks = [make_set(reference) for _ in range(3)]
    for rank, metrics in enumerate(ranks):
        start, count = shard(0, 60, World(rank, 3))
        for lo in range(start, start + count, 7):
            metrics.update(Batch(lo, min(lo + 7, start + count)))
    merge_metric_states(ranks[0], [metric_state(m) for m in ranks[1:]])

    expected = {v.metric: v for v in single.compute()}
    got = {v.metric: v for v in ranks[0].compute()}
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        assert got[name].n == value.n
        assert got[name].value == pytest.approx(value.value, rel=1e-6, abs=1e-9), name
        if value.ci_low is not None:
            assert got[name].ci_low == pytest.approx(value.ci_low, rel=1e-6, abs=1e-9), name
    kept = ranks[0].kept[INCEPTION_POOL]
    assert kept.capped and kept.seen == 60 and kept.kept == 50


@pytest.mark.slow   # 40 s: two torchrun ranks
def test_torchrun_two_gloo_ranks_equal_one_process(tmp_path, tmp_path_factory):
    """`torchrun --nproc_per_node=2 -m bench` on CPU (gloo): the same FID/KID/PR within 1e-6
    as one process, and byte-identical sample shards; rank 0 alone writes the results."""
    from bench.store import SampleStore
    from bench_runs import TINY, bench, manifest, quality, shard_bytes, single_run
    sharded = tmp_path / "sharded"
    bench(sharded, *TINY, nproc=2)   # before the single run: unless an earlier test cached them, rank 0
    #                                  computes the reference statistics while rank 1 waits at the barrier
    single = single_run(tmp_path_factory.getbasetemp())

    assert manifest(sharded)["status"] == "complete" and manifest(sharded)["device"]["world_size"] == 2
    assert manifest(single)["device"]["world_size"] == 1
    one, two = quality(single), quality(sharded)
    assert list(two.index) == list(one.index) == ["fid", "kid", "precision", "recall"]
    assert (two.n == 10).all() and (one.n == 10).all()
    assert one.value["kid"] > 0 and 0 < one.value["recall"] < 1, \
        "recall is 0 or 1, so comparing it proves little: retune metrics.pr_k in tests/bench_runs.TINY"
    for metric in one.index:
        for column in ("value", "ci_low", "ci_high"):
            a, b = one.at[metric, column], two.at[metric, column]
            assert (np.isnan(a) and np.isnan(b)) or b == pytest.approx(a, rel=1e-6, abs=1e-12), (metric, column)

    assert shard_bytes(sharded) and shard_bytes(sharded) == shard_bytes(single)
    store = SampleStore.open(sharded / "samples" / "pixel_ddpm" / "default")
    assert store.completed() == list(range(10)) and not (store.root / "parts").exists()
    assert sorted(p.name for p in sharded.iterdir() if p.name.startswith("results")) == \
        ["results.csv", "results.parquet"]
