"""Image inputs that need not be in memory (issue 21): the image-to-image tasks' per-sample inputs
(low-resolution images, masks) and their ground truth may be thousands of images, so a request
and a suite take any `ImageSequence`, which reads a range of images on demand, as well as a
uint8 NCHW tensor. A sequence reads uint8 (N, C, H, W) from `read(start, end)`; indexing with an
int gives one (C, H, W) image and with a step-1 slice a batch, as a tensor would.

`fingerprint()` names the content (for the sample store's key): two sequences with the same
fingerprint hold the same images.
"""
from __future__ import annotations

import hashlib
import operator
from abc import ABC, abstractmethod
from typing import Callable, Sequence

import torch

class ImageSequence(ABC):
    """N uint8 images of one shape, read a range at a time."""

    dtype = torch.uint8
    ndim = 4

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int, int, int]:
        """(N, C, H, W)."""

    @abstractmethod
    def read(self, start: int, end: int) -> torch.Tensor:
        """Images start..end-1 as uint8 (end - start, C, H, W); 0 <= start <= end <= N."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A string that determines the content (equal fingerprints, equal images)."""

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | slice) -> torch.Tensor:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError(f"{type(self).__name__} reads contiguous ranges; got step {step}")
            return self.read(start, max(start, stop))
        i = operator.index(index)
        i = i + len(self) if i < 0 else i
        if not 0 <= i < len(self):
            raise IndexError(f"image {index} of a {type(self).__name__} of {len(self)}")
        return self.read(i, i + 1)[0]


class MappedImages(ImageSequence):
    """`fn(source[start:end], range(start, end))` read on demand: a per-image, index-seeded
    transform (a degradation) of another sequence or tensor, or images made from the index alone
    (masks; then `source` is None and `n` gives the length)."""

    def __init__(self, source: torch.Tensor | ImageSequence | None,
                 fn: Callable[[torch.Tensor | None, Sequence[int]], torch.Tensor],
                 item_shape: tuple[int, int, int], name: str, n: int | None = None) -> None:
        if (source is None) == (n is None):
            raise ValueError("MappedImages takes a source or a length n, not both")
        self.source, self.fn, self.name = source, fn, name
        self._shape = (len(source) if source is not None else int(n), *item_shape)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._shape

    def read(self, start: int, end: int) -> torch.Tensor:
        images = None if self.source is None else self.source[start:end]
        out = self.fn(images, range(start, end))
        if out.dtype != torch.uint8 or tuple(out.shape) != (end - start, *self._shape[1:]):
            raise ValueError(f"{self.name}: made {out.dtype} {tuple(out.shape)} for images {start}..{end - 1}, "
                             f"expected uint8 {(end - start, *self._shape[1:])}")
        return out

    def fingerprint(self) -> str:
        return f"{self.name}({fingerprint(self.source) if self.source is not None else len(self)})"


def fingerprint(images: torch.Tensor | ImageSequence) -> str:
    """A content fingerprint of a tensor (sha256 of shape, dtype and bytes) or a sequence."""
    if isinstance(images, ImageSequence):
        return images.fingerprint()
    return hashlib.sha256(f"{tuple(images.shape)}{images.dtype}".encode()
                          + images.cpu().contiguous().numpy().tobytes()).hexdigest()


def is_images(value: object) -> bool:
    """A uint8 NCHW tensor or an ImageSequence, with at least one image."""
    if isinstance(value, ImageSequence):
        return len(value) > 0
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.ndim == 4 and value.shape[0] > 0
