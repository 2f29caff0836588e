"""One command that reproduces a shipped default model from scratch:

    python -m seld.data_prep.recipe foa --out runs/recipe     (or mic)

1. real dry recordings from Debian packages (`seld synth-sounds`; needs apt),
2. a dataset mixing them with the procedural bank (`seld synth`, both formats, rooms of
   the test split never used in training),
3. training of the `default` causal preset (`seld train`, resumable: rerun the same
   command after an interruption),
4. export to a model package (`seld export`) and its scores on the held-out test rooms
   (`seld annotate` + `seld evaluate`).
Every step skips what is already done.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

# The settings the shipped models were made with (see models/*/README.md).
SOUND_PACKAGES = "lmms-common,sonic-pi-samples,lomiri-sounds,minetest-data,sound-theme-freedesktop"
SYNTH = ["--format", "both", "--minutes", "60", "--rooms", "12", "--seed", "7", "--procedural-share", "0.5",
         "--workers", "2"]
TRAIN = ["--preset", "default", "batch_size=8", "epochs=40", "threads=1", "workers=1"]


def seld(*arguments: str) -> None:
    command = [sys.executable, "-m", "seld", *arguments]
    print("+ seld " + " ".join(arguments), flush=True)
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"recipe: step failed: seld {' '.join(arguments)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seld.data_prep.recipe", description=__doc__.splitlines()[0])
    parser.add_argument("format", choices=["foa", "mic"], help="which default model")
    parser.add_argument("--out", default="runs/recipe", help="working folder (sounds, data, run, model)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    sounds, data, run, model = out / "sounds", out / "data", out / args.format, out / f"model_{args.format}"
    if not (sounds / "manifest.csv").exists():
        seld("synth-sounds", "--out", str(sounds), "--packages", SOUND_PACKAGES)
    seld("synth", "--out", str(data), "--sounds", str(sounds), *SYNTH)
    if (run / "last.pt").exists():
        seld("train", "--resume", str(run))
    else:
        seld("train", "--data", str(data), "--out", str(run), "--format", args.format, *TRAIN)
    seld("export", str(run), "--out", str(model))
    predictions = out / f"test_{args.format}"
    seld("annotate", str(data / f"{args.format}_dev" / "dev-test"), "--model", str(model), "--out", str(predictions),
         "--overwrite")
    for metrics, average in (("dcase2024", "micro"), ("dcase2024", "macro"), ("dcase2023", "macro")):
        seld("evaluate", "--ref", str(data / "metadata_dev" / "dev-test"), "--pred", str(predictions),
             "--metrics", metrics, "--average", average)
    print(f"recipe: model package in {model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
