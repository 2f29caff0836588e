import json

import pytest

from seld.arrays import TETRAHEDRAL, load_array
from seld.cli import HANDLERS, build_parser, cli


def test_help_describes_every_option(seld_cli):
    result = seld_cli("--help")
    assert result.returncode == 0
    for command in HANDLERS:
        assert command in result.stdout
        sub = seld_cli(command, "--help")
        assert sub.returncode == 0, sub.stderr
        parser = build_parser()
        subparser = parser._subparsers._group_actions[0].choices[command]
        for action in subparser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{command} {action.option_strings} has no help"
    text = " ".join(seld_cli("synth", "--help").stdout.split())
    for default in ("(default: 60.0)", "(default: 0)", "(default: 9)", "(default: both)"):
        assert default in text  # a value left out is this
    assert "(default: None)" not in text and "(default: False)" not in text


def test_errors_are_one_line(seld_cli, tmp_path):
    missing = tmp_path / "missing.json"
    result = seld_cli("synth", "--out", tmp_path / "d", "--array", missing, "--minutes", "0.01")
    assert result.returncode != 0
    assert str(missing) in result.stderr and "Traceback" not in result.stderr


def test_tetrahedral_array_matches_design():
    expected = [(0.0243, 0.0243, 0.0241), (0.0243, -0.0243, -0.0241), (-0.0243, 0.0243, -0.0241), (-0.0243, -0.0243, 0.0241)]
    for capsule, want in zip(TETRAHEDRAL.capsules_m, expected):
        assert max(abs(a - b) for a, b in zip(capsule, want)) < 1e-4


def test_array_file_round_trip_and_errors(tmp_path):
    import pytest

    from seld import SeldError

    path = tmp_path / "array.json"
    path.write_text(json.dumps(TETRAHEDRAL.to_dict()))
    assert load_array(path) == TETRAHEDRAL
    path.write_text(json.dumps({"name": "x", "kind": "mic", "capsules_m": [[0, 0]]}))
    with pytest.raises(SeldError, match="array.json"):
        load_array(path)


def test_output_cut_short_by_a_closed_pipe_is_no_traceback(tmp_path):
    import subprocess
    import sys

    from conftest import tiny_dataset

    references = tiny_dataset(tmp_path / "data") / "metadata_dev"
    process = subprocess.Popen([sys.executable, "-m", "seld", "evaluate", "--ref", str(references), "--pred",
                                str(references), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as `| head -c 0` would, before seld writes anything
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and "Traceback" not in stderr, stderr


def test_a_command_whose_package_is_not_installed_says_which(tmp_path):
    """An inference-only install (no torch) gets one line from seld train, not a traceback."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; from seld.cli import cli; "
            "sys.exit(cli(['train', '--data', 'x', '--out', 'y']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("seld train: error: needs the Python package 'torch', which is not installed "
                                     "(pip install torch==2.11.0 torchaudio==2.11.0)")


def test_counts_below_one_are_refused(seld_cli, tmp_path):
    for option in ("--workers", "--processes"):
        result = seld_cli("annotate", tmp_path, "--out", tmp_path / "out", option, "0")
        assert result.returncode == 2 and f"{option}: 0: must be at least 1" in result.stderr


def test_ctrl_c_inside_an_import_is_an_interruption(monkeypatch, capsys):
    """onnxruntime's import turns a Ctrl-C during it into ImportError('initialization failed')."""
    import seld.cli

    def import_interrupted(name):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ImportError("initialization failed")  # noqa: B904 - as onnxruntime does

    monkeypatch.setattr(seld.cli.importlib, "import_module", import_interrupted)
    assert seld.cli.cli(["devices"]) == 130
    assert capsys.readouterr().err == "seld devices: interrupted\n"


def test_empty_paths_and_names_are_refused(seld_cli):
    for command, option in (("live", "--input"), ("synth", "--classes"), ("synth-sounds", "--packages")):
        result = seld_cli(command, "--out", "x", option, "") if command != "live" else seld_cli(command, option, "")
        assert result.returncode == 2 and f"argument {option}: empty" in result.stderr


def test_bench_and_synth_sounds_help_say_what_they_do(capsys):
    """`seld bench --help` said only "what to measure"; synth-sounds and devices had no description."""
    from seld.cli import BENCHMARKS

    for command, words in (("bench", [f"  {name}  " for name in BENCHMARKS] + ["(default 20)"]),
                           ("synth-sounds", ["apt-get download", "manifest.csv"]), ("devices", ["--device"])):
        with pytest.raises(SystemExit):
            cli([command, "--help"])
        text = capsys.readouterr().out
        assert all(word in text for word in words), (command, text)


def test_a_closed_stderr_keeps_messages_off_stdout(tmp_path):
    """Started with stderr closed (`2>&-`), progress and errors went to stdout (print(file=None)
    writes there): `seld live --json`'s frames were followed by status lines."""
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "seld", "annotate", str(tmp_path / "absent.wav"), "--out", str(tmp_path / "out")]
    closed = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=120, preexec_fn=lambda: os.close(2))
    usual = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert "absent.wav: no such file" in usual.stderr and usual.stdout.startswith("annotated 0 file(s), 1 failed")
    assert closed.returncode == usual.returncode == 1 and closed.stdout == usual.stdout
    # stdin closed too: /dev/null takes descriptor 2 itself, not 0 (what writes to 2 straight stays out of files)
    probe = [sys.executable, "-c", "import os, sys; from seld.cli import _nowhere; sys.stderr = _nowhere(2); "
             "print(os.readlink('/proc/self/fd/2'), os.path.exists('/proc/self/fd/0'))"]
    result = subprocess.run(probe, stdout=subprocess.PIPE, text=True, timeout=60,
                            preexec_fn=lambda: (os.close(0), os.close(2)))
    assert result.stdout.split() == ["/dev/null", "False"]
