"""`seld bench WHAT`: each benchmark is a module here with `run(**options) -> dict` of figures
and `format_table(result) -> str`. Options are the bench parser's, where given."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys

from seld import SeldError


def run_child(module: str, arguments: dict) -> dict:
    """`python -m module ARGUMENTS_JSON` in a fresh process (one that never imports torch, so its
    memory and timings are the engine's); its figures are the last line it prints, as JSON."""
    result = subprocess.run([sys.executable, "-m", module, json.dumps(arguments)], capture_output=True, text=True,
                            check=False)
    if result.returncode:
        raise RuntimeError(f"{module}: benchmark child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_command(args) -> int:
    module = importlib.import_module(f"seld.benchmarks.{args.what}")
    options = {name: getattr(args, name) for name in ("minutes_train", "epochs", "workdir")
               if getattr(args, name, None) is not None}
    taken = inspect.signature(module.run).parameters
    for name in options:
        if name not in taken:
            raise SeldError(f"--{name.replace('_', '-')}: seld bench {args.what} takes no such option")
    result = module.run(**options)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(module.format_table(result))
    return 0
