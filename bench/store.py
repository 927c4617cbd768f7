"""The sample store: a run's samples on disk, in shards, resumable after a kill at any point.

Layout under `root`:

    store.json                      what is sampled (the key) and the shard size
    shards/shard-000003.npz         indices [3*S, 4*S): images, indices, labels, prompts, ...
    timings/shard-000003.npz        measured per-sample stage seconds and NFE of that shard
    parts/shard-000003/p...npz      per-batch pieces (samples + timings) of an unfinished shard
    X.npz.sha256                    beside every file above: its sha256 (`sha256sum -c` format)
    damaged/...                     files found damaged, moved aside (same relative paths)

Why it survives SIGKILL anywhere: every file appears by atomic rename (`bench.atomic`), so a
file is either complete or absent (a kill leaves at most an ignored `*.tmp`). A shard is
finished by writing `shards/...` from its parts and only then deleting the parts, so a kill
in between leaves both, and the next open deletes the stale parts. What a shard holds
depends only on which indices it has (sorted by index), and its npz is written
byte-deterministically (fixed member order, fixed zip timestamps, no compression), so a
resumed run ends with shard files byte-identical to an uninterrupted run's. Wall times differ
from run to run by nature, so they live apart, in `timings/`.

Damage (a flipped bit, a truncated copy, a file that is not an npz) is found by the sha256
written beside each file after it, checked the first time the file is used in a process (and
again if it changes); a file without one (a store written before checksums, or a kill between
the file's rename and its sum's) is checked by opening it: every member's zip CRC and its
indices. A damaged file is never read: where its samples can be made again (a store opened
with `on_damaged`, as the session does for pipelines that sample) it is moved to `damaged/`
(a shard with its timings), `on_damaged` gets a line to warn with, and its indices count as
missing, so they are sampled again; otherwise StoreError names the file and what to do.
A store.json that is not a store description, or samples without a store.json, are refused.

Here: the store (its layout, writing, finishing shards, reading, what a damaged file means).
One file's bytes and arrays are bench.store_files, the sums and damage checks bench.store_checks,
store.json bench.store_meta.

Several writers (torch.distributed ranks) may fill one store with disjoint index sets: part
names are keyed by their smallest index, so they never collide, and finishing a shard is
serialised with an advisory file lock (released by the OS if its holder dies).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from bench.atomic import TEMP_NAME, atomic_write_json
from bench.store_checks import DAMAGED_DIR, checksum_path, move_aside, npz_damage, recorded_sha256, write_checksum
from bench.store_files import (STAGE_OUTPUT_PREFIX, StoreError, batch_arrays, dedupe, fill_missing, is_timing, map_npz,
                               read_npz, samples_only, sorted_union, timing_arrays, timings_only, write_npz)
from bench.store_meta import FORMAT, canonical_key, differences, read_meta
from models.core.interface import SampleBatch

log = logging.getLogger(__name__)


class StoreMismatchError(StoreError):
    """The store at a path was made for different samples than the ones asked for."""


@dataclass(frozen=True)
class _File:
    path: Path
    indices: np.ndarray          # int64, as stored (shards: sorted)


class SampleStore:
    """Samples keyed by global index, in shards of `shard_size` consecutive indices."""

    def __init__(self, root: str | Path, key: Mapping[str, Any], shard_size: int = 256,
                 on_damaged: Callable[[str], None] | None = None) -> None:
        """`on_damaged`: the samples can be made again (the session passes it for pipelines that
        sample); a damaged file is then moved aside and this gets a line to warn with. None: a
        damaged file raises StoreError."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.root = Path(root)
        self.key = canonical_key(key)
        self.shard_size = int(shard_size)
        self.on_damaged = on_damaged
        self._index_cache: dict[Path, tuple[tuple[int, int], np.ndarray]] = {}
        self._array_cache: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()
        self._verified: dict[Path, tuple[int, int, int]] = {}   # checked files, by (inode, mtime, size)
        self._locks_held = 0
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with self._lock(shared=False):   # no writer is mid-write: every temporary file is a leftover
                self._open_or_create()
                self._sweep_temp_files()
        except OSError as err:   # a store on a read-only disk (an archive to export or draw from) still reads
            if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or read_meta(self.root) is None:
                raise
            self._open_or_create()
            return
        self._remove_stale_parts()

    @classmethod
    def open(cls, root: str | Path) -> "SampleStore":
        """Open an existing store for reading, whatever its key."""
        meta = read_meta(Path(root))
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
                write_npz(part, {**batch_arrays(batch, keep), **timing_arrays(batch, keep)}, checksum=True)
            self._trust(part)
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
        meta = read_meta(self.root)
        wanted = {"format": FORMAT, "key": self.key, "shard_size": self.shard_size}
        if meta is None:
            orphans = sorted((self.root / "shards").glob("shard-*.npz")) + \
                sorted((self.root / "parts").glob("shard-*/p*.npz"))
            if orphans:   # what they were sampled for is unknown: reusing them could mix requests
                raise StoreError(f"{self.root / 'store.json'} is missing, but {len(orphans)} sample file(s) are there "
                                 f"(e.g. {orphans[0]}), so what they were made for is unknown; move {self.root} "
                                 "aside (or delete it) and rerun: the samples are made again")
            atomic_write_json(self.root / "store.json", wanted)
            return
        if meta.get("format") != FORMAT:
            raise StoreError(f"{self.root / 'store.json'}: format {meta.get('format')!r}, expected {FORMAT!r}; "
                             "it was written by another version: move it away or sample into a new directory")
        if meta["key"] != self.key or meta["shard_size"] != self.shard_size:
            raise StoreMismatchError(
                f"sample store {self.root} holds other samples than asked for ({differences(meta, wanted)}); "
                "sample into a new run directory (hydra.run.dir), or add overwrite=true to replace the run there")

    def _sweep_temp_files(self) -> None:
        """Temporary files of atomic writes a killed writer left (bench.atomic names them);
        called holding the lock exclusively, so none is being written."""
        for path in list(self.root.glob(".*.tmp")) + list(self.root.glob("*/.*.tmp")) + \
                list(self.root.glob("parts/*/.*.tmp")):
            if TEMP_NAME.match(path.name) and path.parent.name != DAMAGED_DIR:
                path.unlink(missing_ok=True)

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
                return [_File(path, self._indices_of(path)) for path in paths if self._usable(path)]
            except FileNotFoundError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    # -- damage ------------------------------------------------------------------------
    def _usable(self, path: Path) -> bool:
        """Whether a shard (with its timings) or a part is undamaged; a damaged one is moved
        aside (or refused: StoreError). Checked once per process while the file is unchanged."""
        timing = [self._timing_path(int(path.stem.split("-")[1]))] if path.parent.name == "shards" else []
        for checked in [path] + [t for t in timing if t.exists()]:
            stat = checked.stat()
            if self._verified.get(checked) == (stat.st_ino, stat.st_mtime_ns, stat.st_size):
                continue
            # under the lock: another rank finishing this shard swaps file and sum, and a sum read
            # before the swap would not match the file read after it
            with self._lock(shared=True):
                stat = checked.stat()
                problem = npz_damage(checked)
                if problem is not None:
                    self._set_aside([path] + timing, checked, problem)
                    return False
            self._verified[checked] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        return True

    def _trust(self, path: Path) -> None:
        """A file this process has just written (and summed): no need to read it back."""
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            self._verified[path] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _set_aside(self, group: list[Path], damaged: Path, problem: str) -> None:
        if self.on_damaged is None:
            raise StoreError(
                f"{damaged}: a damaged sample store file ({problem}); its samples cannot be used. Delete it (and "
                f"{checksum_path(damaged).name} if there) and rerun the run that made it (same command and "
                "hydra.run.dir): the missing samples are made again")
        moved = move_aside(self.root, group)
        for path in group:
            self._verified.pop(path, None)
            self._index_cache.pop(path, None)
        self.on_damaged(f"sample store {self.root}: {damaged.relative_to(self.root)} is damaged ({problem}); "
                        f"moved to {', '.join(str(m) for m in moved) or DAMAGED_DIR + '/'} and its samples are made "
                        "again (never reused)")

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
            files = self._files(shard)   # checked: a damaged part or shard is set aside, not merged
            parts = [read_npz(f.path) for f in files if f.path.parent == part_dir]
            if parts:
                shard_path, timing_path = self._shard_path(shard), self._timing_path(shard)
                samples = ([read_npz(shard_path)] if shard_path.exists() else []) + [samples_only(p) for p in parts]
                merged = dedupe(sorted_union(samples, f"shard {shard} of {self.root}"))
                if not shard_path.exists() or not np.array_equal(read_npz(shard_path, ["indices"])["indices"],
                                                                 merged["indices"]):
                    write_npz(shard_path, merged, checksum=True)
                    self._trust(shard_path)
                elif recorded_sha256(shard_path) is None:   # a kill took its sum; it was just checked by opening
                    write_checksum(shard_path)
                timings = ([read_npz(timing_path)] if timing_path.exists() else []) + [timings_only(p) for p in parts]
                write_npz(timing_path, dedupe(sorted_union(fill_missing(timings), f"timings of shard {shard}")),
                          checksum=True)
                self._trust(timing_path)
            shutil.rmtree(part_dir, ignore_errors=True)
            with contextlib.suppress(OSError):   # the parts folder, once no shard has parts
                part_dir.parent.rmdir()
            for folder in (self.root / "shards", self.root / "timings"):
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _lock(self, shared: bool) -> Iterator[None]:
        """Advisory lock on root/.lock: part writers and checkers share it, finishing a shard takes
        it alone. Re-entrant within this object (a second flock on another descriptor of the same
        process would wait for itself): checking files while finishing a shard holds it already."""
        if self._locks_held:
            self._locks_held += 1
            try:
                yield
            finally:
                self._locks_held -= 1
            return
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            self._locks_held = 1
            try:
                yield
            finally:
                self._locks_held = 0
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
            for name, array in samples_only(arrays).items():
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
                    pieces.append({k: data[k] for k in data.files if k == "indices" or is_timing(k)})
        if not pieces:
            return {}, {}
        table = dedupe(sorted_union(fill_missing(pieces), "timings"))
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
