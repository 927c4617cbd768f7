"""Export a run's stored samples to the ADM / EDM sample format.

    python -m bench.export RUN_DIR_OR_STORE OUT.npz

writes `arr_0` (uint8 N x H x W x 3, in index order) and, when the samples carry class labels,
`arr_1` (int64 (N,)): the file ADM's evaluator (`evaluator.py`), EDM's `fid.py` and this
project's `npz` data source / `external` pipeline read. Prompts, which that format has no
place for, go to OUT.prompts.txt (one per line, in the same order), ready for
`params.prompts` of an external pipeline. Samples stream from the store batch by batch into
an uncompressed npz, so an export never holds all images in memory; the file appears
atomically.
"""
from __future__ import annotations

import argparse
import io
import logging
import sys
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from bench.atomic import atomic_write, atomic_write_text, describe_io_error
from bench.store import SampleStore, StoreError
from bench.store_files import ZIP_EPOCH

log = logging.getLogger(__name__)


def find_store(path: str | Path) -> SampleStore:
    """A store directory, or a run directory holding exactly one store."""
    path = Path(path).expanduser()
    if (path / "store.json").is_file():
        return SampleStore.open(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a sample store nor a run directory")
    stores = sorted(p.parent for p in path.rglob("store.json"))
    if not stores:
        raise FileNotFoundError(f"no sample store under {path} (no store.json found); was the run made "
                                "with store_samples=true?")
    if len(stores) > 1:
        listed = "\n  ".join(str(s) for s in stores)
        raise ValueError(f"{path} holds {len(stores)} sample stores; export one of them:\n  {listed}")
    return SampleStore.open(stores[0])


def _stream_member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtype: np.dtype,
                   chunks: Iterable[np.ndarray]) -> None:
    """Write one .npy member from consecutive row chunks (the header states the full shape)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": shape})
    info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_STORED
    rows = 0
    with archive.open(info, "w", force_zip64=True) as member:
        member.write(header.getvalue())
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            member.write(chunk.tobytes())
            rows += chunk.shape[0]
    if rows != shape[0]:
        raise RuntimeError(f"export: wrote {rows} rows of {name}, expected {shape[0]}; the store changed meanwhile")


def export_npz(store: SampleStore | str | Path, out: str | Path, batch_size: int = 256) -> Path:
    """Write the store's samples (index order) as ADM npz `out`; returns its path."""
    store = store if isinstance(store, SampleStore) else find_store(store)
    out = Path(out).expanduser()
    indices = store.completed()
    if not indices:
        raise ValueError(f"sample store {store.root} holds no samples; nothing to export")
    if indices != list(range(len(indices))):
        log.warning("store %s holds indices %d..%d with gaps or an offset; row k of the npz is the k-th "
                    "stored index", store.root, indices[0], indices[-1])
    first = store.read(indices[:1])
    _, channels, height, width = first.images.shape
    has_labels, has_prompts = first.labels is not None, first.prompts is not None
    prompts: list[str] = []

    def images() -> Iterable[np.ndarray]:
        for batch in store.iter_batches(batch_size):
            if batch.images.shape[1:] != first.images.shape[1:]:
                raise ValueError(f"store {store.root}: image shape {tuple(batch.images.shape[1:])} at index "
                                 f"{int(batch.indices[0])} differs from {tuple(first.images.shape[1:])}")
            if has_prompts:
                prompts.extend(batch.prompts or [])
            yield batch.images.permute(0, 2, 3, 1).numpy()

    def labels() -> Iterable[np.ndarray]:
        for batch in store.iter_batches(batch_size):
            if batch.labels is None:
                raise ValueError(f"store {store.root}: some samples have labels and some not")
            yield batch.labels.numpy()

    with atomic_write(out, "wb") as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            _stream_member(archive, "arr_0", (len(indices), height, width, channels), np.dtype(np.uint8), images())
            if has_labels:
                _stream_member(archive, "arr_1", (len(indices),), np.dtype(np.int64), labels())
    if has_prompts:
        lines = [" ".join(p.split()) for p in prompts]   # one line each: newlines inside a prompt become spaces
        atomic_write_text(prompts_path(out), "\n".join(lines) + "\n")
    log.info("exported %d samples from %s to %s", len(indices), store.root, out)
    return out


def prompts_path(npz: str | Path) -> Path:
    npz = Path(npz)
    return npz.with_name(npz.stem + ".prompts.txt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a sample store (folder with store.json) or a run directory holding one")
    parser.add_argument("out", help="the .npz to write")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = export_npz(args.source, args.out, args.batch_size)
    except (FileNotFoundError, ValueError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, zipfile.BadZipFile) as err:   # a full disk, a damaged file: one line naming it (issue 29)
        print(f"error: {describe_io_error(err)}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
