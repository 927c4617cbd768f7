"""Atomic file writes: write to a temporary file in the same directory, fsync, then rename.
A reader sees either the old file or the complete new one, never a half-written file.

The temporary file is `.{name}.{8 random chars}.tmp` beside the target (`TEMP_NAME`); a kill
between create and rename leaves one, which `sweep_temp_files` removes on the next start.

A write that fails (a full disk, a read-only folder) raises OSError with `filename` set to the
file being written, also where the OS gave none (ENOSPC from write() or fsync on an open
handle), so the run's error boundary (`describe_io_error`, used by bench.app) can name it in
one line with what to do.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from bench.paths import CACHE_ENV, default_cache_dir

log = logging.getLogger(__name__)

# tempfile.mkstemp's names: prefix + 8 characters of [a-z0-9_] + suffix (CPython's _RandomNameSequence)
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    if mode not in ("w", "wb"):
        raise ValueError("atomic_write supports modes 'w' and 'wb'")
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            # OSError too: on a read-only or failing disk the unlink may fail; the write's error is the one to report
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> None:
    """matplotlib's `fig.savefig` through `atomic_write`: a full disk leaves no half-drawn image
    and the error names the file (savefig's own write errors name none)."""
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format=kwargs.pop("format", None) or path.suffix.lstrip(".") or "png", **kwargs)


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OSError raised inside that names no file (write(), fsync or close on an open handle), or
    names our temporary file, is re-raised naming `path`: the file the operator knows."""
    try:
        yield
    except OSError as err:
        name = Path(str(err.filename)).name if err.filename is not None else None
        if name is None or TEMP_NAME.match(name) and name.startswith(f".{Path(path).name}."):
            err.filename = str(path)
        raise


def sweep_temp_files(folder: str | Path, skip: Iterable[str] = (), recursive: bool = True) -> list[Path]:
    """Remove the temporary files of atomic writes that a killed process left under `folder`
    (`TEMP_NAME` only: nobody else's files; top-level subfolders named in `skip` are left alone,
    e.g. a sample store, which sweeps its own under its lock). Call only where no writer of
    this folder can be running. Returns what was removed."""
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    skipped = {folder / name for name in skip}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if Path(root) / d not in skipped] if recursive else []
        for name in files:
            if TEMP_NAME.match(name):
                path = Path(root) / name
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
                    log.info("removed %s: the temporary file of a write that a killed run left behind", path)
    return removed


# -- folders several processes write (a shared cache): sweep only when no writer is mid-write --------
SHARED_LOCK = ".writers.lock"


@contextlib.contextmanager
def shared_folder_write(folder: str | Path) -> Iterator[None]:
    """Hold a shared flock on `folder`'s writers lock while writing into it, so that
    `sweep_shared_folder` (which needs the lock alone) never removes a live writer's temporary
    file. Released by the OS if the writer is killed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        handle = open(folder / SHARED_LOCK, "a")
    except OSError as err:   # a read-only cache: the folder is what the operator must change
        err.filename = str(folder)
        raise
    with handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        yield


def sweep_shared_folder(folder: str | Path) -> list[Path]:
    """`sweep_temp_files` of one folder (not below it) that other processes may be writing to
    (a cache shared by runs): only when its writers lock can be had alone right now; otherwise,
    or where the folder cannot be written (a read-only cache that is only read), nothing."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    try:
        with open(folder / SHARED_LOCK, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return sweep_temp_files(folder, recursive=False)
    except OSError:   # BlockingIOError: a writer is at work; EROFS / EACCES: a cache used read-only
        return []


# -- the error boundary's line ---------------------------------------------------------------
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def describe_io_error(err: BaseException, run_dir: str | Path | None = None) -> str:
    """One line for an operator about an OSError or a damaged zip/npz file: the file, what is
    wrong, what to do. The advice follows the errno (ENOSPC / EDQUOT: free space; EROFS /
    EACCES: a writable folder) and where the file is: the run directory (`hydra.run.dir`; the
    run resumes from its stored samples), the project's cache (`$DIFFBENCH_CACHE`), elsewhere."""
    return re.sub(r"\s*\n\s*", " ", _describe(err, run_dir))   # one line, whatever the messages inside hold


def _describe(err: BaseException, run_dir: str | Path | None) -> str:
    if isinstance(err, zipfile.BadZipFile):
        path = damaged_zip_path(err)
        where = f"{path}" if path else "an npz/zip file (run with debug=true to see which)"
        return (f"{where}: damaged, not a complete npz/zip file ({err}); replace or delete it (a file the run "
                "made is made again when the run is rerun)")
    if not isinstance(err, OSError):
        return f"{type(err).__name__}: {err}"
    path = err.filename
    what = err.strerror or str(err) or type(err).__name__
    code = f"errno {errno.errorcode.get(err.errno, err.errno)}" if err.errno else type(err).__name__
    role, elsewhere = _role(path, run_dir)
    rerun = "then rerun the same command (what is stored is reused)" if role != "other" else "then rerun"
    subject = f"{path}" + (f" -> {err.filename2}" if err.filename2 else "") if path is not None else \
        f"{type(err).__name__} (no file named; debug=true shows where)"
    if err.errno in NO_SPACE:
        return f"{subject}: {what} ({code}); free space on its file system (df -h) or {elsewhere}, {rerun}"
    if err.errno in NOT_WRITABLE:
        return f"{subject}: {what} ({code}); make it readable and writable by this user or {elsewhere}, {rerun}"
    if err.errno == errno.EIO:
        return f"{subject}: {what} ({code}): the device failed to read or write it; check the disk, {rerun}"
    return f"{subject}: {what} ({code}); " + ("check the file and its folder, " if path is not None else "") + rerun


def _role(path: Any, run_dir: str | Path | None) -> tuple[str, str]:
    """(where a file is, how to put that elsewhere)."""
    if path is not None:
        resolved = Path(str(path)).absolute()
        if _under(resolved, default_cache_dir()):
            return "cache", (f"point the cache elsewhere ({CACHE_ENV}=/a/folder/with/space; it holds reference "
                             "statistics and weights, remade when missing)")
        if run_dir is not None and _under(resolved, Path(run_dir)):
            return "run", "give another hydra.run.dir (a new run directory samples again)"
        if _under(resolved, Path(tempfile.gettempdir())):   # spooled inputs (bench.data.spooled), fetches
            return "other", "set TMPDIR to a folder with space for temporary files"
    return "other", f"give another location (hydra.run.dir for the run, {CACHE_ENV} for the cache)"


def _under(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder.expanduser().absolute())
        return True
    except ValueError:
        return False


def damaged_zip_path(err: BaseException) -> str | None:
    """The file a zipfile.BadZipFile is about (it names none): the ZipFile being read in the
    traceback (np.load and zipfile.ZipFile both go through one)."""
    tb, found = err.__traceback__, None
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, zipfile.ZipFile) and isinstance(getattr(owner, "filename", None), str):
            found = owner.filename
        tb = tb.tb_next
    return found
