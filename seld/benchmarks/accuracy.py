"""`seld bench accuracy`: our causal `default` preset against the `dcase2023` baseline preset,
trained on the same synthesized data with the same epoch budget, scored on rooms the
training never saw (the dev-test split), for FOA and MIC.

Resumable: data and runs live in --workdir; a rerun skips finished mixtures and runs
and continues an interrupted training from its last checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from seld import SeldError
from seld.audio import read_audio
from seld.dataset import find_recordings
from seld.decode import assign_tracks, decode
from seld.metrics import evaluate_folders
from seld.outputs import write_csv

PRESETS = ("default", "dcase2023")
FORMATS = ("foa", "mic")
VARIANTS = {  # name -> (metrics, average, use_distance)
    "2024 micro": ("dcase2024", "micro", None),
    "2024 macro": ("dcase2024", "macro", None),
    "2024 nodist": ("dcase2024", "macro", False),  # the comparison: the dcase2023 preset has no distance head
    "2023 macro": ("dcase2023", "macro", False),
}
COMPARE = "2024 nodist"


def _synthesize(data: Path, minutes_train: float, seed: int) -> None:
    from seld.data_prep.synth import synth_command

    duration = 30.0
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the benchmark's table or JSON
        synth_command(argparse.Namespace(
            out=str(data), format="both", minutes=minutes_train / 0.7, seed=seed, sounds=None, procedural_share=0.0,
            classes=None, array=None, workers=2, rooms=9, max_polyphony=3, duration=duration))


def _train(run_dir: Path, data: Path, format_name: str, preset: str, epochs: int) -> float:
    from seld.train import load_checkpoint, resolve_config, train

    started = time.perf_counter()
    if (run_dir / "last.pt").exists():
        checkpoint = load_checkpoint(run_dir / "last.pt")
        if int(checkpoint["epoch"]) + 1 >= epochs:
            return 0.0
        from seld.config import from_dict
        from seld.train import TrainConfig

        # --epochs raised since: the run goes on to the new total (its cosine stretched over it)
        train(dataclasses.replace(from_dict(TrainConfig, checkpoint["config"]), epochs=epochs), run_dir, checkpoint)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        # The same data, crops, batch and epoch budget for both presets.
        config = resolve_config(format_name, preset, None, [f"epochs={epochs}", "batch_size=16", "crop_seconds=5.0",
                                                            "workers=1"], str(data))
        train(config, run_dir)
    return time.perf_counter() - started


@torch.no_grad()
def _score(run_dir: Path, data: Path, format_name: str) -> dict:
    from seld.train import load_checkpoint, network_from_checkpoint

    network, config = network_from_checkpoint(load_checkpoint(run_dir / "best.pt"))
    predictions = run_dir / "test_predictions"
    for recording in find_recordings(data, format_name, "dev-test"):
        audio, _ = read_audio(recording.audio_path, channels=network.num_channels)
        outputs = network(torch.from_numpy(audio)[None])[0].numpy()
        detections = assign_tracks(decode(outputs, config.model.layout, config.threshold))
        write_csv(predictions / f"{recording.audio_path.stem}.csv", detections, config.model.layout.distance)
    scores = {}
    for name, (metrics, average, distance) in VARIANTS.items():
        result = evaluate_folders(data / "metadata_dev" / "dev-test", predictions, metrics, average, distance,
                                  len(config.classes))
        scores[name] = {key: round(float(value), 4) for key, value in result.metrics.items()}
    history = json.loads(json.dumps(load_checkpoint(run_dir / "last.pt")["history"]))
    scores["epochs"] = len(history)
    scores["train_seconds"] = round(sum(row["seconds"] for row in history), 1)
    return scores


def run(minutes_train: float = 20.0, epochs: int = 20, workdir: str = "runs/bench_accuracy", seed: int = 0) -> dict:
    if not 0.7 < minutes_train <= 6000:  # 70% of the scenes train: at least 3 scenes of 30 s, one per split
        raise SeldError(f"--minutes-train {minutes_train:g}: must be more than 0.7 (a scene each for training, "
                        "validation and test) and at most 6000")
    if epochs < 1:
        raise SeldError(f"--epochs {epochs}: must be at least 1")
    root = Path(workdir)
    data = root / "data"
    _synthesize(data, minutes_train, seed)
    result = {"minutes_train": minutes_train, "epochs": epochs, "workdir": str(root),
              "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
              "models": {}}
    for format_name in FORMATS:
        for preset in PRESETS:
            run_dir = root / f"{format_name}_{preset}"
            _train(run_dir, data, format_name, preset, epochs)
            result["models"][f"{format_name} {preset}"] = _score(run_dir, data, format_name)
    for format_name in FORMATS:
        ours = result["models"][f"{format_name} default"][COMPARE]["SELD"]
        baseline = result["models"][f"{format_name} dcase2023"][COMPARE]["SELD"]
        result[f"{format_name}_seld_change_vs_dcase2023"] = round((ours - baseline) / baseline, 4)
    return result


def format_table(result: dict) -> str:
    lines = [f"accuracy on unseen rooms (dev-test), {result['minutes_train']:g} min of training audio per format, "
             f"{result['epochs']} epochs, {result['device']} ({result['threads']} threads); data and runs in "
             f"{result['workdir']}", ""]
    header = f"{'model':<16}{'variant':<13}" + "".join(f"{k:>9}" for k in ("ER", "F", "LE/AngE", "DistE", "LR", "SELD"))
    lines.append(header + f"{'train s':>10}")
    for name, scores in result["models"].items():
        for variant in VARIANTS:
            m = scores[variant]
            values = [m.get("ER"), m.get("F"), m.get("LE", m.get("AngE")), m.get("DistE"), m.get("LR"), m.get("SELD")]
            cells = "".join(f"{v:>9.3f}" if isinstance(v, (int, float)) else f"{'-':>9}" for v in values)
            lines.append(f"{name:<16}{variant:<13}{cells}{scores['train_seconds']:>10.0f}")
    lines.append("")
    for format_name in FORMATS:
        change = result[f"{format_name}_seld_change_vs_dcase2023"]
        lines.append(f"{format_name}: default's SELD (2024 macro, directions only) is {abs(change) * 100:.1f}% "
                     f"{'lower (better)' if change < 0 else 'higher (worse)'} than dcase2023's (goal: 15% lower)")
    return "\n".join(lines)
