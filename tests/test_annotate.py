"""`seld annotate` inputs, block-wise reading, outputs; the engine's and outputs' fast paths
against the reference implementations in seld.decode and seld.formats."""

import json
import logging
import os
import random
import shutil
import re
import threading

import numpy as np
import pytest
import soundfile

from conftest import write_scene
from seld import SeldError
from seld.annotate import AUDIO_SUFFIXES, annotate, find_jobs
from seld.cli import cli
from seld.decode import Detection, OutputLayout, assign_tracks, decode
from seld.engine import Engine, _BoundStep, _HostFrames
from seld.formats import write_prediction
from seld.outputs import decode_outputs, detections_to_events, write_csv


def rows(path):
    return [line.split(",") for line in path.read_text().splitlines()]


def wav(path, seconds, rate=24_000, seed=0, channels=4):
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = 0.05 * np.random.default_rng(seed).standard_normal((int(seconds * rate), channels))
    soundfile.write(path, audio.astype(np.float32), rate, subtype="FLOAT" if path.suffix == ".wav" else "PCM_16")
    return path


# ------------------------------------------------------------------ fast paths = reference


@pytest.mark.parametrize("output_format, tracks, distance", [
    ("multi_accdoa", 3, True), ("multi_accdoa", 2, False), ("accdoa", 1, True), ("sed_doa", 1, False),
    ("sed_doa", 1, True)])
def test_vectorized_decode_equals_decode(output_format, tracks, distance):
    layout = OutputLayout(output_format, 13, tracks, distance)
    rng = np.random.default_rng(0)
    outputs = rng.uniform(-1, 1, (200, layout.size))
    if output_format == "multi_accdoa":  # tracks of one class often close: merged groups of 2 and 3
        grid = outputs.reshape(200, tracks, layout.axes, 13)
        for track in range(1, tracks):
            near = rng.random((200, 1, 13)) < 0.5
            grid[:, track, :3] = np.where(near, grid[:, 0, :3] * 1.1 + rng.normal(0, 0.05, (200, 3, 13)),
                                          grid[:, track, :3])
    outputs = outputs.astype(np.float32)
    expected = decode(outputs, layout, 0.5, 15.0, frame_offset=7)
    assert len(expected) > 100
    assert decode_outputs(outputs, layout, 0.5, 15.0, frame_offset=7) == expected
    assert decode_outputs(outputs[:0], layout) == []


def test_csv_text_equals_write_prediction(tmp_path):
    generator = random.Random(0)
    detections = [Detection(frame // 3, generator.randrange(13), generator.randrange(3),
                            generator.choice([generator.uniform(-180, 180), 90.0, -0.0]),
                            generator.choice([generator.uniform(-90, 90), 0.0]),
                            generator.choice([None, 0.0, 2.0, generator.uniform(0, 5)]), generator.random())
                  for frame in range(300)]
    generator.shuffle(detections)  # the writer sorts by frame, stably
    for distance in (True, False):
        write_csv(tmp_path / "fast.csv", detections, distance)
        write_prediction(tmp_path / "reference.csv", detections_to_events(detections, distance))
        assert (tmp_path / "fast.csv").read_text() == (tmp_path / "reference.csv").read_text()


@pytest.mark.parametrize("batch, samples", [(2, 4800), (4, 24_000)])  # one FFT call per chunk; several
def test_host_frames_equal_host_spectrum(tiny_model_package, batch, samples):
    engine = Engine(tiny_model_package, device="cpu")
    rng = np.random.default_rng(0)
    chunks = (0.1 * rng.standard_normal((3, batch, 4, samples))).astype(np.float32)
    frames = _HostFrames(engine.spectrum, batch + 1, 4, samples)  # buffers for more rows than are used
    states = [engine.spectrum.initial_state(4) for _ in range(batch)]
    for chunk in chunks:
        for row in range(batch):
            frames.set_row(row, states[row], chunk[row])
        real, imag = frames.transform(batch)
        assert real.shape[0] == imag.shape[0] == batch
        for row in range(batch):
            expected_real, expected_imag, states[row] = engine.spectrum.step(chunk[row], states[row])
            assert np.array_equal(real[row], expected_real) and np.array_equal(imag[row], expected_imag)
            assert np.array_equal(frames.state(row), states[row])


def test_bound_step_equals_a_session_run_and_hands_out_arrays_of_its_own(tiny_model_package):
    """The stream's IOBinding path (the CUDA-graph path on a GPU) computes what a plain run does, and
    what it returns is not overwritten by the next call (CPU buffers are shared with numpy)."""
    engine = Engine(tiny_model_package, device="cpu", purpose="stream")
    frames = engine.label_hop // engine.hop
    step = _BoundStep(engine.step_session(frames), frames, engine)  # on the CPU: the mechanics alone
    rng = np.random.default_rng(0)
    shape = (1, engine.num_channels, frames, engine.spectrum.config.num_bins)
    state = np.zeros((1, engine.state_size), np.float32)
    returned = []
    for _ in range(3):
        real, imag = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
        expected = engine.step_session(frames).run(["outputs", "state_out"], {"real": real, "imag": imag,
                                                                               "state": state})
        outputs, state = step.run(real, imag, state)
        assert np.array_equal(outputs, expected[0]) and np.array_equal(state, expected[1])
        returned.append((outputs, expected[0]))
    assert all(np.array_equal(got, expected) for got, expected in returned)


def test_a_cuda_graph_that_cannot_be_made_falls_back_to_plain_runs(tiny_model_package, monkeypatch, caplog):
    """A streaming engine on CUDA asks for a CUDA-graph step; when ONNX Runtime cannot make one, the
    stream gets plain runs of the shared step session, and the log says why."""
    import seld.engine as engine_module

    engine = Engine(tiny_model_package, device="cpu", purpose="stream")
    engine.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]  # as a CUDA session reports
    real_create_session = engine_module.create_session

    def create_session(*args, cuda_graph=False, **kwargs):
        if cuda_graph:
            raise SeldError("stream.onnx: ONNX Runtime cannot load it: a node is not on CUDA")
        return real_create_session(*args, **kwargs)

    monkeypatch.setattr(engine_module, "create_session", create_session)
    with caplog.at_level(logging.WARNING, logger="seld.engine"):
        step = engine.stream_step(engine.label_hop // engine.hop)
    assert type(step).__name__ == "_PlainStep" and step.session is engine.step_session(engine.label_hop // engine.hop)
    assert "no CUDA graph for streaming (stream.onnx: ONNX Runtime cannot load it: a node is not on CUDA)" in caplog.text


def test_a_cuda_graph_session_that_onnx_runtime_put_on_the_cpu_falls_back_too(tiny_model_package, monkeypatch,
                                                                              caplog):
    """ONNX Runtime falls back to the CPU by itself when the CUDA provider fails to set up: the
    stream must not bind a 'CUDA graph' to a CPU session on one thread without a word."""
    import seld.engine as engine_module

    engine = Engine(tiny_model_package, device="cpu", purpose="stream")
    engine.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    real_create_session = engine_module.create_session
    monkeypatch.setattr(engine_module, "create_session",
                        lambda *args, cuda_graph=False, **kwargs: real_create_session(*args, **kwargs))
    with caplog.at_level(logging.WARNING, logger="seld.engine"):
        step = engine.stream_step(engine.label_hop // engine.hop)
    assert type(step).__name__ == "_PlainStep"
    assert "no CUDA graph for streaming (ONNX Runtime gave it CPUExecutionProvider)" in caplog.text


def test_cuda_libraries_of_the_pip_packages_are_loaded_once_before_cuda_is_asked_for(monkeypatch):
    """Without torch imported, onnxruntime-gpu's CUDA provider finds the nvidia-* pip packages'
    libraries only once they are loaded: without that, every session ran on the CPU."""
    import onnxruntime

    import seld.engine as engine_module

    calls = []
    monkeypatch.setattr(onnxruntime, "preload_dlls", lambda: calls.append(1) or print("to stderr"), raising=False)
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    engine_module._load_cuda_libraries.cache_clear()
    monkeypatch.setattr(engine_module, "_nvidia_gpu_present", lambda: False)
    with pytest.raises(SeldError, match="--device cuda: no NVIDIA GPU found"):  # not ONNX Runtime's errors, then CPU
        engine_module._providers("cuda")
    monkeypatch.setattr(engine_module, "_nvidia_gpu_present", lambda: True)
    assert engine_module._providers("cpu") == ["CPUExecutionProvider"] and calls == []
    assert engine_module._providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert engine_module._providers("cuda") and calls == [1]
    engine_module._load_cuda_libraries.cache_clear()  # the next process-wide call loads for real


# ------------------------------------------------------------------ the engine on blocks


def test_blocks_are_consumed_as_they_come(tiny_model_package):
    """Outputs come out before the signal has been read to its end: memory does not grow with length."""
    engine = Engine(tiny_model_package, device="cpu")
    pulled = []

    def blocks():
        for index in range(150):  # 150 s in 1 s blocks
            pulled.append(index)
            yield np.zeros((4, 24_000), np.float32)

    outputs = engine.outputs_from_blocks(blocks())
    first = next(outputs)
    assert len(first) >= 100 and len(pulled) <= len(first) // 10 + 2
    assert sum(len(piece) for piece in outputs) + len(first) == 1500


def test_blocks_of_any_size_equal_the_whole_signal(tiny_model_package):
    engine = Engine(tiny_model_package, device="cpu")
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal((4, 24_000 * 75 + 777))).astype(np.float32)
    whole = np.concatenate(list(engine.outputs(audio)))
    assert whole.shape[0] == 751
    cuts = np.sort(rng.integers(1, audio.shape[1], 40))
    blocked = np.concatenate(list(engine.outputs_from_blocks(np.split(audio, cuts, axis=1))))
    assert np.array_equal(blocked, whole)
    # one graph call over the whole spectrum: the chunking changes only float rounding
    real, imag = engine.spectrum.spectrum(np.pad(audio, ((0, 0), (0, 751 * 2400 - audio.shape[1]))))
    once = engine.stream_session.run(["outputs"], {"real": real[None], "imag": imag[None],
                                                   "state": np.zeros((1, engine.state_size), np.float32)})[0][0]
    assert np.abs(once - whole).max() < 1e-4


def test_many_signals_per_call_equal_one_at_a_time(tiny_model_package):
    engine = Engine(tiny_model_package, device="cpu", parallel=2)
    rng = np.random.default_rng(2)
    signals = [(0.1 * rng.standard_normal((4, int(24_000 * seconds)))).astype(np.float32)
               for seconds in (3.05, 12.0, 0.04, 7.5, 61.3, 1.0)]
    alone = [np.concatenate(list(engine.outputs(signal))) for signal in signals]
    pieces = {index: [] for index in range(len(signals))}
    done = set()
    for key, outputs, finished in engine.outputs_of_many((index, [signal]) for index, signal in enumerate(signals)):
        assert key not in done
        pieces[key].append(outputs)
        if finished:
            done.add(key)
    assert done == set(pieces)
    for index, expected in enumerate(alone):
        assert np.abs(np.concatenate(pieces[index]) - expected).max() < 1e-5


def test_a_lone_loop_reading_ahead_in_a_helper_thread_gives_what_the_plain_loop_gives(tiny_model_package,
                                                                                       monkeypatch):
    """One loop whose graph leaves a core free prepares the next call in a helper thread: the same
    outputs, pieces and order as the plain loop; a signal that fails midway fails alone."""
    engine = Engine(tiny_model_package, device="cpu")
    rng = np.random.default_rng(3)
    signals = [(0.1 * rng.standard_normal((4, int(24_000 * seconds)))).astype(np.float32)
               for seconds in (3.05, 70.0, 2.0, 0.04, 5.0)]  # 2.0 s: ends on a chunk boundary

    readers = set()

    def blocks(index):
        readers.add(threading.current_thread().name)
        if index == 4:  # fails after its first 3 s
            yield signals[index][:, :72_000]
            raise SeldError("signal 4: broken")
        yield from np.array_split(signals[index], 3, axis=1)

    def run() -> list:
        return [(key, outputs if isinstance(outputs, SeldError) else outputs.copy(), done)
                for key, outputs, done in engine.outputs_of_many(((i, blocks(i)) for i in range(5)), loops=1)]

    monkeypatch.setattr(engine, "cores", 2)  # a core to spare beside its one graph thread
    engine.stream_session = recording = _RecordingSession(engine.stream_session)
    ahead = run()
    assert {loop for loop, _ in recording.calls} == {threading.current_thread().name}
    assert readers == {"seld-engine-ahead"}
    monkeypatch.setattr(engine, "cores", 1)
    readers.clear()
    plain = run()
    assert readers == {threading.current_thread().name}
    assert [(key, done) for key, _, done in ahead] == [(key, done) for key, _, done in plain]
    for (_, got, _), (_, want, _) in zip(ahead, plain):
        if isinstance(want, SeldError):
            assert str(got) == str(want) == "signal 4: broken"
        else:
            assert np.array_equal(got, want)
    assert sum(len(out) for key, out, _ in ahead if key == 1) == 700

    monkeypatch.setattr(engine, "cores", 2)
    stopped = engine.outputs_of_many(((i, blocks(i)) for i in range(5)), loops=1)
    next(stopped)
    stopped.close()  # the caller stops early: the helper thread ends too
    assert not [t for t in threading.enumerate() if t.name == "seld-engine-ahead"]

    def broken():
        yield signals[0]
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        list(engine.outputs_of_many([(0, broken())], loops=1))
    assert not [t for t in threading.enumerate() if t.name == "seld-engine-ahead"]


def test_what_the_engine_takes_as_audio(tiny_model_package):
    """Integer arrays are scaled as audio files' integers are (an int16 array ran unscaled: 15
    detections where its float audio had 3); anything else that is no float audio, a wrong shape,
    NaN or infinite samples, an unknown device or purpose: a SeldError saying so."""
    engine = Engine(tiny_model_package, device="cpu")
    audio = (0.1 * np.random.default_rng(5).standard_normal((4, 24_000 * 3))).astype(np.float32)
    expected = np.concatenate(list(engine.outputs(audio)))
    as_int16 = np.round(audio * 32768).clip(-32768, 32767).astype(np.int16)
    assert np.abs(np.concatenate(list(engine.outputs(as_int16))) - expected).max() < 1e-3
    # Unsigned, as 8-bit WAVs are (scipy.io.wavfile gives uint8): uint8 - 128 wrapped around to 0..255.
    as_uint8 = (np.round(audio * 128).clip(-128, 127) + 128).astype(np.uint8)
    assert np.array_equal(engine._check(as_uint8), (as_uint8.astype(np.float32) - 128) / 128)
    as_uint16 = (as_int16.astype(np.int32) + 32768).astype(np.uint16)
    assert np.array_equal(engine._check(as_uint16), engine._check(as_int16))
    stream = engine.stream(keep_events=True)
    frames = stream.push(as_int16) + stream.flush()
    assert len(frames) == 30 and stream.take_events() is not None
    for bad, said in ((iter([audio]), "audio given as a list_iterator"), ("x.wav", "audio given as a str"),
                      ([audio[:, :10], audio[:, :20]], "audio given as a list"),
                      (audio.astype(complex), "audio given as complex128 samples"),
                      (audio > 0, "audio given as bool samples"), (audio.T, "audio of shape [72000, 4]")):
        with pytest.raises(SeldError, match=re.escape(said)):
            list(engine.outputs(bad))
    broken = audio.copy()
    broken[2, 1000] = np.inf
    with pytest.raises(SeldError, match=re.escape("NaN or infinite samples (first at sample 1000 of the block given)")):
        engine.stream().push(broken)
    with pytest.raises(SeldError, match="take_events.. needs a stream made with Engine.stream.keep_events=True."):
        engine.stream().take_events()
    with pytest.raises(SeldError, match="device 'CPU': expected 'auto', 'cpu' or 'cuda'"):
        Engine(tiny_model_package, device="CPU")
    with pytest.raises(SeldError, match="purpose 'live'"):
        Engine(tiny_model_package, purpose="live")


class _RecordingSession:
    """stream.onnx's session, noting which engine loop (thread) ran each call and its batch rows."""

    def __init__(self, session, fail_after: int | None = None):
        self.session, self.fail_after, self.calls = session, fail_after, []

    def run(self, names, feeds):
        self.calls.append((threading.current_thread().name, len(feeds["state"])))
        if self.fail_after is not None and len(self.calls) > self.fail_after:
            raise RuntimeError("graph failed")
        return self.session.run(names, feeds)


def test_loops_share_the_signals_to_the_end(tiny_model_package):
    # Two long signals on two loops: one each, not both in one loop while the other idles; and a
    # signal's chunks may run in either loop, its state carried on the host.
    engine = Engine(tiny_model_package, device="cpu", parallel=2)
    rng = np.random.default_rng(4)
    signals = [(0.1 * rng.standard_normal((4, 24_000 * 20))).astype(np.float32) for _ in range(2)]
    alone = [np.concatenate(list(engine.outputs(signal))) for signal in signals]
    engine.stream_session = recording = _RecordingSession(engine.stream_session)
    pieces = {0: [], 1: []}
    for key, outputs, _ in engine.outputs_of_many((index, [signal]) for index, signal in enumerate(signals)):
        pieces[key].append(outputs)
    assert {rows for _, rows in recording.calls} == {1}
    assert {loop for loop, _ in recording.calls} == {"seld-engine-0", "seld-engine-1"}
    for index, expected in enumerate(alone):
        assert np.abs(np.concatenate(pieces[index]) - expected).max() < 1e-5


def test_a_loop_that_fails_stops_the_others_and_raises(tiny_model_package):
    engine = Engine(tiny_model_package, device="cpu", parallel=2)
    engine.stream_session = _RecordingSession(engine.stream_session, fail_after=3)
    signals = [np.zeros((4, 24_000 * 30), np.float32) for _ in range(3)]
    with pytest.raises(RuntimeError, match="graph failed"):
        for _ in engine.outputs_of_many((index, [signal]) for index, signal in enumerate(signals)):
            pass
    assert not [t for t in threading.enumerate() if t.name.startswith("seld-engine-")]


# ------------------------------------------------------------------ seld annotate


def test_globs_folders_and_files(tiny_model_package, tmp_path, capsys):
    data = tmp_path / "data"
    for name in ("a/one.wav", "a/two.wav", "b/one.wav", "b/deep/three.flac", "c.wav"):
        wav(data / name, 0.5)
    (data / "a" / "notes.txt").write_text("not audio")
    jobs, problems = find_jobs([str(data / "a" / "*.wav"), str(data / "**" / "three.flac"), str(data / "c.wav"),
                                str(data / "zz*.wav")], tmp_path / "out")
    assert [job.output_stem.relative_to(tmp_path / "out").as_posix() for job in jobs] == [
        "one", "two", "b/deep/three", "c"]
    assert problems == [f"{data / 'zz*.wav'}: matches no audio file"]
    jobs, _ = find_jobs([str(data / "*")], tmp_path / "out")  # folders matched by a pattern are searched
    assert sorted(job.output_stem.relative_to(tmp_path / "out").as_posix() for job in jobs) == [
        "a/one", "a/two", "b/deep/three", "b/one", "c"]
    jobs, problems = find_jobs([str(data / "a" / "one.wav"), str(data / "b" / "one.wav"), str(data / "c.wav")],
                               tmp_path / "flat")
    assert [job.source for job in jobs] == [data / "c.wav"]  # the two that collide are left out, the rest done
    assert problems == [f"{data / 'a' / 'one.wav'}: not annotated: {data / 'b' / 'one.wav'} would write the same "
                        f"outputs ({tmp_path / 'flat' / 'one'}.csv); give their common folder ({data}) instead, or separate "
                            f"--out folders",
                        f"{data / 'b' / 'one.wav'}: not annotated: {data / 'a' / 'one.wav'} would write the same "
                        f"outputs ({tmp_path / 'flat' / 'one'}.csv); give their common folder ({data}) instead, or separate "
                            f"--out folders"]
    wav(data / "a" / "one.flac", 0.5)  # the same name in one folder, another format
    assert cli(["annotate", str(data / "a"), "--model", str(tiny_model_package), "--out", str(tmp_path / "same")]) == 1
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == ["two.csv", "two.json"]
    assert f"{data / 'a' / 'one.flac'}: not annotated: {data / 'a' / 'one.wav'} would write the same outputs" in (
        err := capsys.readouterr().err) and "rename one" in err
    (tmp_path / "quiet" / "deep").mkdir(parents=True)
    (tmp_path / "quiet" / "notes.txt").write_text("not audio")
    assert find_jobs([str(tmp_path / "quiet")], tmp_path / "out") == (
        [], [f"{tmp_path / 'quiet'}: folder holds no audio file ({', '.join(sorted(AUDIO_SUFFIXES))})"])
    (tmp_path / "a-file").write_text("")
    assert cli(["annotate", str(data / "c.wav"), "--out", str(tmp_path / "a-file")]) == 1
    assert f"--out {tmp_path / 'a-file'}: exists and is not a folder" in capsys.readouterr().err

    out = tmp_path / "out"
    code = cli(["annotate", str(data / "*" / "*.wav"), str(data / "nothing*.wav"), "--model", str(tiny_model_package),
                "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1  # the pattern that matches nothing fails; the others are done
    assert "nothing*.wav: matches no audio file" in captured.err
    assert "annotated 3 file(s), 1 failed, 0.00 h of audio in" in captured.out
    assert {p.relative_to(out).as_posix() for p in out.rglob("*")} == {
        "a", "b", "a/one.csv", "a/one.json", "a/two.csv", "a/two.json", "b/one.csv", "b/one.json"}


def test_summary_and_exit_status(tiny_model_package, tmp_path, capsys):
    good = wav(tmp_path / "in" / "good.wav", 2.0)
    (tmp_path / "in" / "empty.wav").write_bytes(b"")
    out = tmp_path / "out"
    assert cli(["annotate", str(tmp_path / "in"), "--model", str(tiny_model_package), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    line = next(text for text in captured.out.splitlines() if text.startswith("annotated"))
    assert line.startswith("annotated 1 file(s), 1 failed, 0.00 h of audio in ") and "x real time); outputs in" in line
    assert "empty.wav" in captured.err
    # Not a terminal: plain progress lines that count files and hours, no bar drawn with carriage returns
    assert "annotate 0/2 files, 0.00/0.00 h\n" in captured.err and "annotate 2/2 files" in captured.err
    assert "\r" not in captured.err
    assert (out / "good.csv").is_file() and not (out / "empty.csv").exists()
    mask = os.umask(0)
    os.umask(mask)
    for suffix in (".csv", ".json"):
        assert (out / f"good{suffix}").stat().st_mode & 0o777 == 0o666 & ~mask
    assert cli(["annotate", str(good), "--model", str(tiny_model_package), "--out", str(out)]) == 0
    assert "skipping 1 file(s) already annotated" in capsys.readouterr().out


def test_file_read_in_blocks_gives_the_csv_of_the_whole_file(tiny_model_package, tmp_path, monkeypatch):
    """75 s read in 7.3 s blocks (not aligned with the engine's chunks) = the file read whole."""
    import seld.annotate

    sources = [(2, 60, 10, 2.0, 3.0, 40.0), (0, -120, -20, 1.0, 30.0, 70.0)]
    path, _ = write_scene(tmp_path / "data", "x", "long", "foa", sources, seconds=75.0, seed=3)
    engine = Engine(tiny_model_package, device="cpu")
    monkeypatch.setattr(seld.annotate, "READ_BLOCK_S", 7.3)
    jobs, _ = find_jobs([str(path)], tmp_path / "blocks")
    assert annotate(engine, jobs, progress_bar=False).completed == 1
    audio, _ = soundfile.read(path, dtype="float32", always_2d=True)
    write_csv(tmp_path / "whole.csv", assign_tracks(engine.detections(audio.T)), engine.has_distance)
    blocks = (tmp_path / "blocks" / "long.csv").read_text()
    assert len(blocks.splitlines()) > 100 and blocks == (tmp_path / "whole.csv").read_text()
    document = json.loads((tmp_path / "blocks" / "long.json").read_text())
    assert document["duration_s"] == 75.0
    tracks = {(int(row[1]), int(row[2])) for row in rows(tmp_path / "blocks" / "long.csv")}
    assert {(event["class"], event["track"]) for event in document["events"]} == tracks


def test_a_truncated_file_is_annotated_as_far_as_it_goes_with_a_warning(tiny_model_package, tmp_path, caplog):
    path = wav(tmp_path / "cut.wav", 4.0)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert cli(["annotate", str(path), "--model", str(tiny_model_package), "--out", str(tmp_path / "out")]) == 0
    assert f"{path}: truncated (its header promises 4.0 s, the file holds 2.0 s)" in caplog.text
    assert json.loads((tmp_path / "out" / "cut.json").read_text())["duration_s"] == pytest.approx(2.0, abs=1e-3)


def test_resampled_input(tiny_model_package, tmp_path, capsys):
    path = tmp_path / "x48k.wav"
    soundfile.write(path, (0.05 * np.random.default_rng(0).standard_normal((48_000 * 3 + 17, 4))).astype(np.float32),
                    48_000, subtype="FLOAT")
    out = tmp_path / "out"
    assert cli(["annotate", str(path), "--model", str(tiny_model_package), "--out", str(out)]) == 0
    assert "annotated 1 file(s), 0 failed" in capsys.readouterr().out
    document = json.loads((out / "x48k.json").read_text())
    assert abs(document["duration_s"] - 3.0) < 1e-3 and document["sample_rate"] == 24_000
    assert all(0 <= int(row[0]) < 31 for row in rows(out / "x48k.csv"))


def test_a_file_failing_midway_leaves_no_outputs(tiny_model_package, tmp_path, capsys):
    audio = 0.05 * np.random.default_rng(0).standard_normal((24_000 * 80, 4))
    audio[24_000 * 75] = np.nan  # read (and annotated) for 70 s before the engine meets it
    wav(tmp_path / "in" / "good.wav", 1.0)
    soundfile.write(tmp_path / "in" / "bad.wav", audio, 24_000, subtype="FLOAT")
    out = tmp_path / "out"
    assert cli(["annotate", str(tmp_path / "in"), "--model", str(tiny_model_package), "--out", str(out)]) == 1
    assert "bad.wav: NaN or Inf samples (first at 75.000 s)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["good.csv", "good.json"]  # no temporary files either


def test_non_causal_model_reads_each_file_whole(tmp_path, caplog, capsys):
    from seld.arrays import FOA
    from seld.benchmarks.reference_baseline import export_untrained_package
    from seld.features import FeatureConfig
    from seld.model import preset
    from seld.network import SeldNetwork

    network = SeldNetwork(FeatureConfig(), preset("tiny", causal=False, attention_window=0), FOA)
    export_untrained_package(tmp_path / "model", network, "tiny")
    wav(tmp_path / "x.wav", 2.5)
    with caplog.at_level(logging.INFO, logger="seld.engine"):
        assert cli(["annotate", str(tmp_path / "x.wav"), "--model", str(tmp_path / "model"), "--out",
                    str(tmp_path / "out")]) == 0
    assert "non-causal model: each file is read whole" in caplog.text
    assert all(0 <= int(row[0]) < 25 for row in rows(tmp_path / "out" / "x.csv"))
    assert cli(["annotate", str(tmp_path / "x.wav"), "--model", str(tmp_path / "model"), "--out",
                str(tmp_path / "s"), "--streaming"]) == 1
    assert "--streaming needs a causal model" in capsys.readouterr().err


@pytest.mark.parametrize("streaming", [False, True])
def test_events_hold_exactly_the_csv_rows(tiny_model_package, tmp_path, capsys, streaming):
    sources = [(2, 60, 10, 2.0, 0.5, 6.0), (0, -120, -20, 1.0, 3.0, 9.0)]
    path, _ = write_scene(tmp_path / "data", "x", "scene", "foa", sources, seconds=10.0, seed=4)
    out = tmp_path / "out"
    assert cli(["annotate", str(path), "--model", str(tiny_model_package), "--out", str(out)]
               + ["--streaming"] * streaming) == 0
    csv_rows = sorted((int(r[0]), int(r[1]), int(r[2]), round(float(r[3]), 2)) for r in rows(out / "scene.csv"))
    events = json.loads((out / "scene.json").read_text())["events"]
    event_rows = sorted((f[0], e["class"], e["track"], f[1]) for e in events for f in e["frames"])
    assert len(csv_rows) > 10 and event_rows == csv_rows
    assert [(e["onset_s"], e["class"], e["track"]) for e in events] == sorted(
        (e["onset_s"], e["class"], e["track"]) for e in events)


# ------------------------------------------------------------------ several processes


def test_processes_write_what_one_process_writes(tiny_model_package, tmp_path, capsys):
    inputs = tmp_path / "in"
    for index, seconds in enumerate((3.0, 1.0, 2.5, 0.5)):
        wav(inputs / f"take{index}.wav", seconds, seed=index)
    wav(inputs / "stereo.wav", 1.0, channels=2)
    (inputs / "broken.wav").write_bytes(b"RIFF not really")
    outputs = {}
    for processes in (1, 3):
        out = tmp_path / f"out{processes}"
        code = cli(["annotate", str(inputs), "--model", str(tiny_model_package), "--out", str(out),
                    "--processes", str(processes)])
        captured = capsys.readouterr()
        assert code == 1
        assert "annotated 4 file(s), 2 failed, 0.00 h of audio in" in captured.out
        assert "stereo.wav: has 2 channels, the array needs 4" in captured.err
        assert "broken.wav" in captured.err and "6/6 files" in captured.err
        outputs[processes] = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")}
    assert sorted(outputs[1]) == sorted(f"take{i}.{s}" for i in range(4) for s in ("csv", "json"))
    assert outputs[3] == outputs[1]


def test_jobs_are_dealt_by_size_and_processes_by_cores(tmp_path):
    from seld.annotate_processes import default_processes, split_jobs

    jobs, _ = find_jobs([str(wav(tmp_path / f"f{seconds}.wav", seconds)) for seconds in (4, 1, 3, 2)], tmp_path)
    parts = split_jobs(jobs, 2)
    assert [[job.source.stem for job in part] for part in parts] == [["f4", "f1"], ["f3", "f2"]]
    assert split_jobs(jobs[:1], 3) == [jobs[:1]]
    assert [default_processes(100, cores) for cores in (2, 7, 8, 16, 64)] == [1, 1, 2, 4, 16]
    assert default_processes(3, 64) == 3


def test_nothing_to_do_in_processes_and_a_dead_workers_files(tiny_model_package, tmp_path, capsys):
    from seld.annotate_processes import _lost_files

    wav(tmp_path / "done" / "a.wav", 0.5)
    arguments = ["annotate", str(tmp_path / "done"), "--model", str(tiny_model_package), "--out", str(tmp_path / "done-out")]
    assert cli(arguments) == 0  # annotated already: nothing left to do
    capsys.readouterr()
    assert cli(["annotate", str(tmp_path / "done"), "--model", str(tiny_model_package), "--out",
                str(tmp_path / "done-out"), "--processes", "2"]) == 0
    assert "annotated 0 file(s), 0 failed" in capsys.readouterr().out
    jobs, _ = find_jobs([str(wav(tmp_path / "in" / name, 0.5)) for name in ("done.wav", "lost.wav")], tmp_path / "out")
    (tmp_path / "out").mkdir()
    for suffix in (".csv", ".json"):
        (tmp_path / "out" / f"done{suffix}").write_text("")
    (tmp_path / "out" / ".lost.csv.x1y2.tmp").write_text("half")
    assert _lost_files(jobs, -9, {}) == [f"{jobs[1].source}: not annotated: the worker process annotating it died "
                                         "(exit code -9)"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["done.csv", "done.json"]


def test_with_overwrite_a_dead_workers_files_from_an_earlier_run_are_not_counted_done(tmp_path):
    from seld.annotate_processes import _lost_files, _outputs_stamp

    jobs, _ = find_jobs([str(wav(tmp_path / "in" / name, 0.5)) for name in ("redone.wav", "stale.wav")], tmp_path / "out")
    (tmp_path / "out").mkdir()
    for name in ("redone", "stale"):  # the last run's outputs
        for suffix in (".csv", ".json"):
            (tmp_path / "out" / f"{name}{suffix}").write_text("old")
    before = {job: _outputs_stamp(job) for job in jobs}
    fresh = tmp_path / "out" / ".redone.csv.new.tmp"  # this run puts its CSV in place by a rename
    fresh.write_text("new")
    fresh.replace(tmp_path / "out" / "redone.csv")
    assert _lost_files(jobs, -9, before) == [f"{jobs[1].source}: not annotated: the worker process annotating it "
                                             "died (exit code -9)"]


# ------------------------------------------------------------------ odd names and failed writes


def test_names_with_dots_and_brackets_keep_their_own_outputs(tiny_model_package, tmp_path, capsys):
    for name in ("rec.2024.wav", "rec.2025.wav", "take[1].wav"):
        wav(tmp_path / "in" / name, 0.5)
    out = tmp_path / "out"
    assert cli(["annotate", str(tmp_path / "in"), "--model", str(tiny_model_package), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["rec.2024.csv", "rec.2024.json", "rec.2025.csv", "rec.2025.json",
                                                    "take[1].csv", "take[1].json"]
    assert cli(["annotate", str(tmp_path / "in"), "--model", str(tiny_model_package), "--out", str(out)]) == 0
    assert "skipping 3 file(s) already annotated" in capsys.readouterr().out


def test_a_dead_workers_temporary_files_go_whatever_the_name(tmp_path):
    from seld.annotate_processes import _lost_files

    jobs, _ = find_jobs([str(wav(tmp_path / "in" / "take[1].wav", 0.5))], tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".take[1].csv.x1y2.tmp").write_text("half")
    assert len(_lost_files(jobs, -9, {})) == 1 and list((tmp_path / "out").iterdir()) == []


def test_a_name_that_is_not_utf8(tiny_model_package, tmp_path, capsys):
    source = wav(tmp_path / "in" / "plain.wav", 0.5).rename(tmp_path / "in" / os.fsdecode(b"caf\xe9.wav"))
    out = tmp_path / "out"
    assert cli(["annotate", str(source), "--model", str(tiny_model_package), "--out", str(out), "--plot"]) == 0
    assert sorted(os.fsencode(p.name) for p in out.iterdir()) == [b"caf\xe9.csv", b"caf\xe9.json", b"caf\xe9.png"]


def test_a_corrupt_sample_rate_fails_that_file_only(tiny_model_package, tmp_path, capsys):
    wav(tmp_path / "in" / "good.wav", 0.5)
    bad = wav(tmp_path / "in" / "bad.wav", 0.5)
    header = bytearray(bad.read_bytes())
    header[24:28] = (2**31 - 1).to_bytes(4, "little")  # the fmt chunk's sample rate
    bad.write_bytes(bytes(header))
    out = tmp_path / "out"
    assert cli(["annotate", str(tmp_path / "in"), "--model", str(tiny_model_package), "--out", str(out)]) == 1
    assert f"{bad}: implausible sample rate 2147483647 Hz" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["good.csv", "good.json"]


@pytest.mark.parametrize("streaming", [False, True])
def test_outputs_that_cannot_be_written_fail_that_file_and_leave_nothing(tiny_model_package, tmp_path, capsys,
                                                                         monkeypatch, streaming):
    import seld.outputs

    wav(tmp_path / "in" / "good.wav", 0.5)
    wav(tmp_path / "in" / "full.wav", 0.5, seed=1)
    original = seld.outputs.write_plot

    def write_plot(path, detections, class_names, duration_s, title):
        if title.endswith("full.wav"):
            raise OSError(28, "No space left on device")
        original(path, detections, class_names, duration_s, title)

    monkeypatch.setattr(seld.outputs, "write_plot", write_plot)
    arguments = ["annotate", str(tmp_path / "in"), "--model", str(tiny_model_package), "--out", str(tmp_path / "out"),
                 "--plot"] + (["--streaming"] if streaming else [])
    assert cli(arguments) == 1
    assert "full.wav: cannot write its outputs" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.csv", "good.json", "good.png"]


def test_a_streamed_file_whose_rows_cannot_be_written(tiny_model_package, tmp_path, capsys, monkeypatch):
    from seld.outputs import FileOutputs

    wav(tmp_path / "in" / "good.wav", 0.5)
    wav(tmp_path / "in" / "full.wav", 0.5, seed=1)
    original = FileOutputs.add_tracked

    def add_tracked(self, detections, ended=()):
        if self.stem.name == "full":
            raise OSError(27, "File too large")
        original(self, detections, ended)

    monkeypatch.setattr(FileOutputs, "add_tracked", add_tracked)
    assert cli(["annotate", str(tmp_path / "in"), "--model", str(tiny_model_package), "--out", str(tmp_path / "out"),
                "--streaming"]) == 1
    assert "full.wav: cannot write its outputs ([Errno 27] File too large)" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.csv", "good.json"]


def test_discarding_outputs_whose_rows_cannot_be_flushed(tmp_path):
    from seld.outputs import FileOutputs

    outputs = FileOutputs(tmp_path / "x", ["a"], with_distance=False)

    class FullDisk:
        def close(self):
            raise OSError(28, "No space left on device")

    outputs.csv.close()
    outputs.csv = FullDisk()
    outputs.discard()
    assert list(tmp_path.iterdir()) == []


def test_streaming_keeps_few_files_in_flight(tiny_model_package, tmp_path, monkeypatch):
    """Files done behind a slow one hold their outputs open until their turn: only a few at once."""
    import seld.annotate
    from seld.outputs import FileOutputs

    for index in range(17):
        wav(tmp_path / "in" / f"f{index:02d}.wav", 0.3, seed=index)
    open_now, most = [0], [0]
    original_init, original_commit, original_discard = FileOutputs.__init__, FileOutputs.commit, FileOutputs.discard

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        open_now[0] += 1
        most[0] = max(most[0], open_now[0])

    def closing(original):
        def method(self, *args, **kwargs):
            open_now[0] -= 1
            return original(self, *args, **kwargs)
        return method

    # The first file is slow: it waits (2 s at most) for every other file to be done.
    others_done, done = threading.Event(), []
    original_streaming = seld.annotate._annotate_streaming

    def streaming(engine, progress, plot, stop):
        first = progress.job.source.name == "f00.wav"
        if first:
            others_done.wait(timeout=2)
        result = original_streaming(engine, progress, plot, stop)
        if not first:
            done.append(progress)
            if len(done) == 16:
                others_done.set()
        return result

    monkeypatch.setattr(FileOutputs, "__init__", init)
    monkeypatch.setattr(FileOutputs, "commit", closing(original_commit))
    monkeypatch.setattr(FileOutputs, "discard", closing(original_discard))
    monkeypatch.setattr(seld.annotate, "_annotate_streaming", streaming)
    engine = Engine(tiny_model_package, device="cpu", parallel=2)
    jobs, _ = find_jobs([str(tmp_path / "in")], tmp_path / "out")
    assert annotate(engine, jobs, progress_bar=False, streaming=True).completed == 17
    assert most[0] <= seld.annotate.STREAMING_AHEAD * 2 + 1


def test_a_rerun_skips_only_outputs_of_the_same_file_and_model(tiny_model_package, tmp_path, capsys, monkeypatch):
    """Outputs were taken as done by their names alone: a rerun kept another file's (a take.wav
    of another folder) or another model's outputs without a word."""
    monkeypatch.chdir(tmp_path)
    first, second = wav(tmp_path / "a" / "take.wav", 0.5, seed=1), wav(tmp_path / "b" / "take.wav", 0.5, seed=2)
    out = tmp_path / "out"
    model = ["--model", str(tiny_model_package), "--out", str(out)]
    assert cli(["annotate", "a/take.wav", *model]) == 0
    written = (out / "take.json").read_bytes()
    capsys.readouterr()
    assert cli(["annotate", str(first), *model]) == 0  # the same file, named another way: done
    assert "skipping 1 file(s) already annotated" in capsys.readouterr().out
    assert cli(["annotate", str(second), *model]) == 1  # another file: refused, and its outputs left alone
    assert (f"{second}: not annotated: {out / 'take.json'} holds the outputs of another file ({first}); "
            "--overwrite replaces them") in capsys.readouterr().err
    assert (out / "take.json").read_bytes() == written
    other_model = tmp_path / "other-model"
    shutil.copytree(tiny_model_package, other_model)
    info = json.loads((other_model / "seld.json").read_text())
    name, info["name"] = info["name"], "another-model"
    (other_model / "seld.json").write_text(json.dumps(info))
    assert cli(["annotate", "a/take.wav", "--model", str(other_model), "--out", str(out)]) == 1
    assert f"holds outputs of model {name}, not another-model" in capsys.readouterr().err
    assert cli(["annotate", "a/take.wav", "--model", str(other_model), "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "take.json").read_text())["model"] == "another-model"


def test_a_file_named_twice_is_done_once_and_a_missing_folder_is_named(tmp_path):
    take = wav(tmp_path / "in" / "a" / "take.wav", 0.2)
    other = wav(tmp_path / "in" / "b" / "other.aiff", 0.2)  # folders are searched for every format libsndfile reads
    jobs, problems = find_jobs([str(take), os.path.relpath(take), str(tmp_path / "in"), str(tmp_path / "gone") + "/"],
                               tmp_path / "out")
    assert [(job.source, job.output_stem) for job in jobs] == [(take, tmp_path / "out" / "take"),
                                                               (other, tmp_path / "out" / "b" / "other")]
    assert problems == [f"{tmp_path / 'gone'}/: no such folder"]


def test_a_link_in_a_folder_that_leads_nowhere_is_named(tmp_path):
    """Skipped without a word: a folder of links into an unmounted drive said it held no audio file."""
    take = wav(tmp_path / "in" / "take.wav", 0.2)
    (tmp_path / "in" / "gone.wav").symlink_to(tmp_path / "drive" / "gone.wav")
    for given in (tmp_path / "in", tmp_path / "*", tmp_path / "**", tmp_path / "in" / "*.wav"):
        jobs, problems = find_jobs([str(given)], tmp_path / "out")
        assert [job.source for job in jobs] == [take]
        assert problems == [f"{tmp_path / 'in' / 'gone.wav'}: a link to {tmp_path / 'drive' / 'gone.wav'}, which is "
                            "not there"]


@pytest.mark.parametrize("name", ["a$b$c", "z$\\frac{$x", "x" * 240])
def test_names_that_matplotlib_or_the_file_system_took_badly(tiny_model_package, tmp_path, capsys, name):
    """'$' made the plot title mathtext (a parse error stopped the whole run); a name of 240
    characters left no room for its temporary output names."""
    source = wav(tmp_path / "in" / f"{name}.wav", 0.3)
    out = tmp_path / "out"
    assert cli(["annotate", str(source), "--model", str(tiny_model_package), "--out", str(out), "--plot"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{name}.csv", f"{name}.json", f"{name}.png"]


def test_a_plot_that_fails_fails_its_file_only(tiny_model_package, tmp_path, capsys, monkeypatch):
    import seld.outputs

    def broken_plot(path, detections, class_names, duration_s, title):
        if "bad" in title:
            raise ValueError("cannot draw it")
        return original(path, detections, class_names, duration_s, title)

    original = seld.outputs.write_plot
    monkeypatch.setattr(seld.outputs, "write_plot", broken_plot)
    bad, good = wav(tmp_path / "in" / "bad.wav", 0.3), wav(tmp_path / "in" / "good.wav", 0.3)
    out = tmp_path / "out"
    assert cli(["annotate", str(bad), str(good), "--model", str(tiny_model_package), "--out", str(out), "--plot"]) == 1
    assert f"{bad}: cannot write its outputs (ValueError: cannot draw it)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["good.csv", "good.json", "good.png"]


def test_json_of_a_name_that_is_not_utf8_is_strict_json_and_overwrite_drops_an_old_plot(tiny_model_package, tmp_path):
    source = wav(tmp_path / "in" / "plain.wav", 0.3).rename(tmp_path / "in" / os.fsdecode(b"caf\xe9.wav"))
    out = tmp_path / "out"
    arguments = ["annotate", str(source), "--model", str(tiny_model_package), "--out", str(out)]
    assert cli([*arguments, "--plot"]) == 0
    text = (out / os.fsdecode(b"caf\xe9.json")).read_text(encoding="utf-8")
    assert "\\udc" not in text and json.loads(text)["file"].endswith("caf\\xe9.wav")
    assert cli(arguments) == 0  # the same file: done
    assert cli([*arguments, "--overwrite"]) == 0  # redone without a plot: the old plot goes with the old outputs
    assert sorted(os.fsencode(p.name) for p in out.iterdir()) == [b"caf\xe9.csv", b"caf\xe9.json"]


def test_an_output_folder_that_cannot_be_written_is_found_before_the_work(tiny_model_package, tmp_path, capsys,
                                                                           monkeypatch):
    import seld.annotate

    source = wav(tmp_path / "in" / "take.wav", 0.3)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(seld.annotate, "Engine", None)  # no engine is made
    assert cli(["annotate", str(source), "--model", str(tiny_model_package), "--out",
                str(tmp_path / "a-file" / "out")]) == 1
    assert f"{tmp_path / 'a-file' / 'out'}: cannot write there" in capsys.readouterr().err


@pytest.mark.parametrize("streaming", [False, True])
def test_sigterm_unwinds_a_run_and_a_rerun_removes_what_a_kill_left(tiny_model_package, tmp_path, capsys,
                                                                   monkeypatch, streaming):
    """One process had no SIGTERM handler: `timeout` or a service manager left .NAME.csv.*.tmp
    files, and no rerun removed them."""
    import signal

    import seld.annotate

    sources = [wav(tmp_path / "in" / f"{name}.wav", 0.5) for name in ("a", "b")]
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a.csv.k1ll3d00.tmp").write_text("left by a kill")
    original = seld.annotate._blocks

    def terminated_midway(engine, progress):
        for index, block in enumerate(original(engine, progress)):
            if index == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            yield block

    monkeypatch.setattr(seld.annotate, "READ_BLOCK_S", 0.1)
    monkeypatch.setattr(seld.annotate, "_blocks", terminated_midway)
    assert cli(["annotate", *map(str, sources), "--model", str(tiny_model_package), "--out", str(out)]
               + ["--streaming"] * streaming) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_stopped_streaming_file_returns_at_its_next_block_and_leaves_nothing(tiny_model_package, tmp_path):
    from seld.annotate import _annotate_streaming, _Progress

    source = wav(tmp_path / "in" / "take.wav", 1.0)
    engine = Engine(tiny_model_package, device="cpu")
    jobs, _ = find_jobs([str(source)], tmp_path / "out")
    stop = threading.Event()
    stop.set()
    assert _annotate_streaming(engine, _Progress(jobs[0], 24_000, 24_000), False, stop) is None
    assert list((tmp_path / "out").iterdir()) == []


def test_worker_log_lines_go_to_the_parents_bar():
    import queue

    from seld.annotate_processes import _BarLogHandler

    messages = queue.Queue()
    handler = _BarLogHandler(messages)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("seld.test-worker")
    logger.addHandler(handler)
    try:
        logger.warning("take.wav: truncated")
    finally:
        logger.removeHandler(handler)
    assert messages.get_nowait() == ("write", "WARNING seld.test-worker: take.wav: truncated")


def test_reruns_from_other_folders_are_judged_by_the_absolute_path(tiny_model_package, tmp_path, capsys,
                                                                  monkeypatch):
    """NAME.json recorded the file as named (relative to the first run's folder): a take.wav of
    another folder, named alike from there, was taken as done, and the same file named from
    elsewhere was refused."""
    first, second = wav(tmp_path / "A" / "take.wav", 0.3, seed=1), wav(tmp_path / "B" / "take.wav", 0.3, seed=2)
    out = tmp_path / "out"
    model = ["--model", str(tiny_model_package), "--out", str(out)]
    monkeypatch.chdir(tmp_path / "A")
    assert cli(["annotate", "take.wav", *model]) == 0
    monkeypatch.chdir(tmp_path / "B")
    capsys.readouterr()
    assert cli(["annotate", "take.wav", *model]) == 1
    assert f"holds the outputs of another file ({first})" in capsys.readouterr().err
    monkeypatch.chdir("/")
    assert cli(["annotate", str(first), *model]) == 0
    assert "skipping 1 file(s) already annotated" in capsys.readouterr().out
    assert second.is_file()


def test_links_of_other_names_are_files_of_their_own_and_foreign_outputs_are_left(tiny_model_package, tmp_path,
                                                                                  capsys):
    pool = wav(tmp_path / "pool" / "x.wav", 0.3)
    for name in ("train/a.wav", "test/b.wav"):
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).symlink_to(pool)
    jobs, problems = find_jobs([str(tmp_path / "data")], tmp_path / "out")
    assert [job.output_stem.name for job in jobs] == ["b", "a"] and problems == []
    out = tmp_path / "mine"
    out.mkdir()
    (out / "x.csv").write_text("my own table\n")
    (out / "x.json").write_text('{"my": "notes"}\n')
    (out / "x.png").write_bytes(b"my own picture")
    assert cli(["annotate", str(pool), "--model", str(tiny_model_package), "--out", str(out)]) == 1
    assert f"{out / 'x.json'} is no seld annotation (or cannot be read); --overwrite replaces it" in (
        capsys.readouterr().err)
    assert (out / "x.csv").read_text() == "my own table\n" and (out / "x.png").read_bytes() == b"my own picture"
    (out / "x.csv").unlink()
    (out / "x.json").unlink()  # no earlier outputs: a plot of that name is not ours to remove
    assert cli(["annotate", str(pool), "--model", str(tiny_model_package), "--out", str(out)]) == 0
    assert (out / "x.png").read_bytes() == b"my own picture"


def test_a_lone_file_of_an_outputs_name_is_not_overwritten(tiny_model_package, tmp_path, capsys):
    """Only a CSV and JSON together were checked: a user's own NAME.csv of labels alone (or NAME.json,
    or with --plot NAME.png) was overwritten unasked. A stopped run's JSON alone is redone."""
    source = wav(tmp_path / "in" / "take.wav", 0.3)
    out = tmp_path / "out"
    out.mkdir()
    annotate_take = ["annotate", str(source), "--model", str(tiny_model_package), "--out", str(out)]
    for name, options in (("take.csv", []), ("take.json", []), ("take.png", ["--plot"])):
        (out / name).write_text("mine\n")
        assert cli(annotate_take + options) == 1
        assert f"{out / name} is there, and seld did not write it for this file; --overwrite replaces it" in (
            capsys.readouterr().err)
        assert (out / name).read_text() == "mine\n" and sorted(p.name for p in out.iterdir()) == [name]
        if name == "take.png":
            assert cli(annotate_take) == 0  # no plot asked for: a picture of that name is left alone
            assert (out / name).read_text() == "mine\n"
        assert cli(annotate_take + options + ["--overwrite"]) == 0
        for path in out.iterdir():
            path.unlink()
    assert cli(annotate_take) == 0
    written = (out / "take.csv").read_text()
    (out / "take.csv").unlink()  # as a run stopped between putting the JSON and the CSV in place leaves it
    assert cli(annotate_take) == 0 and (out / "take.csv").read_text() == written


def test_an_interrupt_while_a_streamed_file_is_written_stops_the_rest_and_leaves_nothing(tiny_model_package,
                                                                                       tmp_path, monkeypatch):
    """The streaming generator stayed open past the interrupt: its threads went on with the files
    queued, and the outputs of those that finished stayed as temporary files."""
    import seld.annotate
    from seld.outputs import FileOutputs

    for index in range(8):
        wav(tmp_path / "in" / f"f{index}.wav", 0.3, seed=index)
    commits, interrupted = [], threading.Event()
    original_commit, original_streaming = FileOutputs.commit, seld.annotate._annotate_streaming

    def interrupted_commit(self, *args):
        commits.append(self.stem.name)
        if len(commits) == 2:
            interrupted.set()
            raise KeyboardInterrupt
        return original_commit(self, *args)

    def streaming(engine, progress, *args):  # the files after the first two start once the run is interrupted
        if progress.job.source.name not in ("f0.wav", "f1.wav"):
            interrupted.wait(timeout=10)
        return original_streaming(engine, progress, *args)

    monkeypatch.setattr(FileOutputs, "commit", interrupted_commit)
    monkeypatch.setattr(seld.annotate, "_annotate_streaming", streaming)
    engine = Engine(tiny_model_package, device="cpu", parallel=2)
    jobs, _ = find_jobs([str(tmp_path / "in")], tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        annotate(engine, jobs, progress_bar=False, streaming=True)
    for thread in threading.enumerate():  # the old way, the pool went on after the interrupt
        if thread.name.startswith("seld-stream"):
            thread.join(timeout=10)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f0.csv", "f0.json"]


def test_a_package_exported_again_under_its_name_is_another_model(tiny_model_package, tmp_path, capsys):
    """A rerun judged the model by its name: outputs of a package since exported again (or its
    threshold edited) were kept as done."""
    package = tmp_path / "my_model"
    shutil.copytree(tiny_model_package, package)
    source = wav(tmp_path / "in" / "take.wav", 0.3)
    arguments = ["annotate", str(source), "--model", str(package), "--out", str(tmp_path / "out")]
    assert cli(arguments) == 0
    assert cli(arguments) == 0 and "skipping 1 file(s) already annotated" in capsys.readouterr().out
    info = json.loads((package / "seld.json").read_text())
    info["thresholds"]["activity"] += 0.1
    (package / "seld.json").write_text(json.dumps(info))
    assert cli(arguments) == 1
    assert "holds outputs of another package named" in capsys.readouterr().err


def test_the_model_digest_follows_what_the_outputs_depend_on(tiny_model_package, tmp_path):
    """Recording test scores in a package (the recipe does) made every earlier output 'another model'."""
    from seld.engine import ModelInfo

    package = tmp_path / "my_model"
    shutil.copytree(tiny_model_package, package)
    before = ModelInfo.load(package).digest
    info = json.loads((package / "seld.json").read_text())
    info["metrics"]["test"] = {"dev-test": {"F": 0.5}}
    (package / "seld.json").write_text(json.dumps(info))
    assert ModelInfo.load(package).digest == before
    info["classes"][0] = "renamed"
    (package / "seld.json").write_text(json.dumps(info))
    assert ModelInfo.load(package).digest != before
