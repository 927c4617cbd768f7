"""`npz`: an ADM/EDM-style sample file: `arr_0` uint8 images NHWC (C = 3, or 1 replicated
to 3), optional `arr_1` integer class labels (N,). The first `n` images are used.

Streaming: `np.savez` stores members uncompressed, so the .npy inside the zip is a plain
byte range of the file. We read its zip local header and .npy header and memory-map the
image rows in place: nothing is loaded until a batch asks for it, and DataLoader workers
each map the file themselves. A compressed file (`np.savez_compressed`) cannot be mapped;
it is loaded whole, with a warning.

Images whose size differs from the resolution are center-cropped and resized with PIL
bicubic, the folder rule (`bench.data.images`); at the resolution they pass through bit-exact.

Every .npz any role reads (samples made elsewhere, a reference data set, a `metrics.reference`
statistics file) goes through the one guarded reader here: `npz_headers` reads each member's .npy
header without loading it and refuses, as a DataError naming the file (and the config key it came
from), a file that is not a zip archive, a member whose header cannot be read, and any array of
Python objects (a pickle: numpy would refuse it too, with a bare ValueError, and unpickling could
run code); `load_npz_arrays` then loads the named arrays with allow_pickle=False. The callers check
the layout and dtype of what they read (`check_image_array`; `check_statistics` for mu / sigma /
features) and refuse non-finite statistics.
"""
from __future__ import annotations

import hashlib
import logging
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.base import ImageSource
from bench.data.images import DataError, center_crop_resize

log = logging.getLogger(__name__)
LOCAL_HEADER = struct.Struct("<4s22xHH")    # signature, ..., file name length, extra field length
SAMPLE_CHUNKS, CHUNK_BYTES = 64, 64 * 1024  # content sampled by the fingerprint


def stored_array_layout(path: Path, member: str) -> tuple[int, tuple[int, ...], np.dtype] | None:
    """(byte offset of the array data in the file, shape, dtype) for an uncompressed, C-order
    member; None if it has to be loaded whole (compressed, Fortran order, unknown .npy version)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        signature, name_length, extra_length = LOCAL_HEADER.unpack(handle.read(LOCAL_HEADER.size))
        if signature != b"PK\x03\x04":
            return None
        handle.seek(info.header_offset + LOCAL_HEADER.size + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            return None
        offset = handle.tell()
    if fortran_order:
        return None
    return offset, tuple(shape), np.dtype(dtype)


def _where(path: Path, given_as: str | None) -> str:
    return f"npz file {path}" + (f" ({given_as})" if given_as else "")


def npz_headers(path: str | Path, given_as: str | None = None, hint: str = "") -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{array name: (shape, dtype)} of every .npy member of an .npz, read from the headers alone
    (compressed members too; nothing is loaded). `given_as` names the config key the file came from
    and `hint` what it should hold, for the messages. Refuses, as a DataError naming the file: not a
    zip archive (an .npy, a pickle, garbage), an unreadable header, and arrays of Python objects."""
    path = Path(path)
    where = _where(path, given_as)
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    member = ""
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue   # np.load never parses other members as arrays
                with archive.open(member) as handle:
                    shape, dtype = _read_header(handle)
                headers[member.removesuffix(".npy")] = (shape, dtype)
    except zipfile.BadZipFile:
        raise DataError(f"{where} is not an .npz (zip) archive (an .npy, a pickle or a damaged file?); "
                        f"{hint or 'write it with np.savez(path, ...)'}") from None
    except (ValueError, EOFError, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as err:
        raise DataError(f"{where}: cannot read the header of {member!r} ({err}); the file is damaged or not "
                        f"written by numpy: write it again with np.savez") from None
    pickled = sorted(name for name, (_, dtype) in headers.items() if dtype.hasobject)
    if pickled:
        raise DataError(f"{where}: {pickled} hold pickled Python objects (dtype object), which are never loaded "
                        "(unpickling can run code); store plain numeric arrays, e.g. np.savez(path, "
                        "mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))")
    return headers


def _read_header(handle: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    else:   # version 3.0 (utf-8 field names): numpy's own reader, private but stable since numpy 1.17
        shape, _, dtype = np.lib.format._read_array_header(handle, version)
    return tuple(int(s) for s in shape), np.dtype(dtype)


def load_npz_arrays(path: str | Path, names: list[str], given_as: str | None = None,
                    hint: str = "") -> dict[str, np.ndarray]:
    """The arrays `names` of an .npz (those present), through the guarded reader: headers checked
    first (`npz_headers`), then loaded with allow_pickle=False."""
    headers = npz_headers(path, given_as, hint)
    wanted = [name for name in names if name in headers]
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in wanted}
    except (ValueError, EOFError, zipfile.BadZipFile) as err:   # a member cut short, a CRC mismatch
        raise DataError(f"{_where(Path(path), given_as)}: cannot read arrays {wanted} ({err}); the file is damaged: "
                        "write it again") from None


def check_statistics(path: str | Path, arrays: dict[str, np.ndarray], given_as: str | None = None) -> None:
    """The layout and dtype of Inception statistics read from a file: mu a real D-vector, sigma a
    real D x D matrix, features (optional) a real k x D matrix, n (optional) one integer. Finite
    values are checked by the metric set, which names the side (bench.metrics.metric_set)."""
    where = _where(Path(path), given_as)
    for name in ("mu", "sigma", "features"):
        if name in arrays and arrays[name].dtype.kind not in "fiu":
            raise DataError(f"{where}: {name} has dtype {arrays[name].dtype}, expected real numbers (float64 as "
                            "pytorch-fid / EDM / ADM write them)")
    mu, sigma = arrays["mu"], arrays["sigma"]
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise DataError(f"{where}: mu {mu.shape} and sigma {sigma.shape} are not a D-vector and a D x D matrix")
    features = arrays.get("features")
    if features is not None and (features.ndim != 2 or features.shape[1] != mu.size):
        raise DataError(f"{where}: features {features.shape} are not a k x {mu.size} matrix (one row per image)")
    n = arrays.get("n")
    if n is not None and (n.shape != () or n.dtype.kind not in "iu" or int(n) < 0):
        raise DataError(f"{where}: n {n.dtype} {n.shape} is not one non-negative integer (the image count)")


def check_image_array(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """arr_0 must be uint8 N x H x W x C (C = 1 or 3) with N >= 1; a DataError says what it is
    instead (channels-first NCHW is refused, not guessed: a 3 x 3 x 3 image is ambiguous)."""
    if len(shape) == 4 and shape[3] not in (1, 3) and shape[1] in (1, 3):
        raise DataError(f"npz file {path}: arr_0 has shape {shape}, which looks like NCHW (channels first); NHWC uint8 "
                        "(N x H x W x 3, the ADM/EDM sample format) is expected: save arr.transpose(0, 2, 3, 1)")
    if len(shape) != 4 or shape[3] not in (1, 3):
        raise DataError(f"npz file {path}: arr_0 has shape {shape}, expected N x H x W x 3 uint8 (NHWC)")
    if dtype != np.uint8:
        raise DataError(f"npz file {path}: arr_0 has dtype {dtype}, expected uint8 images in [0, 255] "
                        "(ADM/EDM sample format); convert with np.clip(np.rint(x), 0, 255).astype(np.uint8)")
    if shape[0] == 0:
        raise DataError(f"npz file {path}: arr_0 holds no images")


class NpzSource(ImageSource):
    name = "npz"

    def __init__(self, path: str | Path, resolution: int, n: int | None = None) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"npz file {self.path} does not exist; set data.root to an .npz of samples")
        # the guarded reader every role shares: not a zip, pickled arrays, damaged headers refused here
        headers = npz_headers(self.path, hint="write samples with np.savez(path, images_uint8_nhwc)")
        if "arr_0" not in headers:
            raise DataError(f"npz file {self.path} has no arr_0 (found {sorted(headers)}); save the images as the "
                            "first positional array: np.savez(path, images, labels)")
        shape, dtype = headers["arr_0"]
        check_image_array(self.path, tuple(shape), np.dtype(dtype))   # before anything is loaded
        self.resolution = resolution
        self._layout = stored_array_layout(self.path, "arr_0.npy")
        self._array: np.ndarray | None = None
        if self._layout is None:
            log.warning("npz file %s is compressed (or not C-ordered), so it cannot be streamed: loading arr_0 "
                        "whole into memory. Save with np.savez (not savez_compressed) to stream it.", self.path)
            self._array = load_npz_arrays(self.path, ["arr_0"])["arr_0"]
        self.total = int(shape[0])
        self.image_shape = tuple(int(s) for s in shape[1:])
        self.n = self.total if n is None else min(n, self.total)
        if self.n < self.total:
            log.info("npz %s: using the first %d of %d images (data.n)", self.path, self.n, self.total)
        self.labels = self._load_labels(headers.get("arr_1"))
        if self.labels is not None:
            self.num_classes = int(self.labels.max()) + 1

    def _load_labels(self, header: tuple[tuple[int, ...], np.dtype] | None) -> np.ndarray | None:
        if header is None:
            return None
        shape, dtype = header   # checked from the header, before anything is allocated
        if len(shape) != 1 or shape[0] != self.total or not np.issubdtype(dtype, np.integer):
            raise DataError(f"npz file {self.path}: arr_1 (labels) has {dtype} shape {shape}, "
                            f"expected integers of shape ({self.total},)")
        labels = load_npz_arrays(self.path, ["arr_1"])["arr_1"]
        if self.total and labels.min() < 0:
            raise DataError(f"npz file {self.path}: arr_1 (labels) has negative values")
        return labels[:self.n].astype(np.int64)

    def _images(self) -> np.ndarray:
        """The image array, memory-mapped lazily in each process."""
        if self._array is None:
            offset, shape, dtype = self._layout  # type: ignore[misc]
            self._array = np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)
        return self._array

    def _read_row(self, index: int) -> np.ndarray:
        """Row `index` read from the file on its own. Not through the memory map: every page a map
        touches stays in the resident set, so a pass over 50,000 ADM 256 px samples would grow RSS
        by the whole 9.8 GB file (measured: +93 MiB for a 93 MiB file)."""
        offset, shape, dtype = self._layout  # type: ignore[misc]
        count = int(np.prod(shape[1:]))
        row = np.fromfile(self.path, dtype=dtype, count=count, offset=offset + index * count * dtype.itemsize)
        if row.size != count:
            raise DataError(f"npz file {self.path} is truncated: image {index} is cut short; write it again")
        return row.reshape(shape[1:])

    def __getstate__(self) -> dict[str, Any]:  # workers map the file themselves
        state = self.__dict__.copy()
        if self._layout is not None:
            state["_array"] = None
        return state

    def __len__(self) -> int:
        return self.n

    def load_image(self, index: int) -> np.ndarray:
        if not 0 <= index < self.n:
            raise IndexError(f"npz: index {index} out of range for n={self.n}")
        image = self._read_row(index) if self._layout is not None else np.array(self._images()[index])
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        return center_crop_resize(image, self.resolution)

    def label(self, index: int) -> int | None:
        return int(self.labels[index]) if self.labels is not None else None

    def fingerprint_fields(self) -> dict[str, Any]:
        """File size, array shape, and a hash of the first and last MiB and 64 evenly spaced
        64 KiB chunks: cheap on multi-GB files, and it changes when the samples change."""
        size = os.path.getsize(self.path)
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            reads = [(0, 1 << 20), (max(0, size - (1 << 20)), 1 << 20)]
            reads += [(k * size // SAMPLE_CHUNKS, CHUNK_BYTES) for k in range(SAMPLE_CHUNKS)]
            for start, length in reads:
                handle.seek(start)
                digest.update(handle.read(length))
        return {"n": self.n, "file_size": size, "shape": [self.total, *self.image_shape],
                "content_sample": digest.hexdigest(), "labels": self.labels is not None}
