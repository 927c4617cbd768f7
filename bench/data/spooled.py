"""A stream of image batches spooled once to a temporary file and read back by range (issue 21):
the image-to-image suites' ground truth is read many times (every method, factor and mask set),
and holding it in memory would cost 2 GB for 10,000 images at 256 px.

Reads use `np.fromfile` with an offset, not a memory map: a map's touched pages stay resident,
which is the memory this avoids (the same reason as bench.data.npz's row reader). The file is
removed when the sequence is closed or garbage-collected, and at interpreter exit.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import weakref
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from bench.atomic import naming
from models.core.images import ImageSequence


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


class SpooledImages(ImageSequence):
    """The uint8 NCHW batches of `batches`, written to a temporary file as they arrive."""

    def __init__(self, batches: Iterable[torch.Tensor], name: str, directory: str | Path | None = None) -> None:
        fd, path = tempfile.mkstemp(prefix="diffbench-spool-", suffix=".u8", dir=directory)
        self.path, self.name = Path(path), name
        self._finalizer = weakref.finalize(self, _unlink, self.path)
        digest, n, item = hashlib.sha256(), 0, None
        try:
            with naming(self.path), os.fdopen(fd, "wb") as out:   # a full disk's error names the spool file
                for batch in batches:
                    if batch.dtype != torch.uint8 or batch.ndim != 4 or (item and tuple(batch.shape[1:]) != item):
                        raise ValueError(f"{name}: batch of {batch.dtype} {tuple(batch.shape)}; expected uint8 "
                                         f"(N, C, H, W){f' with (C, H, W) = {item}' if item else ''}")
                    item = tuple(batch.shape[1:])
                    data = memoryview(batch.contiguous().numpy()).cast("B")   # no copy
                    out.write(data)
                    digest.update(data)
                    n += len(batch)
        except BaseException:
            self.close()
            raise
        self._shape = (n, *(item or (0, 0, 0)))
        self._item_bytes = int(np.prod(self._shape[1:]))
        self._digest = digest.hexdigest()

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._shape

    def read(self, start: int, end: int) -> torch.Tensor:
        if not 0 <= start <= end <= len(self):
            raise IndexError(f"{self.name}: images {start}..{end - 1} of {len(self)}")
        count = (end - start) * self._item_bytes
        with open(self.path, "rb") as f:
            values = np.fromfile(f, dtype=np.uint8, count=count, offset=start * self._item_bytes)
        return torch.from_numpy(values.reshape(end - start, *self._shape[1:]))

    def fingerprint(self) -> str:
        return f"spooled[{self._shape},sha256={self._digest}]"

    def close(self) -> None:
        self._finalizer()


def spool(images: ImageSequence, name: str, batch: int = 256) -> SpooledImages:
    """`images` made once (read `batch` at a time) and kept in a temporary file: for a sequence that
    is costly to make and read many times."""
    return SpooledImages((images[start:start + batch] for start in range(0, len(images), batch)), name)
