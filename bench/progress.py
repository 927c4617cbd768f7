"""Progress bars (tqdm) that a quiet run (CI) switches off in one place.

On a terminal: tqdm's redrawn bar. Anywhere else (a CI log, `2> run.log`, a Slurm output
file) a redrawn bar becomes one line of `\\r`-joined updates thousands of characters long, so
there `LineProgress` writes a whole line each time another ~10% is done (and at the end); with
no known total, a line every `LINE_INTERVAL_S` seconds.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from tqdm.auto import tqdm
from tqdm.std import tqdm as plain_tqdm

LINE_STEPS = 10            # non-TTY: a line per 1/LINE_STEPS of the total
LINE_INTERVAL_S = 30.0     # non-TTY, unknown total: a line this often
LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class LineProgress(plain_tqdm):
    """tqdm for logs: newline-terminated lines at every ~10% of the total, never `\\r`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._last_step = -1
        self._last_line_n = -1
        self._last_line_t = 0.0
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None:           # tqdm clearing its line: nothing to clear in a log
            return False
        if self.total:
            step = int(LINE_STEPS * self.n / self.total)
            due = step > self._last_step
        else:
            due = time.monotonic() - self._last_line_t >= LINE_INTERVAL_S
        if due:
            self._line()
        return True

    def _line(self) -> None:
        if self.total:
            self._last_step = int(LINE_STEPS * self.n / self.total)
        self._last_line_n, self._last_line_t = self.n, time.monotonic()
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()

    def close(self) -> None:
        if not self.disable and self.n != self._last_line_n:
            self._line()              # the final count, once
        super().close()

    def clear(self, nolock: bool = False) -> None:
        pass

    def moveto(self, n: int) -> None:
        pass


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress(*, disable: bool = False, file: TextIO | None = None, **kwargs: Any) -> tqdm:
    quiet_env = os.environ.get("DIFFBENCH_QUIET", "") not in ("", "0")
    stream = file or sys.stderr
    if is_terminal(stream):
        return tqdm(disable=disable or quiet_env, file=stream, dynamic_ncols=True, leave=False, **kwargs)
    if kwargs.get("total"):
        kwargs.setdefault("bar_format", LINE_FORMAT)
    return LineProgress(disable=disable or quiet_env, file=stream, mininterval=0, leave=False, **kwargs)
