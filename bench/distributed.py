"""Sharded sampling and metric reduction with torch.distributed (`torchrun ... -m bench`).

Each rank samples one contiguous slice of the global index range (sample i's noise depends
only on (seed, i), so the union of the slices is exactly the single-process image set), runs
the metric accumulators on its slice, and sends their state to rank 0, which merges the
slices in rank order (= index order), each metric through its own `state()` / `merge()`
(bench.metrics.base.Metric): float64 moments for FID, per-image CLIP score sums; the kept
features that KID, precision/recall, ... read are concatenated in index order,
so their seeded subsets match a single process. Rank 0 alone writes results.
Backend: nccl on CUDA, gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment; a plain run is World()."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def shard(start: int, n: int, world: World) -> tuple[int, int]:
    """This rank's contiguous slice (start, count) of [start, start + n); earlier ranks take
    the remainder, so slices differ in size by at most one."""
    base, extra = divmod(n, world.size)
    offset = world.rank * base + min(world.rank, extra)
    return start + offset, base + (1 if world.rank < extra else 0)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


# -- metric state: what each rank sends, and how rank 0 folds it in -------------------------
def metric_state(metrics: Any) -> dict[str, Any]:
    """The accumulated state of a bench.metrics.MetricSet, without its networks."""
    return metrics.state()


def merge_metric_states(metrics: Any, states: list[dict[str, Any]]) -> None:
    """Fold other ranks' states (in rank order) into rank 0's MetricSet."""
    for state in states:
        metrics.merge(state)


def reduce_metrics(metrics: Any, world: World) -> bool:
    """Gather every rank's metric state onto rank 0 and merge it there; True on rank 0."""
    if not world.distributed:
        return True
    gathered: list[Any] = [None] * world.size if world.is_main else None  # type: ignore[assignment]
    dist.gather_object(metric_state(metrics), gathered, dst=0)
    if world.is_main:
        merge_metric_states(metrics, gathered[1:])
    return world.is_main

