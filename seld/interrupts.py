"""How seld's processes end: SIGTERM as Ctrl-C, and workers with the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from contextlib import contextmanager


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent ends, however it ends (kill -9 included),
    instead of working on, orphaned, for a run nobody waits for. Elsewhere nothing."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextmanager
def sigterm_interrupts(signals: tuple[int, ...] = (signal.SIGTERM,)):
    """SIGTERM (systemd, docker, `timeout`), and whatever else `signals` names, stops a command as
    Ctrl-C does: it unwinds, so temporary files and folders go and child processes are stopped.
    Main thread only (signals are delivered there). A signal ignored already stays ignored (`nohup`).
    A process forked inside (a worker pool) gets its default back on the signal: it dies with the
    parent that `die_with_parent` tells it of, instead of unwinding into its pool's next task."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def interrupt(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt

    caught = [number for number in signals if signal.getsignal(number) is not signal.SIG_IGN]
    previous = [signal.signal(number, interrupt) for number in caught]
    try:
        yield
    finally:
        for number, handler in zip(caught, previous):
            signal.signal(number, handler)
