"""The inference engine: a model package run by ONNX Runtime, offline and streaming.

numpy, scipy, soundfile and onnxruntime only — never torch — so annotation and the
live demo start fast and stay small.

The engine is always fed raw audio. The graphs begin at the STFT spectrum, which the
host computes here with exactly the training framing (seld.spectrum); seld.json says so
(`graph_input: "spectrum"`): `seld bench annotate` measures this against a graph that
begins at raw audio (a dense DFT inside the graph), which is slower.

Streaming: `Engine.stream()` gives a `Stream` that takes audio blocks of any size,
cuts them into chunks of whole label frames, runs stream.onnx with its state carried
and yields each label frame as soon as it is complete.

Offline: `Engine.outputs_of_many(sources)` runs many signals, each given as an iterator
of audio blocks, so a file is read block by block and memory does not grow with its
length. A causal model runs stream.onnx in short chunks (1 s on a CPU: the spectra and
activations of a chunk stay in the CPU's cache), several signals per call (one batch row
each, a row's state carried from chunk to chunk on the host), and on a CPU one such loop
per core, each on one ONNX Runtime thread: whole files in parallel scale better than one
graph's operators split over the cores, and keep scaling when other processes share the
machine (`seld bench annotate` measures both). The loops share one pool of signals
(`_LanePool`), so a signal's chunks may run in any loop and no loop idles while another
has several signals left; a lone loop (one signal) with a core to spare has a helper thread read
and transform its next chunks while the graph runs. A non-causal model runs each signal whole
through model.onnx.
`outputs(audio)`, `outputs_from_blocks(blocks)` and the `detections` forms are the
one-signal cases.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import scipy.fft

from seld import SeldError
from seld.arrays import Array
from seld.audio import first_non_finite
from seld.decode import Detection, EventTracker, OutputLayout, decode, frame_json
from seld.outputs import decode_outputs
from seld.spectrum import FeatureConfig, HostSpectrum

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# The seld.json fields a package's outputs follow (its digest covers them, and its graphs)
OUTPUT_SETTINGS = ("sample_rate", "num_channels", "array", "front_end", "hop", "label_hop", "causal", "classes",
                   "output", "thresholds", "graph_input", "state_size")
CPU_CHUNK_FRAMES = 10  # label frames per stream.onnx call offline on a CPU (1 s: see the module docstring)
CPU_LANES = 2  # signals per call on a CPU (2 against 4: 3% less time per hour in 10 alternating runs here)
GPU_CHUNK_FRAMES = 100  # a GPU wants large calls
GPU_LANES = 32
DECODE_FRAMES = 600  # label frames handed on at once per signal (60 s): decoding is vectorized
_HOST_BLOCK_ROWS = 512  # frames x channels per host FFT call, as seld.spectrum's
# Label frames from which decode_outputs beats seld.decode.decode (on the shipped FOA model's outputs:
# 8 frames 178 against 206 us, 16 frames 372 against 250).
VECTORIZED_DECODE_FRAMES = 12


@dataclass(frozen=True)
class ModelInfo:
    """seld.json, read."""

    folder: Path
    data: dict

    @classmethod
    def load(cls, folder: str | Path) -> "ModelInfo":
        folder = Path(folder)
        path = folder / "seld.json"
        if folder.is_file():
            in_package = folder.suffix in (".onnx", ".json", ".safetensors")
            raise SeldError(f"{folder}: a file; a model is the package folder that holds seld.json "
                            f"({folder.parent if in_package else 'seld export ... --out DIR'})")
        if not folder.is_dir():
            raise SeldError(f"{folder}: no such model package folder")
        if not path.is_file():
            if (folder / "last.pt").is_file():
                raise SeldError(f"{folder}: a training run, not a model package; export it first "
                                f"(seld export {folder} --out DIR)")
            raise SeldError(f"{folder}: not a model package (no seld.json)")
        try:
            data = json.loads(path.read_text())
        except ValueError as error:
            raise SeldError(f"{path}: not valid JSON: {error}") from None
        if data.get("format_version") != FORMAT_VERSION:
            raise SeldError(f"{path}: format_version {data.get('format_version')!r}, this seld reads {FORMAT_VERSION}")
        for name in ("model.onnx", "stream.onnx"):
            if not (folder / name).is_file():
                raise SeldError(f"{folder}: model package lacks {name}")
        return cls(folder, data)

    @property
    def layout(self) -> OutputLayout:
        return OutputLayout.of(self.data["output"])

    @property
    def name(self) -> str:
        """The model's name: seld.json's, else its folder's (outputs record it)."""
        return str(self.data.get("name", self.folder.name))

    @functools.cached_property
    def digest(self) -> str:
        """What the package computes, in 16 hex digits: a hash of its graphs and of the seld.json
        settings its outputs follow (thresholds, classes, ...; not its metrics or card). Outputs
        record it: a package exported again under the same name is another model."""
        import hashlib

        digest = hashlib.sha256()
        for name in ("model.onnx", "stream.onnx"):
            digest.update((self.folder / name).read_bytes())
        digest.update(json.dumps({key: self.data.get(key) for key in OUTPUT_SETTINGS}, sort_keys=True).encode())
        return digest.hexdigest()[:16]


def _providers(device: str) -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise SeldError("--device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        if not _nvidia_gpu_present():  # ONNX Runtime would print its library errors, then run on the CPU
            raise SeldError("--device cuda: no NVIDIA GPU found (no NVIDIA driver device); use --device auto or cpu")
        _load_cuda_libraries()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        return ["CPUExecutionProvider"]
    if not _nvidia_gpu_present():
        # Asking for CUDA without a GPU makes ONNX Runtime print library errors before falling back.
        _say_once("no NVIDIA GPU found: ONNX Runtime is not asked for CUDA, the graphs run on the CPU")
        return ["CPUExecutionProvider"]
    _load_cuda_libraries()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


@functools.cache  # once a process (--streaming made a session, and said it, per file)
def _say_once(message: str) -> None:
    log.info(message)


@functools.cache  # once a process
def _load_cuda_libraries() -> None:
    """CUDA and cuDNN from the nvidia-* pip packages, loaded into the process: onnxruntime-gpu finds
    them only once loaded (torch does it when imported, and this path never imports torch), else its
    CUDA provider fails to load and every session silently runs on the CPU. Libraries already on
    the loader's path are found either way."""
    import contextlib
    import sys

    import onnxruntime

    preload = getattr(onnxruntime, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is None:
        return
    try:
        with contextlib.redirect_stdout(sys.stderr):  # it prints its warnings; stdout may be --json output
            preload()
    except Exception as error:  # its own failures: the provider reports what is missing when it loads
        log.debug("onnxruntime.preload_dlls: %s", error)


def _nvidia_gpu_present() -> bool:
    # /dev/dxg: WSL 2, whose GPUs have no /dev/nvidiactl
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/dxg").exists()


def cuda_provider(cuda_graph: bool = False) -> tuple[str, dict[str, str]]:
    """ONNX Runtime's CUDA provider with our options: TF32 off (its matmuls moved the recurrent state
    ~2e-3 from the CPU's on an H200; off, 1e-5), and on request CUDA graphs (see _BoundStep)."""
    return "CUDAExecutionProvider", {"use_tf32": "0", **({"enable_cuda_graph": "1"} if cuda_graph else {})}


def session_options(threads: int, **entries: str):
    """SessionOptions: `threads` intra-op threads, one inter-op thread, sequential execution,
    all graph optimizations; `entries` are ONNX Runtime config entries (e.g.
    ``{"session.intra_op.allow_spinning": "0"}``)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # a missing CUDA library is reported below, in one line
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    return options


def create_session(path: Path, device: str = "auto", purpose: str = "batch", threads: int | None = None,
                   dimensions: dict[str, int] | None = None, announce: bool = True, cuda_graph: bool = False):
    """An ONNX Runtime session tuned for `purpose` ("stream": one intra-op thread, for latency;
    "batch": `threads`, all cores by default). `dimensions` fixes named dynamic dimensions
    (e.g. ``{"batch": 1}``). `cuda_graph`: the CUDA provider replays each run as one CUDA graph (every
    node on CUDA, fixed shapes, inputs and outputs bound once; see _BoundStep). Logs the providers it
    really got (at debug level unless `announce`): ONNX Runtime falls back to CPU silently."""
    import onnxruntime

    if threads is None:
        threads = 1 if purpose == "stream" else (os.cpu_count() or 1)
    wanted = _providers(device)
    options = session_options(threads)
    for name, size in (dimensions or {}).items():
        options.add_free_dimension_override_by_name(name, size)
    providers: list = [cuda_provider(cuda_graph) if name == "CUDAExecutionProvider" else name for name in wanted]
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types
        raise SeldError(f"{path}: ONNX Runtime cannot load it: {str(error).splitlines()[0]}") from None
    got = session.get_providers()
    if "CUDAExecutionProvider" in wanted and "CUDAExecutionProvider" not in got:
        level = (logging.WARNING if device == "cuda" else logging.INFO) if announce else logging.DEBUG
        log.log(level, "%s: CUDA was asked for but ONNX Runtime runs it on %s", path.name, ", ".join(got))
    else:
        log.log(logging.INFO if announce else logging.DEBUG, "%s: running on %s", path.name, ", ".join(got))
    return session


@dataclass
class Frame:
    """One label frame: its index, time, and the tracked events active in it."""

    frame: int
    time_s: float
    detections: list[Detection]
    class_names: list[str] = field(repr=False, default_factory=list)

    @property
    def events(self) -> list[dict]:
        return self.to_json()["events"]

    def to_json(self) -> dict:
        return frame_json(self.frame, self.detections, self.class_names)


class Engine:
    def __init__(self, model_dir: str | Path, device: str = "auto", purpose: str = "batch", *,
                 parallel: int | None = None, cores: int | None = None):
        """`purpose` "stream": one ONNX Runtime thread, for latency. "batch": `cores` (default: all of
        the machine's), as `parallel` loops over the signals at once, each on cores / parallel ONNX
        Runtime threads (default: one loop per core, one thread each; on a GPU one loop of large
        batches per two cores)."""
        if device not in ("auto", "cpu", "cuda"):
            raise SeldError(f"device {device!r}: expected 'auto', 'cpu' or 'cuda'")
        if purpose not in ("batch", "stream"):
            raise SeldError(f"purpose {purpose!r}: expected 'batch' or 'stream'")
        self.info = ModelInfo.load(model_dir)
        data = self.info.data
        self.model_dir = self.info.folder
        try:
            features = self._read_settings(data)
        except (KeyError, TypeError, ValueError) as error:
            raise SeldError(f"{self.model_dir / 'seld.json'}: not a valid model description "
                            f"({type(error).__name__}: {error})") from None
        self.device, self.purpose = device, purpose
        self._open_sessions(device, purpose, parallel, cores, features)
        self._check_graph()

    def _read_settings(self, data: dict) -> FeatureConfig:
        """seld.json's settings as attributes; returns the front end's configuration."""
        self.name: str = self.info.name
        self.sample_rate: int = int(data["sample_rate"])
        self.num_channels: int = int(data["num_channels"])
        self.array = Array.from_dict(data["array"], str(self.model_dir / "seld.json"))
        self.class_names: list[str] = list(data["classes"])
        self.layout = self.info.layout
        self.has_distance: bool = self.layout.distance
        self.causal: bool = bool(data["causal"])
        if data["graph_input"] != "spectrum":
            raise SeldError(f"{self.model_dir / 'seld.json'}: graph_input {data['graph_input']!r}; "
                            "this seld runs 'spectrum' graphs")
        self.hop: int = int(data["hop"])
        self.label_hop: int = int(data["label_hop"])
        self.state_size: int = int(data["state_size"])
        self.threshold: float = float(data["thresholds"]["activity"])
        self.merge_degrees: float = float(data["thresholds"]["merge_degrees"])
        if len(self.class_names) != self.layout.num_classes:
            raise ValueError(f"{len(self.class_names)} classes named, output.num_classes {self.layout.num_classes}")
        return FeatureConfig.from_dict(data["front_end"], str(self.model_dir / "seld.json"))

    def _check_graph(self) -> None:
        """seld.json describes its graph: a hand-edited value would fail mid-run, or decode wrongly."""
        inputs = {i.name: i.shape for i in self.stream_session.get_inputs()}
        outputs = {o.name: o.shape for o in self.stream_session.get_outputs()}
        problems = []
        spectrum = inputs.get("real", [None] * 4)
        if len(spectrum) != 4 or spectrum[1] != self.num_channels or spectrum[3] != self.spectrum.config.num_bins:
            problems.append(f"num_channels {self.num_channels} and n_fft {self.spectrum.config.n_fft} "
                            f"([batch, {self.num_channels}, frames, {self.spectrum.config.num_bins}]), "
                            f"the graph's spectrum {spectrum}")
        if self.causal and inputs.get("state", [None, None])[-1] != self.state_size:
            problems.append(f"state_size {self.state_size}, the graph's state {inputs.get('state')}")
        if outputs.get("outputs", [None])[-1] != self.layout.size:
            problems.append(f"output {self.layout} has {self.layout.size} values a frame, "
                            f"the graph's outputs {outputs.get('outputs')}")
        if problems:
            raise SeldError(f"{self.model_dir / 'seld.json'}: does not describe stream.onnx: {'; '.join(problems)}")

    def _open_sessions(self, device: str, purpose: str, parallel: int | None, cores: int | None,
                       features: FeatureConfig) -> None:
        cores = self.cores = max(1, cores or os.cpu_count() or 1)
        # Threads for the CPU provider (the CUDA provider, when it is really there, ignores them).
        if purpose == "stream":
            self.parallel, threads = 1, 1
        else:
            self.parallel = max(1, min(parallel or cores, cores))
            threads = max(1, cores // self.parallel)
        self.spectrum = HostSpectrum(features, workers=threads)
        self.threads = threads
        self.stream_session = create_session(self.model_dir / "stream.onnx", device, purpose, threads)
        self._step_sessions: dict[int, Any] = {}
        self.offline_session = None if self.causal else create_session(self.model_dir / "model.onnx", device, purpose,
                                                                       threads)
        self.providers: list[str] = self.stream_session.get_providers()
        self.chunk_frames, self.lanes = CPU_CHUNK_FRAMES, CPU_LANES
        if "CUDAExecutionProvider" in self.providers and purpose != "stream":
            # Large batches keep a GPU busy, and several loops let one loop's host work (reading,
            # FFT, decoding) overlap another's graph run: one loop per two cores by default (an
            # H200 host's 16 cores, one hour of audio: 1 loop 863x real time, 4 loops 1,343x,
            # 8 loops 1,494x; `seld bench gpu`); each loop's host FFT gets its share of the cores.
            self.parallel = max(1, min(parallel or cores // 2, cores))
            self.chunk_frames, self.lanes = GPU_CHUNK_FRAMES, GPU_LANES
            self.spectrum.workers = max(1, cores // self.parallel)

    @classmethod
    def default(cls, format_name: str = "foa", device: str = "auto", purpose: str = "batch") -> "Engine":
        from seld.models import default_model_dir

        return cls(default_model_dir(format_name), device, purpose)

    # -------------------------------------------------------------- graph calls

    def _run_whole(self, audio: np.ndarray) -> np.ndarray:
        real, imag = self.spectrum.spectrum(audio)
        return self.offline_session.run(["outputs"], {"real": real[None], "imag": imag[None]})[0][0]

    # -------------------------------------------------------------- offline

    def outputs_of_many(self, sources: Iterable[tuple[Any, Iterable[np.ndarray]]], loops: int | None = None
                        ) -> Iterator[tuple[Any, np.ndarray | SeldError, bool]]:
        """Model outputs of many signals. `sources` gives (key, blocks): the blocks of one signal,
        float32 [channels, n] of any sizes at the model's rate; it is drawn from lazily, as rows
        of the batches free up. Yields (key, outputs [frames, output size], done) as outputs are
        ready, in consecutive pieces per key (the last with done=True; the last label frame padded
        with zeros), pieces of different keys interleaved; or (key, error, True) for a signal whose
        blocks raised a SeldError (the others go on). `loops`: at most this many loops (the number of
        signals, when the caller knows it is below `parallel`)."""
        pool = _LanePool(iter(sources), self, loops=max(1, min(loops or self.parallel, self.parallel)))
        if pool.loops == 1:
            yield from self._run_lanes(pool)
            return
        # One loop per thread; their outputs reach this generator's thread as they come.
        yield from _made_in_threads({f"seld-engine-{index}": self._run_lanes(pool) for index in range(pool.loops)},
                                    pool.close, capacity=4 * pool.loops)

    def _run_lanes(self, pool: "_LanePool"):
        """One loop of `outputs_of_many`: takes signals from `pool`, runs one chunk of each in one
        stream.onnx call (a batch row each), gives them back. A lone loop with a core to spare (one
        signal, its graph on fewer threads than the engine has cores) has a helper thread read and
        transform the chunks of the next call while ONNX Runtime runs this one (one 20-minute file
        on the 2-core VM: 4.4 against 6.3 s per hour of audio, the other core idle)."""
        if not self.causal:
            yield from self._run_whole_signals(pool.next_source)
            return
        ahead = pool.loops == 1 and self.providers == ["CPUExecutionProvider"] and self.threads < self.cores
        # Buffers for `lanes` rows, reused call after call; read ahead, the helper fills one while
        # a call waits for its turn and another runs.
        hosts = [_HostFrames(self.spectrum, self.lanes, self.num_channels, pool.chunk) for _ in range(3 if ahead else 1)]
        steps = self._prepared_calls(pool, hosts)
        for kind, lanes, work in _made_in_threads({"seld-engine-ahead": steps}, pool.close) if ahead else steps:
            if kind == "failed":
                yield lanes.key, work, True
                continue
            if kind == "ended":  # on a chunk boundary
                yield lanes.key, lanes.take_outputs(), True
                continue
            real, imag, valid = work
            states = np.stack([lane.state for lane in lanes]) if len(lanes) > 1 else lanes[0].state[None]
            outputs, states = self.stream_session.run(["outputs", "state_out"],
                                                      {"real": real, "imag": imag, "state": states})
            for row, lane in enumerate(lanes):
                lane.state = states[row]
                lane.outputs.append(outputs[row, : -(-valid[row] // self.label_hop)])
                lane.frames += len(lane.outputs[-1])
                if valid[row] < pool.chunk:  # its signal ended in this chunk
                    yield lane.key, lane.take_outputs(), True
                elif lane.frames >= DECODE_FRAMES:
                    yield lane.key, lane.take_outputs(), False

    def _prepared_calls(self, pool: "_LanePool", hosts: list["_HostFrames"]):
        """A loop's work before the graph, in order: ("failed", lane, error), ("ended", lane, None),
        or ("call", lanes, (real, imag, valid samples of each)), each chunk read and transformed. The
        lanes go back to `pool` when this resumes: after their call has run, when run in the loop's
        thread; read ahead, at once (a lone loop: its calls still run in order). Reading and the
        spectrum states are this side's; model states and outputs the caller's."""
        turn = 0
        while (taken := pool.take()) is not None:
            lanes, closed = [], 0
            for lane in taken:
                try:
                    lane.read()
                except SeldError as error:
                    closed += 1
                    yield "failed", lane, error
                    continue
                if lane.valid == 0:
                    closed += 1
                    yield "ended", lane, None
                    continue
                lanes.append(lane)
            if lanes:
                host = hosts[turn % len(hosts)]
                turn += 1
                for row, lane in enumerate(lanes):
                    host.set_row(row, lane.spectrum_state, lane.chunk)
                real, imag = host.transform(len(lanes))
                for row, lane in enumerate(lanes):
                    lane.spectrum_state = host.state(row)
                valid = [lane.valid for lane in lanes]
                closed += sum(size < pool.chunk for size in valid)
                yield "call", lanes, (real, imag, valid)
            pool.give_back([lane for lane in lanes if lane.valid == pool.chunk], closed)

    def _run_whole_signals(self, next_source):
        logged = False
        while (source := next_source()) is not None:
            key, blocks = source
            if not logged:
                log.info("non-causal model: each file is read whole into memory and runs through model.onnx at once")
                logged = True
            try:
                audio = np.concatenate([self._check(block) for block in blocks], axis=1)
            except SeldError as error:
                yield key, error, True
                continue
            except ValueError:  # no blocks at all
                audio = np.zeros((self.num_channels, 0), np.float32)
            frames = -(-audio.shape[1] // self.label_hop)
            audio = np.pad(audio, ((0, 0), (0, frames * self.label_hop - audio.shape[1])))
            yield key, self._run_whole(audio) if frames else np.zeros((0, self.layout.size), np.float32), True

    def outputs_from_blocks(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Model outputs [frames, output size] of one signal given as blocks of any sizes, in pieces
        as they are computed; memory does not grow with the signal's length (causal models).
        The last label frame is padded with zeros."""
        for _, outputs, _ in self._run_lanes(_LanePool(iter([(None, blocks)]), self, loops=1)):
            if isinstance(outputs, SeldError):
                raise outputs
            yield outputs

    def outputs(self, audio: np.ndarray) -> Iterator[np.ndarray]:
        """`outputs_from_blocks` of a whole signal [channels, samples]."""
        return self.outputs_from_blocks([self._check(audio)])

    def detections_from_blocks(self, blocks: Iterable[np.ndarray]) -> Iterator[Detection]:
        """Decoded detections (per-frame output tracks) of a signal given in blocks, frame by frame."""
        offset = 0
        for out in self.outputs_from_blocks(blocks):
            yield from self.decode(out, offset)
            offset += len(out)

    def detections(self, audio: np.ndarray) -> Iterator[Detection]:
        """Decoded detections (per-frame output tracks) of a whole signal, frame by frame."""
        return self.detections_from_blocks([self._check(audio)])

    def decode(self, outputs: np.ndarray, frame_offset: int = 0) -> list[Detection]:
        """Detections of outputs [frames, output size], by the model's thresholds."""
        # The same detections either way; the vectorized decoder pays off from a few frames on.
        decoder = decode if len(outputs) < VECTORIZED_DECODE_FRAMES else decode_outputs
        return decoder(outputs, self.layout, self.threshold, self.merge_degrees, frame_offset)

    def step_session(self, frames: int):
        """stream.onnx for one stream (batch 1) and chunks of `frames` STFT frames. With every
        dimension fixed, ONNX Runtime folds the graph's shape arithmetic away: ~17% less graph time per
        100 ms chunk on one CPU thread (`seld bench stream`)."""
        session = self._step_sessions.get(frames)
        if session is None:
            session = create_session(self.model_dir / "stream.onnx", self.device, self.purpose, self.threads,
                                     {"batch": 1, "frames": frames}, announce=False)
            self._step_sessions[frames] = session
        return session

    def stream_step(self, frames: int, cuda_graph: bool = True) -> "_BoundStep | _PlainStep":
        """One stream's stream.onnx calls on chunks of `frames` STFT frames. A streaming engine on
        CUDA gives each stream a session of its own that runs as a CUDA graph (captured here, before
        the audio flows); `cuda_graph=False`, or a graph that cannot be made, plain runs of the
        engine's shared step session."""
        if cuda_graph and self.purpose == "stream" and "CUDAExecutionProvider" in self.providers:
            try:
                session = create_session(self.model_dir / "stream.onnx", self.device, self.purpose, self.threads,
                                         {"batch": 1, "frames": frames}, announce=False, cuda_graph=True)
                if session.get_providers()[0] != "CUDAExecutionProvider":
                    raise RuntimeError(f"ONNX Runtime gave it {session.get_providers()[0]}")
                return _BoundStep(session, frames, self).capture()
            except Exception as error:  # onnxruntime's own types; e.g. a node left on the CPU
                reason = (str(error).splitlines() or [repr(error)])[0]
                log.warning("%s: no CUDA graph for streaming (%s); launching its kernels one by one",
                            self.model_dir / "stream.onnx", reason)
        return _PlainStep(self.step_session(frames))

    def stream(self, chunk_frames: int = 1, keep_events: bool = False) -> "Stream":
        """A stream of `chunk_frames` label frames per graph call; with `keep_events`, the events
        that end are kept for `Stream.take_events` (annotating a file; a live stream drops them)."""
        if not self.causal:
            raise SeldError(f"{self.model_dir}: a non-causal model cannot stream; use offline annotation")
        return Stream(self, chunk_frames, keep_events)

    def _check(self, audio: np.ndarray) -> np.ndarray:
        """`audio` as float32 [channels, samples]: float arrays as they are, integer ones scaled to
        [-1, 1) as audio files' integers are (int16 by 2^-15); anything else, a wrong shape, NaN or
        infinite samples: a SeldError."""
        given = audio
        try:
            audio = np.asarray(audio)
        except ValueError:  # ragged lists
            audio = np.asarray(None)
        kind = audio.dtype.kind
        if kind not in "fiu":
            what = f"{audio.dtype} samples" if isinstance(given, np.ndarray) else f"a {type(given).__name__}"
            raise SeldError(f"audio given as {what}: the model needs a float array [{self.num_channels}, samples]")
        if audio.ndim != 2 or audio.shape[0] != self.num_channels:
            raise SeldError(f"audio of shape {list(audio.shape)}: the model needs [{self.num_channels}, samples]")
        if kind in "iu":  # as libsndfile reads integer files
            info = np.iinfo(audio.dtype)
            middle = 0 if kind == "i" else (info.max + 1) // 2
            # Unsigned samples are centred in float64: uint8 - 128 wraps around in uint8.
            centred = audio if kind == "i" else audio.astype(np.float64) - middle
            return (centred * np.float32(1.0 / (info.max - middle + 1))).astype(np.float32)
        audio = np.asarray(audio, dtype=np.float32)
        if (where := first_non_finite(audio)) is not None:
            raise SeldError(f"audio: NaN or infinite samples (first at sample {where} of the block given)")
        return audio


@dataclass
class _Crash:
    error: BaseException


def _made_in_threads(makers: dict[str, Iterator], close: Callable[[], None], capacity: int = 1) -> Iterator:
    """The items of each iterator in `makers` (thread name -> iterator), made by a thread of its own
    ahead of their use, `capacity` at most waiting; interleaved as they come. An error of one is
    raised here; when this stops (done, failed or closed early), `close` is called (to end a wait
    inside the makers) and the threads are joined."""
    made: queue.Queue = queue.Queue(maxsize=capacity)
    stop = threading.Event()
    finished = object()

    def make(items: Iterator) -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        made.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
        except BaseException as error:  # raised in the caller's thread
            made.put(_Crash(error))
        finally:
            made.put(finished)

    threads = [threading.Thread(target=make, args=(items,), name=name, daemon=True) for name, items in makers.items()]
    for thread in threads:
        thread.start()
    try:
        running = len(threads)
        while running:
            item = made.get()
            if item is finished:
                running -= 1
            elif isinstance(item, _Crash):
                raise item.error
            else:
                yield item
    finally:
        stop.set()
        close()
        while any(thread.is_alive() for thread in threads):
            try:
                made.get(timeout=0.1)
            except queue.Empty:
                pass


class _LanePool:
    """The signals being run, shared by `outputs_of_many`'s loops. A loop takes a few, runs one chunk
    of each and gives them back; their states live on the host, so the next chunk of a signal may
    run in another loop. Loops thus share the work to the end: with a fixed set of signals per loop,
    a loop whose files were done sat idle while another finished its own (~10% of the two cores
    here on 20 files of 60 s), and 2 files on 2 cores ran in one loop."""

    def __init__(self, sources: Iterator[tuple[Any, Iterable[np.ndarray]]], engine: Engine,
                 loops: int | None = None):
        self.sources, self.engine = sources, engine
        self.loops = loops or engine.parallel
        self.capacity = self.loops * engine.lanes  # signals open at once
        self.chunk = engine.chunk_frames * engine.label_hop
        self.ready: list[_Lane] = []
        self.open = 0  # signals taken from `sources` and not finished: ready or in a loop
        self.exhausted = self.closed = False
        self.condition = threading.Condition()

    def next_source(self) -> tuple[Any, Iterable[np.ndarray]] | None:
        with self.condition:
            return None if self.closed else next(self.sources, None)

    def take(self) -> list[_Lane] | None:
        """Signals for one call: up to `lanes`, and no more than a fair share of those open, so
        that every loop has work while there is any; None when all are done (or closed)."""
        with self.condition:
            while not self.closed:
                while not self.exhausted and self.open < self.capacity:
                    source = next(self.sources, None)
                    if source is None:
                        self.exhausted = True
                        break
                    self.ready.append(_Lane(source[0], iter(source[1]), self.engine, self.chunk))
                    self.open += 1
                if self.ready:
                    share = min(self.engine.lanes, -(-self.open // self.loops), len(self.ready))
                    taken, self.ready = self.ready[:share], self.ready[share:]
                    return taken
                if self.exhausted and self.open == 0:
                    return None
                self.condition.wait()
            return None

    def give_back(self, lanes: list[_Lane], finished: int) -> None:
        with self.condition:
            self.ready += lanes
            self.open -= finished
            self.condition.notify_all()

    def close(self) -> None:
        """Loops waiting for work stop (the caller stopped early, or a loop crashed)."""
        with self.condition:
            self.closed = True
            self.condition.notify_all()


class _Lane:
    """One signal in a batch row: its blocks, the states carried, the outputs not yet handed on."""

    def __init__(self, key: Any, blocks: Iterator[np.ndarray], engine: Engine, chunk: int):
        self.key, self.blocks, self.engine = key, blocks, engine
        self.block, self.position = np.zeros((engine.num_channels, 0), np.float32), 0  # block being read
        self.buffer = np.zeros((engine.num_channels, chunk), np.float32)  # a chunk that spans blocks
        self.chunk = self.buffer  # the chunk read: a view of the block when it lies in one
        self.valid = 0  # samples of the signal in `chunk`; 0: no chunk read yet
        self.state = np.zeros(engine.state_size, np.float32)
        self.spectrum_state = engine.spectrum.initial_state(engine.num_channels)
        self.outputs: list[np.ndarray] = []
        self.frames = 0

    def read(self) -> None:
        """The next chunk into `chunk` (zeros after the signal's end), `valid` set."""
        size, filled = self.buffer.shape[1], 0
        if self.position + size <= self.block.shape[1]:  # within the block: no copy
            self.chunk, self.valid = self.block[:, self.position:self.position + size], size
            self.position += size
            return
        self.chunk = self.buffer
        while filled < size:
            if self.position == self.block.shape[1]:
                block = next(self.blocks, None)
                if block is None:
                    break
                self.block, self.position = self.engine._check(block), 0
                continue
            take = min(size - filled, self.block.shape[1] - self.position)
            self.chunk[:, filled:filled + take] = self.block[:, self.position:self.position + take]
            filled += take
            self.position += take
        self.chunk[:, filled:] = 0.0
        self.valid = filled

    def take_outputs(self) -> np.ndarray:
        if not self.outputs:
            return np.zeros((0, self.engine.layout.size), np.float32)
        outputs = np.concatenate(self.outputs) if len(self.outputs) > 1 else self.outputs[0].copy()
        self.outputs, self.frames = [], 0
        return outputs


class _HostFrames:
    """`HostSpectrum.step` of a batch of chunks of one size, in buffers reused from call to call:
    the same numbers (tested), without the allocations that cost HostSpectrum as much as the FFT
    at this size. Rows are (batch row, channel); a row's state is the last window - hop samples."""

    def __init__(self, spectrum: HostSpectrum, batch: int, channels: int, samples: int):
        c = spectrum.config
        self.spectrum, self.channels, self.keep = spectrum, channels, c.state_samples
        rows, frames = batch * channels, samples // c.hop
        self.shape = (batch, channels, frames, c.num_bins)
        self.padded = np.zeros((rows, self.keep + samples), np.float32)
        views = np.lib.stride_tricks.sliding_window_view(self.padded, c.window, axis=-1)[:, :: c.hop][:, :frames]
        self.block = max(1, _HOST_BLOCK_ROWS // rows)  # frames per FFT call: the working set stays in cache
        self.buffer = np.zeros((rows, min(self.block, frames), c.n_fft), np.float32)  # its padding stays zero
        self.views = views
        self.window = spectrum.window
        self.offset = spectrum.offset
        self.real = np.empty((rows, frames, c.num_bins), np.float32)
        self.imag = np.empty_like(self.real)

    def set_row(self, row: int, state: np.ndarray, chunk: np.ndarray) -> None:
        rows = slice(row * self.channels, (row + 1) * self.channels)
        self.padded[rows, : self.keep] = state.reshape(self.channels, self.keep)
        self.padded[rows, self.keep:] = chunk

    def state(self, row: int) -> np.ndarray:
        return self.padded[row * self.channels:(row + 1) * self.channels, -self.keep:].reshape(-1).copy()

    def transform(self, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(real, imag) [batch, channels, frames, bins] of the first `batch` rows set (default: all),
        valid until the next call."""
        batch = self.shape[0] if batch is None else batch
        rows = batch * self.channels
        frames, width = self.views.shape[1], self.buffer.shape[2]
        window = self.buffer[:rows, :, self.offset:self.offset + len(self.window)]
        for start in range(0, frames, self.block):
            stop = min(start + self.block, frames)
            np.multiply(self.views[:rows, start:stop], self.window, out=window[:, : stop - start])
            spectrum = scipy.fft.rfft(self.buffer[:rows, : stop - start], n=width, axis=-1,
                                      workers=self.spectrum.workers)
            self.real[:rows, start:stop] = spectrum.real
            self.imag[:rows, start:stop] = spectrum.imag
        shape = (batch, *self.shape[1:])
        return self.real[:rows].reshape(shape), self.imag[:rows].reshape(shape)


class _PlainStep:
    """stream.onnx calls for one stream, plain runs: on the CPU faster than IOBinding (graph 0.42
    against 0.51 ms per 100 ms chunk on the 2-core dev VM, `seld bench stream`'s parts)."""

    def __init__(self, session):
        self.session = session

    def run(self, real: np.ndarray, imag: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs, state_out = self.session.run(["outputs", "state_out"], {"real": real, "imag": imag, "state": state})
        return outputs, state_out


# ONNX Runtime captures CUDA graphs in the global capture mode, which another thread's CUDA work
# breaks: captures and replays take turns (a step is ~0.4 ms).
_CUDA_GRAPH_LOCK = threading.Lock()


class _BoundStep:
    """stream.onnx calls for one stream through IOBinding: inputs and outputs live in buffers bound
    once (on the GPU when the session runs on CUDA). With the session's CUDA graph on, ONNX Runtime
    runs the step normally at first, then captures it and replays it: measured on an H200, the graph
    call alone 0.36 ms per 100 ms chunk (p99 0.38) against 1.33 ms (p99 2.23) launching its kernels one
    by one. The state goes through the host each chunk (54 kB each way). One stream, one thread:
    ONNX Runtime keeps a captured graph per thread."""

    def __init__(self, session, frames: int, engine: Engine):
        import onnxruntime

        device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.on_cpu = device == "cpu"

        def buffer(shape: list[int]):
            return onnxruntime.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, device, 0)

        spectrum_shape = [1, engine.num_channels, frames, engine.spectrum.config.num_bins]
        self.real, self.imag = buffer(spectrum_shape), buffer(spectrum_shape)
        self.state, self.state_out = buffer([1, engine.state_size]), buffer([1, engine.state_size])
        self.outputs = buffer([1, frames * engine.hop // engine.label_hop, engine.layout.size])
        self.session, self.binding = session, session.io_binding()
        for name in ("real", "imag", "state"):
            self.binding.bind_ortvalue_input(name, getattr(self, name))
        self.binding.bind_ortvalue_output("outputs", self.outputs)
        self.binding.bind_ortvalue_output("state_out", self.state_out)

    def capture(self, runs: int = 3) -> "_BoundStep":
        """Runs the step until ONNX Runtime has captured its graph (after one plain run in 1.31, two
        in newer sources), so neither the capture nor its errors land in a stream's first chunks."""
        zeros = np.zeros(self.real.shape(), np.float32)
        for _ in range(runs):
            self.run(zeros, zeros, np.zeros(self.state.shape(), np.float32))
        return self

    def run(self, real: np.ndarray, imag: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(outputs [1, label frames, size], state_out [1, state size]), arrays of their own."""
        with _CUDA_GRAPH_LOCK:
            self.real.update_inplace(real)
            self.imag.update_inplace(imag)
            self.state.update_inplace(state)
            self.session.run_with_iobinding(self.binding)
            outputs, state_out = self.outputs.numpy(), self.state_out.numpy()
        if self.on_cpu:  # numpy views of the bound buffers: the next call would overwrite them
            outputs, state_out = outputs.copy(), state_out.copy()
        return outputs, state_out


class Stream:
    """Audio blocks of any size in, label frames out as soon as each is complete."""

    def __init__(self, engine: Engine, chunk_frames: int = 1, keep_events: bool = False):
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, not {chunk_frames}")
        self.engine = engine
        self.events: list[dict] | None = [] if keep_events else None
        self.chunk_samples = chunk_frames * engine.label_hop
        self.buffer = np.zeros((engine.num_channels, 0), np.float32)
        self.state = np.zeros((1, engine.state_size), np.float32)
        self.spectrum_state = engine.spectrum.initial_state(engine.num_channels)
        self.host_frames: dict[int, _HostFrames] = {}  # by chunk size
        self.steps: dict[int, _BoundStep | _PlainStep] = {}  # by STFT frames per chunk
        self.next_frame = 0
        self.tracker = EventTracker(class_names=engine.class_names, keep_frames=keep_events)
        self.finished = False
        self.step(self.chunk_samples // engine.hop)  # now, before the audio flows (a CUDA graph is captured)

    def push(self, block: np.ndarray) -> list[Frame]:
        """Feed float32 [channels, n] at the engine's rate; returns the label frames completed."""
        if self.finished:  # flush padded the last frame: more audio would run on shifted by the padding
            raise SeldError("a stream takes no audio after flush(); start another with Engine.stream()")
        block = self.engine._check(block)
        self.buffer = np.concatenate([self.buffer, block], axis=1) if self.buffer.size else block.copy()
        frames = []
        while self.buffer.shape[1] >= self.chunk_samples:
            chunk, self.buffer = self.buffer[:, : self.chunk_samples], self.buffer[:, self.chunk_samples :]
            frames.extend(self._run(chunk))
        return frames

    def flush(self) -> list[Frame]:
        """End of stream: the last partial label frame, padded with zeros."""
        if self.finished:
            return []
        self.finished = True
        label_hop = self.engine.label_hop
        frames = []
        if self.buffer.shape[1]:
            padded = -(-self.buffer.shape[1] // label_hop) * label_hop
            chunk = np.pad(self.buffer, ((0, 0), (0, padded - self.buffer.shape[1])))
            self.buffer = self.buffer[:, :0]
            frames = self._run(chunk)
        if self.events is not None:
            self.events += self.tracker.flush()
        return frames

    def step(self, frames: int) -> _BoundStep | _PlainStep:
        step = self.steps.get(frames)
        if step is None:  # a CUDA graph for the regular chunk, not for flush's last, shorter one
            regular = frames == self.chunk_samples // self.engine.hop
            step = self.steps[frames] = self.engine.stream_step(frames, cuda_graph=regular)
        return step

    def take_events(self) -> list[dict]:
        """The events that ended since the last call (all of them after `flush`), with
        `keep_events`: the `events` of NAME.json, unsorted."""
        if self.events is None:  # without keep_events no event is kept: [] every time would say "none ended"
            raise SeldError("take_events() needs a stream made with Engine.stream(keep_events=True)")
        events, self.events = self.events, []
        return events

    def _run(self, chunk: np.ndarray) -> list[Frame]:
        engine = self.engine
        host = self.host_frames.get(chunk.shape[1])
        if host is None:
            host = _HostFrames(engine.spectrum, 1, engine.num_channels, chunk.shape[1])
            self.host_frames[chunk.shape[1]] = host
        host.set_row(0, self.spectrum_state, chunk)
        real, imag = host.transform()
        self.spectrum_state = host.state(0)
        out, self.state = self.step(real.shape[2]).run(real, imag, self.state)
        out = out[0]
        detections = engine.decode(out, self.next_frame)
        frames = []
        for index in range(len(out)):
            frame = self.next_frame + index
            tracked, ended = self.tracker.update(frame, [d for d in detections if d.frame == frame])
            if ended and self.events is not None:
                self.events += ended
            time_s = round(frame * engine.label_hop / engine.sample_rate, 6)
            frames.append(Frame(frame, time_s, tracked, engine.class_names))
        self.next_frame += len(out)
        return frames
