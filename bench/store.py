"""The sample store: a run's samples on disk, in shards, resumable after a kill at any point.

Layout under `root`:

    store.json                      what is sampled (the key) and the shard size
    shards/shard-000003.npz         indices [3*S, 4*S): images, indices, labels, prompts, ...
    timings/shard-000003.npz        measured per-sample stage seconds and NFE of that shard
    parts/shard-000003/p...npz      per-batch pieces (samples + timings) of an unfinished shard

Why it survives SIGKILL anywhere: every file appears by atomic rename (`bench.atomic`), so a
file is either complete or absent (a kill leaves at most an ignored `*.tmp`). A shard is
finished by writing `shards/...` from its parts and only then deleting the parts, so a kill
in between leaves both, and the next open deletes the stale parts. What a shard holds
depends only on which indices it has (sorted by index), and its npz is written
byte-deterministically (fixed member order, fixed zip timestamps, no compression), so a
resumed run ends with shard files byte-identical to an uninterrupted run's. Wall times differ
from run to run by nature, so they live apart, in `timings/`.

Several writers (torch.distributed ranks) may fill one store with disjoint index sets: part
names are keyed by their smallest index, so they never collide, and finishing a shard is
serialised with an advisory file lock (released by the OS if its holder dies).
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import shutil
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from bench.atomic import atomic_write, atomic_write_json
from models.core.interface import SampleBatch
from bench.data.npz import stored_array_layout

FORMAT = "diffbench-samples/1"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)   # the earliest zip timestamp; npz members get it, not "now"
STAGE_OUTPUT_PREFIX = "stage_output."
TIMING_PREFIXES = ("seconds.", "nfe.")   # measured, so never byte-identical: kept out of shards


class StoreError(RuntimeError):
    """A sample store on disk that cannot be used as it is; the message says what to do."""


class StoreMismatchError(StoreError):
    """The store at a path was made for different samples than the ones asked for."""


# -- deterministic npz -------------------------------------------------------------------
def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Atomically write an uncompressed npz whose bytes depend only on `arrays` (and numpy's
    .npy header format): np.savez stamps members with the current time, this does not."""
    with atomic_write(path, "wb") as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
                info.external_attr = 0o644 << 16
                archive.writestr(info, buffer.getvalue(), compress_type=zipfile.ZIP_STORED)


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
def _batch_arrays(batch: SampleBatch, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
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


def _timing_arrays(batch: SampleBatch, keep: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample share of each stage's batch wall time, and per-image NFE."""
    arrays = {}
    for stage, seconds in sorted(batch.stage_seconds.items()):
        arrays[f"seconds.{stage}"] = np.full(len(keep), seconds / len(batch), dtype=np.float64)
    for stage, nfe in sorted(batch.stage_nfe.items()):
        arrays[f"nfe.{stage}"] = np.full(len(keep), nfe, dtype=np.float64)
    return arrays


def _is_timing(name: str) -> bool:
    return name.startswith(TIMING_PREFIXES)


def _samples_only(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in arrays.items() if not _is_timing(k)}


def _timings_only(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in arrays.items() if k == "indices" or _is_timing(k)}


def _sorted_union(pieces: Sequence[dict[str, np.ndarray]], what: str) -> dict[str, np.ndarray]:
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


@dataclass(frozen=True)
class _File:
    path: Path
    indices: np.ndarray          # int64, as stored (shards: sorted)


class SampleStore:
    """Samples keyed by global index, in shards of `shard_size` consecutive indices."""

    def __init__(self, root: str | Path, key: Mapping[str, Any], shard_size: int = 256) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.root = Path(root)
        self.key = _canonical(key)
        self.shard_size = int(shard_size)
        self._index_cache: dict[Path, tuple[tuple[int, int], np.ndarray]] = {}
        self._array_cache: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()
        self._open_or_create()
        self._remove_stale_parts()

    @classmethod
    def open(cls, root: str | Path) -> "SampleStore":
        """Open an existing store for reading, whatever its key."""
        meta = _read_meta(Path(root))
        if meta is None:
            raise FileNotFoundError(f"no sample store at {root} (no store.json); pass the directory "
                                    "that holds store.json, e.g. RUN_DIR/samples/PIPELINE/POINT")
        return cls(root, meta["key"], meta["shard_size"])

    # -- the contract ------------------------------------------------------------------
    def has(self, indices: Sequence[int]) -> bool:
        wanted = _as_indices(indices)
        return bool(np.isin(wanted, self._stored_indices()).all())

    def missing(self, indices: Sequence[int]) -> list[int]:
        wanted = _as_indices(indices)
        return wanted[~np.isin(wanted, self._stored_indices())].tolist()

    def completed(self) -> list[int]:
        return self._stored_indices().tolist()

    def write(self, batch: SampleBatch) -> None:
        """Store a batch: one atomic part file per shard it touches; indices already stored
        are skipped (the first write wins). Shards that become full are finished."""
        indices = _check_batch(batch)
        stored = self._stored_indices()
        shard_ids = indices // self.shard_size
        for shard in np.unique(shard_ids):
            keep = np.flatnonzero((shard_ids == shard) & ~np.isin(indices, stored))
            if keep.size == 0:
                continue
            part = self._part_dir(shard) / f"p{int(indices[keep].min()):012d}.npz"
            with self._lock(shared=True):   # a finishing writer must not delete this mid-write
                write_npz(part, {**_batch_arrays(batch, keep), **_timing_arrays(batch, keep)})
            if self._shard_indices(shard).size == self.shard_size:
                self._finish_shard(int(shard))

    def read(self, indices: Sequence[int]) -> SampleBatch:
        """The stored samples at `indices`, in that order, with their share of stored times."""
        wanted = _as_indices(indices)
        if wanted.size == 0:
            raise ValueError("read() needs at least one index")
        for attempt in range(5):   # another writer may finish a shard (and delete parts) meanwhile
            try:
                return self._read(wanted)
            except FileNotFoundError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def iter_batches(self, batch_size: int) -> Iterator[SampleBatch]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        stored = self._stored_indices()
        for start in range(0, stored.size, batch_size):
            yield self.read(stored[start:start + batch_size].tolist())

    def finalize(self) -> None:
        """Finish every shard that still has parts (the last, partly filled shard of a run).
        Call once sampling is done; a later write into that shard's range re-opens it."""
        for shard in self._shards_with_parts():
            self._finish_shard(shard)

    def __len__(self) -> int:
        return int(self._stored_indices().size)

    def __repr__(self) -> str:
        return f"SampleStore({str(self.root)!r}, n={len(self)}, shard_size={self.shard_size})"

    # -- layout ------------------------------------------------------------------------
    def _shard_path(self, shard: int) -> Path:
        return self.root / "shards" / f"shard-{shard:06d}.npz"

    def _part_dir(self, shard: int) -> Path:
        return self.root / "parts" / f"shard-{shard:06d}"

    def _timing_path(self, shard: int) -> Path:
        return self.root / "timings" / f"shard-{shard:06d}.npz"

    def _open_or_create(self) -> None:
        meta = _read_meta(self.root)
        wanted = {"format": FORMAT, "key": self.key, "shard_size": self.shard_size}
        if meta is None:
            atomic_write_json(self.root / "store.json", wanted)
            return
        if meta.get("format") != FORMAT:
            raise StoreError(f"{self.root / 'store.json'}: format {meta.get('format')!r}, expected {FORMAT!r}; "
                             "it was written by another version: move it away or sample into a new directory")
        if meta["key"] != self.key or meta["shard_size"] != self.shard_size:
            raise StoreMismatchError(
                f"sample store {self.root} holds other samples than asked for:\n"
                f"  stored: shard_size={meta['shard_size']} key={json.dumps(meta['key'], sort_keys=True)}\n"
                f"  asked:  shard_size={self.shard_size} key={json.dumps(self.key, sort_keys=True)}\n"
                f"  differing: {_differing(meta, wanted)}\n"
                "Sample into a new run directory, or delete this one to start over.")

    def _remove_stale_parts(self) -> None:
        """Parts whose shard file exists are leftovers of a kill while finishing it."""
        for shard in self._shards_with_parts():
            if self._shard_path(shard).exists():
                self._finish_shard(shard)

    # -- scanning ----------------------------------------------------------------------
    def _shards_with_parts(self) -> list[int]:
        parts = self.root / "parts"
        return sorted(int(d.name.split("-")[1]) for d in parts.iterdir() if d.name.startswith("shard-")) \
            if parts.is_dir() else []

    def _files(self, shard: int | None = None) -> list[_File]:
        """Every stored file (shards, then parts), each with its indices (cached by stat).
        Another writer finishing a shard may delete parts meanwhile: then look again."""
        for attempt in range(5):
            try:   # listing too: a part folder can vanish between glob's listing and its scandir
                if shard is None:
                    paths = sorted((self.root / "shards").glob("shard-*.npz")) + \
                        sorted((self.root / "parts").glob("shard-*/p*.npz"))
                else:
                    path = self._shard_path(shard)
                    paths = ([path] if path.exists() else []) + sorted(self._part_dir(shard).glob("p*.npz"))
                return [_File(path, self._indices_of(path)) for path in paths]
            except FileNotFoundError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _indices_of(self, path: Path) -> np.ndarray:
        stat = path.stat()
        signature = (stat.st_ino, stat.st_mtime_ns)
        cached = self._index_cache.get(path)
        if cached is None or cached[0] != signature:
            cached = (signature, read_npz(path, ["indices"])["indices"])
            self._index_cache[path] = cached
        return cached[1]

    def _stored_indices(self) -> np.ndarray:
        files = self._files()
        return np.unique(np.concatenate([f.indices for f in files])) if files else np.zeros(0, np.int64)

    def _shard_indices(self, shard: int) -> np.ndarray:
        files = self._files(shard)
        return np.unique(np.concatenate([f.indices for f in files])) if files else np.zeros(0, np.int64)

    # -- finishing a shard -------------------------------------------------------------
    def _finish_shard(self, shard: int) -> None:
        """shard file := sorted union of the shard file (if any) and its parts' samples, timing
        file likewise; then drop the parts. Holds the store lock exclusively, so no part is
        half-written meanwhile and every `*.tmp` found is a leftover of a killed writer. A kill
        anywhere in here is repaired by doing it again (the next open does)."""
        with self._lock(shared=False):
            part_dir = self._part_dir(shard)
            parts = [read_npz(p) for p in sorted(part_dir.glob("p*.npz"))] if part_dir.is_dir() else []
            if parts:
                shard_path, timing_path = self._shard_path(shard), self._timing_path(shard)
                samples = ([read_npz(shard_path)] if shard_path.exists() else []) + [_samples_only(p) for p in parts]
                merged = _dedupe(_sorted_union(samples, f"shard {shard} of {self.root}"))
                if not shard_path.exists() or not np.array_equal(read_npz(shard_path, ["indices"])["indices"],
                                                                 merged["indices"]):
                    write_npz(shard_path, merged)
                timings = ([read_npz(timing_path)] if timing_path.exists() else []) + [_timings_only(p) for p in parts]
                write_npz(timing_path, _dedupe(_sorted_union(_fill_missing(timings), f"timings of shard {shard}")))
            shutil.rmtree(part_dir, ignore_errors=True)
            with contextlib.suppress(OSError):   # the parts folder, once no shard has parts
                part_dir.parent.rmdir()
            for folder in (self.root / "shards", self.root / "timings"):
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _lock(self, shared: bool) -> Iterator[None]:
        """Advisory lock on root/.lock: part writers share it, finishing a shard takes it alone."""
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- reading -----------------------------------------------------------------------
    def _read(self, wanted: np.ndarray) -> SampleBatch:
        where: dict[int, tuple[Path, int]] = {}
        for f in (f for shard in np.unique(wanted // self.shard_size) for f in self._files(int(shard))):
            for row, index in enumerate(f.indices.tolist()):
                where.setdefault(index, (f.path, row))
        absent = [int(i) for i in wanted if int(i) not in where]
        if absent:
            raise KeyError(f"sample store {self.root} has no samples at indices {absent[:10]}"
                           f"{' ...' if len(absent) > 10 else ''} ({len(absent)} missing); sample them first")
        rows_by_file: OrderedDict[Path, list[tuple[int, int]]] = OrderedDict()
        for position, index in enumerate(wanted.tolist()):
            path, row = where[index]
            rows_by_file.setdefault(path, []).append((position, row))
        columns: dict[str, list[np.ndarray]] = {}
        order: list[int] = []
        for path, pairs in rows_by_file.items():
            arrays = self._arrays(path)
            rows = np.array([row for _, row in pairs])
            order.extend(position for position, _ in pairs)
            for name, array in _samples_only(arrays).items():
                columns.setdefault(name, []).append(array[rows])
        inverse = np.argsort(np.array(order), kind="stable")
        data = {name: np.concatenate(parts)[inverse] for name, parts in columns.items()}
        seconds, nfe = self._timings(wanted)
        return SampleBatch(
            images=torch.from_numpy(data["images"]),
            indices=torch.from_numpy(data["indices"]),
            prompts=[str(p) for p in data["prompts"]] if "prompts" in data else None,
            labels=torch.from_numpy(data["labels"]) if "labels" in data else None,
            stage_seconds=seconds,
            stage_nfe=nfe,
            stage_outputs={name[len(STAGE_OUTPUT_PREFIX):]: torch.from_numpy(a)
                           for name, a in data.items() if name.startswith(STAGE_OUTPUT_PREFIX)},
        )

    def _arrays(self, path: Path) -> dict[str, np.ndarray]:
        """Mapped files, kept (a few) as consecutive reads hit the same shard; keyed by inode and
        mtime, as a shard file is replaced when a tail shard grows."""
        stat = path.stat()
        key = (path, stat.st_ino, stat.st_mtime_ns)
        if key not in self._array_cache:
            self._array_cache[key] = map_npz(path)
            while len(self._array_cache) > 8:
                self._array_cache.popitem(last=False)
        self._array_cache.move_to_end(key)
        return self._array_cache[key]

    def _timings(self, wanted: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
        """Stored stage seconds summed over `wanted`, NFE averaged over them."""
        pieces = []
        for shard in np.unique(wanted // self.shard_size):
            for path in [self._timing_path(shard)] + sorted(self._part_dir(shard).glob("p*.npz")):
                with contextlib.suppress(FileNotFoundError), np.load(path) as data:
                    pieces.append({k: data[k] for k in data.files if k == "indices" or _is_timing(k)})
        if not pieces:
            return {}, {}
        table = _dedupe(_sorted_union(_fill_missing(pieces), "timings"))
        rows = np.isin(table["indices"], wanted)
        seconds: dict[str, float] = {}
        nfe: dict[str, float] = {}
        for name, values in table.items():
            kind, _, stage = name.partition(".")
            picked = values[rows][~np.isnan(values[rows])] if kind in ("seconds", "nfe") else None
            if picked is not None and picked.size:
                if kind == "seconds":
                    seconds[stage] = float(picked.sum())
                else:
                    nfe[stage] = float(picked.mean())
        return seconds, nfe


# -- helpers -------------------------------------------------------------------------------
def _canonical(key: Mapping[str, Any]) -> dict[str, Any]:
    """The key as JSON sees it (tuples -> lists, non-JSON values -> str), so equal keys compare equal."""
    return json.loads(json.dumps(dict(key), sort_keys=True, default=str))


def _read_meta(root: Path) -> dict[str, Any] | None:
    path = root / "store.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise StoreError(f"{path} is not valid JSON ({err}); delete the store directory and sample again") from None


def _differing(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(obj, Mapping):
            out: dict[str, Any] = {}
            for k, v in obj.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix.rstrip("."): obj}
    a, b = flat(stored), flat(wanted)
    return sorted(k for k in set(a) | set(b) if k != "format" and a.get(k) != b.get(k))


def _as_indices(indices: Sequence[int]) -> np.ndarray:
    if isinstance(indices, torch.Tensor):
        return indices.cpu().numpy().astype(np.int64).reshape(-1)
    return np.asarray(list(indices), dtype=np.int64).reshape(-1)


def _check_batch(batch: SampleBatch) -> np.ndarray:
    images, indices = batch.images, _as_indices(batch.indices)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"SampleStore.write: images must be uint8 NCHW, got {images.dtype} {tuple(images.shape)}")
    if images.shape[0] != indices.size:
        raise ValueError(f"SampleStore.write: {images.shape[0]} images but {indices.size} indices")
    if indices.size and indices.min() < 0:
        raise ValueError(f"SampleStore.write: negative index {int(indices.min())}")
    if np.unique(indices).size != indices.size:
        raise ValueError("SampleStore.write: a batch repeats an index")
    return indices


def _fill_missing(pieces: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Timing pieces with the same members: a stage a piece did not time is NaN there."""
    names = sorted(set().union(*pieces))
    return [{k: piece.get(k, np.full(piece["indices"].size, np.nan)) for k in names} for piece in pieces]


def _dedupe(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop repeated indices (first occurrence wins; rows are sorted by index already)."""
    _, first = np.unique(arrays["indices"], return_index=True)
    return {name: array[first] for name, array in arrays.items()}
