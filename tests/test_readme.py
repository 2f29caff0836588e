"""The README's promise, tested the way a newcomer meets it: a clean clone, `make demo`."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO

README = REPO / "README.md"


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```(?:sh)?\n(.*?)```", README.read_text(), re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None, reason="needs git and make")
def test_make_demo_in_a_clean_clone(tmp_path):
    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    clone = tmp_path / "seld"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    _venv_on_top_of_ours(clone / ".venv")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("scene.wav", "scene_truth.csv", "scene.csv", "scene.json", "scene.png"):
        assert (clone / "demo_out" / name).stat().st_size > 0, name
    assert "truth" in result.stdout and "found by the model" in result.stdout
    # As seld annotate writes it: a later `seld annotate demo_out/scene.wav` knows the outputs' model by its digest
    from seld.engine import ModelInfo
    from seld.models import default_model_dir

    header = json.loads((clone / "demo_out" / "scene.json").read_text())
    assert header["model_digest"] == ModelInfo.load(default_model_dir("foa")).digest
    found = result.stdout.split("found by the model")[1].split("DCASE 2024")[0]
    assert len([line for line in found.splitlines() if line.strip().endswith(" m")]) >= 3, found
    # The shipped model finds the demo's sounds (F 0.55 when written): a broken model, decoder or
    # scene would print the same headings.
    micro_f = float(re.search(r"DCASE 2024 \(micro\): ER [\d.]+  F ([\d.]+)", result.stdout).group(1))
    assert micro_f >= 0.3, result.stdout[-2000:]


def _venv_on_top_of_ours(venv):
    """Make the clone's .venv before `make demo` does, seeing the packages installed in ours.

    A second torch with its CUDA libraries is about 6 GB more, which CI's disk does not hold
    beside the first ([Errno 28] No space left on device). `make demo` still runs its install
    rule in the clone: pip finds the dependencies satisfied (`make test` has just installed them
    here with the same rule) and installs the clone itself, whose files the demo then runs.
    """
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site_packages = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    # A path line in a .pth file only extends sys.path: our editable seld (a .pth in our
    # site-packages) stays inactive there, so the clone imports its own seld.
    ours = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    (Path(site_packages) / "seld_test_ours.pth").write_text("".join(f"{path}\n" for path in sorted(ours)))


@pytest.mark.parametrize("arguments, message", [(["--seconds", "0"], "--seconds must be from 5 to 3600, not 0"),
                                                (["--seconds", "inf"], "--seconds must be from 5 to 3600, not inf"),
                                                (["--out", "FILE"], "exists and is not a folder")])
def test_demo_refuses_bad_arguments_in_one_line(tmp_path, capsys, arguments, message):
    from seld.demo import main

    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit) as exit:
        main([str(tmp_path / "afile") if a == "FILE" else a for a in arguments])
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_demo_ends_a_kill_or_a_failed_write_in_one_line_and_clears_a_killed_runs_temporaries(tmp_path, capsys,
                                                                                            monkeypatch):
    import signal

    import seld.demo as demo

    out = tmp_path / "demo_out"
    out.mkdir()
    (out / ".scene.png.x1y2.tmp").write_bytes(b"half")  # what kill -9 mid-write leaves
    assert demo.main(["--out", str(out), "--seconds", "5"]) == 0
    assert not list(out.glob(".*")) and (out / "scene.png").stat().st_size > 0
    capsys.readouterr()

    def killed(seconds):
        signal.raise_signal(signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(demo, "demo_scene", killed)
    try:
        assert demo.main(["--out", str(out)]) == 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err == "demo: interrupted\n"

    def unwritable(path, *args):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.undo()
    import seld.audio

    monkeypatch.setattr(seld.audio, "write_audio", unwritable)
    assert demo.main(["--out", str(out), "--seconds", "5"]) == 1
    assert capsys.readouterr().err == f"demo: error: {out / 'scene.wav'}: Permission denied\n"
    monkeypatch.undo()
    (out / "scene.png").unlink()
    (out / "scene.png").mkdir()  # the rename over it fails: the error names it, not the temporary file
    assert demo.main(["--out", str(out), "--seconds", "5"]) == 1
    assert capsys.readouterr().err == f"demo: error: {out / 'scene.png'}: Is a directory\n"


def test_demo_truth_splits_an_event_where_the_model_would():
    """A telephone ringing twice was one truth row from its first ring to its last, while the model's
    table splits at gaps of more than two frames."""
    from seld.demo import truth_events

    rows = [(frame, 3, 0, 90, 0, 200) for frame in (*range(14, 29), *range(41, 52))]
    events = truth_events(rows, [f"class{k}" for k in range(13)])
    assert [(e["onset_s"], e["offset_s"]) for e in events] == [(1.4, 2.9), (4.1, 5.2)]


def test_recipe_runs_main_only_after_every_definition():
    """`python -m seld.data_prep.recipe` once called main() from the middle of the module: hours of
    training, then a NameError for the scoring functions defined below it."""
    import ast

    import seld.data_prep.recipe as recipe

    body = ast.parse(Path(recipe.__file__).read_text()).body
    mains = [index for index, node in enumerate(body) if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    assert mains == [len(body) - 1]


def test_the_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    import numpy as np

    from seld.audio import write_audio

    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    (tmp_path / "demo_out").mkdir()
    write_audio(tmp_path / "demo_out" / "scene.wav", 0.05 * np.random.default_rng(0).standard_normal((4, 24_000 * 2)))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    frames = [json.loads(line) for line in printed[:-1]]
    assert [frame["frame"] for frame in frames] == list(range(20)) and frames[0]["time_s"] == 0.0
    assert isinstance(json.loads(printed[-1]), list)  # the events


def test_a_recipe_stopped_by_sigterm_stops_its_step(tmp_path, monkeypatch):
    """The recipe died of SIGTERM and its `seld synth` or `seld train` step went on, orphaned; a rerun
    then started a second trainer in the same run folder."""
    import signal
    import threading
    import time

    import seld.data_prep.recipe as recipe
    from seld.interrupts import sigterm_interrupts

    def children() -> list[str]:
        return [child for task in Path(f"/proc/{os.getpid()}/task").iterdir()
                for child in (task / "children").read_text().split()]

    def terminate_when_the_step_runs():
        deadline = time.monotonic() + 60
        while not (tmp_path / "data").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    before = set(children())  # other tests' (a PulseAudio server)
    killer = threading.Thread(target=terminate_when_the_step_runs, daemon=True)
    killer.start()
    with pytest.raises(KeyboardInterrupt), sigterm_interrupts():
        recipe.seld("synth", "--out", str(tmp_path / "data"), "--minutes", "30", "--workers", "1")
    killer.join()
    assert set(children()) <= before
