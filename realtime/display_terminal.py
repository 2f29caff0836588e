"""Text displays of the live demo: a view updated in place on a terminal (one line per
change when the output is not a terminal), and JSON lines for other programs."""

from __future__ import annotations

import collections
import json
import logging
import shutil
import sys
import time
from typing import TextIO

# At most twenty redraws a second: every label frame is drawn (at 0.1 the frames' jitter skipped
# every other one), a burst after a stall is not.
REDRAW_S = 0.05


def format_event(event: dict) -> str:
    text = f"{event['class_name']:<22} az {event['azimuth']:7.1f}°  el {event['elevation']:6.1f}°"
    if event.get("distance_m") is not None:
        text += f"  {event['distance_m']:5.2f} m"
    return text + f"  conf {event['confidence']:.2f}  track {event['track']}"


def format_stats(stats: dict) -> str:
    def ms(key):
        return "-" if stats.get(key) is None else f"{stats[key]:.1f} ms"

    return (f"latency {ms('latency_ms')} (p50 {ms('latency_p50_ms')}, p99 {ms('latency_p99_ms')})  "
            f"overflows {stats['overflows']}  provider {stats['provider']}")


class _Messages(logging.Handler):
    """Log records kept for the view while it owns the terminal."""

    def __init__(self, lines: collections.deque):
        super().__init__(logging.INFO)
        self.lines = lines
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class TerminalView:
    """Active events and stats, redrawn in place on a terminal. Log messages are shown
    inside the view while it runs (printed below it they would break the redraw)."""

    def __init__(self, model_name: str, class_names: list[str], out: TextIO | None = None):
        self.out = out or sys.stdout
        self.model_name = model_name
        self.tty = self.out.isatty()
        self.drawn_lines = 0
        self.last_draw = 0.0
        self.time_s = 0.0
        self.events: list[dict] = []
        self.last_classes: tuple | None = None
        self.messages: collections.deque[str] = collections.deque(maxlen=4)
        self.handler = None
        self.saved_handlers: list[logging.Handler] = []
        if self.tty:
            root = logging.getLogger()
            self.saved_handlers = [h for h in root.handlers
                                   if getattr(h, "stream", None) in (sys.stderr, sys.stdout)]
            for handler in self.saved_handlers:
                root.removeHandler(handler)
            self.handler = _Messages(self.messages)
            root.addHandler(self.handler)

    def frame(self, frame: dict, stats: dict) -> None:
        self.time_s = frame["time_s"]
        self.events = frame["events"]
        if self.tty:
            if time.monotonic() - self.last_draw >= REDRAW_S:
                self._draw(stats)
        else:
            classes = tuple(sorted((e["class_name"], e["track"]) for e in self.events))
            if classes != self.last_classes:
                self.last_classes = classes
                described = "; ".join(format_event(e) for e in self.events) or "silence"
                print(f"{self.time_s:8.1f} s  {described}", file=self.out, flush=True)

    def idle(self, stats: dict) -> None:
        if self.tty and time.monotonic() - self.last_draw >= 0.5:
            self._draw(stats)

    def _draw(self, stats: dict) -> None:
        width, height = shutil.get_terminal_size((100, 24))
        lines = [f"seld live — {self.model_name} — {stats['source']} — {self.time_s:.1f} s"
                 + ("  (no audio)" if stats.get("stalled") else "")]
        # The view must fit the screen: the cursor cannot move up past its top.
        room = max(1, height - 3 - len(self.messages))
        shown = self.events if len(self.events) <= room else self.events[: room - 1]
        lines += [f"  {format_event(e)}" for e in shown] or ["  (no active events)"]
        if len(shown) < len(self.events):
            lines.append(f"  … {len(self.events) - len(shown)} more")
        lines.append(f"  {format_stats(stats)}")
        lines += [f"  {message}" for message in self.messages]
        text = "".join(f"{line[: width - 1]}\x1b[K\n" for line in lines)
        up = f"\x1b[{self.drawn_lines}F\x1b[J" if self.drawn_lines else ""
        self.out.write(up + text)
        self.out.flush()
        self.drawn_lines = len(lines)
        self.last_draw = time.monotonic()

    def close(self, stats: dict) -> None:
        if self.tty:
            self._draw(stats)
            root = logging.getLogger()
            root.removeHandler(self.handler)
            for handler in self.saved_handlers:
                root.addHandler(handler)


class JsonLines:
    """One frame object (README, Outputs) per label frame on stdout, flushed, for piping."""

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout

    def frame(self, frame: dict, stats: dict) -> None:
        self.out.write(json.dumps(frame, separators=(",", ":")) + "\n")
        self.out.flush()

    def idle(self, stats: dict) -> None:
        pass

    def close(self, stats: dict) -> None:
        pass
