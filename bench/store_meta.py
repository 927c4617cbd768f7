"""A sample store's description (bench.store): store.json, what its samples were made for (the
key: pipeline, request, sampling details, ...), its format and shard size. Read and checked here
(a store.json that is not a store description is refused as damaged), and, where a store was made
for other samples than asked for, the differing settings named in one line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from bench.store_files import StoreError

FORMAT = "diffbench-samples/1"
META_NAME = "store.json"


def canonical_key(key: Mapping[str, Any]) -> dict[str, Any]:
    """The key as JSON sees it (tuples -> lists, non-JSON values -> str), so equal keys compare equal."""
    return json.loads(json.dumps(dict(key), sort_keys=True, default=str))


def read_meta(root: Path) -> dict[str, Any] | None:
    """root/store.json, checked to be a store description; None where there is none."""
    path = root / META_NAME
    if not path.exists():
        return None
    again = (f"what the samples beside it were made for is unknown: move {root} aside (or delete it) and rerun, "
             "and they are made again")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: damaged, not valid JSON ({err}); {again}") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("key"), dict) and type(meta.get("shard_size")) is int
            and meta["shard_size"] >= 1):
        found = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise StoreError(f"{path}: damaged, not a sample store description (needs format, key and shard_size; "
                         f"found {found}); {again}")
    return meta


def differences(stored: Mapping[str, Any], wanted: Mapping[str, Any], most: int = 6) -> str:
    """The first `most` settings (flattened keys, `format` aside) that differ between two store
    descriptions, each with both values, in one line (issue 26: it was a 1.9 kB JSON dump)."""
    a, b = _flat(stored), _flat(wanted)
    differing = sorted(k for k in set(a) | set(b) if k != "format" and a.get(k) != b.get(k))
    return "; ".join(f"{k}: {_brief(a.get(k))} stored, {_brief(b.get(k))} asked" for k in differing[:most])


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}


def _brief(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
