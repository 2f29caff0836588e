"""`seld bench gpu`: the GPU checks in one run, on a machine with an NVIDIA GPU and onnxruntime-gpu.

What it does (warm-up runs, then medians of repeats), with the `default` preset's architecture (random
weights, calibrated as in reference_baseline):
- placement: stream.onnx and the offline audio graph run on the CUDA provider with ONNX Runtime's
  profiler on; the nodes each provider really ran are counted from the profile (ONNX Runtime
  falls back to CPU silently, so the session's provider list alone proves little).
- batch: `seld annotate`'s whole work on one hour of audio (60 files of 60 s, as `seld bench
  annotate`) on CUDA (one engine loop, and each count of CUDA_LOOPS) and, in the same run, on the CPU
  provider with all cores; then the graph alone, batched, on the GPU: stream.onnx fed host spectra
  (inputs copied from host memory each call, and already on the GPU through IOBinding), the
  audio-input graph (a dense DFT inside) on whole files, and the host FFT that feeds stream.onnx,
  on all cores. And the whole `seld annotate` command, in one process and in its default
  processes (one per 4 cores), on each device.
- streaming: `seld bench stream`'s measurement (10,000 chunks of 100 ms, p50/p99, parts; one
  repeat, to fit a short lease) with the stream's step on CUDA (a CUDA graph, see
  seld.engine._BoundStep), and on one CPU thread in the same run.
`run("cpu")` takes the same steps without a GPU, so the tests can run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

FILES = 60
FILE_SECONDS = 60.0
STREAM_CHUNKS = 10_000
STREAM_WARMUP = 500
GRAPH_REPEATS = 5
BATCHES = ((32, 100), (128, 100), (64, 600))  # (signals, label frames) per stream.onnx call
WHOLE_FILES_PER_CALL = 8
CUDA_LOOPS = (4, 8)  # `seld annotate` on CUDA is also timed with these many engine loops (Engine(parallel=...))
COMMAND_REPEATS = 2  # the whole `seld annotate` command, one process against its default processes


def _gpu_name() -> str:
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30, check=False)
        return result.stdout.strip() or result.stderr.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return f"nvidia-smi failed: {error}"


# ------------------------------------------------------------------ in a child process (no torch)


def _session(path: Path, device: str, profile_prefix: str | None = None, dimensions: dict[str, int] | None = None):
    """A batch session on `device` ("cuda"; "cpu" to try this module on a machine without a GPU)."""
    import onnxruntime

    from seld.engine import cuda_provider, session_options

    options = session_options(os.cpu_count() or 1)
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    for name, size in (dimensions or {}).items():
        options.add_free_dimension_override_by_name(name, size)
    providers = ([cuda_provider()] if device == "cuda" else []) + ["CPUExecutionProvider"]
    return onnxruntime.InferenceSession(str(path), options, providers=providers)


def _placement(path: Path, feed: dict, folder: Path, device: str, dimensions: dict[str, int] | None = None) -> dict:
    """Nodes of `path`'s graph per provider that ran them, read from ONNX Runtime's profile."""
    session = _session(path, device, str(folder / f"{path.stem}-{len(dimensions or {})}"), dimensions)
    for _ in range(3):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, dict[str, str]] = {}  # provider -> node name -> operator
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args:
            nodes.setdefault(args["provider"], {})[event["name"].removesuffix("_kernel_time")] = args.get("op_name", "?")
    return {"session_providers": session.get_providers(),
            "nodes_per_provider": {provider: len(found) for provider, found in nodes.items()},
            "operators_per_provider": {provider: dict(Counter(found.values())) for provider, found in nodes.items()}}


def _timed(call, repeats: int) -> float:
    call()  # warm-up (CUDA kernels, memory arena)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def _host_frames(engine, audio: np.ndarray, signals: int, samples: int):
    """_HostFrames of `signals` rows, each a different `samples`-long piece of `audio`."""
    from seld.engine import _HostFrames

    host = _HostFrames(engine.spectrum, signals, engine.num_channels, samples)
    for row in range(signals):
        start = (row * 7919 * engine.label_hop) % max(1, audio.shape[1] - samples)
        host.set_row(row, np.zeros(engine.num_channels * engine.spectrum.config.state_samples, np.float32),
                     audio[:, start:start + samples])
    return host


def _stream_graph_throughput(engine, audio: np.ndarray, device: str, batches, repeats: int) -> dict:
    """stream.onnx alone, `signals` streams x `frames` label frames per call."""
    import onnxruntime

    session = _session(engine.model_dir / "stream.onnx", device)
    results = {}
    for signals, frames in batches:
        samples = frames * engine.label_hop
        host = _host_frames(engine, audio, signals, samples)
        host_fft_s = _timed(host.transform, repeats)
        real, imag = (array.copy() for array in host.transform())
        state = np.zeros((signals, engine.state_size), np.float32)
        feed = {"real": real, "imag": imag, "state": state}
        from_host_s = _timed(lambda: session.run(["outputs", "state_out"], feed), repeats)

        binding = session.io_binding()
        on_gpu = {name: onnxruntime.OrtValue.ortvalue_from_numpy(value, device, 0) for name, value in feed.items()}
        for name, value in on_gpu.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("outputs", device)
        binding.bind_output("state_out", device)

        def on_device() -> None:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        on_gpu_s = _timed(on_device, repeats)
        seconds = signals * samples / engine.sample_rate
        results[f"{signals}x{frames}"] = {
            "signals": signals, "label_frames": frames, "audio_seconds_per_call": seconds,
            "input_mb": round((real.nbytes + imag.nbytes) / 1e6, 1),
            "graph_inputs_from_host_x_real_time": seconds / from_host_s,
            "graph_inputs_on_gpu_x_real_time": seconds / on_gpu_s,
            "host_fft_all_cores_x_real_time": seconds / host_fft_s,
            "seconds": {"graph_from_host": from_host_s, "graph_on_gpu": on_gpu_s, "host_fft": host_fft_s},
        }
    return results


def _audio_graph_throughput(path: Path, audio: np.ndarray, sample_rate: int, device: str, files: int,
                            repeats: int) -> dict:
    session = _session(path, device)
    batch = np.stack([np.roll(audio, sample_rate * k, axis=1) for k in range(files)])
    seconds = _timed(lambda: session.run(None, {"audio": batch}), repeats)
    audio_seconds = audio.shape[1] / sample_rate
    return {"files_per_call": files, "seconds_each": audio_seconds,
            "x_real_time": files * audio_seconds / seconds, "seconds_per_call": seconds}


def _child(args: dict) -> dict:
    import onnxruntime

    from seld.engine import Engine

    device, audio_graph, folder = args.get("device", "cuda"), Path(args["audio_graph"]), Path(args["folder"])
    audio = np.load(args["audio"])
    engine = Engine(args["model"], device, "batch")
    if device == "cuda" and engine.providers[0] != "CUDAExecutionProvider":  # timing the CPU as the GPU
        raise RuntimeError(f"ONNX Runtime did not give the CUDA provider (got {', '.join(engine.providers)}); "
                           "its reason is in the log above")
    real, imag = _host_frames(engine, audio, 1, engine.label_hop).transform()
    step_feed = {"real": real.copy(), "imag": imag.copy(), "state": np.zeros((1, engine.state_size), np.float32)}
    ten_seconds = {"audio": audio[None, :, :engine.sample_rate * 10]}
    return {
        "onnxruntime": onnxruntime.__version__,
        "available_providers": onnxruntime.get_available_providers(),
        "engine_providers": engine.providers,
        "placement": {"stream.onnx": _placement(engine.model_dir / "stream.onnx", step_feed, folder, device),
                      "stream.onnx, dimensions fixed": _placement(
                          engine.model_dir / "stream.onnx", step_feed, folder, device,
                          {"batch": 1, "frames": engine.label_hop // engine.hop}),
                      "audio_model.onnx": _placement(audio_graph, ten_seconds, folder, device)},
        "stream_graph_batched": _stream_graph_throughput(engine, audio, device, args["batches"], args["repeats"]),
        "audio_graph_whole_files": _audio_graph_throughput(audio_graph, audio, engine.sample_rate, device,
                                                           args["whole_files"], args["repeats"]),
    }


def _python_child(module: str, arguments: dict) -> dict:
    """benchmarks.run_child, its figures logged as they come (a short GPU lease may end before the table)."""
    from seld.benchmarks import run_child

    figures = run_child(module, arguments)
    print(f"{module} ({arguments.get('device', 'cuda')}): {json.dumps(figures)}", file=sys.stderr, flush=True)
    return figures


def _command_runs(model: Path, inputs: Path, out: Path, devices: tuple[str, ...]) -> dict:
    """The whole `seld annotate` command (imports, sessions, workers included), in one process and
    in its default processes (seld.annotate_processes), per device, alternating, COMMAND_REPEATS
    times: {"<device>-<n>-processes": seconds of each run}."""
    import shutil

    from seld import SeldError
    from seld.annotate_processes import default_processes

    counts = tuple(dict.fromkeys((1, default_processes(FILES))))
    runs: dict[str, list[float]] = {}
    for _ in range(COMMAND_REPEATS):
        for device in devices:
            for processes in counts:
                shutil.rmtree(out, ignore_errors=True)
                started = time.perf_counter()
                command = [sys.executable, "-m", "seld", "annotate", str(inputs), "--model", str(model), "--out",
                           str(out), "--device", device, "--processes", str(processes)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SeldError(f"seld bench gpu: `{' '.join(command[2:])}` failed: "
                                    f"{' | '.join(done.stderr.strip().splitlines()[-3:])}")
                runs.setdefault(f"{device}-{processes}-processes", []).append(time.perf_counter() - started)
    return runs


# ------------------------------------------------------------------ the benchmark


def run(device: str = "cuda") -> dict:
    """The figures; `device` "cpu" runs the same steps without a GPU (for the tests)."""
    import onnxruntime

    from seld.benchmarks import annotate as annotate_bench
    from seld.benchmarks.reference_baseline import (
        calibrated_network,
        export_audio_graphs,
        export_untrained_package,
        make_scene,
        write_scenes,
    )
    from seld import SeldError
    from seld.engine import _nvidia_gpu_present

    if device == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise SeldError("seld bench gpu: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
    if device == "cuda" and not _nvidia_gpu_present():
        raise SeldError("seld bench gpu: no NVIDIA GPU found on this machine")
    devices = tuple(dict.fromkeys((device, "cpu")))
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="seld-bench-gpu-") as temporary:
        root = Path(temporary)
        inputs = root / "inputs"
        write_scenes(inputs, FILES, FILE_SECONDS)
        network = calibrated_network("default", make_scene(FILE_SECONDS, 0))
        info = export_untrained_package(root / "model", network)
        step_graph, whole_graph = export_audio_graphs(network, root)
        np.save(root / "audio.npy", make_scene(FILE_SECONDS, 1))

        graphs = _python_child("seld.benchmarks.gpu", {"model": str(root / "model"), "audio": str(root / "audio.npy"),
                                                       "audio_graph": str(whole_graph), "folder": str(root),
                                                       "device": device, "batches": BATCHES,
                                                       "repeats": GRAPH_REPEATS, "whole_files": WHOLE_FILES_PER_CALL})
        # name -> (device, engine loops): the CPU one loop per core; CUDA one loop (the engine's
        # default there) and CUDA_LOOPS loops, whose host work overlaps the other loops' graph runs.
        runs = {"cpu": ("cpu", cores)}
        if device != "cpu":
            runs = {device: (device, 1), **{f"{device}-{n}-loops": (device, n) for n in CUDA_LOOPS}, **runs}
        batch = {}
        for name, (run_device, loops) in runs.items():
            batch[name] = annotate_bench._run_child(root / "model", inputs, root / f"annotate-{name}", loops,
                                                    run_device)
            print(f"annotate ({name}): {json.dumps(batch[name])}", file=sys.stderr, flush=True)
        commands = _command_runs(root / "model", inputs, root / "annotate-command", devices)
        print(f"seld annotate commands: {json.dumps(commands)}", file=sys.stderr, flush=True)
        stream_arguments = {"model": str(root / "model"), "audio": str(root / "audio.npy"),
                            "audio_graph": str(step_graph), "chunks": STREAM_CHUNKS, "warmup": STREAM_WARMUP}
        streaming = {name: _python_child("seld.benchmarks.stream", {**stream_arguments, "device": name,
                                                                     "repeats": 1})
                     for name in devices}

    hours = FILES * FILE_SECONDS / 3600

    def batch_summary(child: dict) -> dict:
        median = float(np.median(child["seconds"]))
        return {"providers": child["providers"], "loops": child["parallel"], "seconds_per_hour": median / hours,
                "x_real_time": hours * 3600 / median, "runs_s": child["seconds"],
                "max_rss_mb": round(child["max_rss_mb"], 1), "csv_rows": child["rows"]}

    def stream_summary(child: dict) -> dict:
        return {"providers": child["providers"], "stream_step": child["stream_step"], "per_chunk": child["push"],
                "per_chunk_runs": child["push_runs"], "parts": child["parts"], "reference_audio_graph_dense_dft": child["audio_graph_dense_dft"],
                "jitter_floor": child["jitter_floor"], "x_real_time": 100.0 / child["push"]["mean_ms"]}

    return {
        "machine": {"gpu": _gpu_name(), "cpu": annotate_bench._cpu(), "cores": cores},
        "model": {"preset": "default", "weights": "random, output layer calibrated to ~1.5 detections per frame",
                  "state_size": info["state_size"]},
        "onnxruntime": graphs["onnxruntime"], "available_providers": graphs["available_providers"],
        "placement": graphs["placement"],
        "device": device,
        "batch_runs": list(batch),
        "batch": {"audio_hours": hours, **{name: batch_summary(child) for name, child in batch.items()},
                  "gpu_over_cpu": float(np.median(batch["cpu"]["seconds"]) / np.median(batch[device]["seconds"])),
                  "commands": {name: {"seconds_per_hour": float(np.median(runs)) / hours,
                                      "x_real_time": hours * 3600 / float(np.median(runs)), "runs_s": runs}
                               for name, runs in commands.items()},
                  "stream_graph_batched": graphs["stream_graph_batched"],
                  "audio_graph_whole_files": graphs["audio_graph_whole_files"]},
        "streaming": {name: stream_summary(child) for name, child in streaming.items()},
        "targets": {"batch_x_real_time": 10_000, "stream_p99_ms": 1.0},
    }


def format_table(result: dict) -> str:
    batch, streaming = result["batch"], result["streaming"]
    lines = [f"seld bench gpu: {result['machine']['gpu']}; {result['machine']['cores']} cores "
             f"({result['machine']['cpu']}); onnxruntime {result['onnxruntime']}",
             "placement (nodes per provider, from ONNX Runtime's profile; streaming runs with dimensions fixed):"]
    for graph, placement in result["placement"].items():
        lines.append(f"  {graph:<30} {placement['nodes_per_provider']}")
    lines.append(f"batch, seld annotate on {batch['audio_hours']:.0f} h (read, FFT, graph, decode, write):")
    devices = tuple(dict.fromkeys((result["device"], "cpu")))
    for name in result["batch_runs"]:
        entry = batch[name]
        lines.append(f"  {name:<13} {entry['loops']:>2} loop(s) {entry['seconds_per_hour']:8.2f} s/hour "
                     f"{entry['x_real_time']:9.0f}x real time  max RSS {entry['max_rss_mb']:.0f} MB  "
                     f"({', '.join(entry['providers'])})")
    lines.append(f"  GPU over CPU {batch['gpu_over_cpu']:.2f}x; target >= {result['targets']['batch_x_real_time']}x "
                 "real time")
    lines.append("batch, the whole seld annotate command (imports and sessions included):")
    for name, entry in batch["commands"].items():
        lines.append(f"  {name:<20} {entry['seconds_per_hour']:8.2f} s/hour {entry['x_real_time']:9.0f}x real time")
    lines.append("batch, the graph alone (x real time):")
    for name, entry in batch["stream_graph_batched"].items():
        lines.append(f"  stream.onnx {name:<9} inputs from host {entry['graph_inputs_from_host_x_real_time']:9.0f}  "
                     f"on GPU {entry['graph_inputs_on_gpu_x_real_time']:9.0f}  host FFT (all cores) "
                     f"{entry['host_fft_all_cores_x_real_time']:7.0f}")
    whole = batch["audio_graph_whole_files"]
    lines.append(f"  audio-input graph, {whole['files_per_call']} whole files per call: {whole['x_real_time']:.0f}")
    lines.append(f"streaming, {STREAM_CHUNKS} chunks of 100 ms:{'':>12} p50 ms   p99 ms  mean ms")
    for device in devices:
        chunk = streaming[device]["per_chunk"]
        lines.append(f"  Stream.push, {device:<5} ({', '.join(streaming[device]['stream_step'])}){'':>3} "
                     f"{chunk['p50_ms']:8.3f} {chunk['p99_ms']:8.3f} {chunk['mean_ms']:8.3f}")
        for name, part in streaming[device]["parts"].items():
            lines.append(f"    {name:<32} {part['p50_ms']:8.3f} {part['p99_ms']:8.3f} {part['mean_ms']:8.3f}")
    lines.append(f"  target p99 <= {result['targets']['stream_p99_ms']} ms on the GPU")
    return "\n".join(lines)


if __name__ == "__main__":
    from seld.benchmarks import child_main

    child_main(_child)
