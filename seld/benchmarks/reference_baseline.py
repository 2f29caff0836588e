"""The yardsticks of `seld bench annotate` and `seld bench stream`: test packages of a preset's
architecture with any weights, scenes to annotate, and the DCASE 2023 baseline's way of
annotating a file.

Speed does not depend on the weights, but decoding, tracking and writing depend on how many
detections come out; `calibrated_network` sets the feature normalization from the
audio (as training would) and scales the output layer so that the outputs hold about
`detections_per_frame` detections per label frame, a busy scene (STARSS23 averages about one
source at a time).

The reference (`ReferenceAnnotator`) does what sharathadavanne/seld-dcase2023 does at test
time, file by file: the whole file read as int16 (scipy.io.wavfile), its features extracted
with librosa (`seld.benchmarks.reference_features.Dcase2023Features`), normalized, cut into
5 s windows (250 feature frames, `label_sequence_length` 50) and run in one batch through the
DCASE 2023 model (the `dcase2023` preset, seld.model.CRNN) in eager PyTorch with torch's
default threads (all cores); then decoded frame by frame (seld.decode.decode, a loop over
frames and classes, like the baseline's) and written as a CSV.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

SAMPLE_RATE = 24_000
WINDOW_FEATURE_FRAMES = 250  # the DCASE 2023 baseline's 5 s input sequences
CALIBRATION_SECONDS = 20


def peak_rss_mb() -> float:
    """This process's peak resident memory. /proc's VmHWM where there is one: ru_maxrss of a child
    started by a large process counts the parent's memory (Linux keeps the high-water mark of the
    memory the child had before exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_scene(seconds: float, seed: int) -> np.ndarray:
    """float32 [4, samples] FOA: low noise plus overlapping band-limited events from random directions."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * SAMPLE_RATE)
    audio = (10 ** (-45 / 20) * rng.standard_normal((4, samples))).astype(np.float32)
    start_s = 0.0
    while start_s < seconds:
        length_s = rng.uniform(1.0, 5.0)
        start, stop = int(start_s * SAMPLE_RATE), min(samples, int((start_s + length_s) * SAMPLE_RATE))
        if stop - start > 64:
            spectrum = np.fft.rfft(rng.standard_normal(stop - start))
            hz = np.fft.rfftfreq(stop - start, 1 / SAMPLE_RATE)
            low = rng.uniform(100, 4000)
            spectrum[(hz < low) | (hz > low * rng.uniform(1.5, 4.0))] = 0
            signal = np.fft.irfft(spectrum, stop - start)
            signal *= 10 ** (rng.uniform(-26, -12) / 20) / (signal.std() + 1e-9)
            azimuth, elevation = np.radians(rng.uniform(-180, 180)), np.radians(rng.uniform(-45, 45))
            gains = [1.0, math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                     math.cos(elevation) * math.cos(azimuth)]  # W, Y, Z, X (ACN, SN3D)
            audio[:, start:stop] += np.outer(gains, signal).astype(np.float32)
        start_s += rng.uniform(0.3, 2.5)
    return np.clip(audio, -1.0, 1.0)


def write_scenes(folder: Path, files: int, seconds: float, distinct: int = 6) -> list[Path]:
    """`files` PCM-16 WAVs of `seconds` each, made of `distinct` different scenes, read once after
    writing so they are in the OS cache."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    scenes = [make_scene(seconds, seed) for seed in range(min(distinct, files))]
    paths = []
    for index in range(files):
        path = folder / f"scene{index:03d}.wav"
        soundfile.write(path, scenes[index % len(scenes)].T, SAMPLE_RATE, subtype="PCM_16")
        paths.append(path)
    for path in paths:
        path.read_bytes()
    return paths


def _network(preset_name: str, seed: int):
    import torch

    from seld.arrays import FOA
    from seld.features import FeatureConfig
    from seld.model import preset
    from seld.network import SeldNetwork

    torch.manual_seed(seed)
    return SeldNetwork(FeatureConfig(), preset(preset_name), FOA).eval()


def calibrated_network(preset_name: str, audio: np.ndarray, detections_per_frame: float = 1.5, seed: int = 0):
    """A network of the preset with random weights, normalized on `audio` [4, samples], its output
    layer scaled so that `audio` gives about `detections_per_frame` detections per label frame."""
    import torch

    from seld.decode import decode

    network = _network(preset_name, seed)
    crnn = network.crnn
    if crnn.config.output_format == "sed_doa":
        raise ValueError("calibrated_network scales an (multi-)ACCDOA output layer")
    layer = crnn.head[-1] if isinstance(crnn.head, torch.nn.Sequential) else crnn.head
    audio = np.ascontiguousarray(audio[:, : CALIBRATION_SECONDS * SAMPLE_RATE])
    captured = []
    hook = layer.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    with torch.no_grad():
        features = network.features(torch.from_numpy(audio)[None])
        network.set_normalization(features.mean(dim=(0, 2)), features.std(dim=(0, 2)).clamp_min(1e-3))
        layer.bias.zero_()
        network(torch.from_numpy(audio)[None])  # the output layer's input, once
        hook.remove()
        base = captured[0] @ layer.weight.T

        def density(scale: float) -> float:  # the network's outputs with the layer scaled
            outputs = torch.where(crnn.is_direction, torch.tanh(base * scale), base * scale)[0].numpy()
            return len(decode(outputs, crnn.config.layout, 0.5, 15.0)) / max(len(outputs), 1)

        low, high = 0.0, 4.0
        for _ in range(14):  # detections grow with the scale
            middle = (low + high) / 2
            low, high = (middle, high) if density(middle) < detections_per_frame else (low, middle)
        layer.weight.mul_(high)
    return network


def export_untrained_package(folder: Path, network=None, preset_name: str = "default", seed: int = 0) -> dict:
    """A model package of `network` (default: the preset with random weights) in `folder`: the
    graphs, checked as `seld export` checks them, and seld.json; returns seld.json's contents."""
    from seld.export import check_graphs, export_graphs, package_info
    from seld.train import TrainConfig

    folder.mkdir(parents=True, exist_ok=True)
    network = network if network is not None else _network(preset_name, seed)
    export_graphs(network, folder)
    info = package_info(network, TrainConfig(preset=preset_name, model=network.crnn.config), {}, f"bench-{preset_name}")
    info["export_check"] = check_graphs(network, folder)
    (folder / "seld.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def export_audio_graphs(network, folder: Path) -> tuple[Path, Path]:
    """The alternative to the spectrum-input graphs: (a streaming step graph, the offline
    SeldNetwork.forward graph), both beginning at raw audio, the DFT a dense matmul inside the graph
    (the front end's export form), exported as seld.export does (TorchScript exporter). The step
    graph's state is the front end's (last window - hop samples) then the CRNN's."""
    import torch

    from seld.export import _export

    class AudioStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.network = network
            self.split = network.front_end.state_size

        def forward(self, audio, state):
            features, front_state = self.network.front_end.step(audio, state[:, : self.split])
            outputs, model_state = self.network.crnn.step(self.network._normalize(features), state[:, self.split:])
            return outputs, torch.cat([front_state, model_state], dim=1)

    class AudioForward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.network = network

        def forward(self, audio):
            return self.network(audio)

    step_path, forward_path = folder / "audio_stream.onnx", folder / "audio_model.onnx"
    audio = torch.zeros(1, network.num_channels, 2400 * 2)
    state = torch.zeros(1, network.front_end.state_size + network.state_size)
    with torch.no_grad():
        _export(AudioStep().eval(), (audio, state), step_path, ["audio", "state"], ["outputs", "state_out"],
                {"audio": {0: "batch", 2: "samples"}, "state": {0: "batch"}, "state_out": {0: "batch"},
                 "outputs": {0: "batch", 1: "label_frames"}})
        _export(AudioForward().eval(), (audio,), forward_path, ["audio"], ["outputs"],
                {"audio": {0: "batch", 2: "samples"}, "outputs": {0: "batch", 1: "label_frames"}})
    return step_path, forward_path


class ReferenceAnnotator:
    """The DCASE 2023 baseline's inference, file by file (see the module docstring)."""

    def __init__(self, network=None):
        """`network`: a SeldNetwork of the dcase2023 preset (e.g. `calibrated_network`); its CRNN is
        the model and its normalization the baseline's scaler. Random weights otherwise."""
        import torch

        from seld.benchmarks.reference_features import Dcase2023Features

        network = network if network is not None else _network("dcase2023", 0)
        self.torch = torch
        self.config = network.crnn.config
        self.model = network.crnn.eval()
        self.features = Dcase2023Features("foa")
        self.mean = network.normalization_mean.numpy().reshape(-1).astype(np.float64)
        self.std = network.normalization_std.numpy().reshape(-1).astype(np.float64)

    def annotate(self, path: Path, out: Path) -> int:
        """Annotate one file, write its CSV; returns the rows written."""
        from scipy.io import wavfile

        from seld.decode import decode
        from seld.formats import Events, write_prediction

        torch, c = self.torch, self.config
        _, pcm = wavfile.read(path)
        features = self.features.extract(self.features.load_audio(pcm))  # [frames, 7 * 64]
        features = (features - self.mean) / self.std
        windows = math.ceil(len(features) / WINDOW_FEATURE_FRAMES)
        padded = np.zeros((windows * WINDOW_FEATURE_FRAMES, features.shape[1]))
        padded[: len(features)] = features
        batch = padded.reshape(windows, WINDOW_FEATURE_FRAMES, c.input_channels, c.input_bins).transpose(0, 2, 1, 3)
        with torch.no_grad():
            outputs = self.model(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
        outputs = outputs.reshape(-1, outputs.shape[-1]).numpy()
        detections = decode(outputs, c.layout, 0.5, 15.0)
        write_prediction(out, Events([d.frame for d in detections], [d.class_index for d in detections],
                                     [d.track for d in detections], [d.azimuth for d in detections],
                                     [d.elevation for d in detections]))
        return len(detections)

    def run(self, paths: list[Path], out_dir: Path) -> tuple[float, int]:
        """(seconds, rows) for annotating `paths` one after the other."""
        out_dir.mkdir(parents=True, exist_ok=True)
        started, rows = time.perf_counter(), 0
        for path in paths:
            rows += self.annotate(path, out_dir / (path.stem + ".csv"))
        return time.perf_counter() - started, rows
