"""The `seld` command: one argparse parser, one handler per subcommand.

Handlers live next to the code they drive (``module:function``) and are imported
only when their subcommand runs, so `seld annotate` never pays for torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys

from seld import SeldError, __version__
from seld.interrupts import sigterm_interrupts

# subcommand -> "module:function"; the function takes the parsed args, returns an exit code.
HANDLERS = {
    "synth": "seld.data_prep.synth:synth_command",
    "synth-sounds": "seld.data_prep.sounds:synth_sounds_command",
    "train": "seld.train:train_command",
    "export": "seld.export:export_command",
    "annotate": "seld.annotate:annotate_command",
    "evaluate": "seld.metrics:evaluate_command",
    "live": "seld.realtime.live:live_command",
    "devices": "seld.realtime.devices:devices_command",
    "bench": "seld.benchmarks:bench_command",
}

BENCHMARKS = ("features", "synth", "model", "accuracy", "annotate", "stream", "gpu")
BENCHMARK_HELP = """\
  features  seconds per minute of audio of each front end, against the baselines' own code (~1 min)
  synth     minutes of audio `seld synth` renders per minute (~20 s)
  model     parameters, MACs per second of audio, output and state sizes of each preset (seconds)
  accuracy  the default preset against the dcase2023 baseline preset, trained and scored on
            synthesized data (hours on a CPU; resumable)
  annotate  seld annotate's speed on an hour of audio, against the DCASE baseline's way (~10 min)
  stream    compute time per 100 ms chunk of the streaming engine, p50/p99 (~1-2 min)
  gpu       the GPU checks (CUDA provider, batch and streaming speed, a short training run)"""


def _given(text: str) -> str:
    """A path or name that is not empty (`--input ''` fell through to the audio device)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty")
    return text


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535; 0 picks a free one)")
    return port


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


# Packages only training, export, synthesis and the benchmarks need: an inference-only install
# (numpy, scipy, soundfile, onnxruntime) may leave them out.
_INSTALL_HINTS = {"torch": "pip install torch==2.11.0 torchaudio==2.11.0", "torchaudio": "pip install torchaudio==2.11.0",
                  "onnxruntime": "pip install onnxruntime-gpu, or onnxruntime where there is no NVIDIA GPU"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seld",
        description="Sound event localization and detection: synthesize, train, export, annotate, run live.",
    )
    parser.add_argument("--version", action="version", version=f"seld {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("synth", help="synthesize a DCASE-style spatial dataset")
    p.add_argument("--out", type=_given, required=True, help="dataset root to write (STARSS23 layout)")
    p.add_argument("--format", choices=["foa", "mic", "both"], default="both", help="which array formats to render")
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of audio per format")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    p.add_argument("--sounds", type=_given, help="folder of dry recordings (one subfolder per class); procedural sounds otherwise")
    p.add_argument("--procedural-share", type=float, default=0.0,
                   help="with --sounds: share of events drawn from the procedural bank (classes without "
                        "recordings always are)")
    p.add_argument("--classes", type=_given, help="comma-separated class names (default: the 13 STARSS23 classes)")
    p.add_argument("--array", type=_given, help="array description JSON for a custom microphone array")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    p.add_argument("--rooms", type=int, default=9, help="number of distinct rooms")
    p.add_argument("--max-polyphony", type=int, default=3, help="most sources sounding at once")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per mixture")

    p = sub.add_parser("synth-sounds", help="build a sound bank of real dry recordings from Debian packages",
                       description="Download Debian packages of sound effects and samples (apt-get download, several "
                                   "hundred MB for the default set; nothing is installed), sort their recordings into "
                                   "the 13 classes by file name, and write them with a manifest.csv of packages and "
                                   "licences; seld synth --sounds uses them.")
    p.add_argument("--out", type=_given, required=True, help="folder to write the sound bank to")
    p.add_argument("--packages", type=_given,
                   help="comma-separated Debian packages to take recordings from (default: all known)")

    p = sub.add_parser("train", help="train a model on a DCASE-layout dataset")
    p.add_argument("--data", type=_given, help="dataset root (STARSS23 layout)")
    p.add_argument("--out", type=_given, help="run directory for checkpoints, logs and config")
    p.add_argument("--format", choices=["foa", "mic"], default=None, help="dataset format to read (default foa)")
    p.add_argument("--preset", choices=["default", "seldnet", "dcase2023", "tiny"], default=None, help="model and training preset")
    p.add_argument("--config", help="TOML file of config fields")
    p.add_argument("--resume", type=_given, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("overrides", nargs="*", metavar="field=value", help="config overrides, e.g. epochs=1 batch_size=16 model.dropout=0.1")

    p = sub.add_parser("export", help="export a trained run to an ONNX model package")
    p.add_argument("run", metavar="RUN_DIR_OR_CHECKPOINT", nargs="+",
                   help="run directory or checkpoint file (several checkpoints of one network: their weights "
                        "averaged); or a model package, to re-export its graphs")
    p.add_argument("--out", type=_given, required=True,
                   help="model package folder to write: a new or empty folder, or a package, which it replaces "
                        "(the folder itself is replaced: `--out .` leaves a shell inside it in a deleted folder)")

    p = sub.add_parser("annotate", help="annotate audio files: DCASE CSV, events JSON, plots")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders")
    p.add_argument("--model", type=_given, help="model package folder (default: the shipped model for --format)")
    p.add_argument("--format", choices=["foa", "mic"], default="foa", help="shipped model to use without --model")
    p.add_argument("--out", type=_given, required=True, help="output folder")
    p.add_argument("--plot", action="store_true", help="also write NAME.png")
    p.add_argument("--streaming", action="store_true", help="run the streaming graph chunk by chunk")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="inference device")
    p.add_argument("--workers", type=_at_least_one, default=1, help="files read in parallel")
    p.add_argument("--processes", type=_at_least_one, default=None,
                   help="annotating processes, each with its share of the cores (default: one per 4 cores "
                        "on machines of 8 or more, else 1)")
    p.add_argument("--overwrite", action="store_true", help="redo files whose outputs exist")

    p = sub.add_parser("evaluate", help="score predictions against references with the DCASE metrics")
    p.add_argument("--ref", type=_given, required=True, help="folder of reference metadata CSVs (searched recursively)")
    p.add_argument("--pred", type=_given, required=True, help="folder of prediction CSVs (searched recursively)")
    p.add_argument("--metrics", choices=["dcase2023", "dcase2024"], default="dcase2024", help="which challenge's metrics")
    p.add_argument("--average", choices=["macro", "micro"], default="macro", help="class averaging")
    p.add_argument("--no-distance", action="store_true", help="ignore distances (dcase2024)")
    p.add_argument("--classes", type=int, help="number of classes (default: as many as the dataset.json of the "
                                               "dataset --ref lies in names, else the 13 STARSS23 classes)")
    p.add_argument("--pred-format", choices=["auto", "polar", "cartesian"], default="auto",
                   help="6-column predictions: azimuth,elevation,distance_m (polar) or x,y,z (cartesian); "
                        "auto: cartesian when every x, y, z lies in [-1, 1], as the baselines write them")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("live", help="run the model live on a microphone array",
                       description="Detect and localize sound events live, every 100 ms, from an input device "
                                   "(or a recording played at real speed); Ctrl-C stops (exit status 0).")
    p.add_argument("--device", type=_given, help="input device index or name (see `seld devices`)")
    p.add_argument("--model", type=_given, help="model package folder (default: the shipped model for --format)")
    p.add_argument("--format", choices=["foa", "mic"], default="foa", help="shipped model to use without --model")
    p.add_argument("--channels", help="1-based channels of the device (or of --input) to use as the array's "
                                      "capsules, e.g. 1,2,3,4")
    p.add_argument("--web", type=_port, metavar="PORT", help="serve a live web view on 127.0.0.1:PORT")
    p.add_argument("--json", action="store_true", help="print one JSON object per label frame: {frame, time_s, "
                                                       "events: [{class, class_name, track, azimuth, elevation, "
                                                       "distance_m, confidence}]} (README, Outputs)")
    p.add_argument("--record", type=_given, metavar="FILE.wav", help="save the raw input")
    p.add_argument("--input", type=_given, metavar="FILE.wav", help="play a recording through the loop at real speed")
    p.add_argument("--stats", action="store_true", help="print latency percentiles at exit")

    sub.add_parser("devices", help="list audio input devices",
                   description="List the audio input devices PortAudio sees, with their channels and default rate; "
                               "seld live --device takes a number or a name from this list.")

    p = sub.add_parser("bench", help="benchmarks that print their figures", formatter_class=_ListHelpWithDefaults,
                       description="Benchmarks that print their figures (a table, or JSON with --json);\na speed is "
                                   "given against a reference measured in the same run where there is one\n"
                                   "(synth has none: it states its target).\n\n" + BENCHMARK_HELP)
    p.add_argument("what", choices=BENCHMARKS, help="what to measure (see above)")
    p.add_argument("--minutes-train", type=float, help="accuracy: minutes of training audio per format (default 20)")
    p.add_argument("--epochs", type=int, help="accuracy: epochs per model (default 20)")
    p.add_argument("--workdir", help="accuracy: folder for its data and runs, which it resumes from "
                                     "(default runs/bench_accuracy)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    for command in sub.choices.values():
        if command.formatter_class is argparse.HelpFormatter:  # not one of ours already
            command.formatter_class = _HelpWithDefaults
    return parser


class _HelpWithDefaults(argparse.HelpFormatter):
    """Each option's help ends with its default, where it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unsaid = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if action.option_strings and not unsaid and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


class _ListHelpWithDefaults(_HelpWithDefaults, argparse.RawDescriptionHelpFormatter):
    """The description's lines as written (a list), the options' as _HelpWithDefaults gives them."""


def _nowhere(descriptor: int):
    """/dev/null on the closed `descriptor` itself: a file opened later would take that number, and
    what libraries write to it straight (ONNX Runtime's log, child processes) would land in it."""
    null = os.open(os.devnull, os.O_WRONLY)
    if null != descriptor:
        os.dup2(null, descriptor)
        os.close(null)
    return open(descriptor, "w", closefd=False)


def cli(argv: list[str] | None = None) -> int:
    # Started with stdout or stderr closed (`>&-`, `2>&-`): what would go there goes nowhere, as
    # asked. Python sets a closed one to None, and print(file=None) writes to stdout: messages
    # in the middle of `--json` output.
    if sys.stdout is None:
        sys.stdout = _nowhere(1)
    if sys.stderr is None:
        sys.stderr = _nowhere(2)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    module_name, function_name = HANDLERS[args.command].split(":")
    try:
        # A kill unwinds as Ctrl-C: no temporary file, folder or child process stays. Not in a rank of
        # torchrun, which stops ranks with SIGTERM: one blocked in a collective would never unwind.
        distributed = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
        with contextlib.nullcontext() if distributed else sigterm_interrupts():
            handler = getattr(importlib.import_module(module_name), function_name)
            return int(handler(args) or 0)
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if not missing or missing == "seld":
            raise
        hint = _INSTALL_HINTS.get(missing, f"pip install {missing}")
        print(f"seld {args.command}: error: needs the Python package {missing!r}, which is not installed ({hint})",
              file=sys.stderr)
        return 1
    except SeldError as error:
        print(f"seld {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"seld {args.command}: interrupted", file=sys.stderr)
        return 130
    except ImportError as error:
        if not isinstance(error.__context__, KeyboardInterrupt):  # onnxruntime's import turns Ctrl-C into this
            raise
        print(f"seld {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of the output went away (`| head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush fails quietly too
        return 141  # as a shell reports a command ended by SIGPIPE
