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
    A process forked inside (a worker pool) dies of the signal instead of unwinding into its pool's
    next task (living on, orphaned, when `die_with_parent` told it of its parent's death); the
    deaths of workers are no error once the command stops (a DataLoader's workers die of the
    group's SIGTERM: its SIGCHLD handler raised 'worker killed by signal' over the interrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def interrupt(signum, frame):
        if os.getpid() != owner:  # a worker forked under it
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        elif _state["depth"]:
            _defer(signum, frame)
        else:
            _stopping()
            raise KeyboardInterrupt

    caught = [number for number in signals if signal.getsignal(number) is not signal.SIG_IGN]
    previous = [signal.signal(number, interrupt) for number in caught]
    try:
        yield
    finally:
        for number, handler in zip(caught, previous):
            signal.signal(number, handler)
        # A command that stopped keeps SIGCHLD quiet to its end (see _stopping).
        _state["pending"] = False


_state: dict = {"depth": 0, "pending": False}  # depth of interrupts_deferred blocks; a signal came in one


def _stopping() -> None:
    """The command stops: its workers may die of the same signal, which is no error now, to the
    command's end (a DataLoader's SIGCHLD handler, restored as the command unwound, raised 'worker
    killed by signal' while the interpreter exited). A handler that does nothing, not SIG_DFL:
    Python reports a signal already pending whose handler became SIG_DFL ('Signal 17 ignored due
    to race condition')."""
    if hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, _workers_ended)


def _workers_ended(signum, frame) -> None:
    pass


def _defer(signum, frame) -> None:
    _stopping()
    _state["pending"] = True


@contextmanager
def interrupts_deferred():
    """A signal that comes inside this block (SIGTERM under sigterm_interrupts, or Ctrl-C) interrupts
    at its end. For code an exception must not land in: forking workers (Python prints and drops an
    exception raised in logging's at-fork hook, and the signal is lost), or an object half made (a
    DataLoader iterator whose __del__ then fails on the attributes it never got)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _defer) if main and _state["depth"] == 0 else None
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        pending = _state["depth"] == 0 and _state["pending"]
        if _state["depth"] == 0:
            _state["pending"] = False
    if pending:  # (an exception on its way out of the block has it stop already)
        raise KeyboardInterrupt
