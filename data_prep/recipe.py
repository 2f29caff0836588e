"""One command that reproduces a shipped default model from scratch:

    python -m seld.data_prep.recipe foa --out runs/recipe     (or mic)

1. real dry recordings from Debian packages (`seld synth-sounds`; needs apt),
2. a dataset mixing them with the procedural bank (`seld synth`, both formats, rooms of
   the test split never used in training), and 240 more minutes from another seed in
   other rooms for the later training,
3. training of the `default` causal preset (`seld train`, resumable: rerun the same
   command after an interruption): an FOA run in stages, then the model's own run,
   which starts from the FOA run's weights (so `mic` trains the FOA run too), then that
   run tuned on 240 more minutes of scenes from a third seed, then tuned once more on them,
   then trained on 240 more minutes from a fourth seed, then from a fifth, then from a sixth,
4. export to a model package (`seld export`) of the mean of the last run's best and last
   epochs' weights, the activity threshold calibrated on the validation split, and its
   scores on the dev-test rooms and on an unseen set (new rooms, real recordings from
   other Debian packages) (`seld annotate` + `seld evaluate`).
Every step skips what is already done.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from seld.atomic import write_text_atomic
from seld.interrupts import sigterm_interrupts
from seld.models import default_model_dir

# The settings the shipped models were made with (see models/*/README.md).
SOUND_PACKAGES = "lmms-common,sonic-pi-samples,lomiri-sounds,minetest-data,sound-theme-freedesktop"
SYNTH = ["--format", "both", "--minutes", "60", "--rooms", "12", "--seed", "7", "--procedural-share", "0.5",
         "--workers", "2"]
# The unseen test set: new rooms, and real recordings from packages never used in training.
HELD_OUT_PACKAGES = "ufoai-sound,tuxpaint-stamps-default,hedgewars-data"
HELD_OUT = ["--format", "both", "--minutes", "10", "--rooms", "3", "--seed", "99", "--procedural-share", "0.5",
            "--workers", "2"]
TEST_DESCRIPTIONS = {
    "dev-test": "the dev-test split of the training dataset: 9 minutes in 2 rooms never used in training or "
                "validation; sounds from the same banks (procedural instances unseen, real recordings shared)",
    "unseen": "10 minutes from another seed (`seld synth --seed 99 --rooms 3`): 3 new rooms and every sound "
              "unseen: real recordings from Debian packages never used in training (" + HELD_OUT_PACKAGES.replace(",", ", ") +
              "; real speech, which training only had procedurally) and new procedural instances",
}
TRAIN = ["--preset", "default", "batch_size=8", "epochs=40", "threads=1", "workers=1"]
# More scenes for the last stage: 240 minutes per format from another seed, in 24 other rooms, all
# of them for training (validation and test stay the rooms of SYNTH, so the best-epoch choice stays
# comparable across stages).
MORE_SYNTH = ["--format", "both", "--minutes", "240", "--rooms", "24", "--seed", "8", "--procedural-share", "0.5",
              "--workers", "2"]
# The FOA run was then resumed to longer schedules, because validation kept improving: each
# stage resumes the run where it stands, its cosine stretched over the new total epochs (so the
# learning rate rises again where a stage begins). It improved at each stage up to 360 on the
# first dataset; its last stage trains on the first dataset plus MORE_SYNTH ({more}), at twice the
# learning rate (the stretched cosine alone would have been near its floor).
FOA_EXTENSIONS = ["epochs=120", "epochs=180", "epochs=270", "epochs=360", "epochs=400 learning_rate=0.002 data={more}"]
# Then the final run of each format starts from that FOA run's best epoch ({foa}, `init_from`) and
# trains on {more} with a cosine of its own: FOA takes every weight (and normalization statistics
# of DATA_ALL), MIC every CRNN weight, its first convolution keeping the log-mel inputs and zero for
# the GCC ones. Trained from scratch like FOA, MIC had reached dev-test F 0.143 after 180 epochs:
# detecting is most of what both formats must learn, and the FOA run has learnt it. FOA's own
# final run lifted dev-test F 0.400 -> 0.425 and unseen 0.336 -> 0.371 over the FOA run.
def final_run(epochs: int, learning_rate: float) -> list[str]:
    return ["--preset", "default", "batch_size=8", f"epochs={epochs}", f"learning_rate={learning_rate}", "threads=2",
            "workers=1", "init_from={foa}"]


FINAL = {"foa": final_run(15, 0.0003), "mic": final_run(30, 0.0005)}
# Last, each final run is tuned on still more scenes: 240 more minutes per format from a third seed
# in 24 more rooms (DATA_ALL3 = DATA_ALL plus these as further dev-train splits), from the final run's
# best epoch ({final}) at its own small learning rate. Its gain is on the unseen set (new rooms and
# new recordings): see the model cards.
TUNE_SYNTH = ["--format", "both", "--minutes", "240", "--rooms", "24", "--seed", "9", "--procedural-share", "0.5",
              "--workers", "2"]
TUNE = ["--preset", "default", "batch_size=8", "epochs=10", "learning_rate=0.0003", "threads=2", "workers=1",
        "init_from={final}"]
# The tuned runs still improved at their last epochs, so each was tuned once more on the same scenes
# (DATA_ALL3), from its best epoch ({tuned}) with a cosine of its own.
RETUNE = ["--preset", "default", "batch_size=8", "epochs=12", "learning_rate=0.0003", "threads=2", "workers=1",
          "init_from={tuned}"]
# Each retuned run then trained on still more scenes, one more seed at a time: 240 minutes per
# format from a fourth seed in 24 more rooms (DATA_ALL4 = DATA_ALL3 plus these), from the retuned
# run's best epoch ({previous}); then from a fifth (DATA_ALL5) and a sixth (DATA_ALL6), each from the
# run before's best epoch. Validation improved at each (the sixth ran FOA and MIC side by side, a
# thread each, on the 2-core CPU).
WIDER = ((10, ["--preset", "default", "batch_size=8", "epochs=8", "learning_rate=0.0003", "threads=2", "workers=1",
               "init_from={previous}"]),
         (11, ["--preset", "default", "batch_size=8", "epochs=6", "learning_rate=0.0003", "threads=2", "workers=1",
               "init_from={previous}"]),
         (12, ["--preset", "default", "batch_size=8", "epochs=5", "learning_rate=0.0003", "threads=1", "workers=1",
               "init_from={previous}"]))
FIRST_WIDER_STAGE = 4  # DATA_ALL4: the first, MORE_SYNTH and TUNE_SYNTH scenes are the three before


def wider_synth(seed: int) -> list[str]:
    return ["--format", "both", "--minutes", "240", "--rooms", "24", "--seed", str(seed), "--procedural-share", "0.5",
            "--workers", "2"]


def seld(*arguments: str) -> None:
    command = [sys.executable, "-m", "seld", *arguments]
    print("+ seld " + " ".join(arguments), flush=True)
    # In a session of its own: the recipe alone hears Ctrl-C and passes it on, once, so that a step
    # winding up (a checkpoint, its workers) is not interrupted a second time.
    with subprocess.Popen(command, start_new_session=True) as step:
        try:
            status = step.wait()
        except BaseException:  # interrupted: the step stops with it (a kill left it training on, orphaned)
            step.send_signal(signal.SIGINT)
            while step.poll() is None:
                try:
                    step.wait()
                except KeyboardInterrupt:  # asked again: now
                    step.kill()
            raise
    if status != 0:
        raise SystemExit(f"recipe: step failed: seld {' '.join(arguments)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seld.data_prep.recipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("format", choices=["foa", "mic"], help="which default model")
    parser.add_argument("--out", default="runs/recipe",
                        help="working folder (sounds, data, runs, model; about 30 GB) (default: runs/recipe)")
    args = parser.parse_args(argv)
    try:
        with sigterm_interrupts():
            return _make(args)
    except KeyboardInterrupt:
        print("recipe: interrupted (rerun the same command to go on)", file=sys.stderr)
        return 130


def _make(args) -> int:
    out = Path(args.out)
    sounds, data, run, model = out / "sounds", out / "data", out / args.format, out / f"seld-default-{args.format}"
    foa_run = out / "foa_base"
    held_out, held_out_sounds = out / "test_unseen", out / "sounds_unseen"
    for folder, packages in ((sounds, SOUND_PACKAGES), (held_out_sounds, HELD_OUT_PACKAGES)):
        if not (folder / "manifest.csv").exists():
            seld("synth-sounds", "--out", str(folder), "--packages", packages)
    seld("synth", "--out", str(data), "--sounds", str(sounds), *SYNTH)
    seld("synth", "--out", str(out / "data_more"), "--sounds", str(sounds), *MORE_SYNTH)
    more = combine_datasets(data, out / "data_more", out / "data_all")
    if not (foa_run / "last.pt").exists():
        seld("train", "--data", str(data), "--out", str(foa_run), "--format", "foa", *TRAIN)
    seld("train", "--resume", str(foa_run))  # finishes the first schedule after an interruption
    for extension in FOA_EXTENSIONS:
        seld("train", "--resume", str(foa_run), *extension.format(more=more).split())
    if not (run / "last.pt").exists():
        seld("train", "--data", str(more), "--out", str(run), "--format", args.format,
             *(a.format(foa=foa_run / "best.pt") for a in FINAL[args.format]))
    seld("train", "--resume", str(run))
    seld("synth", "--out", str(out / "data_more9"), "--sounds", str(sounds), *TUNE_SYNTH)
    combine_datasets(data, out / "data_more", out / "data_all3")
    most = combine_datasets(data, out / "data_more9", out / "data_all3")
    tuned = out / f"{args.format}_tuned"
    if not (tuned / "last.pt").exists():
        seld("train", "--data", str(most), "--out", str(tuned), "--format", args.format,
             *(a.format(final=run / "best.pt") for a in TUNE))
    seld("train", "--resume", str(tuned))
    retuned = out / f"{args.format}_retuned"
    if not (retuned / "last.pt").exists():
        seld("train", "--data", str(most), "--out", str(retuned), "--format", args.format,
             *(a.format(tuned=tuned / "best.pt") for a in RETUNE))
    seld("train", "--resume", str(retuned))
    previous, extra = retuned, ["data_more", "data_more9"]
    for stage, (seed, settings) in enumerate(WIDER, start=FIRST_WIDER_STAGE):
        seld("synth", "--out", str(out / f"data_more{seed}"), "--sounds", str(sounds), *wider_synth(seed))
        extra.append(f"data_more{seed}")
        wider = out / f"data_all{stage}"
        for more in extra:
            combine_datasets(data, out / more, wider)
        widened = out / f"{args.format}_all{stage}"
        if not (widened / "last.pt").exists():
            seld("train", "--data", str(wider), "--out", str(widened), "--format", args.format,
                 *(a.format(previous=previous / "best.pt") for a in settings))
        seld("train", "--resume", str(widened))
        previous = widened
    seld("synth", "--out", str(held_out), "--sounds", str(held_out_sounds), *HELD_OUT)
    # The mean of the best and the last epoch's weights (a checkpoint soup): on dev-val, the last
    # stage's FOA run F 0.585 -> 0.592 and MIC 0.564 -> 0.568 against its best epoch alone.
    seld("export", str(previous / "best.pt"), str(previous / "last.pt"), "--out", str(model))
    print(calibrate_threshold(model, data / f"{args.format}_dev" / "dev-val", data / "metadata_dev" / "dev-val"))
    test_sets = {"dev-test": (data / f"{args.format}_dev" / "dev-test", data / "metadata_dev" / "dev-test"),
                 "unseen": (held_out / f"{args.format}_dev", held_out / "metadata_dev")}
    scores = score_package(model, test_sets, args.format, out)
    # The FOA model this recipe made in the same --out (the same scenes), else the shipped one
    foa_package = out / "seld-default-foa" if (out / "seld-default-foa" / "seld.json").is_file() else default_model_dir("foa")
    foa_scores = (json.loads((foa_package / "seld.json").read_text())["metrics"]["test"]
                  if args.format == "mic" else None)  # for the MIC card's comparison
    training = describe_retuning(describe_tuning(describe_training(run, foa_run, sounds), tuned), retuned)
    for stage in range(FIRST_WIDER_STAGE, FIRST_WIDER_STAGE + len(WIDER)):
        training = describe_widening(training, out / f"{args.format}_all{stage}", stage)
    training = describe_averaging(training, model)
    write_card(model, scores, TEST_DESCRIPTIONS, training, foa_scores)
    print(json.dumps(scores, indent=1))
    print(f"recipe: model package in {model}")
    return 0


def combine_datasets(first: Path, more: Path, out: Path) -> Path:
    """A dataset root (symbolic links) with the splits of `first` and every split of `more` as an
    extra training split (`seld train` trains on every dev-train* split): out/<kind>/dev-train-s<seed>-*."""
    seed = json.loads((more / "dataset.json").read_text())["seed"]
    for kind in ("foa_dev", "mic_dev", "metadata_dev"):
        for split in ("dev-train", "dev-val", "dev-test"):
            for source, name in ((first, split), (more, f"dev-train-s{seed}-{split.removeprefix('dev-')}")):
                link = out / kind / name
                if (source / kind / split).is_dir() and not link.is_symlink():
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to((source / kind / split).resolve(), target_is_directory=True)
    write_text_atomic(out / "dataset.json", (first / "dataset.json").read_text())
    return out


# ---------------------------------------------------------------- model card

def describe_training(run: Path, foa_run: Path, sounds: Path) -> dict:
    """What the card says of the data and the training, read from the runs and the sound bank."""
    import csv

    config = json.loads((run / "config.json").read_text())
    history, base_history = (list(csv.DictReader((r / "metrics.csv").open())) for r in (run, foa_run))
    base_hours = sum(float(row["seconds"]) for row in base_history) / 3600
    hours = base_hours + sum(float(row["seconds"]) for row in history) / 3600
    packages = sorted({(row["package"], row["version"], row["licence"]) for row in csv.DictReader((sounds / "manifest.csv").open())})
    data = (f"`seld synth {' '.join(SYNTH)} --sounds SOUNDS`: 60 minutes per format of 60 s scenes in 12 shoebox "
            f"rooms (8 train, 2 validation, 2 test), up to 3 overlapping sources, static and moving, 0.5-4 m, "
            f"ambient noise at 6-30 dB SNR. Half the events use real dry recordings from Debian packages "
            f"(`seld synth-sounds`: " + "; ".join(f"{p} {v} ({l})" for p, v, l in packages) +
            "), the other half, and every class without recordings (speech, laughter, knock, ...), the procedural bank. "
            f"Later training adds `seld synth {' '.join(MORE_SYNTH)} --sounds SOUNDS`: 240 minutes per "
            f"format from another seed in 24 other rooms, all used for training (DATA_ALL: the first dataset "
            f"plus these scenes as extra dev-train splits; validation and test stay the first dataset's rooms).")
    stages = [int(a.split()[0].split("=")[1]) for a in TRAIN + FOA_EXTENSIONS if a.startswith("epochs=")]
    base = (f"`seld train --format foa --preset default {' '.join(a for a in TRAIN if '=' in a)}` on `dev-train`, "
            f"then resumed with `seld train --resume FOA_RUN` and " +
            ", then ".join(f"`{e.format(more='DATA_ALL')}`" for e in FOA_EXTENSIONS) +
            f" (each resume stretches the cosine schedule over the new total, so the learning rate rises again "
            f"at epochs {', '.join(str(epochs + 1) for epochs in stages[:-1])}; {len(base_history)} epochs, "
            f"learning rate {float(base_history[0]['learning_rate']):g} unless a stage says otherwise, "
            f"{base_hours:.1f} h)")
    settings = " ".join(a.format(foa="FOA_RUN/best.pt") for a in FINAL[config["format"]] if "=" in a)
    start = ("every weight, and normalization statistics of DATA_ALL" if config["format"] == "foa" else
             "every CRNN weight, the first convolution's log-mel inputs and zero for its GCC inputs; its own front "
             "end and normalization")
    training = (f"Two runs. First an FOA run (FOA_RUN): {base}. Then this model's run, "
                f"`seld train --format {config['format']} --preset default {settings}` on DATA_ALL, which starts from "
                f"FOA_RUN's best epoch ({start}): {len(history)} epochs, cosine schedule. Both: validation on "
                f"`dev-val` each epoch, the best epoch by SELD kept, AdamW, channel-swap and time-frequency masking "
                f"augmentation; on a 2-core CPU with no GPU, {hours:.1f} h of training steps in all (validation not "
                f"counted).")
    return {"data_description": data, "training_description": training, "epochs_trained": len(history),
            "compute_hours": round(hours, 2), "device": "2-core CPU",
            "limits": "Trained and tested on synthetic scenes only: not tested on real recordings (STARSS23 or a "
                      "live array), where accuracy will be lower. The real-recording bank covers 9 of the 13 "
                      "classes. Trained on a 2-core CPU (its hours are in the training section), far short of the DCASE "
                      "baselines' budget: "
                      "see the metrics above for what it reaches."}


def _run_record(run: Path) -> tuple[dict, list[dict], float]:
    """A run's config, its per-epoch history and its hours of training steps."""
    import csv

    history = list(csv.DictReader((run / "metrics.csv").open()))
    return json.loads((run / "config.json").read_text()), history, sum(float(row["seconds"]) for row in history) / 3600


def describe_tuning(training: dict, tuned: Path) -> dict:
    """`training` (describe_training's, of the final run) with the tuning run `tuned` added."""
    config, history, hours = _run_record(tuned)
    total = training["compute_hours"] + hours
    settings = " ".join(a.format(final="FINAL_RUN/best.pt") for a in TUNE if "=" in a)
    data = (f" Last, `seld synth {' '.join(TUNE_SYNTH)} --sounds SOUNDS` adds 240 more minutes per format from a "
            f"third seed in 24 more rooms, again all for training (DATA_ALL3).")
    tuning = (f" Last, this model's run tuned FINAL_RUN: `seld train --format {config['format']} --preset default "
              f"{settings}` on DATA_ALL3, from its best epoch: {len(history)} epochs, {hours:.1f} h, the best by SELD "
              f"on `dev-val` kept; {total:.1f} h of training steps in all.")
    before = (training["training_description"].replace("Two runs.", "Three runs.", 1)
              .replace("Then this model's run,", "Then the final run (FINAL_RUN),", 1).replace("Both: ", "Each: ", 1))
    return {**training, "data_description": training["data_description"] + data,
            "training_description": before + tuning,
            "epochs_trained": len(history), "compute_hours": round(total, 2)}


def _add_last_run(training: dict, run: Path, runs: tuple[str, str], last: tuple[str, str], told: str) -> dict:
    """`training` with `run` told last: the count of runs becomes runs[1], the run that was last is
    renamed (last[0] -> last[1]) and loses the total hours, which `told` (the new sentence, up to
    "from its best epoch") ends with instead."""
    import re

    _, history, hours = _run_record(run)
    total = training["compute_hours"] + hours
    before = training["training_description"].replace(runs[0], runs[1], 1).replace(*last, 1)
    before = re.sub(r"; [0-9.]+ h of training steps in all\.$", ".", before)
    sentence = (f" {told}: {len(history)} epochs, {hours:.1f} h, the best by SELD on `dev-val` kept; {total:.1f} h of "
                f"training steps in all.")
    return {**training, "training_description": before + sentence, "epochs_trained": len(history),
            "compute_hours": round(total, 2)}


def describe_retuning(training: dict, retuned: Path) -> dict:
    """`training` (describe_tuning's) with the run `retuned`, which tuned the tuned run once more, added."""
    config = _run_record(retuned)[0]
    settings = " ".join(a.format(tuned="TUNED_RUN/best.pt") for a in RETUNE if "=" in a)
    return _add_last_run(training, retuned, ("Three runs.", "Four runs."),
                         ("Last, this model's run tuned FINAL_RUN", "Then a run (TUNED_RUN) tuned FINAL_RUN"),
                         f"Last, this model's run tuned TUNED_RUN once more on the same scenes: `seld train --format "
                         f"{config['format']} --preset default {settings}` on DATA_ALL3, from its best epoch")


RUN_COUNTS = ("Four", "Five", "Six", "Seven", "Eight")
ORDINALS = {4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh"}


def _run_name(stage: int) -> str:
    """The card's name for the run of a stage: RETUNED_RUN before the first wider stage."""
    return "RETUNED_RUN" if stage < FIRST_WIDER_STAGE else f"ALL{stage}_RUN"


def describe_widening(training: dict, widened: Path, stage: int) -> dict:
    """`training` (describe_retuning's, or describe_widening's of the stage before) with the run
    `widened`, which trained the previous stage's run on DATA_ALL<stage>, added."""
    config = _run_record(widened)[0]
    seed, arguments = WIDER[stage - FIRST_WIDER_STAGE]
    start = _run_name(stage - 1)
    settings = " ".join(a.format(previous=f"{start}/best.pt") for a in arguments if "=" in a)
    data = (f" Then `seld synth {' '.join(wider_synth(seed))} --sounds SOUNDS` adds 240 more minutes per format from "
            f"a {ORDINALS[stage]} seed in 24 more rooms (DATA_ALL{stage}).")
    runs = stage - FIRST_WIDER_STAGE
    last = (("Last, this model's run tuned TUNED_RUN once more", "Then a run (RETUNED_RUN) tuned TUNED_RUN once more")
            if stage == FIRST_WIDER_STAGE else
            (f"Last, this model's run trained {_run_name(stage - 2)}",
             f"Then a run ({start}) trained {_run_name(stage - 2)}"))
    training = _add_last_run(training, widened, (f"{RUN_COUNTS[runs]} runs.", f"{RUN_COUNTS[runs + 1]} runs."), last,
                             f"Last, this model's run trained {start} on still more scenes: `seld train --format "
                             f"{config['format']} --preset default {settings}` on DATA_ALL{stage}, from its best epoch")
    return {**training, "data_description": training["data_description"] + data}


def describe_averaging(training: dict, model: Path) -> dict:
    """`training` with the sentence on the package's weights: the mean of the last run's epochs."""
    training_record = json.loads((model / "seld.json").read_text())["training"]
    epochs = training_record.get("averaged_epochs") or [training_record["epochs_trained"]]
    sentence = (f" This package's weights are the mean of that last run's best and last epochs' weights (epochs "
                f"{' and '.join(map(str, epochs))}; `seld export RUN/best.pt RUN/last.pt`)." if len(epochs) > 1 else
                f" That last run's best epoch was its last (epoch {epochs[0]}): this package's weights are that "
                f"epoch's.")
    return {**training, "training_description": training["training_description"] + sentence}


THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)  # MIC's F still rose at 0.5


def calibrate_threshold(model: Path, audio_folder: Path, references: Path) -> dict:
    """Pick the activity threshold with the best location-aware F-score (DCASE 2024, micro) on
    validation data (never the test data) and write it into the package's seld.json. F
    weighs false alarms and misses alike; the 2024 SELD score ignores the error rate and
    so would favour a threshold that floods the output with false alarms."""
    from seld.audio import read_audio
    from seld.decode import decode
    from seld.engine import Engine
    from seld.formats import read_reference
    from seld.metrics import SeldScorer
    from seld.outputs import detections_to_events

    engine = Engine(model, "cpu", "batch")
    recordings = []
    for path in sorted(audio_folder.rglob("*.wav")):
        audio = read_audio(path, engine.sample_rate, engine.num_channels)[0]
        outputs = np.concatenate(list(engine.outputs(audio)))
        recordings.append((path.name, outputs, read_reference(references / path.relative_to(audio_folder).with_suffix(".csv"))))
    scores = {}
    for threshold in THRESHOLDS:
        scorer = SeldScorer("dcase2024", "micro", use_distance=engine.has_distance, num_classes=len(engine.class_names))
        for name, outputs, reference in recordings:
            detections = decode(outputs, engine.layout, threshold, engine.merge_degrees)
            scorer.add(reference, detections_to_events(detections, engine.has_distance), name)
        scores[threshold] = float(scorer.result().metrics["F"])
    best = max(scores, key=scores.get)
    info = json.loads((model / "seld.json").read_text())
    info["thresholds"]["activity"] = best
    info["thresholds"]["calibration"] = {"data": str(audio_folder), "metric": "dcase2024 micro F",
                                         "scores": {str(k): round(v, 4) for k, v in scores.items()}}
    write_text_atomic(model / "seld.json", json.dumps(info, indent=1) + "\n")
    return {"threshold": best, "scores": scores}


def score_package(model: Path, test_sets: dict[str, tuple[Path, Path]], format_name: str, work: Path) -> dict:
    """DCASE 2024 (micro, macro) and 2023 (macro) scores of a package on each test set
    (name -> (audio folder, reference folder)): {test name: {variant: metrics}}; annotation
    through the package itself (ONNX Runtime)."""
    from seld.audio import read_audio
    from seld.decode import assign_tracks
    from seld.engine import Engine
    from seld.metrics import evaluate_folders
    from seld.outputs import write_csv

    engine = Engine(model, "cpu", "batch")
    scores = {}
    for name, (audio_folder, references) in test_sets.items():
        predictions = work / f"predictions_{format_name}_{name}"
        for path in sorted(audio_folder.rglob("*.wav")):
            audio = read_audio(path, engine.sample_rate, engine.num_channels)[0]
            detections = assign_tracks(engine.detections(audio))
            write_csv(predictions / path.relative_to(audio_folder).with_suffix(".csv"), detections, engine.has_distance)
        scores[name] = {}
        for variant, (metrics, average) in {"2024 micro": ("dcase2024", "micro"), "2024 macro": ("dcase2024", "macro"),
                                             "2023 macro": ("dcase2023", "macro")}.items():
            result = evaluate_folders(references, predictions, metrics, average, None, len(engine.class_names))
            scores[name][variant] = {k: round(float(v), 4) for k, v in result.metrics.items()}
            if variant == "2024 macro":  # what the macro average hides: the classes the model misses
                scores[name][variant]["classwise"] = {
                    class_name: {key: (None if np.isnan(values[index]) else round(float(values[index]), 4))
                                 for key, values in result.classwise.items() if key in CLASSWISE}
                    for index, class_name in enumerate(engine.class_names)}
    return scores


CLASSWISE = ("F", "AngE", "LR")  # per-class scores in the card
MISSED_F = 0.1  # a class below this F on every test set is named as one the model does not detect


def _cell(value: float | None, key: str) -> str:
    return "-" if value is None else f"{value:.1f}" if key == "AngE" else f"{value:.2f}"


def _classwise_lines(scores: dict) -> list[str]:
    """The card's per-class table (DCASE 2024, per class, as the macro average sees them) and the
    classes below MISSED_F on every test set."""
    tables = {name: variants["2024 macro"]["classwise"] for name, variants in scores.items()
              if "classwise" in variants.get("2024 macro", {})}
    if not tables:
        return []
    names = list(tables)
    lines = ["", "Per class (DCASE 2024, each class scored alone, as the macro average sees it):", "",
             "| class | " + " | ".join(f"{name} {key}" for name in names for key in CLASSWISE) + " |",
             "|---|" + "---|" * (len(names) * len(CLASSWISE))]
    for class_name in tables[names[0]]:
        cells = [_cell(tables[name][class_name].get(key), key) for name in names for key in CLASSWISE]
        lines.append(f"| {class_name} | " + " | ".join(cells) + " |")
    missed = [class_name for class_name in tables[names[0]]
              if all((tables[name][class_name].get("F") or 0.0) < MISSED_F for name in names)]
    if missed:
        lines += ["", f"Not detected (F below {MISSED_F} on every test set): {', '.join(missed)}."]
    return lines


def write_card(model: Path, scores: dict, test_descriptions: dict[str, str], training: dict,
               foa_scores: dict | None = None) -> None:
    """Put the test scores into seld.json and write the model card (README.md). `foa_scores`: the FOA
    model's test scores (its seld.json's metrics.test), for a MIC card's comparison with it."""
    info = json.loads((model / "seld.json").read_text())
    info["metrics"]["test"] = {name: {"data": test_descriptions[name], **variants} for name, variants in scores.items()}
    info["training"].update(training)
    write_text_atomic(model / "seld.json", json.dumps(info, indent=1) + "\n")
    fmt = info["format"]
    lines = [
        f"# seld default model: {fmt.upper()}",
        "",
        f"Causal (streams 100 ms at a time) CRNN, the `default` preset: multi-ACCDOA with 3 tracks and distance, "
        f"{len(info['classes'])} classes (the STARSS23 set), {info['num_channels']} channels at "
        f"{info['sample_rate']} Hz, {'FOA (ACN/SN3D)' if fmt == 'foa' else 'the tetrahedral MIC array'}, front end "
        f"`{info['front_end']['name']}`.",
        "",
        "## Data",
        "",
        training["data_description"],
        "",
        "## Training",
        "",
        training["training_description"],
        "",
        "## Metrics on held-out data",
        "",
        "Annotated through this package (ONNX Runtime, CPU), scored with `seld evaluate` (the official DCASE "
        "computations; 20 degrees, relative distance 1.0).",
        "",
        "| test data | variant | ER | F | AngE / LE | DistE (m) | RelDistE | LR | SELD |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, variants in scores.items():
        for variant, m in variants.items():
            cells = [m.get("ER"), m.get("F"), m.get("AngE", m.get("LE")), m.get("DistE"), m.get("RelDistE"),
                     m.get("LR"), m.get("SELD")]
            text = " | ".join("-" if v is None else f"{v:.3f}" for v in cells)
            lines.append(f"| {name} | {variant} | {text} |")
    lines += [""] + [f"- **{name}**: {text}" for name, text in test_descriptions.items()]
    lines += _classwise_lines(scores)
    threshold = info["thresholds"]
    lines += ["", f"Activity threshold {threshold['activity']} (ACCDOA vector norm), chosen on `dev-val` by the DCASE "
              f"2024 micro F-score among {', '.join(threshold.get('calibration', {}).get('scores', {}))}."]
    micro = scores.get("dev-test", {}).get("2024 micro")
    if micro:
        met = micro["F"] >= 0.75 and micro["AngE"] <= 12 and micro["LR"] >= 0.8
        lines += ["", f"Targets on held-out rooms (2024 micro: F >= 0.75, AngE <= 12 degrees, LR >= 0.80): "
                  f"{'met' if met else 'not met'} (F {micro['F']:.3f}, AngE {micro['AngE']:.1f}, LR {micro['LR']:.3f})."]
    if fmt == "mic" and foa_scores:
        shared = [name for name in scores if "2024 micro" in foa_scores.get(name, {})]
        ratios = {name: scores[name]["2024 micro"]["F"] / foa_scores[name]["2024 micro"]["F"] for name in shared}
        lines += ["", "Against the FOA model on the same scenes (target: MIC within 10% of FOA), 2024 micro F, MIC / "
                  "FOA: " + "; ".join(f"{name} {scores[name]['2024 micro']['F']:.3f} / "
                                      f"{foa_scores[name]['2024 micro']['F']:.3f} ({100 * ratios[name]:.0f}%)"
                                      for name in shared) +
                  f": {'met' if all(r >= 0.9 for r in ratios.values()) else 'not met'}."]
    lines += ["", "## Limits", "", training["limits"], "", "## Reproduce", "", "```sh",
              f"python -m seld.data_prep.recipe {fmt} --out runs/recipe", "```", ""]
    write_text_atomic(model / "README.md", "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
