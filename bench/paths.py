"""Where the project keeps what it makes outside a run directory (reference statistics,
imported or converted weights): `$DIFFBENCH_CACHE`, default `~/.cache/diffbench`."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DIFFBENCH_CACHE"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/diffbench").expanduser()
