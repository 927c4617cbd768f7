"""The data contract: an `ImageSource` streams `ImageBatch`es of uint8 images.

A source is an indexed, deterministic collection: item i is always the same image, label and
caption, whatever the batch size, range or number of workers. Nothing holds the whole dataset:
`iter_batches` decodes one batch at a time, optionally in DataLoader worker processes (the
order of the output is the order of the indices, so 0 and N workers give identical batches).

A subclass implements `__len__`, `load_image(i)` (HxWx3 uint8 at `resolution`),
`fingerprint_fields()`, and, where it has them, `label(i)` / `caption(i)`.
"""
from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import PIL
import torch
from torch.utils.data import DataLoader, Dataset

from bench.data.images import BadImageError

log = logging.getLogger(__name__)


@dataclass
class ImageBatch:
    images: torch.Tensor            # uint8 NCHW, CPU
    indices: torch.Tensor           # int64 (N,): the items' global indices in their source
    labels: torch.Tensor | None     # int64 (N,) or None when the source has no labels
    captions: list[str] | None      # one per image, or None when the source has no captions

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"ImageBatch.images must be uint8 NCHW, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.indices.shape != (n,) or self.indices.dtype != torch.int64:
            raise ValueError(f"ImageBatch.indices must be int64 of shape ({n},), got {tuple(self.indices.shape)}")
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(f"ImageBatch.labels must have shape ({n},), got {tuple(self.labels.shape)}")
        if self.captions is not None and len(self.captions) != n:
            raise ValueError(f"ImageBatch.captions must have {n} entries, got {len(self.captions)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])


class ImageSource(ABC):
    name: str
    resolution: int
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    has_captions: bool = False
    skip_bad_files: bool = False    # folder data with on_bad_file=skip

    def __init__(self) -> None:
        self.skipped: list[str] = []  # paths of unreadable files met so far (skip mode)

    # -- what a subclass provides ------------------------------------------------------
    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load_image(self, index: int) -> np.ndarray:
        """Item `index` as a resolution x resolution x 3 uint8 array."""

    @abstractmethod
    def fingerprint_fields(self) -> dict[str, Any]:
        """Everything, beyond name and resolution, that defines the content (JSON-serialisable)."""

    def label(self, index: int) -> int | None:
        return None

    def caption(self, index: int) -> str | None:
        return None

    def load_item(self, index: int) -> tuple[np.ndarray, int | None, str | None]:
        """(image, label, caption) of one item; a source may override it to share work.
        Unreadable files raise BadImageError."""
        return self.load_image(index), self.label(index), self.caption(index)

    # -- the contract ------------------------------------------------------------------
    @property
    def has_labels(self) -> bool:
        return self.num_classes is not None

    def fingerprint(self) -> str:
        """sha256 over what defines the content; equal fingerprints mean equal images."""
        fields = dict(self.fingerprint_fields(), source=self.name, resolution=self.resolution,
                      length=len(self), pillow=PIL.__version__)
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()

    def iter_batches(self, batch_size: int, start: int = 0, stop: int | None = None,
                     num_workers: int = 0) -> Iterator[ImageBatch]:
        """Batches of items start..stop-1 in index order. In skip mode unreadable files are
        left out (a batch may then be smaller) and recorded in `self.skipped`."""
        stop = len(self) if stop is None else min(stop, len(self))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if start < 0 or num_workers < 0:
            raise ValueError(f"start and num_workers must be >= 0, got start={start}, num_workers={num_workers}")
        if start >= stop:
            return
        items = _ItemRange(self, start, stop)
        collate = _Collate(self.has_labels, self.has_captions)
        if num_workers == 0:
            chunks: Iterator = (collate([items[k] for k in range(a, min(a + batch_size, len(items)))])
                                for a in range(0, len(items), batch_size))
        else:
            chunks = iter(DataLoader(items, batch_size=batch_size, shuffle=False,
                                     num_workers=num_workers, collate_fn=collate))
        known = len(self.skipped)
        for batch, bad in chunks:
            self._handle_bad(bad)
            if batch is not None:
                yield batch
        if len(self.skipped) > known:
            log.warning("%s: skipped %d unreadable file(s) so far (data.on_bad_file=skip), e.g. %s",
                        self.name, len(self.skipped), self.skipped[0])

    def dataset(self) -> "SourceDataset":
        """A map-style torch Dataset of dicts {image: uint8 CHW, index, label (-1 if none),
        caption ("" if none)}. In skip mode it covers the readable items only."""
        return SourceDataset(self, self.readable_indices())

    def readable_indices(self) -> list[int]:
        """All indices, or in skip mode those that decode (decodes each item once)."""
        if not self.skip_bad_files:
            return list(range(len(self)))
        good = []
        for index in range(len(self)):
            item = _fetch(self, index)
            if isinstance(item, _Bad):
                self._handle_bad([item])
            else:
                good.append(index)
        return good

    def _handle_bad(self, bad: list["_Bad"]) -> None:
        """Raise the first unreadable file's error, or in skip mode record them."""
        for item in bad:
            if not self.skip_bad_files:
                raise BadImageError(item.path, item.reason, item.hint)
            if item.path not in self.skipped:
                log.debug("skipping unreadable file %s", item.path)
                self.skipped.append(item.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, resolution={self.resolution}, len={len(self)})"


@dataclass(frozen=True)
class _Bad:
    """An unreadable file, carried back from a worker; the main process raises or skips it
    (torch cannot re-raise an exception whose constructor takes more than a message)."""
    path: str
    reason: str
    hint: str


def _fetch(source: ImageSource, index: int):
    """(index, HWC uint8, label, caption), or _Bad for a file that cannot be decoded."""
    try:
        image, label, caption = source.load_item(index)
    except BadImageError as err:
        return _Bad(err.path, err.reason, err.hint)
    return index, image, label, caption


class _ItemRange(Dataset):
    def __init__(self, source: ImageSource, start: int, stop: int) -> None:
        self.source, self.start, self.stop = source, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, k: int):
        return _fetch(self.source, self.start + k)


class _Collate:
    """Items -> (ImageBatch of the readable ones, or None; the unreadable ones). A class, not
    a closure, so DataLoader workers can pickle it."""

    def __init__(self, has_labels: bool, has_captions: bool) -> None:
        self.has_labels, self.has_captions = has_labels, has_captions

    def __call__(self, items: list) -> tuple[ImageBatch | None, list[_Bad]]:
        bad = [it for it in items if isinstance(it, _Bad)]
        kept = [it for it in items if not isinstance(it, _Bad)]
        if not kept:
            return None, bad
        images = torch.from_numpy(np.stack([it[1] for it in kept])).permute(0, 3, 1, 2).contiguous()
        batch = ImageBatch(
            images=images,
            indices=torch.tensor([it[0] for it in kept], dtype=torch.int64),
            labels=torch.tensor([it[2] for it in kept], dtype=torch.int64) if self.has_labels else None,
            captions=[it[3] or "" for it in kept] if self.has_captions else None,
        )
        return batch, bad


class SourceDataset(Dataset):
    """Map-style view of a source (for training loops and torch DataLoaders)."""

    def __init__(self, source: ImageSource, indices: list[int]) -> None:
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, Any]:
        index = self.indices[k]
        array, label, caption = self.source.load_item(index)
        image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        return {"image": image, "index": index, "label": -1 if label is None else int(label),
                "caption": caption or ""}
