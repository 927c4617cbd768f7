"""`folder`: any directory of images, e.g. samples produced elsewhere or a reference set.

Files: .png, .jpg/.jpeg, .webp, .bmp (any case), searched recursively; hidden files and
folders (names starting with ".") are ignored, as is everything with another extension.
Links are followed, but each folder is listed once (a link to a folder already listed, e.g. a
symlink loop, is skipped, by device and inode) and each file counted once (by resolved path); a
link to a file that never resolves (a loop of links: a.png -> b.png -> a.png) is skipped too;
how many were skipped, and why, is logged. Every role lists its folder this way (samples made
elsewhere, reference data, grids).
Order: sorted by relative POSIX path, so item i is the same file on every machine. With
`n`, the first n files in that order are used.

Conversion (see `bench.data.images`): palette/LA/RGBA -> RGB with PIL `.convert("RGB")`
(alpha dropped, as torch-fidelity and clean-fid do); grayscale L -> replicated to 3
channels; 16-bit (I;16, I) -> 8 bit by `>> 8` (PIL's own conversion clips). Size: images at
the resolution pass through bit-exact; any other is center-cropped to a square and resized
with PIL bicubic (antialiased when downsampling).

Unreadable files, and images of more than `max_pixels` pixels (data.max_pixels, refused from
the header before decoding): with on_bad_file="error" the first one raises `BadImageError` naming it;
with "skip" they are left out of the batches, listed in `source.skipped` and counted in a
warning. `len(source)` counts the image files found, readable or not.

Captions (optional): a .csv with columns `file` (path relative to the folder, or a bare
file name when names are unique) and `caption`; or a .txt with one caption per line in the
sorted file order (blank lines skipped; the count must equal the number of files).
"""
from __future__ import annotations

import csv
import errno
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.base import ImageSource
from bench.data.images import DEFAULT_MAX_PIXELS, DataError, decode_file
from bench.data.prompts import load_prompts

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
BAD_FILE_HINT = "Remove or replace the file, or set data.on_bad_file=skip to leave unreadable files out"


@dataclass
class ImageListing:
    """The image files under a folder, and what the search left out so as not to count twice."""
    files: list[str]                                           # relative POSIX paths, sorted
    repeated_folders: list[str] = field(default_factory=list)  # links to folders already listed
    repeated_files: list[str] = field(default_factory=list)    # second paths to files already counted
    looped_links: list[str] = field(default_factory=list)      # links to files that loop, never reaching one

    def describe_skipped(self, root: Path) -> str | None:
        """A sentence for the log, or None when nothing was skipped."""
        parts = []
        if self.repeated_folders:
            parts.append(f"{len(self.repeated_folders)} link(s) to folders already listed (a symlink loop or a second "
                         f"path to the same folder; e.g. {self.repeated_folders[0]})")
        if self.repeated_files:
            parts.append(f"{len(self.repeated_files)} file(s) already counted under another path (links to the same "
                         f"file; e.g. {self.repeated_files[0]})")
        if self.looped_links:
            parts.append(f"{len(self.looped_links)} link(s) that loop and reach no file (e.g. {self.looped_links[0]}; "
                         "remove or fix the link)")
        if not parts:
            return None
        return (f"image folder {root}: skipped {' and '.join(parts)}; each image is counted once, "
                f"{len(self.files)} in all")


def scan_images(root: Path) -> ImageListing:
    """The image files under root, following links but listing each folder once (by device and
    inode, so a symlink loop ends) and counting each file once (by resolved path). A folder's or
    file's own path is preferred to a link's; among links the walk is sorted, so what is kept is
    the same on every machine."""
    root = Path(root)
    real_paths, real_ids = set(), set()          # the folders reached without following a link
    for folder, dirs, _ in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        real_paths.add(Path(folder))
        real_ids.add(_identity(Path(folder)))
    listing, candidates, seen = ImageListing([]), [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        kept = []
        for name in sorted(d for d in dirs if not d.startswith(".")):
            path = Path(folder, name)
            if path not in real_paths:           # a link to a folder, or a folder below one
                identity = _identity(path)
                if identity is not None and (identity in real_ids or identity in seen):
                    listing.repeated_folders.append(path.relative_to(root).as_posix())
                    continue
                seen.add(identity)
            kept.append(name)
        dirs[:] = kept
        candidates += [Path(folder, name).relative_to(root).as_posix() for name in files
                       if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)]
    counted: set[str] = set()
    for rel in sorted(candidates, key=lambda rel: (os.path.islink(root / rel), rel)):   # real files first
        if _loops(root / rel):   # realpath does not fail on a loop; stat, open and decode would (ELOOP)
            listing.looped_links.append(rel)
            continue
        resolved = os.path.realpath(root / rel)
        if resolved in counted:
            listing.repeated_files.append(rel)
            continue
        counted.add(resolved)
        listing.files.append(rel)
    listing.files.sort()
    listing.repeated_folders.sort()
    listing.repeated_files.sort()
    listing.looped_links.sort()
    return listing


def _loops(path: Path) -> bool:
    """A link whose chain of links never reaches a file (ELOOP)."""
    if not os.path.islink(path):
        return False
    try:
        os.stat(path)
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


def _identity(path: Path) -> tuple[int, int] | None:
    """A folder's (device, inode), following links; None when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def list_images(root: Path) -> list[str]:
    """Relative POSIX paths of the image files under root, sorted, each file once (`scan_images`);
    logs what was skipped."""
    listing = scan_images(root)
    skipped = listing.describe_skipped(Path(root))
    if skipped:
        log.warning(skipped)
    return listing.files


def load_captions(path: Path, files: list[str], used: int | None = None) -> list[str]:
    """Captions of files[:used], from a .csv (file,caption) or a .txt (one line per file of
    `files`, in order)."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = load_prompts(path)
        if len(lines) != len(files):
            raise DataError(f"captions file {path} has {len(lines)} non-blank lines but the folder has "
                            f"{len(files)} images; give one caption per image, in sorted file order")
        return lines[:used]
    files = files[:used]
    if suffix != ".csv":
        raise DataError(f"captions file {path}: unsupported extension {path.suffix!r}; use .csv "
                        "(columns file,caption) or .txt (one caption per line)")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"file", "caption"} <= set(reader.fieldnames or []):
            raise DataError(f"captions file {path} needs columns 'file' and 'caption'; found {reader.fieldnames}")
        table = {row["file"].strip().replace("\\", "/"): row["caption"] or "" for row in reader}
    basenames = [f.rsplit("/", 1)[-1] for f in files]
    unique_basenames = len(set(basenames)) == len(basenames)
    captions, missing = [], []
    for rel, base in zip(files, basenames):
        caption = table.get(rel, table.get(base) if unique_basenames else None)
        if caption is None:
            missing.append(rel)
        captions.append((caption or "").strip())
    if missing:
        raise DataError(f"captions file {path} has no row for {len(missing)} image(s), e.g. {missing[:3]}; "
                        "add rows (file = path relative to the data folder) or remove those images")
    return captions


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FolderSource(ImageSource):
    name = "folder"

    def __init__(self, root: str | Path, resolution: int, n: int | None = None,
                 captions: str | Path | None = None, on_bad_file: str = "error",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        super().__init__()
        if on_bad_file not in ("error", "skip"):
            raise ValueError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise FileNotFoundError(f"image folder {self.root} does not exist; set data.root to a folder of images")
        if not self.root.is_dir():
            raise DataError(f"data.root {self.root} is a file, not a folder; "
                            "for an .npz of samples use data.name=npz")
        files = list_images(self.root)
        if not files:
            raise DataError(f"image folder {self.root} contains no images ({', '.join(IMAGE_EXTENSIONS)}, "
                            "searched recursively); check data.root")
        if n is not None and n < len(files):
            log.info("folder %s: using the first %d of %d images (data.n)", self.root, n, len(files))
        self.files = files[:n]
        self.captions_path = self._find_captions(captions) if captions else None
        self.captions = load_captions(self.captions_path, files, len(self.files)) if self.captions_path else None
        self.has_captions = self.captions is not None
        self.resolution = resolution
        self.skip_bad_files = on_bad_file == "skip"
        self.max_pixels = int(max_pixels)

    def _find_captions(self, captions: str | Path) -> Path:
        path = Path(captions).expanduser()
        if not path.is_file() and not path.is_absolute() and (self.root / path).is_file():
            path = self.root / path   # a relative captions path may be relative to the folder
        if not path.is_file():
            raise FileNotFoundError(f"captions file {captions} does not exist (looked in the working directory "
                                    f"and in {self.root}); set data.captions or leave it null")
        return path

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> Path:
        return self.root / self.files[index]

    def load_image(self, index: int) -> np.ndarray:
        return decode_file(self.path(index), self.resolution, BAD_FILE_HINT, self.max_pixels)

    def caption(self, index: int) -> str | None:
        return self.captions[index] if self.captions is not None else None

    def fingerprint_fields(self) -> dict[str, Any]:
        listing = hashlib.sha256()
        for rel in self.files:
            try:
                stat = (self.root / rel).stat()
                listing.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except OSError as err:   # a dangling link: its reading names it (or skips it), not the fingerprint
                listing.update(f"{rel}\0unreadable {err.errno}\n".encode())
        return {"files": listing.hexdigest(), "on_bad_file": "skip" if self.skip_bad_files else "error",
                **({"max_pixels": self.max_pixels} if self.max_pixels != DEFAULT_MAX_PIXELS else {}),
                "captions": _file_sha256(self.captions_path) if self.captions_path else None}
