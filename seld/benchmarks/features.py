"""`seld bench features`: seconds to compute each front end's features for one minute of
4-channel 24 kHz audio, against the public baselines' own feature code timed in the same run.

Our paths, all on the CPU:
- ``torch``: the front end module on audio (torch.fft, blocks of frames), all cores;
- ``torch_1_thread``: the same with one intra-op thread (the streaming convention);
- ``host_torch``: ``HostSpectrum`` (numpy/scipy rFFT) then ``features_from_spectrum`` in torch;
- ``host_onnxruntime``: ``HostSpectrum`` then the exported spectrum-input graph in ONNX Runtime
  (the torch-free inference path), all cores.
The reference (``seld.benchmarks.reference_features``) is the DCASE 2023 baseline's
``cls_feature_class.py`` (librosa) for the three DCASE features and SELDnet's feature code for
``stft``, one file at a time, with numpy's default BLAS threads.

As every benchmark here: threads fixed, a warm-up run, then repeats interleaved with the
reference's (so a busy machine slows both alike), medians reported. The audio is synthetic and
in memory: no file reading is timed, on either side.
"""

from __future__ import annotations

import io
import os
import resource
import statistics
import time
import warnings

import numpy as np
import torch

from seld.arrays import FOA, TETRAHEDRAL
from seld.benchmarks.annotate import _cpu, _load
from seld.features import FRONT_ENDS, HostSpectrum, SpectrumFeatures, make_front_end

SECONDS = 60.0
CHANNELS = 4
REPEATS = 5
REFERENCE_REPEATS = 3
ARRAYS = {"stft": FOA, "foa_logmel_iv": FOA, "mic_logmel_gcc": TETRAHEDRAL, "mic_salsa_lite": TETRAHEDRAL}
PATHS = ("torch", "torch_1_thread", "host_torch", "host_onnxruntime")


def _time(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _blas_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else None


def _onnx_session(front_end, threads: int):
    """The spectrum-input graph of `front_end` in ONNX Runtime (None when it cannot be built)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    front_end.dft = "matmul"
    buffer = io.BytesIO()
    example = (torch.zeros(1, front_end.num_channels, 10, front_end.config.num_bins),) * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SpectrumFeatures(front_end), example, buffer, dynamo=False, opset_version=17,
                          input_names=["real", "imag"], output_names=["features"],
                          dynamic_axes={"real": {0: "batch", 2: "frames"}, "imag": {0: "batch", 2: "frames"},
                                        "features": {0: "batch", 2: "frames"}})
    front_end.dft = "auto"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def run() -> dict:
    from seld.benchmarks.reference_features import Dcase2023Features, seldnet_stft

    threads = os.cpu_count() or 1
    load_before = _load()
    rng = np.random.default_rng(0)
    samples = int(SECONDS * 24_000)
    pcm = np.clip(rng.normal(0.0, 3000.0, (samples, CHANNELS)), -32768, 32767).astype(np.int16)  # as wav.read gives
    audio = np.ascontiguousarray(pcm.T / np.float32(32768.0), dtype=np.float32)[None]  # [1, channels, samples]
    audio_tensor = torch.from_numpy(audio)
    references = {
        "stft": (lambda audio64=pcm / 32768.0: seldnet_stft(audio64)),
        "foa_logmel_iv": (lambda features=Dcase2023Features("foa"): features.extract(features.load_audio(pcm))),
        "mic_logmel_gcc": (lambda features=Dcase2023Features("mic"): features.extract(features.load_audio(pcm))),
        "mic_salsa_lite": (lambda features=Dcase2023Features("mic", use_salsalite=True):
                           features.extract(features.load_audio(pcm))),
    }
    reference_sources = {
        "stft": "sharathadavanne/seld-net cls_feature_class.py (numpy FFT per frame, abs + angle)",
        "foa_logmel_iv": "sharathadavanne/seld-dcase2023 cls_feature_class.py (librosa; log-mel + IV)",
        "mic_logmel_gcc": "sharathadavanne/seld-dcase2023 cls_feature_class.py (librosa; log-mel + GCC-PHAT)",
        "mic_salsa_lite": "sharathadavanne/seld-dcase2023 cls_feature_class.py (librosa; SALSA-lite)",
    }
    front_ends = {}
    for name in FRONT_ENDS:
        front_end = make_front_end(name, ARRAYS[name]).eval()
        host = HostSpectrum(front_end.config, workers=threads)
        session = _onnx_session(front_end, threads)

        def with_threads(count, function):
            def timed():
                torch.set_num_threads(count)
                with torch.inference_mode():
                    function()
            return timed

        ours = {
            "torch": with_threads(threads, lambda fe=front_end: fe(audio_tensor)),
            "torch_1_thread": with_threads(1, lambda fe=front_end: fe(audio_tensor)),
            "host_torch": with_threads(threads, lambda fe=front_end, host=host: fe.features_from_spectrum(
                *(torch.from_numpy(part) for part in host.spectrum(audio)))),
        }
        if session is not None:
            ours["host_onnxruntime"] = (lambda session=session, host=host: session.run(
                None, dict(zip(("real", "imag"), host.spectrum(audio)))))
        with torch.inference_mode():
            shape = tuple(front_end(audio_tensor).shape[1:])
        times = {path: [] for path in ours}
        reference_times = []
        for function in (*ours.values(), references[name]):  # warm-up
            function()
        for repeat in range(REPEATS):
            for path, function in ours.items():
                times[path].append(_time(function))
            if repeat < REFERENCE_REPEATS:
                reference_times.append(_time(references[name]))
        torch.set_num_threads(threads)
        medians = {path: statistics.median(values) for path, values in times.items()}
        reference = statistics.median(reference_times)
        fastest = min(medians, key=medians.get)
        front_ends[name] = {
            "shape": list(shape),
            "seconds": {path: medians.get(path) for path in PATHS},
            "reference_seconds": reference,
            "reference": reference_sources[name],
            "speedup": {path: reference / value for path, value in medians.items()},
            "fastest": fastest,
            "fastest_speedup": reference / medians[fastest],
            "x_real_time": SECONDS / medians[fastest],
        }
    return {
        "audio": {"seconds": SECONDS, "channels": CHANNELS, "sample_rate": 24_000, "source": "synthetic, in memory"},
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "torch_threads": threads, "scipy_workers": threads,
                    "onnxruntime_threads": threads, "reference_blas_threads": _blas_threads(),
                    "load_average_1min": [load_before, _load()]},
        "versions": {"torch": torch.__version__, "numpy": np.__version__, **_versions("scipy", "librosa", "onnxruntime")},
        "repeats": REPEATS,
        "reference_repeats": REFERENCE_REPEATS,
        "statistic": "median seconds",
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "front_ends": front_ends,
    }


def _versions(*names: str) -> dict:
    found = {}
    for name in names:
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = None
    return found


def format_table(result: dict) -> str:
    machine, audio = result["machine"], result["audio"]
    labels = {"torch": "torch", "torch_1_thread": "torch 1t", "host_torch": "host+torch", "host_onnxruntime": "host+ORT"}
    lines = [f"seconds for {audio['seconds']:.0f} s of {audio['channels']}-channel {audio['sample_rate'] // 1000} kHz audio "
             f"on {machine['cpu']} ({machine['cores']} cores), median of {result['repeats']} "
             f"(reference: {result['reference_repeats']})",
             f"{'front end':<15} {'features':>11} {'reference':>9} "
             + " ".join(f"{labels[path]:>10}" for path in PATHS) + f" {'speedup':>8}"]
    for name, entry in result["front_ends"].items():
        shape = "x".join(str(size) for size in entry["shape"][::2]) if len(entry["shape"]) == 3 else ""
        cells = " ".join("-".rjust(10) if entry["seconds"][path] is None else f"{entry['seconds'][path]:10.4f}"
                         for path in PATHS)
        lines.append(f"{name:<15} {shape:>11} {entry['reference_seconds']:9.4f} {cells} "
                     f"{entry['fastest_speedup']:7.1f}x")
    lines.append("speedup: reference / our fastest path. torch: the module on audio, "
                 f"{machine['torch_threads']} threads; torch 1t: one thread; host: numpy/scipy rFFT "
                 f"({machine['scipy_workers']} workers) then the features in torch or ONNX Runtime.")
    for name, entry in result["front_ends"].items():
        lines.append(f"  {name}: reference = {entry['reference']}")
    load = machine["load_average_1min"]
    lines.append(f"audio {audio['source']} (no file reading timed); peak RSS {result['peak_rss_mb']:.0f} MB; "
                 + (f"load average {load[0]:.1f} before, {load[1]:.1f} after (other processes slow both sides)"
                    if None not in load else "load average unknown"))
    return "\n".join(lines)
