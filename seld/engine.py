"""The inference engine: a model package run by ONNX Runtime, offline and streaming.

numpy, scipy, soundfile and onnxruntime only — never torch — so annotation and the
live demo start fast and stay small.

The engine is always fed raw audio. The graphs begin at the STFT spectrum, which the
host computes here with exactly the training framing (seld.spectrum); seld.json says so
(`graph_input: "spectrum"`).

Streaming: `Engine.stream()` gives a `Stream` that takes audio blocks of any size,
cuts them into chunks of whole label frames, runs stream.onnx with its state carried
and yields each label frame as soon as it is complete. Offline: `Engine.outputs(audio)`
runs a whole signal; a causal model runs it through the streaming graph in long chunks
(so files longer than memory work and the outputs equal the stream's), other models
through model.onnx.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from seld import SeldError
from seld.arrays import Array
from seld.decode import Detection, EventTracker, OutputLayout, decode, frame_json
from seld.spectrum import FeatureConfig, HostSpectrum

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
OFFLINE_CHUNK_FRAMES = 600  # label frames per offline chunk of a causal model (60 s)


@dataclass(frozen=True)
class ModelInfo:
    """seld.json, read."""

    folder: Path
    data: dict

    @classmethod
    def load(cls, folder: str | Path) -> "ModelInfo":
        folder = Path(folder)
        path = folder / "seld.json"
        if not path.is_file():
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


def _providers(device: str) -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise SeldError("--device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


def create_session(path: Path, device: str = "auto", purpose: str = "batch"):
    """An ONNX Runtime session tuned for `purpose` ("stream": one intra-op thread, for latency;
    "batch": all cores). Logs the providers it really got: ONNX Runtime falls back to CPU silently."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1 if purpose == "stream" else (os.cpu_count() or 1)
    options.log_severity_level = 3  # a missing CUDA library is reported below, in one line
    wanted = _providers(device)
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=wanted)
    except Exception as error:  # onnxruntime raises its own exception types
        raise SeldError(f"{path}: ONNX Runtime cannot load it: {str(error).splitlines()[0]}") from None
    got = session.get_providers()
    if "CUDAExecutionProvider" in wanted and "CUDAExecutionProvider" not in got:
        level = logging.WARNING if device == "cuda" else logging.INFO
        log.log(level, "%s: CUDA was asked for but ONNX Runtime runs it on %s", path.name, ", ".join(got))
    else:
        log.info("%s: running on %s", path.name, ", ".join(got))
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
    def __init__(self, model_dir: str | Path, device: str = "auto", purpose: str = "batch"):
        self.info = ModelInfo.load(model_dir)
        data = self.info.data
        self.model_dir = self.info.folder
        self.name: str = data.get("name", self.model_dir.name)
        self.sample_rate: int = int(data["sample_rate"])
        self.num_channels: int = int(data["num_channels"])
        self.array = Array.from_dict(data["array"], str(self.model_dir / "seld.json"))
        self.class_names: list[str] = list(data["classes"])
        self.layout = self.info.layout
        self.has_distance: bool = self.layout.distance
        self.causal: bool = bool(data["causal"])
        if data["graph_input"] != "spectrum":
            raise SeldError(f"{self.model_dir / 'seld.json'}: graph_input {data['graph_input']!r}; this seld runs 'spectrum' graphs")
        self.hop: int = int(data["hop"])
        self.label_hop: int = int(data["label_hop"])
        self.state_size: int = int(data["state_size"])
        self.threshold: float = float(data["thresholds"]["activity"])
        self.merge_degrees: float = float(data["thresholds"]["merge_degrees"])
        self.spectrum = HostSpectrum(FeatureConfig.from_dict(data["front_end"], str(self.model_dir / "seld.json")),
                                     workers=1 if purpose == "stream" else None)
        self.device = device
        self.stream_session = create_session(self.model_dir / "stream.onnx", device, "stream" if purpose == "stream" else "batch")
        self.offline_session = None if self.causal else create_session(self.model_dir / "model.onnx", device, "batch")
        self.providers: list[str] = self.stream_session.get_providers()

    @classmethod
    def default(cls, format_name: str = "foa", device: str = "auto", purpose: str = "batch") -> "Engine":
        from seld.models import default_model_dir

        return cls(default_model_dir(format_name), device, purpose)

    # -------------------------------------------------------------- graph calls

    def _graph_inputs(self, audio_chunk: np.ndarray, spectrum_state: np.ndarray) -> tuple[dict, np.ndarray]:
        """Inputs of one chunk [channels, samples] for the graph, and the host STFT's state after it."""
        real, imag, new_state = self.spectrum.step(audio_chunk, spectrum_state)
        return {"real": real[None], "imag": imag[None]}, new_state

    def _run_stream(self, audio_chunk: np.ndarray, state: np.ndarray, spectrum_state: np.ndarray):
        inputs, spectrum_state = self._graph_inputs(audio_chunk, spectrum_state)
        inputs["state"] = state
        outputs, state = self.stream_session.run(["outputs", "state_out"], inputs)
        return outputs[0], state, spectrum_state

    def outputs(self, audio: np.ndarray) -> Iterator[np.ndarray]:
        """Model outputs [frames, output size] of a whole signal [channels, samples], in chunks as they
        are computed. The last label frame is padded with zeros."""
        audio = self._check(audio)
        frames = -(-audio.shape[1] // self.label_hop)
        audio = np.pad(audio, ((0, 0), (0, frames * self.label_hop - audio.shape[1])))
        if not self.causal:
            inputs, _ = self._graph_inputs(audio, self.spectrum.initial_state(self.num_channels))
            yield self.offline_session.run(["outputs"], inputs)[0][0]
            return
        state = np.zeros((1, self.state_size), np.float32)
        spectrum_state = self.spectrum.initial_state(self.num_channels)
        for start in range(0, frames, OFFLINE_CHUNK_FRAMES):
            chunk = audio[:, start * self.label_hop : (start + OFFLINE_CHUNK_FRAMES) * self.label_hop]
            out, state, spectrum_state = self._run_stream(chunk, state, spectrum_state)
            yield out

    def detections(self, audio: np.ndarray) -> Iterator[Detection]:
        """Decoded detections (per-frame output tracks) of a whole signal, frame by frame."""
        offset = 0
        for out in self.outputs(audio):
            yield from decode(out, self.layout, self.threshold, self.merge_degrees, frame_offset=offset)
            offset += len(out)

    def stream(self, chunk_frames: int = 1) -> "Stream":
        if not self.causal:
            raise SeldError(f"{self.model_dir}: a non-causal model cannot stream; use offline annotation")
        return Stream(self, chunk_frames)

    def _check(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 2 or audio.shape[0] != self.num_channels:
            raise SeldError(f"audio of shape {list(audio.shape)}: the model needs [{self.num_channels}, samples]")
        return audio


class Stream:
    """Audio blocks of any size in, label frames out as soon as each is complete."""

    def __init__(self, engine: Engine, chunk_frames: int = 1):
        self.engine = engine
        self.chunk_samples = chunk_frames * engine.label_hop
        self.buffer = np.zeros((engine.num_channels, 0), np.float32)
        self.state = np.zeros((1, engine.state_size), np.float32)
        self.spectrum_state = engine.spectrum.initial_state(engine.num_channels)
        self.next_frame = 0
        self.tracker = EventTracker(class_names=engine.class_names)
        self.finished = False

    def push(self, block: np.ndarray) -> list[Frame]:
        """Feed float32 [channels, n] at the engine's rate; returns the label frames completed."""
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
        if self.buffer.shape[1] == 0:
            return []
        padded = -(-self.buffer.shape[1] // label_hop) * label_hop
        chunk = np.pad(self.buffer, ((0, 0), (0, padded - self.buffer.shape[1])))
        self.buffer = self.buffer[:, :0]
        return self._run(chunk)

    def _run(self, chunk: np.ndarray) -> list[Frame]:
        engine = self.engine
        out, self.state, self.spectrum_state = engine._run_stream(chunk, self.state, self.spectrum_state)
        detections = decode(out, engine.layout, engine.threshold, engine.merge_degrees, frame_offset=self.next_frame)
        frames = []
        for index in range(len(out)):
            frame = self.next_frame + index
            tracked, _ = self.tracker.update(frame, [d for d in detections if d.frame == frame])
            frames.append(Frame(frame, round(frame * engine.label_hop / engine.sample_rate, 6), tracked, engine.class_names))
        self.next_frame += len(out)
        return frames
