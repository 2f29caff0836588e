"""How seld's processes end: SIGTERM as Ctrl-C, and workers with the process that started them."""

from __future__ import annotations

import ctypes
import signal
from contextlib import contextmanager


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent ends, however it ends (kill -9 included),
    instead of working on, orphaned, for a run nobody waits for. Elsewhere nothing."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextmanager
def sigterm_interrupts():
    """SIGTERM (systemd, docker, `timeout`) stops a command as Ctrl-C does: it unwinds, so temporary
    files and folders go and child processes are stopped."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
