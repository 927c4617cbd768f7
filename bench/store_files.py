"""One sample store file (bench.store) as bytes and as arrays: the deterministic npz writer and
its readers, a SampleBatch as the arrays a shard or part stores (its samples apart from its
measured timings), and pieces merged into a shard's one canonical order (sorted by index, first
write wins).

The npz is uncompressed and written byte-deterministically (fixed member order, fixed zip
timestamps), so a shard's bytes depend only on which indices it holds; `write_npz(checksum=True)`
writes its sha256 beside it (bench.store_checks). StoreError lives here, in the lowest module that
raises it; bench.store raises it too and callers import it from there.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bench.atomic import atomic_write
from bench.data.npz import stored_array_layout
from bench.store_checks import checksum_path, write_checksum
from models.core.interface import SampleBatch

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)   # the earliest zip timestamp; npz members get it, not "now"
STAGE_OUTPUT_PREFIX = "stage_output."
TIMING_PREFIXES = ("seconds.", "nfe.")   # measured, so never byte-identical: kept out of shards


class StoreError(RuntimeError):
    """A sample store on disk that cannot be used as it is; the message says what to do."""


# -- deterministic npz -------------------------------------------------------------------
def write_npz(path: Path, arrays: Mapping[str, np.ndarray], checksum: bool = False) -> None:
    """Atomically write an uncompressed npz whose bytes depend only on `arrays` (and numpy's
    .npy header format): np.savez stamps members with the current time, this does not.
    `checksum`: then write its sha256 beside it (`checksum_path`). The old sum goes first, so a
    kill between the renames leaves a file without a sum (checked by opening it), never a new
    file with the old file's sum (which would look damaged)."""
    if checksum:
        checksum_path(path).unlink(missing_ok=True)
    with atomic_write(path, "wb") as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
                info.external_attr = 0o644 << 16
                archive.writestr(info, buffer.getvalue(), compress_type=zipfile.ZIP_STORED)
    if checksum:
        write_checksum(path)


def read_npz(path: Path, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in (data.files if names is None else names) if name in data.files}


def map_npz(path: Path) -> dict[str, np.ndarray]:
    """Members of an uncompressed npz, the numeric ones memory-mapped in place (reading a
    batch of a 512 px shard then touches only its rows)."""
    with zipfile.ZipFile(path) as archive:
        members = archive.namelist()
    arrays = {}
    for member in members:
        layout = stored_array_layout(path, member)
        if layout is None or layout[2].kind == "U" or 0 in layout[1]:
            arrays.update(read_npz(path, [member.removesuffix(".npy")]))
        else:
            offset, shape, dtype = layout
            arrays[member.removesuffix(".npy")] = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    return arrays


# -- what one file holds -----------------------------------------------------------------
def batch_arrays(batch: SampleBatch, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A SampleBatch (rows `keep`, default all) as the arrays a shard or part stores."""
    rows = slice(None) if keep is None else keep
    arrays: dict[str, np.ndarray] = {
        "indices": batch.indices.numpy().astype(np.int64)[rows],
        "images": batch.images.numpy()[rows],
    }
    if batch.labels is not None:
        arrays["labels"] = batch.labels.numpy().astype(np.int64)[rows]
    if batch.prompts is not None:
        arrays["prompts"] = _text_array(np.array(list(batch.prompts), dtype=np.str_)[rows])
    for stage in sorted(batch.stage_outputs):
        arrays[STAGE_OUTPUT_PREFIX + stage] = batch.stage_outputs[stage].numpy()[rows]
    return arrays


def timing_arrays(batch: SampleBatch, keep: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample share of each stage's batch wall time, and per-image NFE."""
    arrays = {}
    for stage, seconds in sorted(batch.stage_seconds.items()):
        arrays[f"seconds.{stage}"] = np.full(len(keep), seconds / len(batch), dtype=np.float64)
    for stage, nfe in sorted(batch.stage_nfe.items()):
        arrays[f"nfe.{stage}"] = np.full(len(keep), nfe, dtype=np.float64)
    return arrays


def is_timing(name: str) -> bool:
    return name.startswith(TIMING_PREFIXES)


def samples_only(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in arrays.items() if not is_timing(k)}


def timings_only(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in arrays.items() if k == "indices" or is_timing(k)}


def sorted_union(pieces: Sequence[dict[str, np.ndarray]], what: str) -> dict[str, np.ndarray]:
    """Concatenate pieces member by member and sort rows by index (the one canonical order)."""
    names = list(pieces[0])
    for piece in pieces[1:]:
        if list(piece) != names:
            raise StoreError(f"{what}: pieces hold different members ({names} vs {list(piece)}); "
                             "the store mixes samples of different kinds; delete it and sample again")
    try:
        merged = {name: np.concatenate([piece[name] for piece in pieces]) for name in names}
    except ValueError as err:
        raise StoreError(f"{what}: pieces do not fit together ({err}); delete the store and sample again") from None
    order = np.argsort(merged["indices"], kind="stable")
    return {name: _text_array(array[order]) if array.dtype.kind == "U" else array[order]
            for name, array in merged.items()}


def _text_array(strings: np.ndarray) -> np.ndarray:
    """Strings as '<U{longest}': the width must follow the rows kept, not the batch they came from."""
    return np.array(strings.tolist(), dtype=np.str_) if strings.size else strings


def fill_missing(pieces: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Timing pieces with the same members: a stage a piece did not time is NaN there."""
    names = sorted(set().union(*pieces))
    return [{k: piece.get(k, np.full(piece["indices"].size, np.nan)) for k in names} for piece in pieces]


def dedupe(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop repeated indices (first occurrence wins; rows are sorted by index already)."""
    _, first = np.unique(arrays["indices"], return_index=True)
    return {name: array[first] for name, array in arrays.items()}
