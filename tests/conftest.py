"""Shared test settings: CPU-only, offline, slow and GPU tests skipped unless asked for."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFBENCH_QUIET", "1")
# Hermetic: every weight comes from the project's own files, its packages or the registry, as on
# a fresh machine; a folder the user keeps in $DIFFBENCH_WEIGHTS must not change what is tested.
os.environ.pop("DIFFBENCH_WEIGHTS", None)
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference-statistics caches and converted weights go to a per-session temp dir, never the
    user's home (the Inception conversion then runs once per session)."""
    cache = tmp_path_factory.getbasetemp() / "diffbench-cache"
    monkeypatch.setenv("DIFFBENCH_CACHE", str(cache))


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP's
    spinning threads made them many times slower. Use with pytest.mark.usefixtures."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_stale_log_handlers():
    """An in-process `python -m bench` (Hydra) leaves its console and file handlers on the root
    logger, the console one bound to the stream pytest captured for that test. Once that stream is
    closed, a later test's log line would print "--- Logging error ---" and a traceback."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) in (logging.StreamHandler, logging.FileHandler):   # pytest's own are subclasses
            root.removeHandler(handler)
            if type(handler) is logging.FileHandler:
                handler.close()
