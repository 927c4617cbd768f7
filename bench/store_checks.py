"""Damage checks for sample store files (bench.store): the sha256 written beside each file, a
file's check against it (or, without one, by opening it), and moving a damaged file aside.

Beside every store file X.npz stands X.npz.sha256 (`sha256sum -c` format), written after the
file. A file without one (a store written before checksums, or a kill between the file's rename
and its sum's) or with one that is not a sum is checked by opening it: every member's zip CRC and
its indices. What the store does with a damaged file (set aside and sampled again, or refused) is
bench.store's; a damaged file goes under `damaged/` with the same relative path, never overwriting
an earlier damaged copy.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import struct
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.atomic import atomic_write_text
from bench.data.npz import stored_array_layout

CHECKSUM_SUFFIX = ".sha256"
DAMAGED_DIR = "damaged"
SHA256_LINE = re.compile(r"^([0-9a-f]{64})  (\S.*)$")


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_checksum(path: Path) -> None:
    """Write `path`'s sha256 beside it (atomically), in `sha256sum -c` format."""
    atomic_write_text(checksum_path(path), f"{file_sha256(path)}  {path.name}\n")


def recorded_sha256(path: Path) -> str | None:
    """The sha256 written beside `path`; None where there is none or it is not one (a damaged
    sum file: the npz is then checked by opening it, as an old store's)."""
    try:
        line = checksum_path(path).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    match = SHA256_LINE.match(line)
    return match.group(1) if match and match.group(2) == path.name else None


def npz_damage(path: Path) -> str | None:
    """What is wrong with a store file, or None: against its recorded sha256 where there is one,
    else by opening it (every member's CRC, then a 1-D integer `indices` with one entry per row
    of every member). FileNotFoundError passes (a concurrent writer removed it: look again);
    other OSErrors pass too (a failing disk is not a damaged file)."""
    expected = recorded_sha256(path)
    if expected is not None:
        actual = file_sha256(path)
        return None if actual == expected else \
            f"its sha256 {actual[:12]}... differs from the {expected[:12]}... written with it"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            members = archive.namelist()
        if bad is not None:
            return f"member {bad} fails its CRC check"
        if "indices.npy" not in members:
            return f"it has no indices (members {members})"
        with np.load(path, allow_pickle=False) as data:
            indices = data["indices"]
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            return f"its indices are {indices.dtype} {indices.shape}, not a 1-D integer array"
        for member in members:
            layout = stored_array_layout(path, member)
            if layout is not None and (not layout[1] or layout[1][0] != indices.size):
                return f"member {member} has shape {layout[1]} for {indices.size} indices"
    except (zipfile.BadZipFile, ValueError, EOFError, KeyError, struct.error) as err:
        return f"it is not a readable npz ({type(err).__name__}: {err})"
    return None


def move_aside(root: Path, group: Sequence[Path]) -> list[Path]:
    """Move the files of `group` (and their sums) under root/damaged/, same relative paths, a
    numbered name where a copy is there already; returns where the files (not sums) went."""
    moved = []
    for path in group:
        for item in (path, checksum_path(path)):
            target = root / DAMAGED_DIR / item.relative_to(root)
            number = 0
            while target.exists():   # keep every damaged copy: never overwrite evidence
                number += 1
                target = target.with_name(f"{item.name}.{number}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):   # another writer moved it first
                os.replace(item, target)
                if item is path:
                    moved.append(target)
    return moved
