"""Decoding and conversion shared by the file-backed sources (folder, npz).

The rule, applied to every image that comes from a user's file:

- palette (P/PA), LA, RGBA, CMYK, YCbCr, bilevel -> RGB with PIL's `.convert("RGB")`; alpha
  is dropped, not composited, exactly as torch-fidelity and clean-fid load images;
- grayscale (L) -> the one channel replicated to three;
- 16-bit grayscale (I;16, I;16B, I;16L, and the 32-bit I mode PIL uses for 16-bit PNGs)
  -> scaled to 8 bit by `value >> 8` after clipping to [0, 65535] (PIL's own I -> L
  conversion clips at 255, which would turn most 16-bit images white);
- float images (F) are not guessed at: they are reported as unsupported.
- EXIF orientation is not applied (neither torch-fidelity nor clean-fid applies it).

Bounds: an image of more than `max_pixels` pixels (data.max_pixels, default DEFAULT_MAX_PIXELS =
64 Mi px, e.g. 8192 x 8192) is refused from its header, before it is decoded, with a
`BadImageError` naming the file and its size (skipped and counted under on_bad_file=skip); PIL's
own decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS, ~179 Mpx) is reported the same way.

Size: an image already resolution x resolution passes through bit-exact. Any other image is
center-cropped to a square of its shorter side (offsets floor((W - s) / 2), as ADM's
`center_crop_arr`) and, if that square is not the resolution, resized with PIL bicubic, which
widens its kernel when downsampling (antialiased, clean-fid's "clean" resize).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024   # 8192 x 8192: far above any evaluation image, far below a bomb


class DataError(ValueError):
    """Data that cannot be used as given (missing or empty folder, malformed npz, captions that
    do not match); the message names the input and what to do."""


class BadImageError(DataError):
    """A file that cannot be decoded as an image; `path` names it."""

    def __init__(self, path: str | Path, reason: str, hint: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.hint = hint
        message = f"cannot read image {self.path}: {reason}"
        if hint:
            message += f". {hint}"
        super().__init__(message)

    def __reduce__(self):  # picklable with all three fields
        return (BadImageError, (self.path, self.reason, self.hint))


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """PIL image of any supported mode -> HxWx3 uint8 array (the rule in the module docstring)."""
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.int64) if mode == "I" else np.asarray(image).astype(np.int64)
        gray = (np.clip(wide, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "L":
        gray = np.asarray(image, dtype=np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        raise ValueError("float images (PIL mode F) have no agreed 8-bit scale; convert them to 8-bit PNG")
    if mode != "RGB":
        with warnings.catch_warnings():  # "palette images with transparency ..." : alpha is dropped by rule
            warnings.simplefilter("ignore", UserWarning)
            image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def center_crop_resize(array: np.ndarray, resolution: int) -> np.ndarray:
    """HxWx3 uint8 -> resolution x resolution x 3: center square crop, then PIL bicubic if needed."""
    height, width = array.shape[:2]
    if height == resolution and width == resolution:
        return array
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = array[top:top + side, left:left + side]
    if side == resolution:
        return np.ascontiguousarray(square)
    resized = Image.fromarray(np.ascontiguousarray(square)).resize((resolution, resolution), Image.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


def decode_file(path: str | Path, resolution: int, hint: str = "",
                max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read one image file -> resolution x resolution x 3 uint8; BadImageError (with `hint`
    appended to its message) if it cannot, or if it has more than `max_pixels` pixels (checked
    from the header, before decoding)."""
    try:
        with warnings.catch_warnings():   # PIL's bomb warning: the bound is max_pixels, checked here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image_file = Image.open(path)
        with image_file as image:
            width, height = image.size
            if width * height > max_pixels:
                raise BadImageError(path, f"{width} x {height} = {width * height / 1e6:.1f} Mpx exceeds "
                                    f"data.max_pixels={max_pixels} ({max_pixels / 1e6:.1f} Mpx); raise "
                                    "data.max_pixels if it is meant to be read", hint)
            image.load()
            array = to_rgb_array(image)
    except BadImageError:
        raise
    except Image.DecompressionBombError as err:
        raise BadImageError(path, f"too large to decode safely ({err}); data.max_pixels={max_pixels}",
                            hint) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        # PIL raises OSError for truncated data, SyntaxError for some broken headers.
        reason = str(err) or type(err).__name__
        raise BadImageError(path, reason, hint) from None
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise BadImageError(path, f"decoded to an unexpected shape {array.shape}", hint)
    return center_crop_resize(array, resolution)
