"""The benchmarks run end to end on a small budget (their figures are for `seld bench`, not tests)."""

import pytest

import seld.benchmarks.annotate as bench_annotate
import seld.benchmarks.gpu as bench_gpu
import seld.benchmarks.stream as bench_stream
from seld import SeldError


def test_bench_stream_reports_parts_reference_and_the_machines_jitter(monkeypatch):
    for name, value in (("CHUNKS", 60), ("WARMUP", 5), ("REPEATS", 1), ("SCENE_SECONDS", 3.0)):
        monkeypatch.setattr(bench_stream, name, value)
    result = bench_stream.run()
    assert result["chunks"] == 60 and result["ort_threads"] == 1
    assert result["providers"] == ["CPUExecutionProvider"]
    assert set(result["parts"]) == {"host_fft", "graph", "decode", "tracking_and_frames"}
    for entry in (result["per_chunk"], result["reference_audio_graph_dense_dft"], result["jitter_floor"]):
        assert 0 < entry["p50_ms"] <= entry["p99_ms"]
    assert result["jitter_floor"]["p99_over_p50"] >= 1
    assert result["latency"]["window_plus_chunk_ms"] == 140
    table = bench_stream.format_table(result)
    assert "machine jitter" in table and "Stream.push" in table


def test_bench_annotate_times_ours_the_command_and_the_reference_at_its_best(monkeypatch):
    for name, value in (("FILES", 3), ("FILE_SECONDS", 6.0), ("REPEATS", 1), ("WARMUP_FILES", 1),
                        ("REFERENCE_FILES", 1), ("GRAPH_FILES", 2)):
        monkeypatch.setattr(bench_annotate, name, value)
    result = bench_annotate.run()
    assert result["ours"]["csv_rows"] > 0 and result["ours"]["max_rss_mb"] > 0
    command, reference = result["ours_command_end_to_end"], result["reference"]
    assert command["seconds_per_hour"] > result["ours"]["seconds_per_hour"]  # start-up included
    by_threads = reference["runs_s_by_torch_threads"]
    assert set(by_threads) == {"1", str(result["machine"]["cores"])}
    assert reference["runs_s"] == [min(runs[0] for runs in by_threads.values())]
    table = bench_annotate.format_table(result)
    assert "command (start-up included)" in table and "reference: the faster of" in table


def test_bench_gpu_takes_its_steps_and_counts_nodes_per_provider(monkeypatch):
    """Without a GPU, run("cpu") goes through every step `seld bench gpu` takes on one."""
    for name, value in (("FILES", 3), ("FILE_SECONDS", 12.0), ("STREAM_CHUNKS", 40), ("STREAM_WARMUP", 5),
                        ("GRAPH_REPEATS", 1), ("BATCHES", ((2, 10),)), ("WHOLE_FILES_PER_CALL", 2)):
        monkeypatch.setattr(bench_gpu, name, value)
    monkeypatch.setattr(bench_annotate, "REPEATS", 1)
    result = bench_gpu.run("cpu")
    for placement in result["placement"].values():
        assert placement["nodes_per_provider"]["CPUExecutionProvider"] > 50
    assert result["batch"]["cpu"]["csv_rows"] > 0 and result["batch"]["gpu_over_cpu"] == 1  # one run, both sides
    graph = result["batch"]["stream_graph_batched"]["2x10"]
    assert graph["audio_seconds_per_call"] == 2.0 and graph["graph_inputs_on_gpu_x_real_time"] > 0
    streaming = result["streaming"]["cpu"]
    assert streaming["stream_step"] == ["_PlainStep"] and 0 < streaming["per_chunk"]["p50_ms"]
    table = bench_gpu.format_table(result)
    assert "cpu-1-processes" in result["batch"]["commands"] and "cpu-1-processes" in table
    assert "placement" in table and "Stream.push" in table


def test_bench_gpu_without_a_gpu_says_so(monkeypatch):
    monkeypatch.setattr("seld.engine._nvidia_gpu_present", lambda: False)
    with pytest.raises(SeldError, match="CUDA provider|no NVIDIA GPU"):
        bench_gpu.run()


def test_bench_options_a_benchmark_does_not_take_are_refused_in_one_line(capsys):
    from seld.cli import cli

    assert cli(["bench", "model", "--epochs", "3"]) == 1  # it raised TypeError from inside run()
    assert "--epochs: seld bench model takes no such option" in capsys.readouterr().err


def test_bench_accuracy_refuses_too_little_data_before_any_work(tmp_path):
    from seld import SeldError
    from seld.benchmarks import accuracy

    with pytest.raises(SeldError, match="--minutes-train 0.5: must be more than 0.7"):
        accuracy.run(minutes_train=0.5, epochs=1, workdir=str(tmp_path / "work"))
    with pytest.raises(SeldError, match="--epochs 0: must be at least 1"):
        accuracy.run(minutes_train=1, epochs=0, workdir=str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_bench_accuracy_json_is_one_object_and_more_epochs_train_on(tmp_path, capsys):
    """Its synthesis printed to stdout before the JSON; a rerun with more --epochs resumed with the
    old total and trained nothing while saying it had."""
    import json

    from seld.cli import cli

    arguments = ["bench", "accuracy", "--minutes-train", "0.75", "--workdir", str(tmp_path / "work"), "--json"]
    assert cli([*arguments, "--epochs", "1"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert cli([*arguments, "--epochs", "2"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert {model["epochs"] for model in first["models"].values()} == {1}
    assert {model["epochs"] for model in second["models"].values()} == {2}


def test_a_killed_bench_stops_its_child_and_a_failed_child_is_one_error(tmp_path, monkeypatch):
    """SIGTERM (`timeout`) ended the parent and left its child timing on, and its temporary folder;
    a child that failed raised a RuntimeError traceback."""
    import os
    import signal
    import threading
    import time

    from seld.benchmarks import run_child
    from seld.interrupts import sigterm_interrupts

    (tmp_path / "sleeper.py").write_text(
        "import os, sys, time\nopen(os.environ['PID_FILE'], 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n")
    (tmp_path / "failing.py").write_text("raise SystemExit('no figures here')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("PID_FILE", str(tmp_path / "pid"))

    def terminate_when_started():
        deadline = time.monotonic() + 30
        while not (tmp_path / "pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_when_started, daemon=True)
    killer.start()
    with pytest.raises(KeyboardInterrupt), sigterm_interrupts():
        run_child("sleeper", {})
    killer.join()
    child = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    with pytest.raises(SeldError, match=r"failing: the benchmark's child process failed \(exit status 1\):\nno figures"):
        run_child("failing", {})


def test_a_process_forked_under_the_sigterm_handler_dies_of_sigterm():
    """Pool workers forked by `seld synth` inherited the handler: killed with their parent, they
    unwound into their pool's next task and lived on, orphaned."""
    import os
    import signal
    import time

    from seld.interrupts import sigterm_interrupts

    with sigterm_interrupts():
        child = os.fork()
        if child == 0:
            try:
                time.sleep(30)
            except BaseException:
                os._exit(3)  # the interrupt reached the child's Python code
            os._exit(0)
        time.sleep(0.2)
        os.kill(child, signal.SIGTERM)
        _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_deferred_interrupts_leave_nothing_behind_and_defer_ctrl_c_too():
    """A SIGTERM in a deferred block that then raised stayed pending, and the next block raised a
    KeyboardInterrupt out of nowhere; SIGCHLD went back to the default after every command (PyTorch's
    loader handler, installed once a process, was lost); Ctrl-C was not deferred."""
    import os
    import signal

    from seld.interrupts import interrupts_deferred, sigterm_interrupts

    def child_handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        with sigterm_interrupts():
            signal.signal(signal.SIGCHLD, child_handler)  # as a DataLoader installs its own
        assert signal.getsignal(signal.SIGCHLD) is child_handler  # no signal came: left as it was
        with sigterm_interrupts():
            with pytest.raises(ValueError), interrupts_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                raise ValueError("the block failed on its own")
            with interrupts_deferred():
                pass  # no stale interrupt
            with pytest.raises(KeyboardInterrupt):
                with interrupts_deferred():
                    signal.raise_signal(signal.SIGINT)
                    reached = True  # not interrupted inside
            assert reached
        assert signal.getsignal(signal.SIGCHLD) is not child_handler  # quiet to the stopped command's end
    finally:
        signal.signal(signal.SIGCHLD, previous)
