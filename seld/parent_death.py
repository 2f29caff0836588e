"""Worker processes that end with the process that started them."""

from __future__ import annotations

import ctypes
import signal


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent ends, however it ends (kill -9 included),
    instead of working on, orphaned, for a run nobody waits for. Elsewhere nothing."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
