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
    memory and timings are the engine's); its figures are the last line it prints, as JSON. An
    interrupt stops it too."""
    with subprocess.Popen([sys.executable, "-m", module, json.dumps(arguments)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as child:
        try:
            stdout, stderr = child.communicate()
        except BaseException:
            child.kill()
            child.wait()  # Popen's exit does not wait on a KeyboardInterrupt
            raise
    if child.returncode:
        raise SeldError(f"{module}: the benchmark's child process failed (exit status {child.returncode}):\n"
                        f"{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def child_main(child) -> None:
    """A benchmark child's `__main__`: its figures, as JSON, from the arguments run_child gave it."""
    from seld.interrupts import die_with_parent

    die_with_parent()  # a parent killed outright leaves no child timing on for nobody
    print(json.dumps(child(json.loads(sys.argv[1]))))


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
