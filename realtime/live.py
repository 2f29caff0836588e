"""`seld live`: wire a source, the engine loop, the recorder and the displays together,
and end cleanly however the run ends (end of file, Ctrl-C or SIGTERM, a lost device,
a closed output pipe): the record file is finalized and a clear message printed."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
from pathlib import Path

from seld import SeldError
from seld.interrupts import sigterm_interrupts
from seld.realtime.capture import (BLOCK_S, QUEUE_S, BlockQueue, DeviceSource, FileSource, PortAudioMissing,
                                   Recorder, parse_channels)
from seld.realtime.loop import LiveLoop


def load_engine(args):
    """The model on ONNX Runtime's CPU provider: one stream's step gains nothing on a GPU, which
    pays off only when many streams are batched, and the CPU is always there. Measured on an H200
    machine (`seld bench stream` parts, graph p50): 0.35-0.41 ms on one of its CPU threads, 0.40 ms
    on CUDA replayed as a CUDA graph, 1.3 ms on CUDA launching the kernels one by one."""
    from seld.engine import Engine

    if args.model:
        return Engine(args.model, device="cpu", purpose="stream")
    return Engine.default(args.format, device="cpu", purpose="stream")


def live_command(args) -> int:
    with _ending_signals_as_interrupt():  # from the start: SIGTERM while the model loads is an interrupt too
        return _live(args)


def _live(args) -> int:
    if args.input and args.device:
        raise SeldError("--input and --device: give one source, a recording or a device")
    if args.input and args.record and Path(args.record).resolve() == Path(args.input).resolve():
        raise SeldError(f"--record {args.record}: is the --input file; recording would replace it")
    if args.input:
        from seld.audio import audio_info

        audio_info(args.input)  # a missing or unreadable file is reported before the model loads
    engine = load_engine(args)
    selection = parse_channels(args.channels, engine.num_channels)
    if args.input:
        source = FileSource(args.input, engine.num_channels, selection)
    else:
        try:
            source = DeviceSource(args.device, engine.num_channels, selection, engine.sample_rate)
        except PortAudioMissing as error:
            print(f"seld live: {error}", file=sys.stderr)
            return 2
    recorder = Recorder(args.record, source.rate, len(source.channels)) if args.record else None
    model_name = getattr(engine, "name", None) or str(args.model or args.format)
    displays = []
    try:
        if args.json:
            from seld.realtime.display_terminal import JsonLines

            displays.append(JsonLines(sys.stdout))
        else:
            from seld.realtime.display_terminal import TerminalView

            displays.append(TerminalView(model_name, engine.class_names, sys.stdout))
        if args.web is not None:
            from seld.realtime.web import WebView

            info = {"model": model_name, "class_names": list(engine.class_names),
                    "has_distance": bool(engine.has_distance), "source": source.name,
                    "sample_rate": engine.sample_rate}
            web = WebView(args.web, info)
            displays.append(web)
            print(f"seld live: web view at {web.url}", file=sys.stderr, flush=True)
    except BaseException:
        if recorder is not None:
            recorder.discard()
        raise
    providers = ", ".join(getattr(engine, "providers", [])) or "?"

    def started():
        print(f"seld live: {model_name} on {providers}; {source.name} at {source.rate} Hz; "
              + ("plays to its end (Ctrl-C stops)" if source.kind == "file" else "Ctrl-C stops"),
              file=sys.stderr, flush=True)

    try:
        outcome = run_live(engine, source, displays, recorder, on_started=started)
    except BaseException:
        if recorder is not None and recorder.handle is not None:
            recorder.close()
        raise
    stats = outcome["stats"]
    if stats["overflows"]:
        print(f"seld live: {stats['overflows']} overflows: {stats['input_overflows']} reported by the device, "
              f"{stats['dropped_blocks']} blocks dropped, more than the {QUEUE_S:.0f} s queue holds (the engine fell "
              "behind, or the device sent a burst after a stall; filled with silence)",
              file=sys.stderr)
    if stats["display_dropped_frames"]:
        print(f"seld live: the display fell behind and skipped {stats['display_dropped_frames']} frames",
              file=sys.stderr)
    if args.stats:
        print(f"seld live: latency p50 {_ms(stats['latency_p50_ms'])}, p99 {_ms(stats['latency_p99_ms'])} "
              f"over the last {stats['latency_frames']} of {stats['frames']} frames ({stats['elapsed_s']:.1f} s, "
              f"{stats['provider']})", file=sys.stderr)
    if recorder is not None:
        saved = outcome["recorded"]
        print(f"seld live: recorded {recorder.samples / source.rate:.1f} s to {saved}" if saved
              else f"seld live: nothing recorded, {args.record} not written", file=sys.stderr)
    if outcome["failure"]:
        raise SeldError(outcome["failure"])
    print(f"seld live: {outcome['ending']}", file=sys.stderr)
    return 0


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f} ms"


_ENDING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _ending_signals_as_interrupt():
    """SIGTERM, and SIGHUP (its terminal closed), end a run the way Ctrl-C does; `nohup seld live`
    outlives its terminal."""
    return sigterm_interrupts(_ENDING_SIGNALS)


@contextlib.contextmanager
def _no_interrupts():
    """While the run is being wound up, a second Ctrl-C must not cut the record file short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ignored = (signal.SIGINT, *_ENDING_SIGNALS)
    previous = [signal.signal(s, signal.SIG_IGN) for s in ignored]
    try:
        yield
    finally:
        for s, handler in zip(ignored, previous):
            signal.signal(s, handler)


def run_live(engine, source, displays: list, recorder: Recorder | None = None, on_started=None) -> dict:
    """Run until the source ends, fails, or Ctrl-C/SIGTERM; returns {"stats", "ending",
    "failure" (a message or None), "recorded" (the saved path or None)}. Never raises for
    those endings; an error inside the engine thread is raised after the wind-up.
    `on_started()` is called once audio is flowing in."""
    block_samples = int(round(source.rate * BLOCK_S))
    blocks = BlockQueue(source.channels, block_samples, math.ceil(QUEUE_S / BLOCK_S))
    loop = LiveLoop(engine, source, blocks, displays, recorder)
    ending = f"end of {source.name}"
    with _ending_signals_as_interrupt():
        try:
            loop.start()
            source.start(blocks)
            if on_started is not None:
                on_started()
            while loop.is_alive():
                loop.join(0.2)
        except KeyboardInterrupt:
            ending = "stopped"
            loop.cut_short = True
        except BaseException:
            with _no_interrupts():
                source.stop()
                blocks.close()
                loop.join(timeout=10)
                if recorder is not None:
                    recorder.close()
                loop.close_displays()
            raise
    with _no_interrupts():
        source.stop()
        blocks.close()
        loop.join(timeout=10)
        recorded = recorder.close() if recorder is not None else None
        displays_closed = loop.close_displays(f"failed: {source.failure}" if source.failure else ending)
        stats = loop.stats(final=True)
    error = loop.error or loop.display_error()
    if isinstance(error, BrokenPipeError):
        # The program reading --json went away: not an error of ours.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        ending = "output closed"
    elif isinstance(error, OSError):  # writing a display's output: a full disk, a closed file
        raise SeldError(f"cannot write the output ({error.strerror or error})") from None
    elif error is not None:
        raise error
    if loop.is_alive():
        ending += " (the engine thread did not finish in 10 s)"
    if not displays_closed:
        ending += " (a display did not finish: its output is not being read)"
    return {"stats": stats, "ending": ending, "failure": source.failure, "recorded": recorded}
