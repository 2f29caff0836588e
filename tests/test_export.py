import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import tiny_dataset
from seld import SeldError
from seld.engine import Engine


def test_package_holds_everything(tiny_model_package):
    names = {p.name for p in tiny_model_package.iterdir()}
    assert names == {"seld.json", "model.onnx", "stream.onnx", "weights.safetensors", "README.md"}
    info = json.loads((tiny_model_package / "seld.json").read_text())
    assert info["sample_rate"] == 24_000 and info["num_channels"] == 4 and info["causal"] is True
    assert info["graph_input"] == "spectrum" and info["state_size"] > 0 and len(info["classes"]) == 13
    assert all(value <= 1e-4 for value in info["export_check"].values())
    from safetensors.torch import load_file

    weights = load_file(tiny_model_package / "weights.safetensors")
    assert "normalization_mean" in weights and weights["normalization_std"].min() > 0
    card = (tiny_model_package / "README.md").read_text()
    assert "Limits" in card
    # exported from the run: best.pt's weights, said as their epoch (the card called it the epoch count)
    assert f"- weights: those after epoch {info['training']['epochs_trained']}" in card and "epochs: " not in card


def test_check_catches_a_graph_that_disagrees(tiny_run, tmp_path):
    """Graphs of one network checked against another network's weights must fail."""
    from seld.export import check_graphs, export_graphs
    from seld.train import load_checkpoint, network_from_checkpoint

    network, _ = network_from_checkpoint(load_checkpoint(tiny_run))
    export_graphs(network, tmp_path)
    assert max(check_graphs(network, tmp_path).values()) <= 1e-4
    with torch.no_grad():
        for parameter in network.crnn.parameters():
            parameter.add_(0.05)
    with pytest.raises(SeldError, match="disagrees"):
        check_graphs(network, tmp_path)


def test_a_front_end_of_another_hop_exports_and_runs(tmp_path):
    """Label frames of 100 ms from a 10 ms hop (pooled 10 x in time): the check fed the stream 20 ms
    hops' worth of frames, and seld.json said hop 480 (the export failed with a traceback)."""
    from seld.arrays import array_for_format
    from seld.engine import Engine
    from seld.export import check_graphs, export_graphs, package_info
    from seld.features import FeatureConfig
    from seld.model import preset
    from seld.network import SeldNetwork
    from seld.train import TrainConfig

    model = preset("tiny", pool_time=(10, 1))
    network = SeldNetwork(FeatureConfig(hop=240), model, array_for_format("foa")).eval()
    export_graphs(network, tmp_path)
    assert max(check_graphs(network, tmp_path).values()) <= 1e-4
    info = package_info(network, TrainConfig(preset="tiny", model=model, features=FeatureConfig(hop=240)), {}, "hop")
    assert (info["hop"], info["label_hop"]) == (240, 2400)
    (tmp_path / "seld.json").write_text(json.dumps(info))
    audio = (0.1 * np.random.default_rng(0).standard_normal((4, 24_000))).astype(np.float32)
    outputs = np.concatenate(list(Engine(tmp_path, device="cpu").outputs(audio)))
    with torch.no_grad():
        expected = network(torch.from_numpy(audio)[None])[0].numpy()
    assert outputs.shape == (10, expected.shape[1]) and np.abs(outputs - expected).max() < 1e-4


@pytest.mark.parametrize("output_format", ["multi_accdoa", "sed_doa"])
def test_graphs_have_each_heads_two_linear_layers_as_one(output_format):
    """The heads' linear layers (no activation between) are folded for the graphs: the same
    outputs, a layer fewer per head; the network itself (its weights file) keeps both."""
    from seld.export import _linear_pairs_folded
    from seld.features import FeatureConfig
    from seld.arrays import array_for_format
    from seld.model import preset
    from seld.network import SeldNetwork

    model = preset("tiny", head_size=16, output_format=output_format)
    network = SeldNetwork(FeatureConfig(), model, array_for_format("foa")).eval()
    folded = _linear_pairs_folded(network)
    linear = [sum(isinstance(m, torch.nn.Linear) for m in net.modules()) for net in (network, folded)]
    heads = sum(isinstance(m, torch.nn.Sequential) for m in network.crnn.modules())
    assert heads >= 1 and linear[1] == linear[0] - heads
    audio = 0.1 * torch.randn(2, 4, 24_000)
    with torch.no_grad():
        assert torch.allclose(folded(audio), network(audio), atol=1e-5)


def test_a_package_re_exports_to_the_same_model(tiny_model_package, tmp_path, seld_cli):
    """`seld export PACKAGE`: graphs made again from its weights; seld.json (bar the check), weights and card
    kept; the new graphs give the old ones' outputs."""
    package = tmp_path / "package"
    shutil.copytree(tiny_model_package, package)
    (package / "README.md").write_text("# a card written by hand\n")
    result = seld_cli("export", package, "--out", tmp_path / "again")
    assert result.returncode == 0, result.stderr
    old, new = (json.loads((folder / "seld.json").read_text()) for folder in (package, tmp_path / "again"))
    assert {**old, "export_check": None} == {**new, "export_check": None}
    for name in ("weights.safetensors", "README.md"):
        assert (tmp_path / "again" / name).read_bytes() == (package / name).read_bytes()
    audio = (0.1 * np.random.default_rng(1).standard_normal((4, 24_000 * 2))).astype(np.float32)
    outputs = [np.concatenate(list(Engine(folder, device="cpu").outputs(audio))) for folder in (package, tmp_path / "again")]
    assert np.abs(outputs[0] - outputs[1]).max() <= 1e-4


def test_several_checkpoints_export_as_their_average(tiny_run, tmp_path, seld_cli):
    """`seld export A.pt B.pt`: the package's weights are the mean of theirs, weight by weight
    (counters and history from the later epoch, whichever comes first); the package says which
    epochs it averages."""
    from safetensors.torch import load_file

    from seld.train import load_checkpoint

    later = load_checkpoint(tiny_run / "last.pt")
    earlier = {**later, "epoch": later["epoch"] - 1, "history": later["history"][:-1],
               "model": {k: v - 1 if not v.is_floating_point() else v if k.startswith("normalization") else v + 0.5
                         for k, v in later["model"].items()}}
    torch.save(earlier, tmp_path / "earlier.pt")
    result = seld_cli("export", tiny_run / "last.pt", tmp_path / "earlier.pt", "--out", tmp_path / "soup")
    assert result.returncode == 0, result.stderr
    weights = load_file(tmp_path / "soup" / "weights.safetensors")
    for name, value in later["model"].items():
        moved = value.is_floating_point() and not name.startswith("normalization")
        assert torch.allclose(weights[name], value + 0.25 if moved else value, atol=1e-6), name
    info = json.loads((tmp_path / "soup" / "seld.json").read_text())
    assert info["training"]["averaged_epochs"] == [later["epoch"], later["epoch"] + 1]
    assert info["training"]["epochs_trained"] == later["epoch"] + 1
    assert info["metrics"]["validation"] == {}  # no epoch's figures are the average's
    card = (tmp_path / "soup" / "README.md").read_text()
    assert "the mean of epochs" in card and "- not measured: an average of epochs is no epoch" in card


def test_one_epoch_twice_exports_as_that_epoch(tiny_run, tmp_path, seld_cli):
    """best.pt and last.pt of a run whose last epoch was its best: that checkpoint, as it is."""
    shutil.copyfile(tiny_run / "last.pt", tmp_path / "best.pt")
    for sources, out in (([tiny_run / "last.pt"], "one"), ([tmp_path / "best.pt", tiny_run / "last.pt"], "twice")):
        result = seld_cli("export", *sources, "--out", tmp_path / out)
        assert result.returncode == 0, result.stderr
    one, twice = (json.loads((tmp_path / out / "seld.json").read_text()) for out in ("one", "twice"))
    assert {**one, "name": None, "export_check": None} == {**twice, "name": None, "export_check": None}
    assert "averaged_epochs" not in twice["training"] and twice["metrics"]["validation"]
    weights = [(tmp_path / out / "weights.safetensors").read_bytes() for out in ("one", "twice")]
    assert weights[0] == weights[1]


def test_only_epochs_of_one_run_are_averaged(tiny_run, tiny_model_package, tmp_path, seld_cli):
    """Another network, other data, another normalization (a run fine-tuned from this one) or a
    model package: a one-line error naming the file, nothing written."""
    from seld.train import load_checkpoint

    last = load_checkpoint(tiny_run / "last.pt")
    others = {"classes": {**last, "config": {**last["config"], "classes": list(last["config"]["classes"])[::-1]}},
              "data": {**last, "config": {**last["config"], "data": "other_data"}},
              "normalization": {**last, "model": {**last["model"],
                                                  "normalization_mean": last["model"]["normalization_mean"] + 1}}}
    for differing, checkpoint in others.items():
        torch.save({**checkpoint, "epoch": last["epoch"] - 1}, tmp_path / "other.pt")
        result = seld_cli("export", tiny_run / "last.pt", tmp_path / "other.pt", "--out", tmp_path / "soup")
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert "other.pt: not an epoch of the run of" in result.stderr and f"({differing} differ)" in result.stderr
    result = seld_cli("export", tiny_run / "last.pt", tiny_model_package, "--out", tmp_path / "soup")
    assert result.returncode != 0 and f"{tiny_model_package}: a model package" in result.stderr
    assert not (tmp_path / "soup").exists()


def test_re_export_of_a_broken_package(tmp_path, tiny_model_package, seld_cli):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "seld.json").write_text((tiny_model_package / "seld.json").read_text())
    (broken / "weights.safetensors").write_bytes(b"not weights")
    result = seld_cli("export", broken, "--out", tmp_path / "out")
    assert result.returncode != 0 and "not a readable model package" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_stream_equals_offline_for_any_block_size(tiny_model_package):
    engine = Engine(tiny_model_package, device="cpu")
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((4, 24_000 * 3 + 1234))).astype(np.float32)
    offline = np.concatenate(list(engine.outputs(audio)))
    assert offline.shape[0] == 31  # the last, partial label frame is padded
    stream = engine.stream()
    frames, start = [], 0
    while start < audio.shape[1]:
        size = int(rng.integers(1, 7000))
        frames += stream.push(audio[:, start:start + size])
        start += size
    frames += stream.flush()
    assert [f.frame for f in frames] == list(range(31))
    assert stream.flush() == []
    with pytest.raises(SeldError, match="no audio after flush"):
        stream.push(audio[:, :2400])
    with pytest.raises(ValueError, match="chunk_frames must be at least 1"):
        engine.stream(chunk_frames=0)
    # The step session's fixed shapes let ONNX Runtime pick other kernels: float32 rounding apart.
    streamed = [sorted((d.class_index, d.azimuth) for d in f.detections) for f in frames]
    expected = [sorted((d.class_index, d.azimuth) for d in engine.detections(audio) if d.frame == i)
                for i in range(31)]
    assert [[c for c, _ in frame] for frame in streamed] == [[c for c, _ in frame] for frame in expected]
    assert sum(map(len, expected)) > 0
    for got, want in zip(streamed, expected):
        assert [a for _, a in got] == pytest.approx([a for _, a in want], abs=1e-3)


def test_engine_reports_the_provider_it_got(tiny_model_package, caplog):
    import seld.engine

    seld.engine._say_once.cache_clear()  # said once a process: maybe by an earlier test
    with caplog.at_level(logging.INFO, logger="seld.engine"):
        engine = Engine(tiny_model_package, device="auto")
    with caplog.at_level(logging.INFO, logger="seld.engine"):
        Engine(tiny_model_package, device="auto")
    assert caplog.text.count("no NVIDIA GPU found") in (0, 1)  # once a process, not once a session
    assert engine.providers[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in engine.providers:  # said either way, never silently
        assert ("CUDA was asked for but ONNX Runtime runs it on CPUExecutionProvider" in caplog.text
                or "no NVIDIA GPU found" in caplog.text)
    assert Engine(tiny_model_package, device="cpu").providers == ["CPUExecutionProvider"]


def test_not_a_model_package(tmp_path):
    with pytest.raises(SeldError, match="not a model package"):
        Engine(tmp_path)
    with pytest.raises(SeldError, match="absent: no such model package folder"):
        Engine(tmp_path / "absent")
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(SeldError, match="model.onnx: a file; a model is the package folder that holds seld.json"):
        Engine(tmp_path / "model.onnx")


@pytest.mark.parametrize("edit, message", [
    (lambda info: info.update(state_size=100), "does not describe stream.onnx: state_size 100"),
    (lambda info: info.update(num_channels=2), "does not describe stream.onnx: num_channels 2 and n_fft 1024"),
    (lambda info: info.update(num_channels=0), "does not describe stream.onnx: num_channels 0"),
    (lambda info: info["output"].update(num_classes=info["output"]["num_classes"] - 1)
     or info.update(classes=info["classes"][:-1]), "does not describe stream.onnx: output"),
    (lambda info: info.update(classes=info["classes"] + ["extra"]), "classes named, output.num_classes"),
    (lambda info: info.pop("output"), "not a valid model description (KeyError: 'output')"),
])
def test_a_hand_edited_seld_json_that_does_not_fit_its_graph_is_refused(tiny_model_package, tmp_path, edit, message):
    package = tmp_path / "edited"
    shutil.copytree(tiny_model_package, package)
    info = json.loads((package / "seld.json").read_text())
    edit(info)
    (package / "seld.json").write_text(json.dumps(info))
    with pytest.raises(SeldError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Engine(package, device="cpu")


def test_export_replaces_a_package_whole_or_not_at_all(tiny_run, tmp_path, monkeypatch):
    from pathlib import Path

    from seld.export import export_package

    out = tmp_path / "model"
    export_package([str(tiny_run)], out)
    (out / "README.md").write_text("the old package")
    rename = Path.rename

    def failing_rename(self, target):  # the new package cannot be put in place (a full disk, say)
        if Path(target) == out and not self.name.endswith(".replaced"):
            raise OSError(28, "No space left on device")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(SeldError, match="cannot put the package in place"):
        export_package([str(tiny_run)], out)
    monkeypatch.undo()
    assert (out / "README.md").read_text() == "the old package" and Engine(out, device="cpu")  # the old one, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing else left beside it
    export_package([str(tiny_run)], out)
    assert (out / "README.md").read_text() != "the old package"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    (out / "notes.txt").write_text("mine")  # replacing the package deleted it without a word
    with pytest.raises(SeldError, match=r"model: holds other files than a package's \(notes.txt\)"):
        export_package([str(tiny_run)], out)
    assert (out / "notes.txt").read_text() == "mine"
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SeldError, match="a-file/pkg: cannot write the package there"):
        export_package([str(tiny_run)], tmp_path / "a-file" / "pkg")


def test_inference_path_never_imports_torch_or_scipy_stats(tiny_model_package, tmp_path):
    wav = tmp_path / "x.wav"
    soundfile.write(wav, np.zeros((4800, 4), np.float32), 24_000)
    code = (
        "import sys; from seld.cli import cli; "
        f"rc = cli(['annotate', {str(wav)!r}, '--model', {str(tiny_model_package)!r}, '--out', {str(tmp_path / 'o')!r}]); "
        "import seld.realtime.live, seld.engine; "
        "assert rc == 0, rc; assert 'torch' not in sys.modules and 'torchaudio' not in sys.modules, 'torch imported'; "
        # scipy.signal (and the scipy.stats it pulls in) only when a file needs resampling: a fast start
        "assert 'scipy.stats' not in sys.modules, 'scipy.stats imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def rows(path):
    return [line.split(",") for line in path.read_text().splitlines()]


def test_annotate_a_folder(tiny_model_package, tmp_path, seld_cli):
    data = tiny_dataset(tmp_path / "data")
    broken = data / "foa_dev" / "dev-train" / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEnot really")
    out = tmp_path / "out"
    result = seld_cli("annotate", data / "foa_dev", "--model", tiny_model_package, "--out", out, "--plot")
    assert result.returncode == 1  # one file was skipped, the others are done
    assert "broken.wav" in result.stderr and "Traceback" not in result.stderr
    for name in ("dev-train/fold1_room1_mix001", "dev-train/fold1_room1_mix002", "dev-val/fold2_room2_mix001"):
        for suffix in (".csv", ".json", ".png"):
            assert (out / (name + suffix)).is_file(), name + suffix
    assert not (out / "dev-train" / "broken.csv").exists()
    document = json.loads((out / "dev-val" / "fold2_room2_mix001.json").read_text())
    assert set(document) == {"file", "path", "model", "model_digest", "sample_rate", "duration_s", "events"}
    assert document["duration_s"] == 4.0 and Path(document["path"]).is_absolute()
    assert Path(document["path"]).samefile(document["file"])
    for event in document["events"]:
        assert set(event) == {"class", "class_name", "track", "onset_s", "offset_s", "azimuth", "elevation",
                              "distance_m", "frames"}
        assert event["onset_s"] < event["offset_s"]
    for row in rows(out / "dev-val" / "fold2_room2_mix001.csv"):
        assert len(row) == 6 and 0 <= int(row[0]) < 40 and -180 <= float(row[3]) <= 180

    broken.unlink()
    again = seld_cli("annotate", data / "foa_dev", "--model", tiny_model_package, "--out", out)
    assert again.returncode == 0 and "skipping 3 file(s) already annotated" in again.stdout

    streamed = tmp_path / "streamed"
    assert seld_cli("annotate", data / "foa_dev", "--model", tiny_model_package, "--out", streamed,
                    "--streaming").returncode == 0
    offline_rows = rows(out / "dev-val" / "fold2_room2_mix001.csv")
    streamed_rows = rows(streamed / "dev-val" / "fold2_room2_mix001.csv")
    assert len(offline_rows) == len(streamed_rows)
    differing = sum(a[:3] != b[:3] or abs(float(a[3]) - float(b[3])) > 1 for a, b in zip(offline_rows, streamed_rows))
    assert differing <= 0.005 * len(offline_rows)

    scored = seld_cli("evaluate", "--ref", data / "metadata_dev", "--pred", out, "--json")
    assert scored.returncode == 0, scored.stderr
    assert set(json.loads(scored.stdout)) >= {"F", "AngE", "DistE", "RelDistE", "LR", "SELD", "classwise"}


def test_annotate_wrong_channel_count(tiny_model_package, tmp_path, seld_cli):
    wav = tmp_path / "stereo.wav"
    soundfile.write(wav, np.zeros((2400, 2), np.float32), 24_000)
    result = seld_cli("annotate", wav, "--model", tiny_model_package, "--out", tmp_path / "o")
    assert result.returncode == 1
    assert f"{wav}: has 2 channels, the array needs 4" in result.stderr


def test_step_session_is_the_stream_graph_with_fixed_shapes(tiny_model_package):
    engine = Engine(tiny_model_package, device="cpu", purpose="stream")
    session = engine.step_session(5)
    assert engine.step_session(5) is session  # made once per chunk size
    assert session.get_inputs()[0].shape == [1, 4, 5, 513]  # fixed, where stream.onnx says batch, frames
    assert engine.stream_session.get_inputs()[0].shape == ["batch", 4, "frames", 513]
    rng = np.random.default_rng(1)
    real, imag = (rng.standard_normal((1, 4, 5, 513)).astype(np.float32) for _ in range(2))
    state = (0.1 * rng.standard_normal((1, engine.state_size))).astype(np.float32)
    feeds = {"real": real, "imag": imag, "state": state}
    for fixed, dynamic in zip(session.run(None, feeds), engine.stream_session.run(None, feeds)):
        np.testing.assert_allclose(fixed, dynamic, atol=1e-5)


def test_export_replaces_only_a_package_or_an_empty_folder(tiny_run, tiny_model_package, tmp_path, seld_cli):
    data = tmp_path / "mydata"
    data.mkdir()
    (data / "precious.txt").write_text("keep me")
    result = seld_cli("export", tiny_run, "--out", data)
    assert result.returncode == 1 and f"{data}: exists and is not a model package" in result.stderr
    assert (data / "precious.txt").read_text() == "keep me" and "Traceback" not in result.stderr
    (tmp_path / "afile").write_text("")
    result = seld_cli("export", tiny_run, "--out", tmp_path / "afile")
    assert result.returncode == 1 and "exists and is not a folder" in result.stderr and "Traceback" not in result.stderr
    import shutil

    shutil.copytree(tiny_model_package, tmp_path / "package")
    assert seld_cli("export", tiny_run, "--out", tmp_path / "package").returncode == 0  # a package is replaced


def _export(capsys, *arguments) -> tuple[int, str]:
    from seld.cli import cli

    capsys.readouterr()
    status = cli(["export", *map(str, arguments)])
    return status, capsys.readouterr().err


def test_the_package_states_its_own_epochs_figures(tiny_run, tmp_path, capsys):
    """The card and seld.json gave the best epoch's validation figures whichever epoch was exported
    (last.pt, or a killed run's last.pt); a run without validation named a training row as the best
    epoch; NaN went into seld.json as a bare NaN, which is no JSON."""
    from seld.train import load_checkpoint

    last = load_checkpoint(tiny_run / "last.pt")
    row = {key: value for key, value in last["history"][-1].items()}
    history = [{**row, "epoch": 1, "SELD": 0.1}, {**row, "epoch": 2, "SELD": 0.9, "AngE": float("nan")}]
    torch.save({**last, "epoch": 1, "history": history}, tmp_path / "second.pt")
    assert _export(capsys, tmp_path / "second.pt", "--out", tmp_path / "second")[0] == 0
    text = (tmp_path / "second" / "seld.json").read_text()
    info = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in seld.json"))
    assert info["metrics"]["validation"]["SELD"] == 0.9 and info["metrics"]["validation"]["AngE"] is None
    card = (tmp_path / "second" / "README.md").read_text()
    assert "- weights: those after epoch 2" in card and "- SELD: 0.900" in card and "- AngE: - (nothing detected)" in card
    unvalidated = [{key: value for key, value in r.items() if key == "epoch" or key == "train_loss"} for r in history]
    torch.save({**last, "epoch": 1, "history": unvalidated}, tmp_path / "unvalidated.pt")
    assert _export(capsys, tmp_path / "unvalidated.pt", "--out", tmp_path / "unvalidated")[0] == 0
    assert json.loads((tmp_path / "unvalidated" / "seld.json").read_text())["metrics"]["validation"] == {}
    assert "none recorded (the run had no validation split)" in (tmp_path / "unvalidated" / "README.md").read_text()


def test_checkpoints_that_are_not_a_runs_are_one_line_errors(tiny_run, tmp_path, capsys):
    from seld.train import load_checkpoint

    last = load_checkpoint(tiny_run / "last.pt")
    first_weight = next(name for name, value in last["model"].items() if value.is_floating_point()
                        and not name.startswith("normalization"))
    broken = {
        "tensor.pt": torch.zeros(3),
        "foreign.pt": {"model": last["model"]},  # another program's state dict
        "mismatch.pt": {**last, "model": {**last["model"], first_weight: torch.zeros(1)}},
        "nan.pt": {**last, "model": {**last["model"], first_weight: last["model"][first_weight] * float("nan")}},
    }
    messages = {"tensor.pt": "not a seld checkpoint (no training config and weights in it)",
                "foreign.pt": "not a seld checkpoint (no training config and weights in it)",
                "mismatch.pt": "not a seld checkpoint of this network", "nan.pt": "weights hold NaN or infinite values"}
    for name, content in broken.items():
        torch.save(content, tmp_path / name)
        status, err = _export(capsys, tmp_path / name, "--out", tmp_path / "out")
        assert status == 1 and f"{tmp_path / name}: {messages[name]}" in err and "Traceback" not in err, err
        assert not (tmp_path / "out").exists()


def test_averaging_refuses_another_runs_checkpoints(tiny_run, tmp_path, capsys):
    """Another seed's run was averaged in as if it were an epoch of this one; a checkpoint of the
    same epoch number was dropped without a word."""
    from seld.train import load_checkpoint

    last = load_checkpoint(tiny_run / "last.pt")
    torch.save({**last, "epoch": last["epoch"] - 1, "config": {**last["config"], "seed": last["config"]["seed"] + 1}},
               tmp_path / "seed.pt")
    status, err = _export(capsys, tiny_run / "last.pt", tmp_path / "seed.pt", "--out", tmp_path / "soup")
    assert status == 1 and "seed.pt: not an epoch of the run of" in err and "(seed differ)" in err
    moved = {name: value + 1 if value.is_floating_point() and not name.startswith("normalization") else value
             for name, value in last["model"].items()}
    torch.save({**last, "model": moved}, tmp_path / "same-epoch.pt")
    status, err = _export(capsys, tiny_run / "last.pt", tmp_path / "same-epoch.pt", "--out", tmp_path / "soup")
    assert status == 1 and f"same-epoch.pt: epoch {last['epoch'] + 1} again, with other weights" in err
    assert not (tmp_path / "soup").exists()


def test_out_as_a_link_as_dot_and_on_a_full_disk(tiny_run, tmp_path, capsys, monkeypatch):
    import safetensors.torch

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    status, err = _export(capsys, tiny_run, "--out", tmp_path / "link")
    assert status == 1 and f"{tmp_path / 'link'}: a symbolic link; give the folder it names" in err
    assert (tmp_path / "link").is_symlink() and list(tmp_path.glob(".link*")) == []
    monkeypatch.chdir(tmp_path / "real")
    assert _export(capsys, tiny_run, "--out", ".")[0] == 0  # staged beside the folder, not beside ""
    assert (tmp_path / "real" / "seld.json").is_file()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    status, err = _export(capsys, tiny_run, "--out", tmp_path / "full")
    assert status == 1 and f"{tmp_path / 'full'}: cannot write the package (No space left on device)" in err
    assert "Traceback" not in err and not (tmp_path / "full").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]  # no staging folder left


def test_a_training_run_given_as_a_model_says_to_export_it(tiny_run, tiny_model_package):
    with pytest.raises(SeldError, match="a training run, not a model package; export it first"):
        Engine(tiny_run, device="cpu")
    with pytest.raises(SeldError, match=f"a file; a model is the package folder that holds seld.json \\({tiny_model_package}\\)"):
        Engine(tiny_model_package / "seld.json", device="cpu")


def test_what_a_killed_export_left_goes_and_modes_follow_the_umask(tiny_run, tmp_path):
    (tmp_path / ".pkg.k1ll3d_0").mkdir()  # a staging folder of an export killed with SIGKILL
    (tmp_path / ".pkg.k1ll3d_0" / "model.onnx").write_bytes(b"half")
    (tmp_path / ".pkg.ab12cd34.replaced").mkdir()  # a package moved aside
    (tmp_path / ".pkg.notes").mkdir()  # not ours: left alone
    result = subprocess.run(["sh", "-c", 'umask 027 && exec "$0" -m seld export "$1" --out "$2"', sys.executable,
                             str(tiny_run), str(tmp_path / "pkg")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pkg.notes", "pkg"]
    # the modes a umask of 027 gives (they were 0755 and 0644 whatever the umask)
    assert (tmp_path / "pkg").stat().st_mode & 0o777 == 0o750
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "pkg").iterdir()} == {0o640}
