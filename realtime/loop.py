"""The engine thread: blocks from the capture queue -> record -> resample -> streaming
session -> label frames, timestamped, handed to the displays, which run in a thread of
their own (`DisplayFeed`): a display that blocks never holds up the audio.

Latency is measured from the arrival of the block that holds a label frame's last
sample (the audio callback's clock) to the moment the streaming session has emitted
that frame, so it covers queueing, resampling (its filter waits for a few samples
after the frame) and inference, the whole delay the program adds.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from typing import Protocol

import numpy as np

from seld.audio import StreamingResampler
from seld.realtime.capture import BlockQueue

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often an idle engine thread looks up (stall warnings, display ticks)
STALL_S = 2.0  # no audio for this long is reported
FEED_FRAMES = 50  # frames a display may lag behind (5 s) before it loses the oldest
CLOSE_DISPLAYS_S = 5.0  # a display that has not shown its last frames and closed by then is left
PERCENTILES_EVERY_S = 1.0  # latency percentiles are refreshed this often (a sort of up to 36,000 values)


class Display(Protocol):
    def frame(self, frame: dict, stats: dict) -> None: ...
    def idle(self, stats: dict) -> None: ...
    def close(self, stats: dict) -> None: ...


class Latencies:
    """The latest latencies (seconds) in a fixed ring, so a long run's memory stays flat."""

    def __init__(self, capacity: int = 36_000):  # one hour of 100 ms frames
        self.values = np.zeros(capacity, np.float64)
        self.count = 0
        self.last: float | None = None

    def add(self, seconds: float) -> None:
        self.values[self.count % len(self.values)] = seconds
        self.count += 1
        self.last = seconds

    @property
    def kept(self) -> int:
        """How many of the latest latencies the ring holds (the percentiles are over these)."""
        return min(self.count, len(self.values))

    def percentiles(self, *qs: float) -> list[float | None]:
        if self.count == 0:
            return [None] * len(qs)
        return [float(value) for value in np.percentile(self.values[: self.kept], qs)]


class DisplayFeed:
    """One display, run in a thread of its own. The engine thread hands each frame over and
    never waits for the display (a terminal nobody reads, a --json pipe nobody drains), so
    neither audio nor the other displays wait for it. A display `capacity` frames behind loses
    the oldest (counted in `dropped_frames`). The first error it raises (a closed --json pipe)
    is kept in `error` for the engine thread, and it is shown nothing more."""

    def __init__(self, display: Display, capacity: int = FEED_FRAMES):
        self.display = display
        self.capacity = capacity
        self.items: collections.deque[tuple[dict | None, dict]] = collections.deque()  # (frame or None: idle, stats)
        self.condition = threading.Condition()
        self.dropped_frames = 0
        self.error: BaseException | None = None
        self.final_stats: dict | None = None  # set by close
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"seld-display-{type(display).__name__}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def frame(self, frame: dict, stats: dict) -> None:
        with self.condition:
            if len(self.items) >= self.capacity:
                self.items.popleft()
                self.dropped_frames += 1
            self.items.append((frame, stats))
            self.condition.notify()

    def idle(self, stats: dict) -> None:
        with self.condition:
            if not self.items:  # a tick matters only when nothing else is coming
                self.items.append((None, stats))
                self.condition.notify()

    def close(self, stats: dict, timeout: float = CLOSE_DISPLAYS_S) -> bool:
        """The frames still queued, then the display's close; False when that took over `timeout`."""
        with self.condition:
            self.final_stats = stats
            self.condition.notify()
        if self.thread.ident is None:  # never started (the run failed first): close them here
            self._run()
        return self.closed.wait(timeout)

    def _run(self) -> None:
        while True:
            with self.condition:
                while not self.items and self.final_stats is None:
                    self.condition.wait()
                if not self.items:
                    break
                frame, stats = self.items.popleft()
            if self.error is None:
                try:
                    if frame is None:
                        self.display.idle(stats)
                    else:
                        self.display.frame(frame, stats)
                except Exception as error:  # noqa: BLE001 (handed to the engine thread)
                    self.error = error
        try:
            self.display.close(self.final_stats or {})
        except BrokenPipeError:
            pass
        except Exception as error:  # noqa: BLE001
            self.error = self.error or error
        self.closed.set()


class LiveLoop:
    """Runs `engine.stream()` on the blocks of `blocks` in a thread of its own."""

    def __init__(self, engine, source, blocks: BlockQueue, displays: list[Display], recorder=None):
        self.engine = engine
        self.source = source
        self.blocks = blocks
        self.feeds = [DisplayFeed(display) for display in displays]
        self.recorder = recorder
        self.stream = engine.stream()
        self.label_hop = int(getattr(engine, "label_hop", round(engine.sample_rate * 0.1)))
        channels = len(source.channels)
        self.resampler = (None if source.rate == engine.sample_rate
                          else StreamingResampler(source.rate, engine.sample_rate, channels))
        self.latencies = Latencies()
        self.percentiles: tuple[float, list] = (-math.inf, [None, None])  # (when computed, [p50, p99])
        self.frames = 0
        self.input_samples = 0  # at the source's rate
        self.pending: collections.deque[tuple[int, float]] = collections.deque()  # (input end, arrival)
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.last_arrival = self.started
        self.stalled = False
        self.cut_short = False  # set when the run is stopped: the last partial frame is left out
        self.reported_overflows = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="seld-engine", daemon=True)

    def start(self) -> None:
        self.started = self.last_arrival = time.monotonic()
        for feed in self.feeds:
            feed.start()
        self.thread.start()

    def close_displays(self, ending: str | None = None) -> bool:
        """After the engine thread: the displays show their last frames and close, all within
        CLOSE_DISPLAYS_S (see DisplayFeed); False when one did not. `ending` (why the run ended)
        goes to them in the final stats."""
        stats = {**self.stats(final=True), **({"ending": ending} if ending else {})}
        deadline = time.monotonic() + CLOSE_DISPLAYS_S
        closed = [feed.close(stats, 0.0) for feed in self.feeds]  # all asked first: they close side by side
        return all(done or feed.closed.wait(max(0.0, deadline - time.monotonic()))
                   for done, feed in zip(closed, self.feeds))

    def display_error(self) -> BaseException | None:
        """The first error a display raised (showing frames or closing), once they are closed."""
        return next((feed.error for feed in self.feeds if feed.error is not None), None)

    def _hand_over(self, frame: dict | None, stats: dict) -> None:
        for feed in self.feeds:
            if frame is None:
                feed.idle(stats)
            else:
                feed.frame(frame, stats)
            if feed.error is not None:
                raise feed.error

    # An Event, not Thread.join: in Python 3.11 a KeyboardInterrupt that lands inside
    # Thread.join can leave a running thread marked as stopped (the bpo-45274 handling
    # releases the thread's own lock), and the process would then exit under it.
    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to finish; True once it has."""
        return self.done.wait(timeout)

    def is_alive(self) -> bool:
        return not self.done.is_set()

    def stats(self, final: bool = False) -> dict:
        """Counters and latencies; the percentiles at most PERCENTILES_EVERY_S old (fresh if `final`)."""
        def ms(value):
            return None if value is None else round(value * 1000, 2)

        now = time.monotonic()
        if final or now - self.percentiles[0] >= PERCENTILES_EVERY_S:
            self.percentiles = (now, self.latencies.percentiles(50, 99))
        p50, p99 = self.percentiles[1]
        return {
            "frames": self.frames,
            "latency_ms": ms(self.latencies.last),
            "latency_p50_ms": ms(p50),
            "latency_p99_ms": ms(p99),
            "latency_frames": self.latencies.kept,
            "overflows": self.blocks.overflows,
            "input_overflows": self.blocks.input_overflows,
            "dropped_blocks": self.blocks.dropped_blocks,
            "display_dropped_frames": max((feed.dropped_frames for feed in self.feeds), default=0),
            "provider": ", ".join(getattr(self.engine, "providers", []) or ["?"]),
            "source": self.source.name,
            "source_rate": self.source.rate,
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "stalled": self.stalled,
        }

    # ------------------------------------------------------------ engine thread

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self.blocks.get(timeout=POLL_S)
                except EOFError:
                    break
                if item is None:
                    self._idle()
                    continue
                self._block(*item)
            self._finish()
        except BaseException as error:  # handed to the main thread, which ends cleanly
            self.error = error
        finally:
            self.done.set()

    def _block(self, block: np.ndarray, arrival: float) -> None:
        self.last_arrival = arrival
        if self.stalled:
            self.stalled = False
            log.info("%s: audio resumed", self.source.name)
        if self.recorder is not None:
            self.recorder.write(block)
        self.input_samples += block.shape[1]
        self.pending.append((self.input_samples, arrival))
        audio = block if self.resampler is None else self.resampler.push(block)
        frames = self.stream.push(audio)
        if frames:
            self._emit(frames, time.monotonic())
        if self.blocks.overflows != self.reported_overflows:
            self._report_overflows()

    def _emit(self, frames, now: float | None) -> None:
        for frame in frames:
            if now is not None:
                self.latencies.add(now - self._arrival_of(frame.frame))
            self.frames += 1
            self._hand_over(frame.to_json(), self.stats())

    def _arrival_of(self, frame: int) -> float:
        """Arrival time of the block that holds label frame `frame`'s last sample."""
        last_model_sample = (frame + 1) * self.label_hop
        needed = math.ceil(last_model_sample * self.source.rate / self.engine.sample_rate)
        while len(self.pending) > 1 and self.pending[0][0] < needed:
            self.pending.popleft()
        return self.pending[0][1]

    def _idle(self) -> None:
        silent = time.monotonic() - self.last_arrival
        if silent > STALL_S and not self.stalled:
            self.stalled = True
            log.warning("%s: no audio for %.0f s", self.source.name, silent)
        self._hand_over(None, self.stats())

    def _report_overflows(self) -> None:
        if self.reported_overflows == 0:
            log.warning("%s: input overflow (audio was lost; counted in the stats)", self.source.name)
        self.reported_overflows = self.blocks.overflows

    def _finish(self) -> None:
        """End of input: the resampler's tail and the stream's last partial frame; none of them when
        the run was stopped (`cut_short`): the zeros padding that frame would show as silence."""
        if self.cut_short:
            return
        if self.resampler is not None:
            tail = self.resampler.flush()
            if tail.shape[1]:
                frames = self.stream.push(tail)
                if frames:
                    self._emit(frames, None)
        frames = self.stream.flush()
        if frames:
            self._emit(frames, None)
