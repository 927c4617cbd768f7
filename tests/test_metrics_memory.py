"""FID streams in constant memory: the peak memory of a run over 5,000 images is within 10% of
that over 500. Each run is a fresh process (peak RSS is per process). The quick variant uses a
cheap 2048-d stand-in extractor, so it measures exactly the metric's own accumulation; the slow
variant runs the real Inception."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np, torch
from bench.config import MetricsConfig
from bench.metrics import MetricSet
from bench.metrics.refstats import ReferenceStats
from bench.metrics.speed import PeakRSS
from models.core.interface import SampleBatch

n, kind, dims = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.set_num_threads(2)
if kind == "inception":
    from bench.metrics.inception import build_inception
    extractor = build_inception(batch_size=50)
else:
    class Projection:   # features from 4x4-pooled pixels
        name, has_logits = "projection", False
        weight = torch.randn(48, dims, generator=torch.Generator().manual_seed(0))
        def describe(self): return {"feature_extractor": self.name}
        def __call__(self, images):
            pooled = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)
            return {"2048": torch.relu(pooled @ self.weight)}
    extractor = Projection()
reference = ReferenceStats(np.zeros(dims), np.eye(dims), 10000)
metrics = MetricSet(["fid"], MetricsConfig(names=["fid"]), extractor=extractor, reference=reference)
generator = torch.Generator().manual_seed(0)
def batch(start):
    images = torch.randint(0, 256, (50, 3, 32, 32), generator=generator, dtype=torch.uint8)
    return SampleBatch(images, torch.arange(start, start + 50), None, None, {}, {})
metrics.update(batch(0))        # one-off allocations (weights, first buffers) before the measurement
with PeakRSS() as rss:          # the streaming part only: compute() below costs the same for any n
    for start in range(50, n, 50):
        metrics.update(batch(start))
fid = metrics.compute()[0]
print(json.dumps({"max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "streaming_increase": rss.peak - rss.start, "n": fid.n, "seconds": time.perf_counter() - t0}))
"""


def run(n: int, kind: str, dims: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DIFFBENCH_QUIET": "1"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(n), kind, str(dims)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind, dims", [pytest.param("projection", 2048, marks=pytest.mark.slow),
                                        pytest.param("inception", 2048, marks=pytest.mark.slow)])
def test_fid_peak_memory_does_not_grow_with_n(kind: str, dims: int) -> None:
    small, large = run(500, kind, dims), run(5000, kind, dims)
    print(f"\n{kind} {dims}-d: max RSS 500 -> {small['max_rss'] / 2**20:.1f} MiB, 5000 -> {large['max_rss'] / 2**20:.1f} "
          f"MiB; streaming increase {small['streaming_increase'] / 2**20:.1f} -> {large['streaming_increase'] / 2**20:.1f} MiB")
    assert (small["n"], large["n"]) == (500, 5000)
    assert large["max_rss"] <= 1.10 * small["max_rss"], (small, large)
    # Keeping the 4,500 extra feature vectors would add 4500 * dims * 4 bytes (37 MB at 2048-d);
    # streaming adds nothing that grows with n.
    kept_bytes = 4500 * dims * 4
    assert large["streaming_increase"] - small["streaming_increase"] < kept_bytes / 2, (small, large)
