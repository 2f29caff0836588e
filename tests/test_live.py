"""The live demo without an audio device: the block queue, the recorder, the engine loop
on a recording played at real speed, the displays, the web view and the CLI's errors.
A stand-in engine (loudness per channel) keeps these tests independent of any model;
tests/test_live_pulse.py runs the real audio stack and the real engine."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile

from seld import SeldError
from seld.realtime.capture import BlockQueue, FileSource, Recorder, parse_channels, select_channels
from seld.realtime.display_terminal import JsonLines, TerminalView
from seld.realtime.live import run_live

RATE = 24_000


# --------------------------------------------------------------- stand-in engine


@dataclass
class LoudnessFrame:
    frame: int
    time_s: float
    events: list

    def to_json(self) -> dict:
        return {"frame": self.frame, "time_s": self.time_s, "events": self.events}


class LoudnessStream:
    """One label frame per 100 ms: a "tone" event while any channel is loud, with the
    loudest channel as its "azimuth" (channel k -> 90 k degrees) and every channel's RMS."""

    def __init__(self, engine):
        self.engine = engine
        self.buffer = np.zeros((engine.num_channels, 0), np.float32)
        self.next_frame = 0
        self.blocks = 0

    def push(self, block: np.ndarray) -> list:
        assert block.dtype == np.float32 and block.shape[0] == self.engine.num_channels
        if self.engine.fail_after is not None and self.blocks >= self.engine.fail_after:
            raise SeldError("stand-in engine: failing on purpose")
        self.blocks += 1
        self.buffer = np.concatenate([self.buffer, block], axis=1)
        frames = []
        while self.buffer.shape[1] >= self.engine.label_hop:
            chunk, self.buffer = self.buffer[:, : self.engine.label_hop], self.buffer[:, self.engine.label_hop :]
            frames.append(self._frame(chunk))
        return frames

    def flush(self) -> list:
        if self.buffer.shape[1] == 0:
            return []
        chunk = np.pad(self.buffer, ((0, 0), (0, self.engine.label_hop - self.buffer.shape[1])))
        self.buffer = self.buffer[:, :0]
        return [self._frame(chunk)]

    def _frame(self, chunk: np.ndarray) -> LoudnessFrame:
        rms = np.sqrt((chunk.astype(np.float64) ** 2).mean(axis=1))
        events = []
        if rms.max() > 0.05:
            events.append({"class": 0, "class_name": "tone", "track": 0, "azimuth": 90.0 * int(np.argmax(rms)),
                           "elevation": 0.0, "distance_m": None, "confidence": round(float(min(1.0, rms.max())), 3),
                           "rms": [round(float(value), 4) for value in rms]})
        frame = LoudnessFrame(self.next_frame, round(self.next_frame * 0.1, 6), events)
        self.next_frame += 1
        return frame


class LoudnessEngine:
    sample_rate = RATE
    num_channels = 4
    class_names = ["tone"]
    has_distance = False
    providers = ["StandInExecutionProvider"]
    label_hop = 2400
    name = "loudness stand-in"

    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after

    def stream(self) -> LoudnessStream:
        return LoudnessStream(self)


# `seld` itself, with the stand-in engine in place of a model: python -c STAND_IN live ...
STAND_IN = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_live import LoudnessEngine
import seld.realtime.live
seld.realtime.live.load_engine = lambda args: LoudnessEngine()
from seld.cli import cli
sys.exit(cli(sys.argv[1:]))
"""


class Collect:
    """A display that keeps every frame with the time it was handed over."""

    def __init__(self):
        self.frames: list[tuple[float, dict, dict]] = []
        self.closed: dict | None = None

    def frame(self, frame: dict, stats: dict) -> None:
        self.frames.append((time.monotonic(), frame, stats))

    def idle(self, stats: dict) -> None:
        pass

    def close(self, stats: dict) -> None:
        self.closed = stats


def tone_file(path, rate: int, channels: int, loud_channel: int, seconds: float = 1.5, onset_s: float = 0.5):
    samples = int(rate * seconds)
    audio = np.zeros((samples, channels), np.float32)
    t = np.arange(samples) / rate
    audio[int(rate * onset_s):, loud_channel] = 0.5 * np.sin(2 * np.pi * 440 * t[int(rate * onset_s):])
    audio[:, (loud_channel + 1) % channels] += 0.01  # a quiet marker, to see the channel order
    soundfile.write(path, audio, rate, subtype="FLOAT")
    return audio


# --------------------------------------------------------------------- capture


def test_block_queue_selects_channels_and_keeps_order():
    blocks = BlockQueue([2, 0], block_samples=4, capacity_blocks=3)
    source = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)  # [frames, device channels]
    blocks.put(source, 1.0)
    blocks.put(source + 100, 2.0)
    block, arrival = blocks.get(timeout=1)
    assert arrival == 1.0
    np.testing.assert_array_equal(block, source[:, [2, 0]].T)
    block, arrival = blocks.get(timeout=1)
    np.testing.assert_array_equal(block, (source + 100)[:, [2, 0]].T)
    assert blocks.get(timeout=0.01) is None
    blocks.put(source[:2], 3.0)
    blocks.close()
    block, _ = blocks.get(timeout=1)
    assert block.shape == (2, 2)
    with pytest.raises(EOFError):
        blocks.get(timeout=1)
    with pytest.raises(EOFError):
        blocks.get(timeout=1)


def test_block_queue_counts_what_it_drops_when_full_and_splits_long_blocks():
    blocks = BlockQueue([0], block_samples=10, capacity_blocks=2)
    for _ in range(5):
        blocks.put(np.ones((10, 1), np.float32), 0.0)
    assert (blocks.dropped_blocks, blocks.dropped_samples, blocks.overflows) == (3, 30, 3)
    blocks.get(timeout=1)
    blocks.get(timeout=1)
    blocks.put(np.ones((25, 1), np.float32), 0.0)  # longer than a slot: split, the rest dropped
    block, _ = blocks.get(timeout=1)  # the 30 samples dropped before it come back as silence
    np.testing.assert_array_equal(block, np.concatenate([np.zeros((1, 30)), np.ones((1, 10))], axis=1))
    assert blocks.dropped_blocks == 4
    np.testing.assert_array_equal(blocks.get(timeout=1)[0], np.ones((1, 10)))  # no loss just before it
    blocks.put(np.full((10, 1), 2.0, np.float32), 0.0)
    np.testing.assert_array_equal(blocks.get(timeout=1)[0], np.concatenate([np.zeros((1, 5)), np.full((1, 10), 2.0)], 1))
    for _ in range(4):  # the last two dropped: their 20 samples come back as silence before the end
        blocks.put(np.ones((10, 1), np.float32), 0.0)
    blocks.close()
    last = [blocks.get(timeout=1)[0] for _ in range(3)]
    assert [(block.shape[1], block.sum()) for block in last] == [(10, 10.0), (10, 10.0), (20, 0.0)]
    with pytest.raises(EOFError):
        blocks.get(timeout=1)


def test_block_queue_put_allocates_nothing_but_a_slot_number():
    channels, block_samples = 4, 480
    blocks = BlockQueue(list(range(channels)), block_samples, capacity_blocks=200)
    indata = np.random.default_rng(0).standard_normal((block_samples, 6)).astype(np.float32)
    blocks.put(indata, 0.0)  # warm up
    blocks.get(timeout=1)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(100):
            blocks.put(indata, 0.0)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < channels * block_samples * 4, f"put allocated {grown} bytes over 100 blocks"


def test_a_device_that_refuses_to_stop_is_closed_anyway():
    from seld.realtime.capture import DeviceSource

    calls = []

    class LostDevice:
        def abort(self):
            calls.append("abort")
            raise RuntimeError("Unanticipated host error")

        def close(self):
            calls.append("close")

    source = object.__new__(DeviceSource)
    source.name, source.stream = "usb array", LostDevice()
    source.stop()
    assert calls == ["abort", "close"] and source.stream is None


def test_parse_and_select_channels():
    assert parse_channels(None, 4) is None
    assert parse_channels("1,2,3,4", 4) == [0, 1, 2, 3]
    assert parse_channels("5, 6,7,8", 4) == [4, 5, 6, 7]
    for text, message in (("1,2,3", "names 3 channels"), ("0,1,2,3", "start at 1"),
                          ("1,1,2,3", "named twice"), ("a,b,c,d", "1-based")):
        with pytest.raises(SeldError, match=message):
            parse_channels(text, 4)
    assert select_channels(None, 6, 4, "dev") == [0, 1, 2, 3]
    assert select_channels([5, 4, 3, 2], 6, 4, "dev") == [5, 4, 3, 2]
    with pytest.raises(SeldError, match="dev: has 2 channels, the model's array needs 4"):
        select_channels(None, 2, 4, "dev")
    with pytest.raises(SeldError, match="asks for channel 7"):
        select_channels([6, 0, 1, 2], 6, 4, "dev")


def test_recorder_is_whole_or_nothing(tmp_path):
    path = tmp_path / "take.wav"
    recorder = Recorder(path, 48_000, 2)
    block = np.random.default_rng(1).standard_normal((2, 1000)).astype(np.float32)
    recorder.write(block)
    recorder.write(block * 0.5)
    assert not path.exists(), "the file must not appear before it is complete"
    assert recorder.close() == path
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    assert rate == 48_000
    np.testing.assert_array_equal(audio.T, np.concatenate([block, block * 0.5], axis=1))
    assert [p.name for p in tmp_path.iterdir()] == ["take.wav"]

    empty = Recorder(tmp_path / "empty.wav", 24_000, 4)
    assert empty.close() is None
    discarded = Recorder(tmp_path / "gone.wav", 24_000, 4)
    discarded.write(block[:1].repeat(4, axis=0))
    discarded.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.wav"]


def test_recorder_refuses_bad_paths(tmp_path):
    with pytest.raises(SeldError, match="does not exist"):
        Recorder(tmp_path / "missing" / "x.wav", RATE, 4)
    with pytest.raises(SeldError, match="is a folder"):
        Recorder(tmp_path, RATE, 4)
    with pytest.raises(SeldError, match="name it FILE.wav"):
        Recorder(tmp_path / "x.flac", RATE, 4)


# ------------------------------------------------------------------ the loop


def test_file_source_plays_at_real_speed_through_resampling_and_channel_selection(tmp_path):
    """A 48 kHz, 6-channel recording, channels 6,3,2,1 picked: the engine sees 24 kHz audio
    with device channel 3 (0-based 2) as its second channel, one frame per 100 ms, at the pace
    of the recording; the record file is the raw input of the picked channels."""
    path = tmp_path / "in.wav"
    audio = tone_file(path, 48_000, 6, loud_channel=2, seconds=1.5, onset_s=0.5)
    source = FileSource(path, 4, parse_channels("6,3,2,1", 4))
    collect = Collect()
    recorder = Recorder(tmp_path / "rec.wav", source.rate, 4)
    import scipy.signal  # noqa: F401  (the resampler's ~1 s first import is set-up, not pacing)

    started = time.monotonic()
    outcome = run_live(LoudnessEngine(), source, [collect], recorder)
    elapsed = time.monotonic() - started
    assert 1.4 < elapsed < 3.0, f"1.5 s of audio took {elapsed:.2f} s"
    assert outcome["failure"] is None and outcome["ending"].startswith("end of")
    frames = [frame for _, frame, _ in collect.frames]
    assert [f["frame"] for f in frames] == list(range(15))
    active = [f["frame"] for f in frames if f["events"]]
    assert active[0] == 5 and active[-1] == 14
    assert all(f["events"][0]["azimuth"] == 90.0 for f in frames if f["events"])  # model channel 1
    # Real speed: frame k is handed over about (k+1) * 100 ms after the start.
    times = np.array([t for t, _, _ in collect.frames[:-1]]) - started
    assert np.all(np.abs(times - 0.1 * (np.arange(len(times)) + 1)) < 0.15)
    stats = outcome["stats"]
    assert stats["overflows"] == 0 and stats["frames"] == 15
    assert stats["latency_p50_ms"] is not None and stats["latency_p99_ms"] < 200
    recorded, rate = soundfile.read(tmp_path / "rec.wav", dtype="float32", always_2d=True)
    assert rate == 48_000
    np.testing.assert_array_equal(recorded, audio[:, [5, 2, 1, 0]])
    assert collect.closed is not None


def test_interrupt_ends_cleanly_and_finalizes_the_recording(tmp_path):
    path = tmp_path / "long.wav"
    tone_file(path, RATE, 4, loud_channel=0, seconds=30)
    source = FileSource(path, 4, None)
    recorder = Recorder(tmp_path / "rec.wav", RATE, 4)
    timer = threading.Timer(0.65, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    collect = Collect()
    try:
        outcome = run_live(LoudnessEngine(), source, [collect], recorder)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 3
    assert outcome["ending"] == "stopped" and outcome["failure"] is None
    recorded, _ = soundfile.read(tmp_path / "rec.wav", always_2d=True)
    assert 0.4 * RATE < len(recorded) < 1.5 * RATE
    # Whole frames only: the one the stop cut, padded with zeros, showed silence mid-sound.
    assert len(collect.frames) == len(recorded) // 2400
    # The engine thread is really gone (the process must not exit under it), whatever
    # Thread.is_alive says after an interrupted join.
    deadline = time.monotonic() + 1
    while any(t.name == "seld-engine" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "seld-engine" for t in threading.enumerate())


@pytest.mark.parametrize("ending", ["SIGTERM", "SIGHUP"])  # SIGHUP: its terminal window closed
def test_sigterm_and_sighup_end_like_ctrl_c_and_keep_the_recording(tmp_path, ending):
    path = tmp_path / "long.wav"
    tone_file(path, RATE, 4, loud_channel=0, seconds=30)
    number = getattr(signal, ending)
    previous = signal.getsignal(number)
    recorder = Recorder(tmp_path / "rec.wav", RATE, 4)
    timer = threading.Timer(0.4, os.kill, (os.getpid(), number))
    timer.start()
    try:
        outcome = run_live(LoudnessEngine(), FileSource(path, 4, None), [Collect()], recorder)
    finally:
        timer.cancel()
    assert outcome["ending"] == "stopped" and outcome["recorded"] == tmp_path / "rec.wav"
    assert signal.getsignal(number) is previous
    assert 0.2 * RATE < soundfile.info(tmp_path / "rec.wav").frames < 2 * RATE


def test_a_signal_ignored_already_stays_ignored():
    """`nohup seld live ...`: SIGHUP ignored by nohup must not end the run when the terminal closes."""
    from seld.realtime.live import _ending_signals_as_interrupt

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with _ending_signals_as_interrupt():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_an_error_of_a_display_is_raised_after_the_wind_up(tmp_path):
    class FailsToClose(Collect):
        def close(self, stats: dict) -> None:
            raise ValueError("display failed on purpose")

    path = tmp_path / "in.wav"
    tone_file(path, RATE, 4, loud_channel=0, seconds=0.5)
    recorder = Recorder(tmp_path / "rec.wav", RATE, 4)
    with pytest.raises(ValueError, match="on purpose"):
        run_live(LoudnessEngine(), FileSource(path, 4, None), [FailsToClose()], recorder)
    assert (tmp_path / "rec.wav").exists()


class BlockedDisplay(Collect):
    """A display whose output nobody reads: it blocks on its first frame (a terminal of a hung
    ssh link, a --json pipe not drained) until released."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()

    def frame(self, frame: dict, stats: dict) -> None:
        self.release.wait(30)
        super().frame(frame, stats)


def test_a_display_that_blocks_holds_up_neither_the_audio_nor_the_other_displays(tmp_path):
    path = tmp_path / "in.wav"
    audio = tone_file(path, RATE, 4, loud_channel=1, seconds=3.0)
    blocked, other = BlockedDisplay(), Collect()
    recorder = Recorder(tmp_path / "rec.wav", RATE, 4)
    started = time.monotonic()
    try:
        outcome = run_live(LoudnessEngine(), FileSource(path, 4, None), [blocked, other], recorder)
    finally:
        blocked.release.set()
    assert time.monotonic() - started < 3.0 + 5.0 + 2.0  # real time, then at most 5 s for the blocked display
    assert outcome["ending"].endswith("(a display did not finish: its output is not being read)")
    stats = outcome["stats"]
    assert stats["overflows"] == 0 and stats["frames"] == 30
    assert [frame["frame"] for _, frame, _ in other.frames] == list(range(30)) and other.closed is not None
    assert stats["display_dropped_frames"] == 0  # 29 frames queued behind the first: within the 50 it keeps
    recorded, _ = soundfile.read(tmp_path / "rec.wav", dtype="float32", always_2d=True)
    np.testing.assert_array_equal(recorded, audio)


class StallingEngine(LoudnessEngine):
    """An engine that stalls once for longer than the capture queue holds (a CPU taken away)."""

    def __init__(self, stall_s: float, at_block: int):
        super().__init__()
        self.stall_s, self.at_block = stall_s, at_block

    def stream(self):
        stream, pushed = super().stream(), [0]
        push = stream.push

        def stalling_push(block):
            pushed[0] += 1
            if pushed[0] == self.at_block:
                time.sleep(self.stall_s)
            return push(block)

        stream.push = stalling_push
        return stream


def test_audio_lost_while_the_engine_stalled_comes_back_as_silence(tmp_path):
    """The blocks dropped when the queue was full: their samples are silence in the stream and
    the recording, so frame times and the recording keep real time."""
    from seld.realtime.capture import QUEUE_S

    path = tmp_path / "in.wav"
    tone_file(path, RATE, 4, loud_channel=0, seconds=6.0, onset_s=0.0)
    recorder = Recorder(tmp_path / "rec.wav", RATE, 4)
    collect = Collect()
    outcome = run_live(StallingEngine(QUEUE_S + 1.5, at_block=5), FileSource(path, 4, None), [collect], recorder)
    stats = outcome["stats"]
    assert stats["dropped_blocks"] > 0
    assert stats["frames"] == 60 and [frame["frame"] for _, frame, _ in collect.frames] == list(range(60))
    recorded, _ = soundfile.read(tmp_path / "rec.wav", dtype="float32", always_2d=True)
    assert len(recorded) == 6 * RATE
    silent = np.flatnonzero(recorded[:, 1] == 0)  # channel 1 holds a constant marker: zero only in the gap
    assert len(silent) == stats["dropped_blocks"] * 480 and np.all(np.diff(silent) == 1)


def test_a_display_that_falls_behind_loses_its_oldest_frames():
    from seld.realtime.loop import DisplayFeed

    collect = Collect()
    feed = DisplayFeed(collect, capacity=3)
    for index in range(5):
        feed.frame({"frame": index}, {})
    assert feed.dropped_frames == 2
    assert feed.close({"frames": 5}, timeout=1)  # never started: shows what it kept, then closes
    assert [frame["frame"] for _, frame, _ in collect.frames] == [2, 3, 4] and collect.closed == {"frames": 5}


def test_an_engine_error_is_raised_after_the_recording_is_saved(tmp_path):
    path = tmp_path / "in.wav"
    tone_file(path, RATE, 4, loud_channel=0, seconds=3)
    recorder = Recorder(tmp_path / "rec.wav", RATE, 4)
    started = time.monotonic()
    with pytest.raises(SeldError, match="failing on purpose"):
        run_live(LoudnessEngine(fail_after=10), FileSource(path, 4, None), [Collect()], recorder)
    assert time.monotonic() - started < 2
    assert (tmp_path / "rec.wav").exists()


def test_json_lines_and_terminal_views(tmp_path):
    path = tmp_path / "in.wav"
    tone_file(path, RATE, 4, loud_channel=3, seconds=0.6, onset_s=0.3)
    out = io.StringIO()
    text = io.StringIO()
    run_live(LoudnessEngine(), FileSource(path, 4, None), [JsonLines(out), TerminalView("stand-in", ["tone"], text)])
    lines = out.getvalue().splitlines()
    assert len(lines) == 6
    objects = [json.loads(line) for line in lines]
    assert [o["frame"] for o in objects] == list(range(6))
    assert set(objects[4]) == {"frame", "time_s", "events"}
    assert objects[4]["events"][0]["class_name"] == "tone" and objects[4]["events"][0]["azimuth"] == 270.0
    # Not a terminal: one line per change of the active events.
    changes = text.getvalue().splitlines()
    assert len(changes) == 2 and "silence" in changes[0] and "tone" in changes[1] and "az   270.0°" in changes[1]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_view_redraws_in_place():
    out = FakeTerminal()
    view = TerminalView("stand-in", ["tone"], out)
    stats = {"source": "device 0 (pulse)", "latency_ms": 12.3, "latency_p50_ms": 11.0, "latency_p99_ms": 20.5,
             "overflows": 2, "provider": "CPUExecutionProvider", "stalled": False}
    event = {"class": 0, "class_name": "speech", "track": 1, "azimuth": -45.0, "elevation": 10.0,
             "distance_m": 1.5, "confidence": 0.9}
    view.frame({"frame": 0, "time_s": 0.0, "events": [event]}, stats)
    view.last_draw = 0
    view.frame({"frame": 1, "time_s": 0.1, "events": []}, stats)
    view.close(stats)
    text = out.getvalue()
    assert "speech" in text and "az   -45.0°" in text and "1.50 m" in text and "conf 0.90" in text
    assert "latency 12.3 ms" in text and "overflows 2" in text and "CPUExecutionProvider" in text
    assert "\x1b[3F\x1b[J" in text  # the second drawing moved up over the first
    assert "(no active events)" in text


def test_terminal_view_draws_every_frame_of_a_jittery_stream(monkeypatch):
    """Frames come every 100 ms, give or take: a 100 ms redraw limit skipped every other one."""
    out = FakeTerminal()
    view = TerminalView("stand-in", ["tone"], out)
    stats = {"source": "file", "latency_ms": 1.0, "overflows": 0, "provider": "CPU", "stalled": False}
    now = [0.0]
    monkeypatch.setattr("seld.realtime.display_terminal.time.monotonic", lambda: now[0])
    for frame, arrival in enumerate([10.0, 10.098, 10.199, 10.297, 10.4]):
        now[0] = arrival
        view.frame({"frame": frame, "time_s": frame / 10, "events": []}, stats)
    assert sum("(no active events)" in line for line in out.getvalue().split("\x1b[J")) == 5


# -------------------------------------------------------------------- the web view


def test_web_view_serves_the_page_and_streams_frames(tmp_path):
    from seld.realtime.web import WebView

    path = tmp_path / "in.wav"
    tone_file(path, RATE, 4, loud_channel=1, seconds=2.0, onset_s=0.5)
    web = WebView(0, {"model": "stand-in", "class_names": ["tone"], "has_distance": False, "source": "file"})
    port = web.server.server_address[1]
    assert web.url == f"http://127.0.0.1:{port}/"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/")
    page = connection.getresponse()
    assert page.status == 200 and b"EventSource" in page.read()
    connection.request("GET", "/info")
    assert json.loads(connection.getresponse().read()) == {"model": "stand-in", "class_names": ["tone"],
                                                          "has_distance": False, "source": "file", "run": web.run}
    connection.request("GET", "/favicon.ico")  # browsers ask: no error in the page's console
    response = connection.getresponse()
    response.read()
    assert response.status == 204
    connection.request("GET", "/nothing")
    response = connection.getresponse()
    response.read()
    assert response.status == 404

    received: list[dict] = []
    late: list[dict] = []

    def listen(received=received, delay=0.0):
        time.sleep(delay)
        events = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        events.request("GET", "/events")
        response = events.getresponse()
        assert response.getheader("Content-Type") == "text/event-stream"
        kind = None
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                received.append({"kind": kind, **json.loads(line[6:])})
                if kind == "end":
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    late_listener = threading.Thread(target=listen, kwargs={"received": late, "delay": 1.5}, daemon=True)
    late_listener.start()
    time.sleep(0.3)  # connected before the first frame
    run_live(LoudnessEngine(), FileSource(path, 4, None), [web])
    listener.join(timeout=5)
    late_listener.join(timeout=5)
    assert not listener.is_alive() and not late_listener.is_alive()
    # A page opened mid-run gets the frames so far first, for its timeline.
    assert [r["frame"]["frame"] for r in late if r["kind"] == "frame"] == list(range(20))
    frames = [r["frame"] for r in received if r["kind"] == "frame"]
    assert [f["frame"] for f in frames] == list(range(20))
    assert frames[10]["events"][0]["azimuth"] == 90.0
    assert received[-1]["kind"] == "end" and received[-1]["stats"]["frames"] == 20
    assert received[0]["stats"]["provider"] == "StandInExecutionProvider"


# -------------------------------------------------------------------- the CLI


def run_seld(*args, env_python: str = "", timeout: float = 60):
    """`seld ARGS` in a subprocess, after `env_python` (Python run first, e.g. to hide PortAudio)."""
    code = f"import sys\n{env_python}\nfrom seld.cli import cli\nsys.exit(cli(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


HIDE_PORTAUDIO = "import ctypes.util\nctypes.util.find_library = lambda name: None"


def test_without_portaudio_devices_and_live_say_how_to_install_it():
    result = run_seld("devices", env_python=HIDE_PORTAUDIO)
    assert result.returncode == 2, result.stderr
    assert "apt-get install libportaudio2" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_portaudio_live_says_how_to_install_it(tiny_model_package):
    result = run_seld("live", "--model", tiny_model_package, env_python=HIDE_PORTAUDIO)
    assert result.returncode == 2, result.stderr
    assert "apt-get install libportaudio2" in result.stderr and "Traceback" not in result.stderr


def test_live_errors_name_the_file(tmp_path):
    result = run_seld("live", "--input", tmp_path / "missing.wav")
    assert result.returncode == 1
    assert f"{tmp_path / 'missing.wav'}: no such file" in result.stderr and "Traceback" not in result.stderr
    result = run_seld("live", "--input", tmp_path / "missing.wav", "--device", "0")
    assert result.returncode == 1 and "give one source" in result.stderr


def test_a_played_file_is_read_as_annotate_reads_it(tmp_path):
    """NaN samples fail the run with annotate's message (they went into the model silently), and
    a name that is not UTF-8 plays (the reader thread died on it, the run ended 'normally')."""
    path = tmp_path / "nan.wav"
    audio = tone_file(path, RATE, 4, loud_channel=0, seconds=0.5, onset_s=0.1)
    audio[RATE // 4, 1] = np.nan
    soundfile.write(path, audio, RATE, subtype="FLOAT")
    collect = Collect()
    outcome = run_live(LoudnessEngine(), FileSource(path, 4, None), [collect])
    assert outcome["failure"] == f"{path}: NaN or Inf samples (first at 0.250 s)"
    assert collect.closed["ending"] == f"failed: {outcome['failure']}"  # what the web page shows

    odd = tmp_path / os.fsdecode(b"caf\xe9.wav")
    tone_file(os.fsencode(odd), RATE, 4, loud_channel=0, seconds=0.5, onset_s=0.1)
    collect = Collect()
    outcome = run_live(LoudnessEngine(), FileSource(odd, 4, None), [collect])
    assert outcome["failure"] is None and len(collect.frames) == 5


def test_live_refuses_to_record_over_its_input_and_a_port_out_of_range(tmp_path):
    path = tmp_path / "scene.wav"
    tone_file(path, RATE, 4, loud_channel=1, seconds=0.5, onset_s=0.1)
    before = path.read_bytes()
    result = run_seld("live", "--input", path, "--record", tmp_path / "." / "scene.wav")
    assert result.returncode == 1 and "is the --input file" in result.stderr and "Traceback" not in result.stderr
    assert path.read_bytes() == before
    result = run_seld("live", "--input", path, "--web", "70000")
    assert result.returncode == 2 and "70000 is not a port" in result.stderr and "Traceback" not in result.stderr


def test_web_view_resends_only_the_frames_a_reconnecting_page_missed():
    """EventSource reconnects with the last `id:` it got as Last-Event-ID: the page then gets
    the frames after it, not its whole timeline again (which it would draw twice)."""
    from seld.realtime.web import WebView

    web = WebView(0, {"class_names": ["tone"]})
    port = web.server.server_address[1]
    for index in range(10):
        web.frame({"frame": index, "events": []}, {"elapsed_s": index / 10})

    def frames_received(headers: dict) -> list[int]:
        events = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        events.request("GET", "/events", headers=headers)
        response = events.getresponse()
        ids, frames = [], []
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                run, frame = line[4:].split("-")
                assert run == web.run
                ids.append(int(frame))
            elif line.startswith("data: ") and "frame" in json.loads(line[6:]):
                frames.append(json.loads(line[6:])["frame"]["frame"])
            elif line.startswith("event: end"):
                break
        assert ids == frames
        return frames

    try:
        results: dict[str, list[int]] = {}
        listeners = [threading.Thread(target=lambda k=key, h=headers: results.__setitem__(k, frames_received(h)),
                                      daemon=True)
                     for key, headers in (("new", {}), ("back", {"Last-Event-ID": f"{web.run}-6"}),
                                          ("odd", {"Last-Event-ID": "x"}),
                                          # the page saw another run on this port (since stopped): all of this one
                                          ("other run", {"Last-Event-ID": "0badc0de-6"}),
                                          ("superscript", {"Last-Event-ID": f"{web.run}-\u00b2"}))]
        for listener in listeners:
            listener.start()
        deadline = time.monotonic() + 10
        while len(web.clients) < len(listeners) and time.monotonic() < deadline:  # all connected
            time.sleep(0.02)
        web.frame({"frame": 10, "events": []}, {"elapsed_s": 1.0})
    finally:
        web.close({"elapsed_s": 1.0})
    for listener in listeners:
        listener.join(timeout=5)
    assert results == {"new": list(range(11)), "back": [7, 8, 9, 10], "odd": list(range(11)),
                       "other run": list(range(11)), "superscript": list(range(11))}


def test_web_view_closes_without_waiting_on_a_stalled_page_and_tells_a_silent_input():
    """close() waited 0.5 s per message on a page that stopped reading (pages that were reading
    then missed their end event); a silent input was never told to the page; a page of another
    host name (DNS rebinding) is refused; HEAD answers."""
    import queue

    from seld.realtime.web import CLIENT_QUEUE, WebView

    web = WebView(0, {"class_names": ["tone"]})
    port = web.server.server_address[1]
    stalled = queue.Queue(CLIENT_QUEUE)
    for _ in range(CLIENT_QUEUE):
        stalled.put_nowait(b"old frame")
    web.clients.add(stalled)
    reader = queue.Queue(CLIENT_QUEUE)
    web.clients.add(reader)
    try:
        web.idle({"elapsed_s": 9.0, "stalled": True})
        message = reader.get_nowait()
        assert message.startswith(b"event: stats\ndata: ") and b'"stalled": true' in message
        for host, status in (("attacker.example", 421), (f"localhost:{port}", 200)):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/info", headers={"Host": host})
            assert connection.getresponse().status == status
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("HEAD", "/")
        response = connection.getresponse()
        assert response.status == 200 and response.read() == b""
    finally:
        web.close({"elapsed_s": 9.0, "ending": "stopped"})
    assert list(stalled.queue)[-2:] == [web.end_message, None] and b'"ending": "stopped"' in web.end_message
    assert list(reader.queue) == [web.end_message, None]


def test_web_view_keeps_quiet_about_pages_that_go_away(capfd):
    import socket
    import struct

    from seld.realtime.web import WebView

    web = WebView(0, {"class_names": []})
    try:
        for _ in range(5):
            client = socket.create_connection(("127.0.0.1", web.server.server_address[1]))
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not close
            client.close()
        connection = http.client.HTTPConnection("127.0.0.1", web.server.server_address[1], timeout=5)
        connection.request("GET", "/info")
        assert connection.getresponse().status == 200  # the server goes on
    finally:
        web.close({})
    assert "Traceback" not in capfd.readouterr().err


def test_a_closed_output_pipe_ends_the_run_quietly(tmp_path):
    """`seld live --json | head -1`: the reader goes away; seld stops without a traceback
    and keeps what it recorded."""
    path = tmp_path / "in.wav"
    tone_file(path, RATE, 4, loud_channel=0, seconds=20)
    process = subprocess.Popen([sys.executable, "-c", STAND_IN, "live", "--input", path, "--json",
                                "--record", tmp_path / "rec.wav"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    assert json.loads(first)["frame"] == 0
    process.stdout.close()
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "output closed" in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "rec.wav").stat().st_mode & 0o777 == 0o666 & ~umask  # like any file the user writes


def test_an_output_that_cannot_be_written_is_one_line(tmp_path):
    """--json onto a full disk raised a traceback; with stdout closed (`>&-`) too."""
    path = tmp_path / "in.wav"
    tone_file(path, RATE, 4, loud_channel=0, seconds=1)
    command = [sys.executable, "-c", STAND_IN, "live", "--input", path, "--json"]
    with open("/dev/full", "w") as full:
        result = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "seld live: error: cannot write the output (No space left on device)"
    result = subprocess.run(command, stderr=subprocess.PIPE, text=True, timeout=30, preexec_fn=lambda: os.close(1))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


def test_live_plays_a_recording_through_the_model(tiny_model_package, tmp_path):
    """`seld live --input --json --stats --record` with a real model: one frame object per
    100 ms, the README's keys, real speed, latency printed, the raw input saved."""
    from seld.engine import Engine

    engine = Engine(tiny_model_package, device="cpu", purpose="stream")
    path = tmp_path / "in.wav"
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((int(engine.sample_rate * 1.5), engine.num_channels))).astype(np.float32)
    soundfile.write(path, audio, engine.sample_rate, subtype="FLOAT")
    started = time.monotonic()
    result = run_seld("live", "--model", tiny_model_package, "--input", path, "--json", "--stats",
                      "--record", tmp_path / "rec.wav")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started > 1.4
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["frame"] for o in objects] == list(range(15))
    assert all(set(o) == {"frame", "time_s", "events"} for o in objects)
    for event in (e for o in objects for e in o["events"]):
        assert set(event) == {"class", "class_name", "track", "azimuth", "elevation", "distance_m", "confidence"}
        assert event["class_name"] == engine.class_names[event["class"]]
    assert "latency p50" in result.stderr and "p99" in result.stderr
    recorded, _ = soundfile.read(tmp_path / "rec.wav", dtype="float32", always_2d=True)
    np.testing.assert_array_equal(recorded, audio)


def test_terminal_view_fits_the_screen(monkeypatch):
    monkeypatch.setenv("LINES", "8")
    monkeypatch.setenv("COLUMNS", "60")
    out = FakeTerminal()
    view = TerminalView("stand-in", ["tone"], out)
    events = [{"class": 0, "class_name": f"class {k}", "track": 0, "azimuth": 10.0 * k, "elevation": 0.0,
               "distance_m": None, "confidence": 0.5} for k in range(12)]
    stats = {"source": "s", "latency_ms": None, "latency_p50_ms": None, "latency_p99_ms": None,
             "overflows": 0, "provider": "p", "stalled": False}
    view.frame({"frame": 0, "time_s": 0.0, "events": events}, stats)
    view.close(stats)
    drawing = out.getvalue().split("\x1b[J")[-1].splitlines()
    assert len(drawing) <= 7 and "… 8 more" in drawing[-2]
    assert all(len(line.replace("\x1b[K", "")) < 60 for line in drawing)


def test_web_view_on_a_busy_port_says_so():
    from seld.realtime.web import WebView

    first = WebView(0, {"class_names": []})
    port = first.server.server_address[1]
    try:
        with pytest.raises(SeldError, match=f"--web {port}: cannot listen on 127.0.0.1:{port}"):
            WebView(port, {"class_names": []})
    finally:
        first.close({})


def test_engine_loop_memory_stays_flat(tiny_model_package):
    """Thousands of frames through the loop with the real engine: what the loop and the
    stream hold does not grow with the length of the run (events that never end included)."""
    from seld.engine import Engine
    from seld.realtime.loop import LiveLoop

    engine = Engine(tiny_model_package, device="cpu", purpose="stream")

    class Source:
        name, rate, channels = "noise", engine.sample_rate, list(range(engine.num_channels))

    # Its display feed is not started: it holds the last FEED_FRAMES frames only, as a display behind would.
    loop = LiveLoop(engine, Source(), BlockQueue(Source.channels, 2400, 4), [Collect()])
    rng = np.random.default_rng(0)
    blocks = [(0.3 * rng.standard_normal((engine.num_channels, 2400))).astype(np.float32) for _ in range(8)]
    tracemalloc.start()
    try:
        for index in range(1500):
            loop._block(blocks[index % len(blocks)], time.monotonic())
            if index == 300:
                settled, _ = tracemalloc.get_traced_memory()
        grown = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
    assert loop.frames == 1500
    assert grown < 100_000, f"{grown} bytes more after 1200 frames"


def test_devices_table_fits_long_host_api_names(monkeypatch, capsys):
    import seld.realtime.capture as capture
    import seld.realtime.devices as devices

    listed = [{"index": 0, "name": "USB array", "host_api": "JACK Audio Connection Kit", "channels": 4,
               "default_rate": 48000, "default": True},
              {"index": 3, "name": "built-in", "host_api": "ALSA", "channels": 2, "default_rate": 44100,
               "default": False}]
    monkeypatch.setattr(capture, "import_sounddevice", lambda: None)
    monkeypatch.setattr(devices, "input_devices", lambda sd: listed)
    assert devices.devices_command(None) == 0
    header, *rows = capsys.readouterr().out.splitlines()[:3]
    assert {line.index("4" if "USB" in line else "2") for line in rows} == {header.index("channels") + 7}
    monkeypatch.setattr(devices, "input_devices", lambda sd: [])
    assert devices.devices_command(None) == 1
    assert capsys.readouterr().err == "seld devices: no audio input devices found\n"
