"""Per-sample randomness (DESIGN.md: sample i's noise depends only on (seed, i)).

Each sample gets its own CPU generator per named stream, seeded from a hash of
(seed, index, stream). Draws happen on the CPU and are then moved, so CPU and CUDA runs see
the same noise, and a batch of 1, 7 or 32 gives each sample the same numbers (EDM draws
per-sample noise the same way for the same reason).
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch


def derive_seed(seed: int, index: int, stream: str = "") -> int:
    digest = hashlib.sha256(f"{int(seed)}:{int(index)}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class NoiseSource:
    """Independent Gaussian streams, one per sample index. Successive calls continue each
    sample's stream, so a sampler that draws fresh noise every step stays batch-invariant."""

    def __init__(self, seed: int, indices: Sequence[int], stream: str,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.generators = [torch.Generator().manual_seed(derive_seed(seed, i, stream)) for i in indices]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, *shape: int) -> torch.Tensor:
        """A (N, *shape) standard-normal tensor; row k comes from sample k's stream."""
        rows = [torch.randn(shape, generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(rows).to(device=self.device, dtype=self.dtype)

    def rand(self, *shape: int) -> torch.Tensor:
        rows = [torch.rand(shape, generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(rows).to(device=self.device, dtype=self.dtype)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != len(self):
            raise ValueError(f"noise for {len(self)} samples asked for a batch of {x.shape[0]}")
        return self.randn(*x.shape[1:]).to(dtype=x.dtype)
