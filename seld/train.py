"""`seld train`: a plain training loop, top to bottom.

RUN_DIR holds config.json (the resolved config), last.pt and best.pt (checkpoints of
plain types, written whole-or-nothing), metrics.csv and tensorboard/. A run killed at
any moment resumes from last.pt with `--resume RUN_DIR`; every random choice of an
epoch derives from (seed, epoch), so on CPU, with the same number of torch threads, a
resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from seld import SeldError
from seld.arrays import Array, array_for_format
from seld.atomic import atomic_path, check_writable, write_text_atomic
from seld.audio import LABEL_HOP, SAMPLE_RATE, read_audio
from seld.augment import channel_swaps
from seld.config import apply_overrides, from_dict, load_toml, to_dict
from seld.data_prep.sound_bank import STARSS23_CLASSES, class_key
from seld.dataset import CropDataset, Recording, check_metadata, split_recordings
from seld.decode import OutputLayout, decode
from seld.feature_cache import cache_features, cache_folder
from seld.interrupts import interrupts_deferred
from seld.features import FeatureConfig, feature_shape
from seld.formats import read_reference
from seld.losses import SeldLoss
from seld.metrics import SeldScorer
from seld.model import ModelConfig, preset as model_preset
from seld.network import SeldNetwork
from seld.outputs import detections_to_events

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrainConfig:
    data: str = ""
    format: str = "foa"
    preset: str = "default"
    classes: tuple[str, ...] = STARSS23_CLASSES
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"  # "cosine": decays to 5% over the epochs; "constant"
    weight_decay: float = 1e-4
    crop_seconds: float = 5.0
    # Distances (metres, up to ~4) would otherwise dominate the loss of unit direction vectors:
    # measured on a default-preset run, weight 1 made 75% of the loss the distance term.
    loss_distance_weight: float = 0.1
    seed: int = 0
    workers: int = 2
    augment_channel_swap: bool = True  # off with a feature cache: the swaps act on audio
    feature_cache: str = ""  # a folder: compute training features once and crop them from there
    augment_mask: bool = True  # time-frequency masking of the features
    normalization_files: int = 50  # training files whose features give the normalization statistics
    threshold: float = 0.5
    device: str = "auto"
    threads: int = 0  # CPU threads for torch; 0: torch's default (all cores)
    init_from: str = ""  # a run, checkpoint or model package ("foa"/"mic": shipped) whose CRNN weights start this run

    def __post_init__(self):
        problems = [f"{name} {value}: must be {rule}" for name, value, bad, rule in (
            ("epochs", self.epochs, self.epochs < 1, "at least 1"),
            ("batch_size", self.batch_size, self.batch_size < 1, "at least 1"),
            ("learning_rate", self.learning_rate, not 0 < self.learning_rate < math.inf, "a positive number"),
            ("weight_decay", self.weight_decay, not 0 <= self.weight_decay < math.inf, "0 or more"),
            ("crop_seconds", self.crop_seconds, not 0.1 <= self.crop_seconds < math.inf, "at least 0.1 (a label frame)"),
            ("loss_distance_weight", self.loss_distance_weight, not 0 <= self.loss_distance_weight < math.inf,
             "0 or more"),
            ("seed", self.seed, self.seed < 0, "0 or more"),
            ("workers", self.workers, self.workers < 0, "0 or more"),
            ("threads", self.threads, self.threads < 0, "0 (torch's default) or more"),
            ("normalization_files", self.normalization_files, self.normalization_files < 1, "at least 1"),
            ("threshold", self.threshold, not 0 < self.threshold < math.inf, "a positive number"),
            ("lr_schedule", self.lr_schedule, self.lr_schedule not in ("cosine", "constant"), "'cosine' or 'constant'"),
            ("format", self.format, self.format not in ("foa", "mic"), "'foa' or 'mic'"),
            ("device", self.device, not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)),
             "auto, cpu, cuda or cuda:N"),
            ("classes", ",".join(self.classes), not self.classes or not all(c.strip() for c in self.classes),
             "class names, none empty"),
            ("features.sample_rate", self.features.sample_rate, self.features.sample_rate != SAMPLE_RATE,
             f"{SAMPLE_RATE} (the rate of datasets and of 100 ms label frames)"),
        ) if bad]
        if problems:
            raise ValueError("; ".join(problems))


TRAINING_PRESETS = {
    "default": {},
    "seldnet": {"crop_seconds": 6.0, "batch_size": 16},
    "dcase2023": {"crop_seconds": 5.0, "batch_size": 128, "epochs": 100},
    "tiny": {"epochs": 3, "batch_size": 4, "crop_seconds": 2.0, "learning_rate": 3e-3, "workers": 0,
             "normalization_files": 4},
}


def default_front_end(preset_name: str, format_name: str) -> str:
    if preset_name == "seldnet":
        return "stft"
    return "foa_logmel_iv" if format_name == "foa" else "mic_logmel_gcc"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SeldError(f"{path}: not valid JSON: {error}") from None


def dataset_description(root: str | Path) -> dict:
    """ROOT/dataset.json (written by `seld synth` and the dataset converters), {} without one.
    A dataset `seld synth` has not finished (stopped, or still running) is refused: its splits
    are partial (validation and test come last)."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        return {}
    description = _read_json(path)
    if not isinstance(description, dict):
        raise SeldError(f"{path}: not a dataset description (a JSON object)")
    if description.get("complete") is False:
        raise SeldError(f"{root}: seld synth has not finished this dataset (stopped, or still running); "
                        "run the same seld synth command again to finish it")
    return description


def dataset_defaults(root: str | Path) -> dict:
    """Settings a dataset states in its dataset.json: its classes, and whether its metadata has distances."""
    description = dataset_description(root)
    defaults: dict = {}
    if description.get("classes"):
        if not isinstance(description["classes"], list):  # a string would be read letter by letter
            raise SeldError(f"{Path(root) / 'dataset.json'}: classes must be a list of names")
        defaults["classes"] = list(description["classes"])
    if description.get("distance") is False:
        defaults["model"] = {"distance": False}
    return defaults


def _check_classes(config: TrainConfig) -> None:
    """The classes agree with the dataset's dataset.json, whose names its metadata's class indices
    follow: other names would train door events as "dog"."""
    stated = dataset_defaults(config.data).get("classes")
    if stated and list(map(class_key, config.classes)) != list(map(class_key, stated)):
        raise SeldError(f"classes {','.join(config.classes)}: the dataset's {Path(config.data) / 'dataset.json'} names "
                        f"its classes {','.join(stated)} (its metadata's class indices follow them)")


def dataset_array(root: str | Path, format_name: str) -> Array:
    """The array a dataset was rendered with, as its dataset.json says (`seld synth --array`
    writes a custom one there), else the format's reference array. Channel swaps, the network's
    input and the exported package follow it."""
    described = dataset_description(root).get("formats", {}).get(format_name)
    if not described:
        return array_for_format(format_name)
    path = Path(root) / "dataset.json"
    array = Array.from_dict(described, f"{path} (formats.{format_name})")
    if array.kind != array_for_format(format_name).kind:
        raise SeldError(f"{path}: formats.{format_name} describes a {array.kind} array")
    return array


def _check_label_frames(config: TrainConfig) -> None:
    """The model's time pooling turns feature frames into 100 ms label frames. Other products trained
    into a loss of mismatched shapes, or a model whose frames are not 100 ms. Checked on the settings
    as resolved: the two fields may come from different places (a TOML file, the command line)."""
    samples = config.features.hop * math.prod(config.model.pool_time)
    if samples != LABEL_HOP:
        raise SeldError(f"features.hop {config.features.hop} x model.pool_time {list(config.model.pool_time)} = "
                        f"{samples} samples a label frame: must be {LABEL_HOP} (100 ms)")


def _checkpoint_array(checkpoint: dict) -> Array:
    """The array of a checkpoint's network (checkpoints before arrays were kept: the format's)."""
    if checkpoint.get("array"):
        return Array.from_dict(checkpoint["array"], "checkpoint array")
    return array_for_format(checkpoint["config"]["format"])


def resolve_config(format_name: str | None, preset_name: str | None, toml_path: str | None,
                   overrides: list[str], data: str | None) -> TrainConfig:
    """Preset -> the dataset's own settings (dataset.json) -> TOML file -> command-line
    overrides; then the model is fitted to the features and classes."""
    toml_values = load_toml(toml_path) if toml_path else {}
    for key in ("data", "feature_cache", "init_from"):  # a file's paths are relative to it, not to where seld runs
        value = toml_values.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute() and value not in ("foa", "mic"):
            toml_values[key] = str(Path(toml_path).parent / value)
    preset_name = preset_name or toml_values.get("preset", "default")
    format_name = format_name or toml_values.get("format", "foa")
    for name, value, allowed in (("format", format_name, ("foa", "mic")), ("preset", preset_name, TRAINING_PRESETS)):
        if not isinstance(value, str) or value not in allowed:
            raise SeldError(f"{toml_path or 'command line'}: {name} {value!r}: expected one of {', '.join(allowed)}")

    def build(dataset: dict) -> TrainConfig:
        config = TrainConfig(
            format=format_name, preset=preset_name,
            features=FeatureConfig(name=default_front_end(preset_name, format_name)),
            model=model_preset(preset_name),
        )
        config = apply_overrides(config, TRAINING_PRESETS[preset_name], "preset")
        config = apply_overrides(config, dataset, "dataset.json")
        config = apply_overrides(config, {k: v for k, v in toml_values.items() if k not in ("preset", "format")},
                                 str(toml_path))
        config = apply_overrides(config, overrides)
        return dataclasses.replace(config, data=data) if data else config

    config = build({})
    if not config.data:
        raise SeldError("no dataset: pass --data DIR (or data=DIR)")
    config = build(dataset_defaults(config.data))
    _check_classes(config)
    _check_label_frames(config)
    # Absolute: a run resumed, or its epochs averaged, from another working folder finds its data
    # (and its feature cache).
    return _absolute_paths(_fitted(config))


def _fitted(config: TrainConfig) -> TrainConfig:
    """The model fitted to the features of the dataset's array, and to the classes."""
    channels, bins = feature_shape(config.features, dataset_array(config.data, config.format).num_channels)
    model = dataclasses.replace(config.model, input_channels=channels, input_bins=bins, num_classes=len(config.classes))
    return dataclasses.replace(config, model=model)


# ------------------------------------------------------------------ checkpoints


def save_checkpoint(path: Path, checkpoint: dict) -> None:
    with atomic_path(path) as temporary:
        torch.save(checkpoint, temporary)


def _epoch_score(row: dict) -> float:
    """What picks the best epoch: validation SELD, or the training loss without a validation split."""
    return row.get("SELD", row["train_loss"])


def _repair_best(run_dir: Path, last: dict) -> None:
    """A run killed between writing last.pt and best.pt: best.pt becomes last.pt's epoch when
    that epoch was the best (the first of the lowest score, as training picks it)."""
    scores = [_epoch_score(row) for row in last["history"]]
    if not scores or scores.index(min(scores)) != last["epoch"]:
        return
    best = run_dir / "best.pt"
    if best.exists() and load_checkpoint(best).get("epoch") == last["epoch"]:
        return
    log.info("%s: epoch %d was the best and is not there (killed while writing it); writing it now", best,
             last["epoch"] + 1)
    save_checkpoint(best, last)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    if not path.is_file():
        raise SeldError(f"{path}: no checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise SeldError(f"{path}: not a readable seld checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("config"), dict) or not isinstance(
            checkpoint.get("model"), dict):  # a bare tensor, another program's state dict
        raise SeldError(f"{path}: not a seld checkpoint (no training config and weights in it)")
    return checkpoint


# What makes checkpoints epochs of one run: the same network, trained on the same data.
_SAME_RUN = ("format", "classes", "features", "model", "data", "seed")


def average_checkpoints(paths: list[str | Path]) -> dict:
    """Epochs of one run as one checkpoint: each weight the mean of theirs, a checkpoint "soup"
    (Wortsman et al. 2022). Epochs of one run sit in one basin, so their mean is a network of its
    own, often better than each, most of all on data unlike the training data. Batch-norm
    statistics are averaged too (the usual approximation); counters, config and history come from
    the latest epoch. Checkpoints of one epoch count once (best.pt is last.pt when the last epoch
    was the best): one epoch alone is returned as it is."""
    by_epoch: dict[int, dict] = {}
    for path in paths:
        checkpoint = load_checkpoint(path)
        if by_epoch:
            _check_same_run(path, paths[0], checkpoint, next(iter(by_epoch.values())))
        epoch = int(checkpoint.get("epoch", -1)) + 1
        if epoch in by_epoch and any(not torch.equal(value, by_epoch[epoch]["model"][name])
                                     for name, value in checkpoint["model"].items()):
            raise SeldError(f"{path}: epoch {epoch} again, with other weights: not an epoch of the run of "
                            f"{paths[0]}, cannot be averaged with it")
        by_epoch.setdefault(epoch, checkpoint)
    latest = by_epoch[max(by_epoch)]
    if len(by_epoch) == 1:
        return latest
    weights = {}
    for name, value in latest["model"].items():
        if value.is_floating_point():
            weights[name] = torch.stack([c["model"][name].double() for c in by_epoch.values()]).mean(0).to(value.dtype)
        else:
            weights[name] = value
    return {**{k: v for k, v in latest.items() if k != "optimizer"}, "model": weights,
            "averaged_epochs": sorted(by_epoch)}


def _check_same_run(path: str | Path, first_path: str | Path, checkpoint: dict, first: dict) -> None:
    def same(key: str) -> bool:
        mine, theirs = checkpoint["config"].get(key), first["config"].get(key)
        if key == "data" and mine and theirs:  # one folder, given relative once and absolute once
            return Path(mine).resolve() == Path(theirs).resolve()
        return mine == theirs

    differing = [key for key in _SAME_RUN if not same(key)]
    if checkpoint["model"].keys() != first["model"].keys():
        differing.append("weights")
    elif any(not torch.equal(value, first["model"][name]) for name, value in checkpoint["model"].items()
             if name.startswith("normalization")):
        differing.append("normalization")
    if differing:
        raise SeldError(f"{path}: not an epoch of the run of {first_path}, cannot be averaged with it "
                        f"({', '.join(differing)} differ)")


def load_initial_weights(source: str) -> dict:
    """What `init_from` names, as a checkpoint for warm_start: a run, a checkpoint file, a model
    package (its seld.json and weights.safetensors: fine-tune an exported model on new data), or
    "foa" / "mic", the shipped default models, when no such path exists."""
    from seld.models import default_model_dir

    path = Path(source)
    if not path.exists() and source in ("foa", "mic"):
        path = default_model_dir(source)
    if not (path / "seld.json").is_file():
        return load_checkpoint(path)
    info, _, weights = read_package(path)
    return {"config": {"classes": info["classes"], "format": info["format"], "model": info["output"]},
            "model": weights, "array": info["array"]}


def read_package(folder: Path) -> tuple[dict, dict | None, dict]:
    """A model package's seld.json, its training config (kept in the weights' metadata; None where
    absent) and its weights."""
    from safetensors import SafetensorError, safe_open

    try:
        info = json.loads((folder / "seld.json").read_text())
        if not isinstance(info, dict):
            raise ValueError("seld.json is not a JSON object")
        with safe_open(str(folder / "weights.safetensors"), "pt") as file:
            metadata = file.metadata() or {}
            weights = {key: file.get_tensor(key) for key in file.keys()}
        config = json.loads(metadata["config"]) if "config" in metadata else None
    except (OSError, ValueError, SafetensorError) as error:
        raise SeldError(f"{folder}: not a readable model package ({str(error).splitlines()[0]})") from None
    return info, config, weights


def network_from_checkpoint(checkpoint: dict) -> tuple[SeldNetwork, TrainConfig]:
    config = from_dict(TrainConfig, checkpoint["config"], "checkpoint config")
    network = SeldNetwork(config.features, config.model, _checkpoint_array(checkpoint))
    network.load_state_dict(checkpoint["model"])
    return network.eval(), config


def _output_rows(source: dict, target: ModelConfig, classes: tuple[str, ...]) -> tuple[list[int], list[int]] | None:
    """(target rows, source rows) of the output layer that mean the same (track, axis, class),
    classes matched by name (spelling aside: 'female speech' is 'female_speech'); None when
    the two output layouts cannot be matched (SED-DOA, or one of each)."""
    mine = target.layout
    theirs = OutputLayout.of(source.get("model") or {})
    if "sed_doa" in (mine.output_format, theirs.output_format):
        return None
    their_class = {class_key(name): index for index, name in enumerate(source.get("classes", []))}
    pairs = [((track * mine.axes + axis) * mine.num_classes + index,
              (track * theirs.axes + axis) * theirs.num_classes + their_class[class_key(name)])
             for track in range(min(mine.tracks, theirs.tracks)) for axis in range(min(mine.axes, theirs.axes))
             for index, name in enumerate(classes) if class_key(name) in their_class]
    return [row for row, _ in pairs], [row for _, row in pairs]


def warm_start(network: SeldNetwork, classes: tuple[str, ...], checkpoint: dict, source: str) -> None:
    """Start from another run's CRNN weights, for example a MIC model from a trained FOA one,
    or the shipped model on a dataset of one's own.

    The front end and the normalization stay this run's own. A tensor whose shape differs
    only in its input channels (the first convolution: 7 FOA features against 10 MIC ones)
    takes the leading ones both front ends share, a spectrum per audio channel, and zero
    for the spatial features after them, which differ (intensity vectors, GCC, phase
    differences): the network starts out detecting from the spectra as the source network
    did, and learns the rest. The output layer takes the rows of the classes both runs have
    (by name, in any order) and of the tracks and axes both have (a run without distance
    leaves the source's distance rows out); the other rows keep their fresh initialization.
    """
    own = network.state_dict()
    shared = min(_checkpoint_array(checkpoint).num_channels, network.num_channels)
    output_rows = _output_rows(checkpoint["config"], network.crnn.config, classes)
    their_classes = list(checkpoint["config"].get("classes", []))
    if output_rows is None and list(map(class_key, their_classes)) != list(map(class_key, classes)):
        raise SeldError(f"{source}: init_from with a SED-DOA output needs a run with the same classes, in the same "
                        f"order ({', '.join(their_classes)})")
    head = getattr(network.crnn, "head", None)  # (multi-)ACCDOA: its last Linear is the output layer
    output_layer = "crnn.head." + (f"{len(head) - 1}." if isinstance(head, torch.nn.Sequential) else "")
    copied, widened, output = 0, [], ""
    # Only the first convolution's inputs may differ (the front ends' features); any other shape is
    # another architecture (a GRU of other inputs once took 4 of its 32 input weights, the rest zero).
    first_convolution = next(name for name, value in own.items() if name.startswith("crnn.") and value.dim() == 4)
    for name, value in checkpoint["model"].items():
        if not name.startswith("crnn."):
            continue
        if name not in own:
            raise SeldError(f"{source}: init_from needs the same architecture; {name} is not in this network")
        target = own[name]
        if head is not None and name.startswith(output_layer) and "." not in name[len(output_layer):] \
                and output_rows is not None:
            mine, theirs = output_rows
            target[mine] = value[theirs].to(target.dtype)
            output = f"; output layer: {len(mine)} of {target.shape[0]} outputs from it"
        elif value.shape == target.shape:
            target.copy_(value)
            copied += 1
        elif name == first_convolution and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
            target.zero_()
            target[:, :shared] = value[:, :shared]
            widened.append(f"{name} ({shared} of {target.shape[1]} input channels)")
        else:
            raise SeldError(f"{source}: init_from needs the same architecture; {name} is "
                            f"{tuple(value.shape)} there, {tuple(target.shape)} here")
    log.info("init_from %s: %d tensors copied%s%s", source, copied,
             f", {', '.join(widened)} from the shared leading inputs" if widened else "", output)
    if output_rows is not None and not output_rows[0]:
        log.warning("init_from %s: no class in common with it (%s): its output layer is not used",
                    source, ", ".join(their_classes))


RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "config.json")


def remove_half_written_files(run_dir: Path) -> None:
    """A kill mid-write leaves the temporary file of an atomic write (".last.pt.x8k2.tmp"); the whole file stands."""
    for name in RUN_FILES:
        for stale in run_dir.glob(f".{name}.*"):
            stale.unlink()


def batches_of(loader: torch.utils.data.DataLoader):
    """The loader's batches. A SeldError raised in a loader worker process comes back wrapped in
    that worker's traceback; it is raised here as its own one-line message."""
    with interrupts_deferred():  # it forks the workers
        batches = iter(loader)
    try:
        yield from batches
    except SeldError as error:
        text = str(error)
        if text.startswith("Caught SeldError") and "SeldError: " in text:
            raise SeldError(text.rsplit("SeldError: ", 1)[1].strip()) from None
        raise


def log_scalars(writer, row: dict) -> None:
    """An epoch's row to TensorBoard, at step `epoch` (1-based)."""
    for key, value in row.items():
        if key != "epoch":
            writer.add_scalar(key, value, row["epoch"])
    writer.flush()


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, buffer.getvalue())


# ------------------------------------------------------------------ validation


@torch.no_grad()
def validate(network: SeldNetwork, recordings: list[Recording], config: TrainConfig, device: torch.device) -> dict:
    """DCASE 2024 metrics (macro) of the network on whole validation recordings."""
    network.eval()
    layout = config.model.layout
    scorer = SeldScorer("dcase2024", "macro", use_distance=layout.distance, num_classes=len(config.classes))
    for recording in recordings:
        audio, _ = read_audio(recording.audio_path, channels=network.num_channels)
        # Zero-padded to whole label frames, as the engine does: the last partial frame is scored too.
        audio = np.pad(audio, ((0, 0), (0, -audio.shape[1] % LABEL_HOP)))
        outputs = network(torch.from_numpy(audio)[None].to(device))[0].float().cpu().numpy()
        detections = decode(outputs, layout, threshold=config.threshold)
        reference = read_reference(recording.metadata_path)
        if not layout.distance:
            reference = reference.without_distance()
        scorer.add(reference, detections_to_events(detections, layout.distance), recording.audio_path.name)
    result = scorer.result()
    return {key: float(value) for key, value in result.metrics.items()}


@torch.no_grad()
def normalization_statistics(network: SeldNetwork, recordings: list[Recording], count: int,
                             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation per feature channel and bin over training recordings only: `count`
    of them spread over the list (the first `count` were all of one STARSS23 part, or of one room)."""
    total, total_square, frames = None, None, 0
    picked = sorted(set(np.linspace(0, len(recordings) - 1, min(count, len(recordings))).round().astype(int)))
    for recording in (recordings[index] for index in picked):
        audio, _ = read_audio(recording.audio_path, channels=network.num_channels)
        features = network.features(torch.from_numpy(audio)[None].to(device))[0].double()  # [C, T, F]
        total = features.sum(1) if total is None else total + features.sum(1)
        squares = (features**2).sum(1)
        total_square = squares if total_square is None else total_square + squares
        frames += features.shape[1]
    mean = total / frames
    std = (total_square / frames - mean**2).clamp_min(1e-8).sqrt()
    return mean.float().cpu(), std.float().cpu()


# ------------------------------------------------------------------ the loop


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SeldError("device=cuda asked for, but torch sees no CUDA GPU")
    return torch.device(name)


def learning_rate(config: TrainConfig, epoch: int) -> float:
    if config.lr_schedule == "constant":
        return config.learning_rate
    progress = epoch / max(config.epochs - 1, 1)
    return config.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(config: TrainConfig, run_dir: Path, resume: dict | None = None) -> dict:
    """Train; returns the last epoch's log row. `resume` is a loaded last.pt."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    device = pick_device(config.device)
    if distributed:  # launched by torchrun
        # A long timeout: the other ranks wait in the next epoch's first all-reduce while rank 0
        # validates and saves (NCCL's default, 10 minutes, ended long validations).
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                             timeout=datetime.timedelta(hours=2))
        rank = torch.distributed.get_rank()
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", torch.cuda.current_device())
    main_process = rank == 0
    torch.manual_seed(config.seed)
    initial = load_initial_weights(config.init_from) if config.init_from and resume is None else None

    array = dataset_array(config.data, config.format)
    train_recordings, validation_recordings = split_recordings(config.data, config.format, array.num_channels)
    if validation_recordings and not any(len(read_reference(r.metadata_path).frame) for r in validation_recordings):
        # Every epoch would score F 0 and SELD 1: best.pt would stay the first epoch for good.
        log.warning("%s: the validation split's metadata holds no events: not validated; the best epoch "
                    "follows the training loss", validation_recordings[0].metadata_path.parent)
        validation_recordings = []
    validated = resume is not None and any("SELD" in row for row in resume["history"])
    if resume is not None and validated != bool(validation_recordings):
        # Its best epoch and metrics.csv's columns went by validation scores, or by training loss.
        then = "validated on a split" if validated else "had no validation split"
        raise SeldError(f"{run_dir}: the run {then} (dev-val*, else dev-test*) and its data {config.data} now has "
                        f"{'none' if validated else 'one'}; start a new run from its weights instead "
                        f"(seld train --out NEW_RUN init_from={run_dir} ...)")
    check_metadata(train_recordings + validation_recordings, config.model.layout)
    if main_process:
        def splits(recordings):
            return ", ".join(sorted({r.audio_path.parent.name for r in recordings})) or "none"

        log.info("training on %d recordings (%s), validating on %d (%s), device %s", len(train_recordings),
                 splits(train_recordings), len(validation_recordings), splits(validation_recordings), device)
        if not validation_recordings:
            log.warning("no dev-val* or dev-test* split: the best epoch is the one of the lowest training loss")
        elif not any(r.audio_path.parent.name.startswith("dev-val") for r in validation_recordings):
            log.warning("no dev-val* split: the best epoch is chosen on dev-test*, so its scores there are "
                        "not those of unseen data")
    network = SeldNetwork(config.features, config.model, array).to(device)
    layout = config.model.layout
    crop_frames = round(config.crop_seconds * 10)
    feature_files = None
    if config.feature_cache:
        if config.augment_channel_swap and main_process:
            log.warning("feature_cache: channel-swap augmentation acts on audio, so it is off with cached features")
        folder = cache_folder(Path(config.feature_cache), {"data": str(Path(config.data).resolve()),
                              **to_dict(config.features)}, array.name, crop_frames)
        if distributed:  # each rank computes its share (every rank computed them all, racing)
            cache_features(network, train_recordings[rank::torch.distributed.get_world_size()], folder, crop_frames,
                           device)
            torch.distributed.barrier()
        feature_files = cache_features(network, train_recordings, folder, crop_frames, device)
    dataset = CropDataset(train_recordings, layout, crop_frames, array.num_channels,
                          channel_swaps(array) if config.augment_channel_swap and not feature_files else None,
                          feature_files)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_function = SeldLoss(layout, distance_weight=config.loss_distance_weight)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")

    history, best_seld, first_epoch = [], math.inf, 0
    if resume is not None:
        network.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if resume.get("scaler"):  # CUDA mixed precision: the loss scale it had reached
            scaler.load_state_dict(resume["scaler"])
        history, best_seld, first_epoch = list(resume["history"]), float(resume["best_seld"]), int(resume["epoch"]) + 1
        if main_process:
            log.info("resuming after epoch %d", first_epoch)
            _repair_best(run_dir, resume)
        if resume.get("threads", torch.get_num_threads()) != torch.get_num_threads() and device.type == "cpu":
            log.warning("resuming on %d torch threads, the run had %d: its weights will differ slightly from "
                        "an uninterrupted run's (set threads=%d for the same)", torch.get_num_threads(),
                        resume["threads"], resume["threads"])
    else:
        mean, std = normalization_statistics(network, train_recordings, config.normalization_files, device)
        network.set_normalization(mean, std)
        if initial is not None:
            warm_start(network, config.classes, initial, config.init_from)

    model = network
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    writer = None
    if main_process:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=first_epoch)
        if history:  # a kill may have come between last.pt and these two: write the last epoch again
            write_metrics_csv(run_dir / "metrics.csv", history)
            log_scalars(writer, history[-1])

    row: dict = history[-1] if history else {}
    for epoch in range(first_epoch, config.epochs):
        torch.manual_seed(config.seed * 100_003 + epoch + 10_007 * rank)  # dropout and masks: of the epoch (and rank)
        for group in optimizer.param_groups:  # the rate is a function of the epoch too, so resuming needs no state
            group["lr"] = learning_rate(config, epoch)
        dataset.set_epoch(config.seed, epoch)
        if not len(dataset):
            raise SeldError(f"{config.data}: no training crops: every dev-train recording is shorter than half a crop "
                            f"({config.crop_seconds / 2:g} s)")
        sampler = torch.utils.data.distributed.DistributedSampler(dataset, shuffle=False) if distributed else None
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=config.batch_size, shuffle=False, sampler=sampler, num_workers=config.workers,
            drop_last=len(sampler or dataset) > config.batch_size, pin_memory=device.type == "cuda",  # per rank
        )
        model.train()
        started, total_loss, batches = time.perf_counter(), 0.0, 0
        progress = tqdm(batches_of(loader), total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                        disable=not main_process or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()),
                        leave=False)  # a log gets the epoch lines
        for audio, targets in progress:
            audio, targets = audio.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                outputs = model(audio, augment=config.augment_mask, precomputed=feature_files is not None)
                loss = loss_function(outputs.float(), targets)
            if not torch.isfinite(loss):
                kept = (f"last good checkpoint kept in {run_dir / 'last.pt'}" if (run_dir / "last.pt").exists()
                        else "no checkpoint written yet")
                raise SeldError(f"{run_dir}: loss became {loss.item()} in epoch {epoch + 1}; stopped, {kept} "
                                "(try a lower learning_rate)")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(network.parameters(), 5.0)
            scaler.step(optimizer)
            scaler.update()
            total_loss += loss.item()
            batches += 1
            seconds_of_audio = batches * config.batch_size * config.crop_seconds
            progress.set_postfix(loss=f"{total_loss / batches:.4f}",
                                 speed=f"{seconds_of_audio / (time.perf_counter() - started):.0f}x")
        if distributed:  # the loss over every rank's batches
            sums = torch.tensor([total_loss, batches], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(sums)
            total_loss, batches = sums[0].item(), int(sums[1].item())
        if not main_process:
            continue
        row = {"epoch": epoch + 1, "learning_rate": learning_rate(config, epoch), "train_loss": total_loss / max(batches, 1),
               "seconds": round(time.perf_counter() - started, 2)}
        if validation_recordings:
            row.update(validate(network, validation_recordings, config, device))
        seld_score = _epoch_score(row)
        improved = seld_score < best_seld
        best_seld = min(best_seld, seld_score)
        history.append(row)
        checkpoint = {
            "config": to_dict(config), "model": network.state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": epoch, "best_seld": best_seld, "history": history, "scaler": scaler.state_dict(),
            "array": array.to_dict(), "threads": torch.get_num_threads(),
        }
        # last.pt first: a kill before best.pt is written is repaired on resume (_repair_best);
        # the other way round, a rerun of the epoch could leave best.pt an epoch last.pt does not know.
        save_checkpoint(run_dir / "last.pt", checkpoint)
        if improved:
            save_checkpoint(run_dir / "best.pt", checkpoint)
        write_metrics_csv(run_dir / "metrics.csv", history)
        log_scalars(writer, row)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
    if writer:
        writer.close()
    if distributed:  # together: a rank that tore its group down while rank 0 still validated aborted (gloo)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return row if main_process else {}


def _seld_config(path: Path) -> bool:
    """`path` is absent, or a seld run's config.json (of a run killed in its first epoch, say)."""
    if not path.is_file():
        return True
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"format", "preset", "model", "features"} <= config.keys()


def _absolute_paths(config: TrainConfig) -> TrainConfig:
    cache = str(Path(config.feature_cache).resolve()) if config.feature_cache else config.feature_cache
    # init_from: a path, unless it names a shipped model ("foa", "mic") and no such folder is here
    start = config.init_from
    if start and (start not in ("foa", "mic") or Path(start).exists()):
        start = str(Path(start).resolve())
    return dataclasses.replace(config, data=str(Path(config.data).resolve()), feature_cache=cache, init_from=start)


_NETWORK_FIELDS = ("format", "classes", "features", "model")  # what the weights' shapes and meaning follow


def _network_settings(config: TrainConfig) -> dict:
    """The settings the weights' shapes and meaning follow, flat: {"model.gru_size": 128, ...}."""
    flat, settings = {}, to_dict(config)
    for name in _NETWORK_FIELDS:
        value = settings[name]
        flat.update({f"{name}.{key}": item for key, item in value.items()} if isinstance(value, dict) else {name: value})
    return flat


def _settings_of_last_start(run_dir: Path, trained: TrainConfig) -> TrainConfig:
    """The run's settings as its last start wrote them (config.json): a resume given `epochs=N`
    that was killed before its next epoch was saved kept them there only (last.pt still had the old
    ones, and the next resume undid the change). last.pt's when config.json is unreadable or
    describes another network."""
    try:
        saved = from_dict(TrainConfig, _read_json(run_dir / "config.json"), str(run_dir / "config.json"))
    except SeldError:
        return trained
    return saved if _network_settings(saved) == _network_settings(trained) else trained


def _check_resumable(run_dir: Path, trained: TrainConfig, config: TrainConfig) -> None:
    """A resume goes on with the same network: other features, model or classes do not fit its
    weights (the run failed loading them, after writing the new settings into config.json)."""
    before, after = _network_settings(trained), _network_settings(config)
    changed = sorted(key for key in before if before[key] != after.get(key))
    if changed:
        raise SeldError(f"--resume {run_dir}: {', '.join(changed)} would not fit its weights; start a new run from "
                        f"them instead (seld train --out NEW_RUN init_from={run_dir} ...)")


def _geometry(array: Array) -> tuple:
    return (array.kind,) if array.kind == "foa" else (array.kind, array.capsules_m, array.rigid_sphere_radius_m)


def _check_same_array(run_dir: Path, array: Array, config: TrainConfig) -> None:
    """A resume's data (data=OTHER, or its folder made again) recorded with another array than the
    run's weights learned. Another channel count was a traceback (config.json already rewritten, so
    every later resume failed too); another geometry of the same count trained on without a word,
    its package naming the new array for weights of the old. Not by name (a renamed array is the
    same), and FOA by kind alone (ambisonics have no capsule geometry)."""
    other = dataset_array(config.data, config.format)
    if _geometry(other) != _geometry(array):
        raise SeldError(f"--resume {run_dir}: data={config.data} was recorded with the array {other.name!r} "
                        f"({other.num_channels} channels), the run with {array.name!r} ({array.num_channels}); "
                        f"start a new run from it instead (seld train --out NEW_RUN --data {config.data} "
                        f"--format {config.format} --preset {config.preset} init_from={run_dir})")


def train_command(args) -> int:
    if args.resume and (args.data or args.preset or args.config or args.format):
        raise SeldError("--resume goes on with the run's own settings; change one with field=value (data=DIR), "
                        "not --data, --preset, --format or --config")
    if args.resume:
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise SeldError(f"--resume {run_dir}: no such folder (start a run with --out {run_dir})")
        if not (run_dir / "last.pt").exists():
            if not (run_dir / "config.json").is_file():
                raise SeldError(f"--resume {run_dir}: not a training run (no last.pt, no config.json)")
            # Stopped in its first epoch: nothing to resume, so it starts again with the same config.
            checkpoint = None
            config = from_dict(TrainConfig, _read_json(run_dir / "config.json"), str(run_dir / "config.json"))
            log.info("%s: no epoch finished yet; starting it again", run_dir)
        else:
            checkpoint = load_checkpoint(run_dir / "last.pt")
            if not isinstance(checkpoint, dict) or not {"config", "history", "model", "epoch"} <= set(checkpoint):
                raise SeldError(f"{run_dir / 'last.pt'}: not a seld training checkpoint")
            trained = from_dict(TrainConfig, checkpoint["config"], str(run_dir / "last.pt"))
            config = _settings_of_last_start(run_dir, trained)
        if args.overrides:
            config = _absolute_paths(apply_overrides(config, args.overrides))
            _check_classes(config)  # data=OTHER: a dataset of the same classes in the same order
        split_recordings(config.data, config.format)  # data that is not there (moved, mistyped): one line
        if checkpoint is None:  # no weights yet: the model fits whatever array the data has
            config = _fitted(config)
        else:
            _check_same_array(run_dir, _checkpoint_array(checkpoint), config)
            _check_resumable(run_dir, trained, config)
            done = len(checkpoint["history"])
            if config.epochs < done:  # config.json was rewritten to the fewer epochs, and nothing trained
                raise SeldError(f"--resume {run_dir}: epochs={config.epochs}, but {done} epochs are done; "
                                f"export one of them (seld export {run_dir}), or train on with epochs above {done}")
    else:
        if not args.out:
            raise SeldError("pass --out RUN_DIR (or --resume RUN_DIR)")
        run_dir = Path(args.out)
        if (run_dir / "last.pt").exists():
            raise SeldError(f"{run_dir}: holds a run already; continue it with --resume {run_dir} or pick another --out")
        if run_dir.is_file():
            raise SeldError(f"--out {run_dir}: a file, not a folder")
        if not _seld_config(run_dir / "config.json"):  # another program's was overwritten without a word
            raise SeldError(f"--out {run_dir}: its config.json is not a seld run's; pick another --out")
        config = resolve_config(args.format, args.preset, args.config, args.overrides, args.data)
        split_recordings(config.data, config.format)  # a dataset that is not there fails before the run folder is made
        checkpoint = None
    check_writable(run_dir)  # --out naming a file, or a folder under one: one line, not a traceback
    if config.feature_cache:
        check_writable(Path(config.feature_cache))
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one rank keeps the folder (the others' writes raced it)
        remove_half_written_files(run_dir)
        write_text_atomic(run_dir / "config.json", json.dumps(to_dict(config), indent=1) + "\n")
    row = train(config, run_dir, checkpoint)
    if not row:  # a torchrun worker other than rank 0: it keeps no log
        return 0
    print(f"trained {row.get('epoch', 0)} epochs; run in {run_dir}")
    if "SELD" in row:
        print("last epoch: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "seconds")))
    return 0
