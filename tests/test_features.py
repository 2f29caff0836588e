"""Front ends: shapes and causal framing, streaming == whole, host spectrum == torch spectrum,
physics (intensity vectors, GCC-PHAT, SALSA-lite on plane waves), the DCASE baseline's own
formulas, and ONNX export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seld import SeldError
from seld.arrays import FOA, TETRAHEDRAL, Array
from seld.features import FRONT_ENDS, FeatureConfig, HostSpectrum, SpectrumFeatures, feature_shape, make_front_end
from seld.spectrum import mel_filter_bank

RATE, HOP = 24_000, 480
ARRAYS = {"stft": FOA, "foa_logmel_iv": FOA, "mic_logmel_gcc": TETRAHEDRAL, "mic_salsa_lite": TETRAHEDRAL}
SHAPES = {"stft": (8, 513), "foa_logmel_iv": (7, 64), "mic_logmel_gcc": (10, 64), "mic_salsa_lite": (7, 382)}
PHASE_CHANNELS = {"stft": slice(4, 8)}  # features that are angles in (-pi, pi]


def noise(channels: int, seconds: float, seed: int = 0, extra: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((channels, int(seconds * RATE) + extra))).astype(np.float32)


def unit_vector(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    azimuth, elevation = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])


def plane_wave_on_array(array: Array, direction: np.ndarray, seconds: float, speed_of_sound: float = 343.0) -> np.ndarray:
    """Far-field white noise from `direction`, free field: capsule r hears it (r . u) / c early."""
    samples = int(seconds * RATE)
    spectrum = np.fft.rfft(np.random.default_rng(1).standard_normal(samples))
    hz = np.fft.rfftfreq(samples, 1.0 / RATE)
    advances = np.asarray(array.capsules_m) @ direction / speed_of_sound
    channels = [np.fft.irfft(spectrum * np.exp(2j * np.pi * hz * advance), n=samples) for advance in advances]
    return (0.1 * np.stack(channels)).astype(np.float32)


def features(front_end, audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return front_end(torch.from_numpy(audio)[None])[0].numpy()


def max_difference(name: str, a: np.ndarray, b: np.ndarray) -> float:
    """Max abs difference, angles compared on the circle (pi and -pi are the same phase).

    SALSA-lite's log spectra are of single linear bins: in a deep spectral null (-40 dB) float32
    DFTs that sum in another order differ by ~5e-4 dB, so those count a tenth (1e-3 dB -> 1e-4).
    """
    difference = np.abs(a - b)
    if name in PHASE_CHANNELS:
        angles = difference[..., PHASE_CHANNELS[name], :, :]
        difference[..., PHASE_CHANNELS[name], :, :] = np.minimum(angles, 2 * np.pi - angles)
    if name == "mic_salsa_lite":
        difference[..., :4, :, :] *= 0.1
    return float(difference.max())


@pytest.fixture(autouse=True)
def _one_thread():
    # Small ops: a second intra-op thread buys little and stalls when the other core is busy.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# -- configuration, registry, shapes -----------------------------------------------------------

def test_config_round_trips_as_plain_dict_and_rejects_nonsense():
    config = FeatureConfig(name="mic_salsa_lite", salsa_fmax_doa_hz=1500.0)
    data = config.to_dict()
    assert all(isinstance(value, (int, float, str)) for value in data.values())
    assert FeatureConfig.from_dict(data) == config
    with pytest.raises(SeldError, match="unknown field"):
        FeatureConfig.from_dict({"name": "stft", "hop_size": 480})
    with pytest.raises(SeldError, match="multiple"):
        FeatureConfig(hop=480, window=1000)
    with pytest.raises(SeldError, match="not one of"):
        FeatureConfig(name="mfcc")
    with pytest.raises(SeldError, match="FOA"):
        make_front_end("foa_logmel_iv", TETRAHEDRAL)
    with pytest.raises(SeldError, match="microphone array"):
        make_front_end("mic_logmel_gcc", FOA)
    with pytest.raises(SeldError, match="unknown front end"):
        make_front_end("mfcc", FOA)


def test_shapes_frame_counts_and_any_number_of_mics():
    assert set(FRONT_ENDS) == set(SHAPES)
    minute = noise(4, 60.0, extra=479)  # trailing samples short of a hop make no frame
    for name, array in ARRAYS.items():
        front_end = make_front_end(name, array)
        assert feature_shape(front_end.config, 4) == SHAPES[name] == (front_end.feature_channels, front_end.bins)
        assert front_end.state_size == 4 * 480
    out = features(make_front_end("foa_logmel_iv", FOA), minute)
    assert out.shape == (7, 3000, 64)  # 60 s -> 3000 frames, 5 per 100 ms label frame
    assert np.isfinite(out).all()
    six = Array("hexagon", "mic", tuple((0.05 * math.cos(k * math.pi / 3), 0.05 * math.sin(k * math.pi / 3), 0.0)
                                        for k in range(6)))
    audio = noise(6, 0.5)
    assert features(make_front_end("mic_logmel_gcc", six), audio).shape == (6 + 15, 25, 64)
    assert features(make_front_end("mic_salsa_lite", six), audio).shape == (11, 25, 382)
    assert features(make_front_end("stft", six), audio).shape == (12, 25, 513)
    batch = torch.from_numpy(np.stack([noise(4, 0.3, seed=s) for s in range(3)]))
    with torch.no_grad():
        batched = make_front_end("mic_logmel_gcc", TETRAHEDRAL)(batch)
        single = make_front_end("mic_logmel_gcc", TETRAHEDRAL)(batch[1:2])
    assert batched.shape == (3, 10, 15, 64)
    assert torch.allclose(batched[1:2], single, atol=1e-5)


@pytest.mark.parametrize("dft", ["fft", "matmul"])
def test_a_signal_shorter_than_a_hop_has_no_frames(dft):
    for name, array in ARRAYS.items():
        front_end = make_front_end(name, array)
        front_end.dft = dft
        for samples in (0, HOP - 1):
            audio = torch.zeros(2, 4, samples)
            with torch.no_grad():
                assert front_end(audio).shape == (2, *SHAPES[name][:1], 0, SHAPES[name][1])
                real, imag = front_end.spectrum(audio)
            assert real.shape == imag.shape == (2, 4, 0, 513)


def test_mel_bank_equals_librosa():
    librosa = pytest.importorskip("librosa")
    ours = mel_filter_bank(24_000, 1024, 64)
    theirs = librosa.filters.mel(sr=24_000, n_fft=1024, n_mels=64)
    assert ours.shape == theirs.shape == (64, 513)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(mel_filter_bank(16_000, 512, 40), librosa.filters.mel(sr=16_000, n_fft=512, n_mels=40),
                               rtol=1e-5, atol=1e-9)


# -- framing, spectra, streaming -----------------------------------------------------------------

def test_framing_is_causal_and_matches_librosa_center_frames():
    librosa = pytest.importorskip("librosa")
    audio = noise(4, 1.0, extra=123)
    real, imag = HostSpectrum().spectrum(audio)
    assert real.shape == (4, 50, 513)
    reference = librosa.stft(audio, n_fft=1024, hop_length=480, win_length=960, window="hann", center=True)
    reference = reference[..., :50].transpose(0, 2, 1)  # frame t of center=True covers [480 (t - 1), 480 (t + 1))
    np.testing.assert_allclose(real, reference.real, atol=2e-5)
    np.testing.assert_allclose(imag, reference.imag, atol=2e-5)
    # No look-ahead: changing samples from (t + 1) * hop on leaves frames 0 .. t alone.
    changed = audio.copy()
    changed[:, 20 * 480:] = 0.0
    real_changed, _ = HostSpectrum().spectrum(changed)
    assert np.array_equal(real_changed[:, :20], real[:, :20]) and not np.allclose(real_changed[:, 20], real[:, 20])


def test_host_spectrum_equals_torch_spectrum_and_both_stream():
    audio = noise(4, 2.0)
    host = HostSpectrum()
    real, imag = host.spectrum(audio)
    front_end = make_front_end("stft", FOA)
    with torch.no_grad():
        torch_real, torch_imag = front_end.spectrum(torch.from_numpy(audio)[None])
        front_end.dft = "matmul"
        matmul_real, matmul_imag = front_end.spectrum(torch.from_numpy(audio)[None])
    for ours, theirs in ((torch_real, real), (torch_imag, imag), (matmul_real, real), (matmul_imag, imag)):
        np.testing.assert_allclose(ours[0].numpy(), theirs, atol=1e-4)
    # Chunks of any multiple of the hop, numpy and torch.
    state = host.initial_state(4)
    torch_state = front_end.initial_state(1)
    front_end.dft = "auto"
    parts, torch_parts, position = [], [], 0
    for hops in (1, 7, 2, 30, 1, 59):
        chunk = audio[:, position:position + hops * HOP]
        position += hops * HOP
        chunk_real, chunk_imag, state = host.step(chunk, state)
        parts.append(chunk_real)
        with torch.no_grad():
            part, _, torch_state = front_end.spectrum_step(torch.from_numpy(chunk)[None], torch_state)
        torch_parts.append(part[0].numpy())
    assert position == audio.shape[1]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), real, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(torch_parts, axis=1), real, atol=1e-4)
    with pytest.raises(ValueError, match="whole number of hops"):
        host.step(audio[:, :500], host.initial_state(4))


@pytest.mark.parametrize("name", list(ARRAYS))
def test_streaming_equals_whole_and_blocks_equal_whole_tensors(name):
    front_end = make_front_end(name, ARRAYS[name])
    audio = noise(4, 3.0)
    whole = features(front_end, audio)
    state, parts, position = front_end.initial_state(1), [], 0
    with torch.no_grad():
        for hops in (1, 4, 5, 2, 13, 25, 100):
            chunk = torch.from_numpy(audio[:, position:position + hops * HOP])[None]
            position += hops * HOP
            part, state = front_end.step(chunk, state)
            parts.append(part[0].numpy())
    assert position == audio.shape[1] and state.shape == (1, 4 * 480)
    assert max_difference(name, np.concatenate(parts, axis=1), whole) <= 1e-4
    # The blocked eager CPU path (and its numpy shortcuts) against whole-tensor torch ops.
    front_end.block_rows = 0
    assert max_difference(name, features(front_end, audio), whole) <= 1e-4
    host = HostSpectrum(front_end.config)
    with torch.no_grad():
        real, imag = (torch.from_numpy(part)[None] for part in host.spectrum(audio))
        front_end.block_rows = 64
        blocked = front_end.features_from_spectrum(real, imag)[0].numpy()
        front_end.dft = "matmul"
        matmul = features(front_end, audio)
    # Other FFTs (scipy's, the matmul DFT that exports) round differently: SALSA-lite phases of
    # the weak cross-spectra of independent noises divide that by small frequencies.
    tolerance = 2e-3 if name == "mic_salsa_lite" else 2e-4
    assert max_difference(name, blocked, whole) <= tolerance
    assert max_difference(name, matmul, whole) <= tolerance


# -- physics ---------------------------------------------------------------------------------------

def test_intensity_vectors_point_at_a_plane_wave_source():
    direction = unit_vector(60.0, 20.0)
    source = noise(1, 2.0, seed=3)[0]
    x, y, z = direction
    foa = np.stack([source, y * source, z * source, x * source])  # ACN W, Y, Z, X; SN3D
    intensity = features(make_front_end("foa_logmel_iv", FOA), foa)[4:7].mean(axis=(1, 2))  # Y, Z, X
    found = np.array([intensity[2], intensity[0], intensity[1]])
    found /= np.linalg.norm(found)
    azimuth = math.degrees(math.atan2(found[1], found[0]))
    elevation = math.degrees(math.asin(found[2]))
    assert abs(azimuth - 60.0) < 2.0 and abs(elevation - 20.0) < 2.0


def test_gcc_phat_peaks_at_the_delay():
    source = noise(1, 1.0, seed=4, extra=100)[0]
    delayed = np.stack([source[20:-80], source[15:-85], source[23:-77], source[20:-80]])  # 1: +5, 2: -3, 3: 0
    gcc = features(make_front_end("mic_logmel_gcc", TETRAHEDRAL), delayed)[4:].mean(axis=1)  # pairs x lags
    lags = np.arange(-32, 32)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    expected = {(0, 1): 5, (0, 2): -3, (0, 3): 0, (1, 2): -8, (1, 3): -5, (2, 3): 3}
    for row, pair in enumerate(pairs):
        assert lags[np.argmax(gcc[row])] == expected[pair], pair
        assert gcc[row].max() > 0.8


def test_salsa_lite_phase_differences_of_a_plane_wave_are_path_differences():
    direction = unit_vector(-100.0, 30.0)
    audio = plane_wave_on_array(TETRAHEDRAL, direction, 2.0)
    front_end = make_front_end("mic_salsa_lite", TETRAHEDRAL)
    phase = features(front_end, audio)[4:, 5:]  # channels 1..3 vs 0, frames after the start
    capsules = np.asarray(TETRAHEDRAL.capsules_m)
    expected = (capsules[1:] - capsules[0]) @ direction  # metres: c times the time difference
    kept = phase[:, :, : front_end.upper]
    np.testing.assert_allclose(np.median(kept, axis=(1, 2)), expected, atol=1e-3)
    assert np.abs(kept - expected[:, None, None]).mean() < 5e-3
    assert np.all(phase[:, :, front_end.upper:] == 0.0)


# -- the DCASE 2023 baseline's formulas ------------------------------------------------------------

@pytest.mark.parametrize("name", ["foa_logmel_iv", "mic_logmel_gcc", "mic_salsa_lite"])
def test_matches_the_dcase2023_baseline_frame_for_frame(name):
    pytest.importorskip("librosa")
    from seld.benchmarks.reference_features import Dcase2023Features

    audio = noise(4, 2.0, seed=5) if name != "mic_salsa_lite" else plane_wave_on_array(TETRAHEDRAL, unit_vector(30, 10), 2.0)
    reference = {"foa_logmel_iv": Dcase2023Features("foa"), "mic_logmel_gcc": Dcase2023Features("mic"),
                 "mic_salsa_lite": Dcase2023Features("mic", use_salsalite=True)}[name]
    theirs = reference.extract(audio.T.astype(np.float64))  # [frames, channels * bins], channel-major
    ours = features(make_front_end(name, ARRAYS[name]), audio)
    theirs = theirs.reshape(theirs.shape[0], ours.shape[0], ours.shape[2]).transpose(1, 0, 2)
    assert ours.shape == theirs.shape == (SHAPES[name][0], 100, SHAPES[name][1])
    # Log channels in dB (theirs clip at max - 80 dB per file, never reached by this audio).
    logs = 4
    np.testing.assert_allclose(ours[:logs], theirs[:logs], atol=2e-3)
    np.testing.assert_allclose(ours[logs:], theirs[logs:], atol=2e-5)


# -- ONNX ------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
@pytest.mark.filterwarnings("ignore:Constant folding - Only steps=1")
@pytest.mark.filterwarnings("ignore:The feature will be removed")
def test_onnx_export_matches_torch(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    foa = np.stack([noise(4, 0.5, seed=6), noise(4, 0.5, seed=7)])  # exported on one length, run on another
    # Coherent channels: the phases of independent noises' weak cross-spectra amplify rounding.
    mic = np.stack([plane_wave_on_array(TETRAHEDRAL, unit_vector(a, e), 0.5) for a, e in ((40, 10), (-120, -20))])
    for name, array in ARRAYS.items():
        audio = foa if array is FOA else mic
        front_end = make_front_end(name, array)
        front_end.dft = "matmul"  # what the exporter sees; compare like with like
        path = tmp_path / f"{name}.onnx"
        torch.onnx.export(front_end, (torch.zeros(1, 4, 4800),), str(path), dynamo=False, opset_version=17,
                          input_names=["audio"], output_names=["features"],
                          dynamic_axes={"audio": {0: "batch", 2: "samples"}, "features": {0: "batch", 2: "frames"}})
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (exported,) = session.run(None, {"audio": audio})
        with torch.no_grad():
            expected = front_end(torch.from_numpy(audio)).numpy()
        assert exported.shape == expected.shape == (2, *SHAPES[name][:1], 25, SHAPES[name][1])
        assert max_difference(name, exported, expected) <= 1e-4, name
        # The graph that starts at the host spectrum.
        spectrum_path = tmp_path / f"{name}_spectrum.onnx"
        example = (torch.zeros(1, 4, 10, 513), torch.zeros(1, 4, 10, 513))
        torch.onnx.export(SpectrumFeatures(front_end), example, str(spectrum_path), dynamo=False, opset_version=17,
                          input_names=["real", "imag"], output_names=["features"],
                          dynamic_axes={"real": {0: "batch", 2: "frames"}, "imag": {0: "batch", 2: "frames"},
                                        "features": {0: "batch", 2: "frames"}})
        real, imag = HostSpectrum(front_end.config).spectrum(audio)
        session = onnxruntime.InferenceSession(str(spectrum_path), providers=["CPUExecutionProvider"])
        (exported,) = session.run(None, {"real": real, "imag": imag})
        front_end.dft = "auto"
        assert max_difference(name, exported, features_of_batch(front_end, audio)) <= 1e-4, name
    # The streaming step, state in and out, pushed through 100 ms chunks.
    front_end = make_front_end("foa_logmel_iv", FOA)
    front_end.dft = "matmul"
    path = tmp_path / "step.onnx"
    torch.onnx.export(_Step(front_end), (torch.zeros(1, 4, 2400), front_end.initial_state(1)), str(path), dynamo=False,
                      opset_version=17, input_names=["chunk", "state"], output_names=["features", "state_out"],
                      dynamic_axes={"chunk": {0: "batch", 2: "samples"}, "state": {0: "batch"},
                                    "features": {0: "batch", 2: "frames"}, "state_out": {0: "batch"}})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    state, parts = np.zeros((2, front_end.state_size), np.float32), []
    for start in range(0, foa.shape[-1], 2400):
        part, state = session.run(None, {"chunk": foa[..., start:start + 2400], "state": state})
        parts.append(part)
    front_end.dft = "auto"
    assert max_difference("foa_logmel_iv", np.concatenate(parts, axis=2), features_of_batch(front_end, foa)) <= 1e-4


class _Step(torch.nn.Module):
    def __init__(self, front_end):
        super().__init__()
        self.front_end = front_end

    def forward(self, chunk: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.front_end.step(chunk, state)


def features_of_batch(front_end, audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return front_end(torch.from_numpy(audio)).numpy()
