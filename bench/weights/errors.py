"""What can go wrong with a weight: it is nowhere to be found, or its bytes are not the pinned ones."""
from __future__ import annotations


class WeightsError(Exception):
    """A weights problem the user fixes (printed without a traceback by `python -m bench`)."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """No copy of a named weights file could be found or made; the message says where we looked."""


class WeightsIntegrityError(WeightsError, ValueError):
    """A file with a pinned name whose sha256 is not the pinned one (corrupt, truncated, substituted)."""
