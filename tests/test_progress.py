"""Progress in logs: a whole line per ~10% (never `\\r`-joined redraws); a terminal keeps tqdm's bar."""
from __future__ import annotations

import io

import pytest

from bench.progress import LineProgress, progress


@pytest.fixture(autouse=True)
def loud(monkeypatch):
    monkeypatch.delenv("DIFFBENCH_QUIET", raising=False)


def test_a_log_gets_one_line_per_tenth_and_the_final_count() -> None:
    log = io.StringIO()
    bar = progress(total=10_000, desc="sample pixel", unit="img", file=log)
    for _ in range(2_000):
        bar.update(5)
        bar.set_postfix(loss="0.1")
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and isinstance(bar, LineProgress)
    assert len(lines) == 11 and all(len(line) < 120 for line in lines)        # 0%, 10%, ..., 100%
    assert lines[0].startswith("sample pixel:   0% 0/10000") and "100% 10000/10000" in lines[-1]


def test_an_unknown_total_or_an_early_close_still_ends_with_the_count() -> None:
    log = io.StringIO()
    bar = progress(desc="decoding", file=log)
    bar.update(7)
    bar.close()
    assert log.getvalue().splitlines()[-1].startswith("decoding: 7")
    log = io.StringIO()
    bar = progress(total=100, desc="cut", file=log)
    bar.update(55)
    bar.close()
    assert log.getvalue().splitlines()[-1].startswith("cut:  55% 55/100")


def test_quiet_writes_nothing_and_a_terminal_keeps_the_redrawn_bar(monkeypatch) -> None:
    log = io.StringIO()
    bar = progress(total=10, file=log, disable=True)
    bar.update(10)
    bar.close()
    assert log.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True
    assert not isinstance(progress(total=10, file=Terminal()), LineProgress)
