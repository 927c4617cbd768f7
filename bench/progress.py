"""Progress bars (tqdm) that a quiet run (CI) switches off in one place."""
from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm


def progress(*, disable: bool = False, **kwargs: Any) -> tqdm:
    quiet_env = os.environ.get("DIFFBENCH_QUIET", "") not in ("", "0")
    return tqdm(disable=disable or quiet_env, file=sys.stderr, dynamic_ncols=True, leave=False, **kwargs)
