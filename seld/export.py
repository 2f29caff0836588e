"""`seld export`: a trained run -> a model package (README, Outputs) that checks itself; or a package
re-exported: its graphs made again by this seld (a faster graph, the same weights).

Both graphs begin at the STFT spectrum (real and imaginary parts), which the engine
computes on the host with the training framing: the design's prototype measured a host
rFFT feeding a spectrum-input graph at ~490x real time in batch against ~380x with a
dense DFT inside the graph, and `seld bench annotate` measures both for this model.
The features, the normalization and the CRNN are inside both graphs.

Before anything is written, ONNX Runtime's outputs are compared with PyTorch's on
random audio (offline graph), and the streaming graph fed chunk by chunk with its
state carried is compared with the offline graph: exporters have shipped recurrent
layers with wrong math, and only this comparison catches it.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from safetensors import SafetensorError

from seld import SeldError
from seld.atomic import FILE_MODE, FOLDER_MODE
from seld.audio import LABEL_HOP
from seld.engine import FORMAT_VERSION
from seld.model import SelfAttention
from seld.network import SeldNetwork
from seld.train import TrainConfig, average_checkpoints, load_checkpoint, network_from_checkpoint, read_package

log = logging.getLogger(__name__)

OPSET = 17
TOLERANCE = 1e-4


class _OfflineGraph(torch.nn.Module):
    def __init__(self, network: SeldNetwork):
        super().__init__()
        self.network = network

    def forward(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        return self.network.forward_spectrum(real, imag)


class _StreamGraph(torch.nn.Module):
    def __init__(self, network: SeldNetwork):
        super().__init__()
        self.network = network

    def forward(self, real: torch.Tensor, imag: torch.Tensor, state: torch.Tensor):
        return self.network.step_spectrum(real, imag, state)


def _export(module: torch.nn.Module, inputs: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_axes: dict) -> None:
    # The TorchScript-based exporter: the dynamo exporter fails on
    # this GRU with a dynamic length, while this one keeps batch and time dynamic.
    with warnings.catch_warnings():  # tracer chatter about shapes that the checks below verify
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False)


def _linear_pairs_folded(network: SeldNetwork) -> SeldNetwork:
    """A copy of `network` in which each two consecutive linear layers (the output heads, with no
    activation between) are one: the same function, a matmul and a reshape fewer per head in the
    graphs (~12 us of a ~300 us streaming step, `seld bench stream`). The checks compare the
    graphs with the network as trained."""
    network = copy.deepcopy(network)
    for module in list(network.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Sequential) and len(child) == 2 and all(isinstance(c, nn.Linear) for c in child):
                first, second = child[0], child[1]
                merged = nn.Linear(first.in_features, second.out_features)
                with torch.no_grad():
                    weight = second.weight.double() @ first.weight.double()
                    bias = second.weight.double() @ first.bias.double() + second.bias.double()
                    merged.weight.copy_(weight)
                    merged.bias.copy_(bias)
                setattr(module, name, merged)
    return network


def export_graphs(network: SeldNetwork, folder: Path) -> None:
    network = _linear_pairs_folded(network.eval())  # eval first: the checks run the network as given
    channels, bins = network.num_channels, network.front_end.config.num_bins
    real = torch.zeros(1, channels, 10, bins)
    spectrum_axes = {0: "batch", 2: "frames"}
    attention = [module for module in network.modules() if isinstance(module, SelfAttention)]
    with torch.no_grad():
        for module in attention:  # the offline graph takes whole recordings: windows gathered, O(frames * W)
            module.band_frames = 0
        try:
            _export(_OfflineGraph(network).eval(), (real, real), folder / "model.onnx", ["real", "imag"], ["outputs"],
                    {"real": spectrum_axes, "imag": spectrum_axes, "outputs": {0: "batch", 1: "label_frames"}})
        finally:
            for module in attention:
                del module.band_frames  # back to the class's
        if network.causal:
            state = network.initial_state(1)
            _export(_StreamGraph(network).eval(), (real, real, state), folder / "stream.onnx", ["real", "imag", "state"],
                    ["outputs", "state_out"],
                    {"real": spectrum_axes, "imag": spectrum_axes, "state": {0: "batch"}, "state_out": {0: "batch"},
                     "outputs": {0: "batch", 1: "label_frames"}})
        else:  # same inputs for the engine; a non-causal model never streams
            shutil.copyfile(folder / "model.onnx", folder / "stream.onnx")


def check_graphs(network: SeldNetwork, folder: Path, seconds: float = 3.0, seed: int = 0) -> dict:
    """Max abs differences: ONNX offline vs PyTorch, and ONNX streaming (chunks of 1, 3 and 7
    label frames, state carried) vs ONNX offline. Raises SeldError past the tolerance."""
    import onnxruntime

    rng = np.random.default_rng(seed)
    frames = int(seconds * 10)
    audio = (0.1 * rng.standard_normal((2, network.num_channels, frames * LABEL_HOP))).astype(np.float32)
    with torch.no_grad():
        real, imag = network.front_end.spectrum(torch.from_numpy(audio))
    with torch.no_grad():
        expected = network.forward_spectrum(real, imag).numpy()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    offline = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    got = offline.run(["outputs"], {"real": real.numpy(), "imag": imag.numpy()})[0]
    differences = {"offline_vs_torch": float(np.abs(got - expected).max())}
    if network.causal:
        stream = onnxruntime.InferenceSession(str(folder / "stream.onnx"), options, providers=["CPUExecutionProvider"])
        hops_per_label = LABEL_HOP // network.front_end.config.hop
        for chunk in (1, 3, 7):
            state = np.zeros((2, network.state_size), np.float32)
            pieces = []
            for start in range(0, frames, chunk):
                window = slice(start * hops_per_label, (start + chunk) * hops_per_label)
                out, state = stream.run(["outputs", "state_out"], {
                    "real": real[:, :, window].numpy(), "imag": imag[:, :, window].numpy(), "state": state})
                pieces.append(out)
            differences[f"stream{chunk}_vs_offline"] = float(np.abs(np.concatenate(pieces, axis=1) - got).max())
    failed = [key for key, value in differences.items() if not value <= TOLERANCE]  # NaN fails too
    if failed:
        first = failed[0]
        raise SeldError(f"{folder}: exported graph disagrees ({first}: max abs difference {differences[first]:.2e} "
                        f"> {TOLERANCE}); nothing written")
    return differences


def package_info(network: SeldNetwork, config: TrainConfig, checkpoint: dict, name: str) -> dict:
    epoch = int(checkpoint.get("epoch", -1)) + 1  # whose weights these are (1-based, as metrics.csv)
    row = next((row for row in checkpoint.get("history") or [] if row.get("epoch") == epoch), {})
    # That epoch's validation figures; none without a validation split, and none for an average
    # of epochs (never measured: no epoch's figures stand for it).
    averaged = {"averaged_epochs": checkpoint["averaged_epochs"]} if "averaged_epochs" in checkpoint else {}
    validation = {} if averaged or "SELD" not in row else row
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "format": config.format,
        "sample_rate": network.front_end.config.sample_rate,
        "num_channels": network.num_channels,
        "array": network.array.to_dict(),
        "graph_input": "spectrum",
        "front_end": network.front_end.config.to_dict(),
        "hop": network.front_end.config.hop,
        "label_hop": LABEL_HOP,
        "chunk_label_frames": 1,
        "causal": network.causal,
        "classes": list(config.classes),
        "output": {"format": config.model.output_format, "num_classes": config.model.num_classes,
                   "num_tracks": config.model.num_tracks, "distance": config.model.distance},
        "thresholds": {"activity": config.threshold, "merge_degrees": 15.0},
        "state_size": network.state_size,
        "model": config.model.to_dict(),
        "training": {"data": config.data, "epochs_trained": epoch,
                     "preset": config.preset, "seed": config.seed,
                     **({"init_from": config.init_from} if config.init_from else {}), **averaged},
        "metrics": {"validation": validation},
    }


_CARD_METRICS = ("ER", "F", "LE", "AngE", "LR", "DistE", "RelDistE", "SELD")


def model_card(info: dict) -> str:
    metrics = info["metrics"].get("validation") or {}
    lines = [
        f"# {info['name']}",
        "",
        f"A {'causal (streaming)' if info['causal'] else 'non-causal (offline only)'} SELD model for the "
        f"{info['format'].upper()} format ({info['num_channels']} channels, {info['sample_rate']} Hz), "
        f"{len(info['classes'])} classes, output {info['output']['format']}"
        f"{' with distance' if info['output']['distance'] else ''}.",
        "",
        "## Training",
        "",
        f"- data: `{info['training']['data']}`",
        f"- preset: {info['training']['preset']}, seed: {info['training']['seed']}",
        *([f"- started from the weights of `{info['training']['init_from']}` (init_from)"]
          if info["training"].get("init_from") else []),
        # epochs_trained: the epoch whose weights these are (best.pt's: the best one, not the run's count)
        f"- weights: the mean of epochs {', '.join(map(str, info['training']['averaged_epochs']))}"
        if "averaged_epochs" in info["training"] else f"- weights: those after epoch {info['training']['epochs_trained']}",
        "",
        "## Metrics (of these weights' epoch, on the run's validation split: dev-val, else dev-test; DCASE 2024, "
        "macro)",
        "",
    ]
    lines += [f"- {key}: {'- (nothing detected)' if value is None else f'{value:.3f}'}" for key, value in metrics.items()
              if key in _CARD_METRICS and (value is None or isinstance(value, float))] or [
        "- not measured: an average of epochs is no epoch; score it with `seld annotate` and `seld evaluate`"
        if "averaged_epochs" in info["training"] else "- none recorded (the run had no validation split)"]
    lines += [
        "",
        "## Limits",
        "",
        "- Tested only on the data named above; not tested on real recordings unless stated.",
        "- Classes: " + ", ".join(info["classes"]),
        "",
    ]
    return "\n".join(lines)


def _read_package(folder: Path) -> tuple[SeldNetwork, dict, dict, str | None]:
    """A model package's network, seld.json, training config and card."""
    info, config, weights = read_package(folder)
    if config is None:
        raise SeldError(f"{folder}: not a readable model package (its weights carry no training config)")
    try:
        network, _ = network_from_checkpoint({"config": config, "model": weights, "array": info["array"]})
    except (KeyError, RuntimeError, ValueError) as error:
        raise SeldError(f"{folder}: not a readable model package ({str(error).splitlines()[0]})") from None
    card = (folder / "README.md").read_text() if (folder / "README.md").is_file() else None
    return network, info, config, card


PACKAGE_FILES = ("seld.json", "model.onnx", "stream.onnx", "weights.safetensors", "README.md")


def _check_replaceable(out_dir: Path) -> None:
    """Export replaces a model package or an empty folder, nothing else (a mistyped --out)."""
    if out_dir.is_symlink():  # the link would be replaced by a folder, the package it names left as it was
        raise SeldError(f"{out_dir}: a symbolic link; give the folder it names ({out_dir.resolve()})")
    if out_dir.exists() and not out_dir.is_dir():
        raise SeldError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and not (out_dir / "seld.json").is_file() and any(out_dir.iterdir()):
        raise SeldError(f"{out_dir}: exists and is not a model package; export replaces only a package "
                        "or an empty folder")
    others = sorted(p.name for p in out_dir.iterdir() if p.name not in PACKAGE_FILES) if out_dir.is_dir() else []
    if others:  # replacing the package deleted them without a word
        raise SeldError(f"{out_dir}: holds other files than a package's ({', '.join(others[:3])}); export replaces "
                        "the whole folder: move them, or pick another --out")


def export_package(source: str | Path | Sequence[str | Path], out_dir: str | Path, name: str | None = None) -> dict:
    """Export a run (or a checkpoint; several epochs of one run: their average, see
    `average_checkpoints`) into `out_dir`, whole or not at all; or re-export a model package (its
    graphs made again by this seld from its weights; seld.json and card kept). Returns the check
    figures."""
    from safetensors.torch import save_file

    sources = [Path(source)] if isinstance(source, (str, Path)) else [Path(path) for path in source]
    source, out_dir = sources[0], Path(os.path.abspath(out_dir))  # "." has no name to stage it beside
    _check_replaceable(out_dir)
    if len(sources) == 1 and (source / "seld.json").is_file():
        network, info, training_config, card = _read_package(source)
        if name:
            info["name"] = name
    else:
        for path in sources:
            if (path / "seld.json").is_file():
                raise SeldError(f"{path}: a model package; only checkpoints can be averaged")
        if len(sources) == 1 and source.is_dir() and not (source / "best.pt").exists() and (source / "last.pt").exists():
            log.warning("%s: no best.pt (no epoch finished validated): exporting last.pt", source)
        checkpoint = load_checkpoint(source) if len(sources) == 1 else average_checkpoints(sources)
        try:
            network, config = network_from_checkpoint(checkpoint)
        except SeldError as error:
            raise SeldError(f"{source}: {error}") from None
        except (KeyError, RuntimeError) as error:  # weights missing, or of other shapes (load_state_dict)
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            raise SeldError(f"{source}: not a seld checkpoint of this network ({reason})") from None
        broken = [key for key, value in network.state_dict().items()
                  if value.is_floating_point() and not torch.isfinite(value).all()]
        if broken:  # training diverged: ONNX Runtime would give numbers where PyTorch gives NaN
            raise SeldError(f"{source}: weights hold NaN or infinite values ({', '.join(broken[:3])}); nothing written")
        info, training_config, card = package_info(network, config, checkpoint, name or out_dir.name), checkpoint["config"], None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_staging(out_dir)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as error:
        raise SeldError(f"{out_dir}: cannot write the package there ({error.strerror or error})") from None
    try:
        export_graphs(network, staging)
        differences = check_graphs(network, staging)
        info.update(format_version=FORMAT_VERSION, state_size=network.state_size, export_check=differences)
        info = _finite(info)  # seld.json stays JSON, and the card says "nothing detected" for a missing angle
        (staging / "seld.json").write_text(json.dumps(info, indent=1, allow_nan=False) + "\n")
        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(staging / "weights.safetensors"),
                  metadata={"config": json.dumps(training_config)})
        (staging / "README.md").write_text(card if card is not None else model_card(info))
        staging.chmod(FOLDER_MODE)
        for path in staging.iterdir():
            path.chmod(FILE_MODE)
        _put_in_place(staging, out_dir)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, (OSError, SafetensorError)):  # a full disk
            raise SeldError(f"{out_dir}: cannot write the package ({getattr(error, 'strerror', None) or error}); "
                            "nothing written") from None
        raise
    return differences


def _finite(value):
    """`value` with NaN and infinite floats as None: seld.json stays JSON (a run that detected
    nothing has no angular error)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _remove_dead_staging(out_dir: Path) -> None:
    """What an export killed outright (SIGKILL, a power cut) left beside `out_dir`: its staging
    folder (".NAME.<8 random characters>") or a package it had moved aside (".replaced")."""
    pattern = re.compile(re.escape(f".{out_dir.name}.") + r"[a-z0-9_]{8}(\.replaced)?")
    for path in out_dir.parent.iterdir():
        if pattern.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def _put_in_place(staging: Path, out_dir: Path) -> None:
    """`staging` becomes `out_dir`; a package there is moved aside first and deleted only once the
    new one stands, so a failure or a kill leaves one whole package, never half of each."""
    replaced = staging.with_name(staging.name + ".replaced") if out_dir.exists() else None
    try:
        if replaced is not None:
            out_dir.rename(replaced)
        try:
            staging.rename(out_dir)
        except OSError:
            if replaced is not None:
                replaced.rename(out_dir)
            raise
    except OSError as error:
        raise SeldError(f"{out_dir}: cannot put the package in place ({error.strerror or error})") from None
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def export_command(args) -> int:
    differences = export_package(args.run, args.out)
    checks = ", ".join(f"{key} {value:.1e}" for key, value in differences.items())
    print(f"exported {args.out} (export checks, max abs difference: {checks})")
    return 0
