"""Training batches in a reproducible order: epoch e visits the items in a permutation seeded
by (seed, e), in full batches (the remainder of an epoch is skipped). Step s's batch is thus a
pure function of (seed, s), so a resumed run sees exactly the batches it would have seen.
Small data sets are decoded once and kept in memory; larger ones are decoded per batch."""
from __future__ import annotations

from typing import Any

import torch

from bench.progress import progress
from models.core.seeding import derive_seed


class TrainingBatches:
    def __init__(self, source: Any, batch_size: int, seed: int, *, preload_max_mb: int = 1024,
                 quiet: bool = False) -> None:
        self.source = source
        self.n = len(source)
        self.batch_size = batch_size
        self.seed = seed
        if self.n < batch_size:
            raise ValueError(f"training data {source!r} has {self.n} items, fewer than train.batch_size="
                             f"{batch_size}; raise data.n or lower train.batch_size")
        self.steps_per_epoch = self.n // batch_size
        megabytes = self.n * 3 * source.resolution ** 2 / 2 ** 20
        self.images: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.captions: list[str] | None = None
        self.dataset = None
        if megabytes <= preload_max_mb:
            self._preload(quiet)
        else:
            self.dataset = source.dataset()      # in skip mode: the readable items only
            self.n = len(self.dataset)
            self.steps_per_epoch = max(1, self.n // batch_size)

    def _preload(self, quiet: bool) -> None:
        images, labels, captions = [], [], []
        bar = progress(total=self.n, desc=f"decoding {self.source.name} (train)", unit="img", disable=quiet)
        for batch in self.source.iter_batches(512):
            images.append(batch.images)
            labels.append(batch.labels if batch.labels is not None else torch.full((len(batch),), -1))
            captions.extend(batch.captions if batch.captions is not None else [""] * len(batch))
            bar.update(len(batch))
        bar.close()
        self.images, self.labels, self.captions = torch.cat(images), torch.cat(labels).long(), captions

    def indices(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch, "train-order"))
        order = torch.randperm(self.n, generator=generator)
        return order[k * self.batch_size:(k + 1) * self.batch_size]

    def batch(self, step: int) -> dict[str, Any]:
        """{"image": uint8 NCHW, "label": int64 (-1 = none), "caption": list[str]} for step `step`."""
        idx = self.indices(step)
        if self.images is not None:
            return {"image": self.images[idx], "label": self.labels[idx], "caption": [self.captions[i] for i in idx]}
        items = [self.dataset[int(i)] for i in idx]
        return {"image": torch.stack([torch.as_tensor(it["image"]) for it in items]),
                "label": torch.tensor([int(it["label"]) for it in items], dtype=torch.long),
                "caption": [it["caption"] for it in items]}
