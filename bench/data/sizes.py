"""The image sizes a file-backed set holds, and the size its images are scored at (issue 26).

torch-fidelity and clean-fid feed every file at its own size to the Inception, whose own resize to
299 is the protocol's; neither shrinks a set first. A folder or npz made elsewhere is therefore
scored at its own size unless a resolution is asked for (`data.resolution=R` for the reference,
`pipeline.params.resolution=R` for samples), and every row says what was found and what was done
(`ImageSizes.describe`, `resize_note`).

One size per set: the sample store and the metric batches hold one image size, so a set whose
images differ in size (or are not square) is refused with the sizes found and the key that
center-crops and resizes them all (torch-fidelity refuses such a folder too: its batches cannot be
stacked), never shrunk silently.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from PIL import Image

from bench.data.images import BadImageError, DataError


@dataclass(frozen=True)
class ImageSizes:
    """How many images of each (width, height) a set holds."""
    counts: tuple[tuple[tuple[int, int], int], ...]   # ((width, height), count), most frequent first

    @classmethod
    def of(cls, sizes: Iterable[tuple[int, int]]) -> "ImageSizes":
        counter = Counter(sizes)
        return cls(tuple(sorted(counter.items(), key=lambda item: (-item[1], item[0]))))

    @property
    def total(self) -> int:
        return sum(count for _, count in self.counts)

    def describe(self) -> str:
        """`64x64` for one size; `64x64 (100), 32x32 (40)` (width x height, count) when mixed."""
        if len(self.counts) == 1:
            (width, height), _ = self.counts[0]
            return f"{width}x{height}"
        return ", ".join(f"{w}x{h} ({count})" for (w, h), count in self.counts)

    def square_side(self) -> int | None:
        """The side when every image is the same square size; None otherwise."""
        if len(self.counts) == 1 and self.counts[0][0][0] == self.counts[0][0][1]:
            return self.counts[0][0][0]
        return None

    def own_resolution(self, what: str, key: str) -> int:
        """The one square size every image has (scored as it is), or a DataError naming the sizes
        found and `key`, which resizes them."""
        side = self.square_side()
        if side is not None:
            return side
        kind = "images of several sizes" if len(self.counts) > 1 else "non-square images"
        raise DataError(f"{what} holds {kind}: {self.describe()} (width x height, count); they are scored at their "
                        f"own size, which must be one square size per set (torch-fidelity refuses such a set too). "
                        f"Give {key}=R to center-crop and resize every image to R x R (recorded in the rows), or "
                        "make the images one size")

    def resize_note(self, resolution: int, key: str) -> str:
        """What scoring at `resolution` does to these images: `none`, or the crop and resize."""
        if self.square_side() == resolution:
            return "none"
        return f"center-crop + PIL bicubic to {resolution}x{resolution} ({key}={resolution})"


def folder_sizes(root: Path, files: Iterable[str], *, skip_bad: bool = False, hint: str = "") -> ImageSizes:
    """The sizes of a folder's image files, read from their headers (nothing is decoded). An
    unreadable header raises BadImageError (with `hint`) unless `skip_bad`, which leaves it out (the
    source's own decoding then skips and counts it)."""
    sizes = []
    for rel in files:
        path = Path(root) / rel
        try:
            with warnings.catch_warnings():   # the bound is data.max_pixels, checked at decoding
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    sizes.append(tuple(int(s) for s in image.size))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            if not skip_bad:
                raise BadImageError(path, f"{type(err).__name__}: {err}", hint) from None
    if not sizes:
        raise DataError(f"image folder {root}: none of its files can be read as an image")
    return ImageSizes.of(sizes)


def array_sizes(shape: tuple[int, ...], n: int) -> ImageSizes:
    """The sizes of n images of an N x H x W x C array (one size)."""
    return ImageSizes((((int(shape[2]), int(shape[1])), int(n)),))
