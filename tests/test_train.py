import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import encode_plane_wave, class_signal, tiny_dataset, write_scene
from seld import SeldError
from seld.arrays import FOA, TETRAHEDRAL
from seld.augment import channel_swaps
from seld.cli import cli
from seld.decode import OutputLayout


def test_features_stay_float32_under_mixed_precision():
    """Training on CUDA runs under float16 autocast, where spectral power overflows (NaN loss in the
    first epoch of a real run on an H200): the front end and normalization run in float32."""
    from seld.model import preset
    from seld.network import SeldNetwork
    from seld.spectrum import FeatureConfig

    network = SeldNetwork(FeatureConfig(), preset("tiny"), FOA).eval()
    features = []
    network.crnn.register_forward_pre_hook(lambda module, args: features.append(args[0]))
    audio = 0.5 * torch.randn(1, 4, 24_000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        network(audio)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            network(audio)
    assert features[1].dtype == torch.float32
    torch.testing.assert_close(features[1], features[0])


def test_tiny_run_writes_everything(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["preset"] == "tiny" and config["epochs"] == 2
    for name in ("last.pt", "best.pt", "metrics.csv"):
        assert (tiny_run / name).is_file()
    assert any((tiny_run / "tensorboard").iterdir())
    rows = list(csv.DictReader((tiny_run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "F", "AngE", "DistE", "RelDistE", "LR", "SELD"} <= set(rows[0])
    checkpoint = torch.load(tiny_run / "last.pt", weights_only=True)  # plain types only
    assert checkpoint["epoch"] == 1 and "normalization_mean" in "".join(checkpoint["model"])


def test_overrides_are_typed_and_checked(tmp_path):
    from seld.train import resolve_config

    config = resolve_config("mic", "tiny", None, ["epochs=1", "model.causal=false", "model.attention_window=0",
                                                   "batch_size=8"], str(tmp_path))
    assert config.epochs == 1 and config.batch_size == 8 and config.model.causal is False
    assert config.model.input_channels == 10  # fitted to the MIC front end
    with pytest.raises(SeldError, match="no field 'epoch'"):
        resolve_config("foa", "tiny", None, ["epoch=1"], str(tmp_path))
    with pytest.raises(SeldError, match="cannot read 'many' as int"):
        resolve_config("foa", "tiny", None, ["epochs=many"], str(tmp_path))


def test_config_file(tmp_path):
    from seld.train import resolve_config

    toml = tmp_path / "train.toml"
    toml.write_text('preset = "tiny"\nepochs = 7\n[model]\ngru_size = 32\n')
    config = resolve_config(None, None, str(toml), ["epochs=5"], str(tmp_path))
    assert config.preset == "tiny" and config.epochs == 5 and config.model.gru_size == 32


def state_of(run_dir):
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


def train_in_a_fresh_process(*arguments: str) -> None:
    result = subprocess.run([sys.executable, "-m", "seld", "train", *arguments], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_resume_after_kill_reaches_the_same_weights(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    arguments = ["--data", str(data), "--preset", "tiny", "epochs=4", "augment_mask=true"]
    # Both runs in fresh processes: float32 sums in this one can differ in the last bit after other
    # tests have used torch (seen once in a full run: normalization_mean differed).
    train_in_a_fresh_process("--out", str(tmp_path / "whole"), *arguments)

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "seld", "train", "--out", str(killed), *arguments],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "last.pt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed / "last.pt").exists()
    torch.load(killed / "last.pt", weights_only=True)  # whole, even if the kill came mid-write
    for name in ("last.pt", "metrics.csv"):  # what a kill mid-write leaves, whichever write it hit
        (killed / f".{name}.x8k2").write_bytes(b"half")
    train_in_a_fresh_process("--resume", str(killed))
    assert not [p for p in killed.iterdir() if p.name.startswith(".")], "a half-written file was left"

    whole, resumed = state_of(tmp_path / "whole"), state_of(killed)
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name


def test_resume_of_a_run_stopped_in_its_first_epoch_starts_it_again(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    run = tmp_path / "run"
    train_in_a_fresh_process("--data", str(data), "--out", str(run), "--preset", "tiny", "epochs=1")
    whole = state_of(run)
    for name in ("last.pt", "best.pt", "metrics.csv"):  # as a kill in epoch 1 leaves it: config.json only
        (run / name).unlink()
    train_in_a_fresh_process("--resume", str(run))
    resumed = state_of(run)
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)


def test_a_kill_between_last_pt_and_best_pt_is_repaired_on_resume(tiny_run, tmp_path, caplog):
    """last.pt is written first; when its epoch was the best and best.pt did not follow, resuming
    writes it. A resume on another number of torch threads says its weights will differ."""
    import logging
    import shutil

    from seld.train import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    last = load_checkpoint(run / "last.pt")
    history = [dict(row) for row in last["history"]]
    history[-1]["SELD"] = min(row["SELD"] for row in history) - 0.1  # the last epoch was the best
    save_checkpoint(run / "last.pt", {**last, "history": history, "threads": torch.get_num_threads() + 1})
    save_checkpoint(run / "best.pt", {**last, "epoch": last["epoch"] - 1})  # the kill came before best.pt
    with caplog.at_level(logging.INFO, logger="seld.train"):
        assert cli(["train", "--resume", str(run)]) == 0
    assert load_checkpoint(run / "best.pt")["epoch"] == last["epoch"]
    assert "its weights will differ slightly" in caplog.text


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli(["train", "--resume", str(tmp_path / "run")]) != 0
    assert f"--resume {tmp_path / 'run'}: no such folder (start a run with --out" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    assert cli(["train", "--resume", str(tmp_path / "run")]) != 0
    assert f"--resume {tmp_path / 'run'}: not a training run (no last.pt, no config.json)" in capsys.readouterr().err


@pytest.mark.parametrize("override,message", [
    ("batch_size=0", "batch_size 0: must be at least 1"),
    ("learning_rate=-1", "learning_rate -1.0: must be a positive number"),
    ("crop_seconds=nan", "crop_seconds nan: must be at least 0.1"),
    ("lr_schedule=step", "lr_schedule step: must be 'cosine' or 'constant'"),
    ("model.gru_size=-4", "gru_size -4: too small"),
    ("model.conv_kernel=2", "conv_kernel 2: must be odd"),
    ("model.dropout=1.5", "dropout 1.5: must be in [0, 1)"),
    ("device=tpu", "device tpu: must be auto, cpu, cuda or cuda:N"),
    ("classes=,", "classes : must be class names, none empty"),
    ("features.sample_rate=48000", "features.sample_rate 48000: must be 24000"),  # label frames are 100 ms
])
def test_a_bad_setting_is_one_line_before_the_run_folder_is_made(tmp_path, capsys, override, message):
    data = tiny_dataset(tmp_path / "data")
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny", override]) == 1
    err = capsys.readouterr().err
    assert f"seld train: error: command line: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides,message", [
    (["features.hop=240"], "features.hop 240 x model.pool_time [5, 1] = 1200 samples a label frame: must be 2400"),
    (["model.pool_time=[5,2]"], "features.hop 480 x model.pool_time [5, 2] = 4800 samples a label frame: must be 2400"),
    (["features.hop=240", "model.pool_time=[10,1]"], None),
    (["--config", "hop.toml", "model.pool_time=[10,1]"], None),  # one from a file, one from the command line
])
def test_label_frames_stay_100_ms(tmp_path, capsys, overrides, message):
    """Other products of hop and time pooling trained into a loss of mismatched shapes (a traceback
    mid-training), or exported a model of 50 ms frames."""
    from seld.train import resolve_config

    data = tiny_dataset(tmp_path / "data")
    (tmp_path / "hop.toml").write_text("[features]\nhop = 240\n")
    toml = str(tmp_path / "hop.toml") if "--config" in overrides else None
    fields = [o for o in overrides if "=" in o]
    if message is None:
        config = resolve_config("foa", "tiny", toml, fields, str(data))
        assert config.features.hop * np.prod(config.model.pool_time) == 2400
        return
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny", *overrides]) == 1
    err = capsys.readouterr().err
    assert f"seld train: error: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_dataset_that_is_not_there_fails_before_the_run_folder_is_made(tmp_path, capsys):
    assert cli(["train", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "run"), "--preset", "tiny"]) == 1
    assert f"{tmp_path / 'nodata'}: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_writes_again_the_logs_a_kill_cut_short(tiny_run, tmp_path):
    """A kill after last.pt but before metrics.csv and TensorBoard: resuming a finished run fills them in."""
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    rows = (run / "metrics.csv").read_text().splitlines()
    (run / "metrics.csv").write_text("\n".join(rows[:2]) + "\n")  # epoch 2 never reached it
    assert cli(["train", "--resume", str(run)]) == 0
    assert [int(r["epoch"]) for r in csv.DictReader((run / "metrics.csv").open())] == [1, 2]
    scalars = EventAccumulator(str(run / "tensorboard")).Reload()
    assert [event.step for event in scalars.Scalars("train_loss")] == [1, 2]


def test_refuses_to_overwrite_a_run(tiny_run, seld_cli):
    result = seld_cli("train", "--data", tiny_run, "--out", tiny_run, "--preset", "tiny")
    assert result.returncode == 1 and "--resume" in result.stderr and "Traceback" not in result.stderr


def test_diverging_loss_stops_with_a_clear_message(tmp_path, seld_cli):
    data = tiny_dataset(tmp_path / "data")
    result = seld_cli("train", "--data", data, "--out", tmp_path / "run", "--preset", "tiny", "epochs=3",
                      "learning_rate=1e30")
    assert result.returncode == 1, result.stderr
    assert "loss became" in result.stderr and "Traceback" not in result.stderr


def _one_line_error(result, *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(needle in lines[0] for needle in needles), lines[0]


@pytest.mark.parametrize("case", ["class out of range", "no distance", "other channels"])
def test_training_data_that_does_not_fit_the_model_stops_before_training(tmp_path, seld_cli, case):
    import soundfile

    data = tiny_dataset(tmp_path / "data")
    wav = data / "foa_dev" / "dev-train" / "fold1_room1_mix002.wav"
    csv_path = data / "metadata_dev" / "dev-train" / "fold1_room1_mix002.csv"
    if case == "class out of range":
        csv_path.write_text(csv_path.read_text().replace(",2,1,60,10,200", ",13,1,60,10,200", 1))
        needles = (str(csv_path), "class 13", "0..12")
    elif case == "no distance":
        csv_path.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in csv_path.read_text().splitlines()))
        needles = (str(csv_path), "no distance column")
    else:
        audio, rate = soundfile.read(wav)
        soundfile.write(wav, audio[:, :2], rate, subtype="FLOAT")
        needles = (str(wav), "2 channels", "needs 4")
    result = seld_cli("train", "--data", data, "--out", tmp_path / "run", "--preset", "tiny", "epochs=1")
    _one_line_error(result, *needles)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_recordings_too_short_for_a_crop(tmp_path, seld_cli):
    data = tiny_dataset(tmp_path / "data")  # 4 s recordings
    result = seld_cli("train", "--data", data, "--out", tmp_path / "run", "--preset", "tiny", "epochs=1",
                      "crop_seconds=10")
    _one_line_error(result, str(data), "no training crops", "shorter than half a crop (5 s)")


def test_nan_audio_in_a_loader_worker_is_one_line_naming_the_file(tmp_path, seld_cli):
    import soundfile

    data = tiny_dataset(tmp_path / "data")
    wav = data / "foa_dev" / "dev-train" / "fold1_room1_mix002.wav"
    audio, rate = soundfile.read(wav, dtype="float32")
    audio[24_000 + 7] = np.nan  # 1.000 s; past the one file the normalization statistics read
    soundfile.write(wav, audio, rate, subtype="FLOAT")
    result = seld_cli("train", "--data", data, "--out", tmp_path / "run", "--preset", "tiny", "epochs=1",
                      "workers=1", "normalization_files=1")
    _one_line_error(result, str(wav), "NaN or Inf samples (first at 1.000 s)")


def test_validation_scores_a_recordings_last_partial_frame(tmp_path):
    from seld.dataset import find_recordings
    from seld.model import preset
    from seld.network import SeldNetwork
    from seld.spectrum import FeatureConfig
    from seld.train import resolve_config, validate

    write_scene(tmp_path, "dev-val", "short", "foa", [(2, 60, 10, 2.0, 3.9, 4.05)], seconds=4.05)
    config = resolve_config("foa", "tiny", None, [], str(tmp_path))
    network = SeldNetwork(FeatureConfig(), preset("tiny"), FOA)
    frames = []
    forward = network.forward
    network.forward = lambda audio, **kwargs: frames.append(audio.shape[-1]) or forward(audio, **kwargs)
    validate(network, find_recordings(tmp_path, "foa", "dev-val"), config, torch.device("cpu"))
    assert frames == [41 * 2400]  # 4.05 s: 40 whole label frames and a part of the 41st, which has a label


def test_tiny_model_overfits_one_static_source(tmp_path):
    """A few seconds, one source of class 2 at azimuth 60, elevation 10: found, within 10 degrees."""
    for split in ("dev-train", "dev-val"):
        write_scene(tmp_path, split, "fold1_room1_mix001", "foa", [(2, 60, 10, 2.0, 0.0, 4.0)], seed=5)
    run = tmp_path / "run"
    assert cli(["train", "--data", str(tmp_path), "--out", str(run), "--preset", "tiny", "epochs=60",
                "augment_channel_swap=false", "augment_mask=false", "crop_seconds=2.0", "batch_size=2",
                "learning_rate=0.01", "model.distance=false"]) == 0
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    best = min(rows, key=lambda r: float(r["SELD"]))
    assert float(best["F"]) * 13 > 0.9  # macro over 13 classes: class 2 found
    assert float(best["LE"] if "LE" in best else best["AngE"]) < 10


@pytest.mark.parametrize("array", [FOA, TETRAHEDRAL], ids=["foa", "mic"])
def test_channel_swaps_rotate_signal_and_label_together(array):
    rng = np.random.default_rng(0)
    signal = class_signal(1, 24_000, rng)
    format_name = array.kind
    swaps = channel_swaps(array)
    assert len(swaps) == (16 if format_name == "foa" else 8)
    for swap in swaps:
        azimuth, elevation = swap.apply_directions(np.array(60.0), np.array(20.0))
        swapped = swap.apply_audio(encode_plane_wave(signal, 60, 20, format_name))
        expected = encode_plane_wave(signal, float(azimuth), float(elevation), format_name)
        assert np.abs(swapped - expected).max() < 1e-3
        if format_name == "foa":  # the intensity vector of the swapped audio points at the new label
            w, y, z, x = swapped
            vector = np.array([np.mean(w * x), np.mean(w * y), np.mean(w * z)])
            found_azimuth = np.degrees(np.arctan2(vector[1], vector[0]))
            found_elevation = np.degrees(np.arctan2(vector[2], np.hypot(vector[0], vector[1])))
            assert abs((found_azimuth - azimuth + 180) % 360 - 180) < 1 and abs(found_elevation - elevation) < 1


def test_distributed_data_parallel_through_torchrun(tmp_path):
    """Two CPU processes (gloo) through the standard launcher: rank 0 keeps the run."""
    data = tiny_dataset(tmp_path / "data")  # 4 crops an epoch: 2 per rank
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "seld", "train", *args],
                              capture_output=True, text=True, timeout=300)

    # A batch larger than a rank's share of the crops but not than all of them: each rank still
    # trains (drop_last was decided on all the crops: no step at all, train_loss 0).
    result = run("--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny", "epochs=2", "batch_size=3",
                 f"feature_cache={tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr[-2000:]
    # Each rank computes the features of its share of the 2 training files, once.
    assert result.stderr.count(": 1 files computed, 0 reused") == 2, result.stderr[-2000:]
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2
    assert result.stdout.count("trained 2 epochs") == 1
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 2 and all(float(row["train_loss"]) > 0 for row in rows)
    result = run("--resume", str(tmp_path / "run"), "epochs=3")  # rank 1 printed the checkpoint's old epoch count
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("trained 3 epochs") == 1 and "trained 2" not in result.stdout


def test_dataset_json_sets_classes_and_distance(tmp_path):
    from seld.train import resolve_config

    (tmp_path / "dataset.json").write_text(json.dumps({"classes": ["dog", "cat", "bird"], "distance": False}))
    config = resolve_config("foa", "tiny", None, [], str(tmp_path))
    assert config.classes == ("dog", "cat", "bird") and config.model.num_classes == 3
    assert config.model.distance is False
    config = resolve_config("foa", "tiny", None, ["model.distance=true"], str(tmp_path))
    assert config.model.distance is True  # the command line has the last word


def test_feature_cache_gives_the_features_of_audio_crops(tmp_path, caplog):
    """Cached crops equal the front end's features of the same audio crops (past the first
    frames, which an audio crop computes with zeros before it), and a second run reuses them."""
    import logging

    from seld.config import to_dict
    from seld.dataset import CropDataset, split_recordings
    from seld.feature_cache import cache_features, cache_folder
    from seld.train import network_from_checkpoint

    data = tiny_dataset(tmp_path / "data")
    cache = tmp_path / "cache"
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny", "epochs=1",
                f"feature_cache={cache}"]) == 0
    files = sorted(cache.rglob("*.npy"))
    assert [f.name.split(".")[0] for f in files] == ["fold1_room1_mix001", "fold1_room1_mix002"]

    network, config = network_from_checkpoint(torch.load(tmp_path / "run" / "last.pt", weights_only=True))
    recordings = split_recordings(data, "foa")[0]
    with caplog.at_level(logging.INFO, logger="seld.feature_cache"):
        folder = cache_folder(cache, {"data": str(data.resolve()), **to_dict(config.features)}, "foa", 20)
        paths = cache_features(network, recordings, folder, 20, torch.device("cpu"))
    assert "0 files computed, 2 reused" in caplog.text
    # A damaged file (truncated, overwritten, a folder) is computed again: it failed mid-training.
    good = paths[0].read_bytes()
    for damage in (lambda path: path.write_bytes(good[: len(good) // 2]), lambda path: path.write_bytes(b"junk"),
                   lambda path: np.save(path.open("wb"), np.zeros((7, 3, 64), np.float16)),
                   lambda path: path.unlink() or path.mkdir()):
        damage(paths[0])
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="seld.feature_cache"):
            assert cache_features(network, recordings, folder, 20, torch.device("cpu")) == paths
        assert "damaged (not the features it should hold); computing it again" in caplog.text
        assert "1 files computed, 1 reused" in caplog.text and paths[0].read_bytes() == good
    cached = CropDataset(recordings, config.model.layout, 20, 4, feature_files=paths)
    audio = CropDataset(recordings, config.model.layout, 20, 4)
    for dataset in (cached, audio):
        dataset.set_epoch(seed=0, epoch=3)
    for item in range(len(cached)):
        features, targets = cached[item]
        crop, audio_targets = audio[item]
        expected = network.features(crop[None])[0]
        assert features.shape == expected.shape == (7, 100, 64)
        torch.testing.assert_close(features[:, 2:], expected[:, 2:], atol=0.02, rtol=0.002)
        torch.testing.assert_close(targets, audio_targets)

    # The dataset made again into the same folder, longer: its features are computed again.
    write_scene(data, "dev-train", "fold1_room1_mix002", "foa", [(0, 90, 0, 1.0, 0.5, 5.5)], seconds=6.0, seed=9)
    recordings = split_recordings(data, "foa")[0]
    # Temporaries of runs killed while writing: an old one goes; a fresh one may be another run's.
    killed, writing = (paths[1].parent / f".{paths[1].name}.{tag}.tmp" for tag in ("k1ll3d", "wr1t1n"))
    for temporary in (killed, writing):
        temporary.write_bytes(b"half")
    os.utime(killed, (time.time() - 7200, time.time() - 7200))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="seld.feature_cache"):
        paths = cache_features(network, recordings, folder, 20, torch.device("cpu"))
    assert "1 files computed, 1 reused" in caplog.text
    assert sorted(cache.rglob("*.npy")) == sorted(paths)  # the stale file is gone
    assert not killed.exists() and writing.exists()
    assert np.load(paths[1]).shape[1] == 5 * (recordings[1].label_frames + 20)


def test_recipe_combines_datasets_for_training_only(tmp_path):
    """The recipe's last stage: the extra scenes become training splits; validation stays the first dataset's."""
    from seld.data_prep.recipe import combine_datasets
    from seld.dataset import split_recordings

    first, more = tiny_dataset(tmp_path / "first"), tiny_dataset(tmp_path / "more")
    (first / "dataset.json").write_text(json.dumps({"seed": 7}))
    (more / "dataset.json").write_text(json.dumps({"seed": 8}))
    combined = combine_datasets(first, more, tmp_path / "all")
    assert combine_datasets(first, more, tmp_path / "all") == combined  # a rerun finds its links
    train, validation = split_recordings(combined, "foa")
    assert [r.audio_path.resolve() for r in validation] == [r.audio_path.resolve() for r in split_recordings(first, "foa")[1]]
    assert len(train) == 2 + 3  # the first dataset's dev-train, and all of the other's
    assert {r.audio_path.parent.name for r in train} == {"dev-train", "dev-train-s8-train", "dev-train-s8-val"}
    assert not (combined / "foa_dev" / "dev-test").exists()  # no links to splits that are not there
    assert all(r.metadata_path.is_file() for r in train)


def test_init_from_starts_a_mic_run_from_foa_weights(tiny_run, tmp_path):
    """Warm start across formats: the CRNN is copied, the first convolution keeps the spectra's inputs only."""
    from seld.network import SeldNetwork
    from seld.train import load_checkpoint, resolve_config, warm_start

    source = load_checkpoint(tiny_run)
    config = resolve_config("mic", "tiny", None, [], str(tmp_path))
    network = SeldNetwork(config.features, config.model, TETRAHEDRAL)
    own_front_end = {k: v.clone() for k, v in network.state_dict().items() if not k.startswith("crnn.")}
    warm_start(network, config.classes, source, str(tiny_run))

    state = network.state_dict()
    for name, value in source["model"].items():
        if name.startswith("crnn.") and name != "crnn.blocks.0.conv.weight":
            assert torch.equal(state[name], value), name
    first = state["crnn.blocks.0.conv.weight"]  # 10 MIC inputs: 4 log-mel, 6 GCC; FOA: 4 log-mel, 3 intensity
    assert torch.equal(first[:, :4], source["model"]["crnn.blocks.0.conv.weight"][:, :4])
    assert not first[:, 4:].any()
    for name, value in own_front_end.items():  # normalization and front end stay this run's own
        assert torch.equal(state[name], value), name

    other = resolve_config("mic", "tiny", None, ["model.gru_size=8"], str(tmp_path))
    with pytest.raises(SeldError, match="same architecture"):
        warm_start(SeldNetwork(other.features, other.model, TETRAHEDRAL), other.classes, source, "foa run")


def test_init_from_maps_the_output_layer_by_class_name_track_and_axis(tiny_run, tmp_path):
    """Fine-tuning on data of one's own: classes in another order or spelling, a few of them only,
    no distance column (the 2023 format): the output rows that mean the same are copied."""
    from seld.network import SeldNetwork
    from seld.train import load_checkpoint, resolve_config, warm_start

    source = load_checkpoint(tiny_run)
    theirs_classes = source["config"]["classes"]
    theirs_layout = OutputLayout.of(source["config"]["model"])
    assert theirs_layout.distance
    classes = ("knock", "a class of my own", theirs_classes[0].replace("_", " "))  # 'female speech'
    config = resolve_config("foa", "tiny", None, ["model.distance=false", f"classes={','.join(classes)}"],
                            str(tmp_path))
    network = SeldNetwork(config.features, config.model, FOA)
    fresh = network.state_dict()["crnn.head.weight"].clone()
    warm_start(network, config.classes, source, "foa run")
    mine, theirs = network.state_dict()["crnn.head.weight"], source["model"]["crnn.head.weight"]
    layout = config.model.layout
    assert mine.shape[0] == layout.size == theirs_layout.tracks * 3 * 3
    for track in range(layout.tracks):
        for axis in range(3):
            def row(index, of=layout):
                return (track * of.axes + axis) * of.num_classes + index
            assert torch.equal(mine[row(0)], theirs[row(theirs_classes.index("knock"), theirs_layout)])
            assert torch.equal(mine[row(2)], theirs[row(0, theirs_layout)])
            assert torch.equal(mine[row(1)], fresh[row(1)])  # a class it has not seen: left as initialized


def test_init_from_through_the_command_line(tiny_run, tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data", "mic")
    run = tmp_path / "mic"
    assert cli(["train", "--data", str(data), "--out", str(run), "--format", "mic", "--preset", "tiny", "epochs=1",
                f"init_from={tiny_run}"]) == 0
    assert json.loads((run / "config.json").read_text())["init_from"] == str(tiny_run)
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "bad"), "--format", "mic", "--preset", "tiny",
                "epochs=1", f"init_from={tmp_path / 'nowhere'}"]) == 1
    assert "nowhere: no checkpoint" in capsys.readouterr().err


def test_layouts_that_do_not_fit_say_what_to_do(tmp_path, capsys):
    """A TAU-NIGENS download (flat fold files), audio at 48 kHz, a test split only: one line each."""
    import soundfile

    flat = tmp_path / "flat" / "foa_dev"
    flat.mkdir(parents=True)
    soundfile.write(flat / "fold1_room1_mix001.wav", np.zeros((2400, 4), np.float32), 24_000)
    (flat / "fold1").mkdir()
    assert cli(["train", "--data", str(tmp_path / "flat"), "--out", str(tmp_path / "r1"), "--preset", "tiny"]) == 1
    error = capsys.readouterr().err
    assert "no recordings in foa_dev/dev-train* (its folders: fold1)" in error
    assert "python -m seld.data_prep.convert SRC DST" in error

    data = tiny_dataset(tmp_path / "data48")
    wav = next((data / "foa_dev" / "dev-train").glob("*.wav"))
    audio, _ = soundfile.read(wav)
    soundfile.write(wav, np.repeat(audio, 2, axis=0), 48_000)
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "r2"), "--preset", "tiny"]) == 1
    assert "sample rate 48000 Hz, training needs 24000 Hz (resample the dataset first" in capsys.readouterr().err


def test_choosing_the_best_epoch_on_dev_test_is_said(tmp_path, caplog):
    import logging

    data = tiny_dataset(tmp_path / "data")
    for folder in ("foa_dev", "metadata_dev"):
        (data / folder / "dev-val").rename(data / folder / "dev-test-sony")
    with caplog.at_level(logging.INFO, logger="seld.train"):
        assert cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny", "epochs=1"]) == 0
    assert "validating on 1 (dev-test-sony)" in caplog.text
    assert "no dev-val* split: the best epoch is chosen on dev-test*" in caplog.text


def test_init_from_a_sed_doa_run_needs_its_classes_in_order(tmp_path):
    from seld.config import to_dict
    from seld.network import SeldNetwork
    from seld.train import resolve_config, warm_start

    def run(classes):
        config = resolve_config("foa", "tiny", None, ["model.output_format=sed_doa", "model.distance=false",
                                                      f"classes={','.join(classes)}"], str(tmp_path))
        return config, SeldNetwork(config.features, config.model, FOA)

    source_config, source = run(("dog", "cat", "bird"))
    checkpoint = {"config": to_dict(source_config), "model": source.state_dict()}
    config, network = run(("dog", "cat", "bird"))
    warm_start(network, config.classes, checkpoint, "sed run")
    assert torch.equal(network.state_dict()["crnn.sed_head.weight"], source.state_dict()["crnn.sed_head.weight"])
    config, network = run(("bird", "cat", "dog"))
    with pytest.raises(SeldError, match="SED-DOA output needs a run with the same classes, in the same order"):
        warm_start(network, config.classes, checkpoint, "sed run")


def test_a_run_with_a_relative_data_path_resumes_and_averages_from_another_folder(tmp_path, monkeypatch):
    tiny_dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert cli(["train", "--data", "data", "--out", "run", "--preset", "tiny", "epochs=1", "feature_cache=cache"]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["data"], config["feature_cache"]) == (str(tmp_path / "data"), str(tmp_path / "cache"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert cli(["train", "--resume", "../run", "epochs=2"]) == 0
    assert cli(["export", "../run/best.pt", str(tmp_path / "run" / "last.pt"), "--out", "soup"]) == 0


def test_init_from_the_shipped_model_on_a_dataset_without_dataset_json(tmp_path, caplog):
    """The README's fine-tuning line on data laid out as STARSS23 is downloaded (no dataset.json):
    the default class names are the shipped model's, so everything is copied."""
    import logging

    data = tiny_dataset(tmp_path / "data")
    with caplog.at_level(logging.INFO, logger="seld.train"):
        assert cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "default", "epochs=1",
                    "batch_size=2", "threads=1", "workers=0", "init_from=foa"]) == 0
    assert "output layer: 156 of 156 outputs from it" in caplog.text
    assert "no dev-val* split: the best epoch is chosen on dev-test*" not in caplog.text  # it has dev-val
    assert cli(["export", str(tmp_path / "run"), "--out", str(tmp_path / "model")]) == 0
    card = (tmp_path / "model" / "README.md").read_text()
    assert "started from the weights of `foa` (init_from)" in card
    assert "- F: " in card and "learning_rate" not in card and "seconds" not in card


def test_mic_card_compares_the_model_with_the_foa_one(tiny_model_package, tmp_path):
    """The MIC model's target is relative: its card sets its F beside the FOA model's, test set by test set."""
    import shutil

    from seld.data_prep.recipe import write_card

    model = tmp_path / "model"
    shutil.copytree(tiny_model_package, model)
    info = json.loads((model / "seld.json").read_text())
    (model / "seld.json").write_text(json.dumps({**info, "format": "mic"}))

    def micro(f):
        return {"2024 micro": {"ER": 0.6, "F": f, "AngE": 18.0, "DistE": 0.6, "RelDistE": 0.4, "LR": 0.5, "SELD": 0.37}}

    training = {"data_description": "scenes", "training_description": "runs", "limits": "synthetic only"}
    write_card(model, {"dev-test": micro(0.395), "unseen": micro(0.331)}, {"dev-test": "a", "unseen": "b"}, training,
               {"dev-test": micro(0.425), "unseen": micro(0.371)})
    card = (model / "README.md").read_text()
    assert "MIC / FOA: dev-test 0.395 / 0.425 (93%); unseen 0.331 / 0.371 (89%): not met." in card
    write_card(model, {"dev-test": micro(0.40), "unseen": micro(0.35)}, {"dev-test": "a", "unseen": "b"}, training,
               {"dev-test": micro(0.425), "unseen": micro(0.371)})
    assert "(94%); unseen 0.350 / 0.371 (94%): met." in (model / "README.md").read_text()


def test_card_names_the_classes_the_model_does_not_detect(tiny_model_package, tmp_path):
    import shutil

    from seld.data_prep.recipe import write_card

    model = tmp_path / "model"
    shutil.copytree(tiny_model_package, model)

    def scores(door_f, bell_angle):
        classwise = {"bell": {"F": 0.44, "AngE": bell_angle, "LR": 0.69},
                     "door": {"F": door_f, "AngE": None, "LR": 0.0}}
        return {"2024 macro": {"ER": 0.6, "F": 0.3, "AngE": 17.0, "DistE": 0.6, "RelDistE": 0.4, "LR": 0.5,
                               "SELD": 0.48, "classwise": classwise}}

    training = {"data_description": "scenes", "training_description": "runs", "limits": "synthetic only"}
    write_card(model, {"dev-test": scores(0.0, 7.25), "unseen": scores(0.05, 17.9)}, {"dev-test": "a", "unseen": "b"},
               training)
    card = (model / "README.md").read_text()
    assert "| class | dev-test F | dev-test AngE | dev-test LR | unseen F | unseen AngE | unseen LR |" in card
    assert "| bell | 0.44 | 7.2 | 0.69 | 0.44 | 17.9 | 0.69 |" in card
    assert "| door | 0.00 | - | 0.00 | 0.05 | - | 0.00 |" in card
    assert "Not detected (F below 0.1 on every test set): door." in card
    assert json.loads((model / "seld.json").read_text())["metrics"]["test"]["unseen"]["2024 macro"]["classwise"][
        "door"]["F"] == 0.05
    write_card(model, {"dev-test": scores(0.0, 7.25), "unseen": scores(0.12, 17.9)}, {"dev-test": "a", "unseen": "b"},
               training)
    assert "Not detected" not in (model / "README.md").read_text()


def _two_epoch_run(run, seconds_each):
    """A run folder as the card reads it: an FOA config and two epochs of `seconds_each`."""
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": "foa"}))
    (run / "metrics.csv").write_text(f"epoch,learning_rate,seconds\n1,0.0003,{seconds_each}\n2,0.0002,{seconds_each}\n")
    return run


def _training(description, hours, epochs):
    """describe_training's dict as the card's later describers receive it."""
    return {"data_description": "Scenes.", "training_description": description, "compute_hours": hours,
            "epochs_trained": epochs, "device": "2-core CPU", "limits": "synthetic only"}


def test_card_adds_the_tuning_run_to_the_training(tmp_path):
    """The recipe's last run (tuning on more scenes) is told after the runs before it, its hours added."""
    from seld.data_prep.recipe import describe_tuning

    run = _two_epoch_run(tmp_path / "foa_tuned", 1800)
    before = _training("Two runs. First A. Then this model's run, B. Both: AdamW.", 5.5, 15)
    training = describe_tuning(before, run)
    assert training["compute_hours"] == 6.5 and training["epochs_trained"] == 2
    assert training["data_description"].startswith("Scenes. Last, `seld synth --format both --minutes 240")
    assert "--seed 9" in training["data_description"]
    assert training["training_description"].startswith(
        "Three runs. First A. Then the final run (FINAL_RUN), B. Each: AdamW. Last, this model's run tuned FINAL_RUN: "
        "`seld train --format foa --preset default batch_size=8 ")
    assert "init_from=FINAL_RUN/best.pt` on DATA_ALL3, from its best epoch: 2 epochs, 1.0 h" in training[
        "training_description"]
    assert training["limits"] == "synthetic only" and before["compute_hours"] == 5.5


def test_card_adds_the_second_tuning_run_to_the_training(tmp_path):
    """The run tuned once more is told last; the total hours move to the end."""
    from seld.data_prep.recipe import describe_retuning

    run = _two_epoch_run(tmp_path / "foa_retuned", 900)
    before = _training("Three runs. First A. Then B. Last, this model's run tuned FINAL_RUN: `x` on DATA_ALL3, 0.6 h; "
                       "6.2 h of training steps in all.", 6.2, 10)
    training = describe_retuning(before, run)
    assert training["compute_hours"] == 6.7 and training["epochs_trained"] == 2
    description = training["training_description"]
    assert description.startswith("Four runs. First A. Then B. Then a run (TUNED_RUN) tuned FINAL_RUN: `x` on "
                                  "DATA_ALL3, 0.6 h. Last, this model's run tuned TUNED_RUN once more")
    assert "init_from=TUNED_RUN/best.pt` on DATA_ALL3, from its best epoch: 2 epochs, 0.5 h" in description
    assert description.endswith("6.7 h of training steps in all.") and description.count("in all") == 1


def test_card_adds_the_widening_runs_to_the_training(tmp_path):
    """The runs on DATA_ALL4, DATA_ALL5 and DATA_ALL6 are told last, one after the other, each from
    the run before it; their data and hours are added."""
    from seld.data_prep.recipe import describe_widening

    before = _training("Four runs. First A. Then B. Last, this model's run tuned TUNED_RUN once more on the same "
                       "scenes: `x`, 0.8 h; 7.1 h of training steps in all.", 7.1, 12)
    training = describe_widening(before, _two_epoch_run(tmp_path / "foa_all4", 1080), 4)
    assert training["compute_hours"] == 7.7 and training["epochs_trained"] == 2
    assert training["data_description"].startswith("Scenes. Then `seld synth --format both")
    assert "--seed 10" in training["data_description"] and "(DATA_ALL4)" in training["data_description"]
    description = training["training_description"]
    assert description.startswith("Five runs. First A. Then B. Then a run (RETUNED_RUN) tuned TUNED_RUN once more "
                                  "on the same scenes: `x`, 0.8 h. Last, this model's run trained RETUNED_RUN")
    assert "init_from=RETUNED_RUN/best.pt` on DATA_ALL4, from its best epoch: 2 epochs, 0.6 h" in description
    assert description.endswith("7.7 h of training steps in all.") and description.count("in all") == 1

    training = describe_widening(training, _two_epoch_run(tmp_path / "foa_all5", 900), 5)
    assert training["compute_hours"] == 8.2
    assert "--seed 11" in training["data_description"] and training["data_description"].endswith(
        "from a fifth seed in 24 more rooms (DATA_ALL5).")
    description = training["training_description"]
    assert description.startswith("Six runs. First A. Then B. Then a run (RETUNED_RUN) tuned TUNED_RUN once more")
    assert ("Then a run (ALL4_RUN) trained RETUNED_RUN on still more scenes: `seld train --format foa --preset default "
            "batch_size=8 epochs=8") in description
    assert ("on DATA_ALL4, from its best epoch: 2 epochs, 0.6 h, the best by SELD on `dev-val` kept. Last, this "
            "model's run trained ALL4_RUN") in description
    assert "init_from=ALL4_RUN/best.pt` on DATA_ALL5, from its best epoch: 2 epochs, 0.5 h" in description
    assert description.endswith("8.2 h of training steps in all.") and description.count("in all") == 1

    training = describe_widening(training, _two_epoch_run(tmp_path / "foa_all6", 900), 6)
    assert "--seed 12" in training["data_description"] and training["data_description"].endswith(
        "from a sixth seed in 24 more rooms (DATA_ALL6).")
    description = training["training_description"]
    assert description.startswith("Seven runs. First A.") and "Then a run (ALL5_RUN) trained ALL4_RUN" in description
    assert ("init_from=ALL5_RUN/best.pt` on DATA_ALL6, from its best epoch: 2 epochs, 0.5 h, the best by SELD on "
            "`dev-val` kept; 8.7 h of training steps in all.") in description
    assert "epochs=5 learning_rate=0.0003 threads=1" in description


def test_card_tells_which_epochs_the_weights_average(tmp_path):
    from seld.data_prep.recipe import describe_averaging

    before = _training("Seven runs. First A; 8.7 h in all.", 8.7, 5)
    for record, told in (({"averaged_epochs": [2, 5], "epochs_trained": 5},
                          "This package's weights are the mean of that last run's best and last epochs' weights "
                          "(epochs 2 and 5; `seld export RUN/best.pt RUN/last.pt`)."),
                         ({"epochs_trained": 5},
                          "That last run's best epoch was its last (epoch 5): this package's weights are that epoch's.")):
        (tmp_path / "seld.json").write_text(json.dumps({"training": record}))
        training = describe_averaging(before, tmp_path)
        assert training["training_description"] == "Seven runs. First A; 8.7 h in all. " + told


def test_init_from_a_model_package_fine_tunes_an_exported_model(tiny_run, tiny_model_package, tmp_path, capsys):
    """A model package (an exported run, or "foa" / "mic", the shipped ones) starts a run as its run would."""
    from seld.network import SeldNetwork
    from seld.train import load_checkpoint, load_initial_weights, resolve_config, warm_start

    from_package, from_run = load_initial_weights(str(tiny_model_package)), load_checkpoint(tiny_run)
    config = resolve_config("foa", "tiny", None, [], str(tmp_path))
    networks = []
    for source in (from_package, from_run):
        network = SeldNetwork(config.features, config.model, FOA)
        warm_start(network, config.classes, source, "source")
        networks.append(network.state_dict())
    for name, value in networks[1].items():
        if name.startswith("crnn."):
            assert torch.equal(networks[0][name], value), name
    assert load_initial_weights("foa")["config"]["format"] == "foa"  # the shipped default model
    with pytest.raises(SeldError, match="init_from needs (a run with )?the same"):  # the tiny run is not the default model
        warm_start(SeldNetwork(config.features, config.model, FOA), config.classes, load_initial_weights("mic"), "mic")

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "seld.json").write_text((tiny_model_package / "seld.json").read_text())
    (broken / "weights.safetensors").write_bytes(b"not weights")
    data = tiny_dataset(tmp_path / "data")
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny", "epochs=1",
                f"init_from={broken}"]) == 1
    assert "broken: not a readable model package" in capsys.readouterr().err


def test_a_resume_keeps_the_settings_its_last_start_was_given(tiny_run, tmp_path, capsys):
    """`--resume RUN epochs=N` killed before its next epoch was saved: config.json had N, last.pt
    the old count, and the next plain resume trained to the old count."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "epochs": 3}))  # the killed resume's
    assert cli(["train", "--resume", str(run)]) == 0
    assert "trained 3 epochs" in capsys.readouterr().out


@pytest.mark.parametrize("override,changed", [("model.num_tracks=1", "model.num_tracks"),
                                              ("features.n_mels=32", "features.n_mels"),
                                              ("classes=a,b", "classes")])
def test_a_resume_that_would_change_the_network_is_refused_before_anything_is_written(tiny_run, tmp_path, capsys,
                                                                                       override, changed):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "config.json").read_text()
    assert cli(["train", "--resume", str(run), override]) == 1
    err = capsys.readouterr().err
    assert f"--resume {run}: {changed}" in err and f"init_from={run}" in err and "Traceback" not in err
    assert (run / "config.json").read_text() == before


def test_a_resume_refuses_new_data_options_and_a_validation_split_that_came_or_went(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert cli(["train", "--resume", str(run), "--data", str(tmp_path)]) == 1
    assert "--resume goes on with the run's own settings" in capsys.readouterr().err
    data = tiny_dataset(tmp_path / "data")
    shutil.rmtree(data / "foa_dev" / "dev-val")
    assert cli(["train", "--resume", str(run), f"data={data}", "epochs=3"]) == 1
    assert "the run validated on a split (dev-val*, else dev-test*)" in capsys.readouterr().err


def test_bad_places_and_files_are_one_line(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "latin1.toml").write_bytes(b"epochs = 1 # caf\xe9\n")
    (tmp_path / "list.toml").write_text('format = ["foa"]\n')
    for args, said in ((["--out", str(tmp_path / "afile")], f"--out {tmp_path / 'afile'}: a file, not a folder"),
                       (["--out", str(tmp_path / "afile" / "sub")], "cannot write there"),
                       (["--out", str(tmp_path / "run"), f"feature_cache={tmp_path / 'afile'}"], "cannot write there"),
                       (["--out", str(tmp_path / "run"), "--config", str(tmp_path / "latin1.toml")], "not valid TOML"),
                       (["--out", str(tmp_path / "run"), "--config", str(tmp_path / "list.toml")],
                        "format ['foa']: expected one of foa, mic")):
        assert cli(["train", "--data", str(data), "--preset", "tiny", *args]) == 1
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, err
    (data / "dataset.json").write_text("[1, 2]")
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "run2"), "--preset", "tiny"]) == 1
    assert "dataset.json: not a dataset description (a JSON object)" in capsys.readouterr().err


def test_a_config_file_is_read_strictly_and_its_paths_are_relative_to_it(tmp_path, capsys):
    from seld.train import resolve_config

    data = tiny_dataset(tmp_path / "data")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "run.toml").write_text('data = "../data"\ninit_from = "foa"\nepochs = 2\n')
    config = resolve_config(None, "tiny", str(tmp_path / "configs" / "run.toml"), [], None)
    assert config.data == str(data.resolve()) and config.init_from == "foa"
    for text, said in (("learning_rate = true", "learning_rate: cannot read True as float"),
                       ("augment_mask = 5", "augment_mask: cannot read 5 as bool"),
                       ("classes = {a = 1}", "classes: cannot read a table as a list")):
        (tmp_path / "bad.toml").write_text(text + "\n")
        assert cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny",
                    "--config", str(tmp_path / "bad.toml")]) == 1
        assert said in capsys.readouterr().err
    (data / "dataset.json").write_text('{"classes": "bell"}')
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny"]) == 1
    assert "dataset.json: classes must be a list of names" in capsys.readouterr().err


def test_sigterm_to_the_group_with_loader_workers_ends_as_ctrl_c(tmp_path):
    """`timeout`, systemd and Slurm signal the whole group: the DataLoader workers died of it under
    the main process, which then failed ('DataLoader worker killed by signal', exit 1), or its
    interrupt was dropped inside logging's at-fork hook and it trained on."""
    data = tiny_dataset(tmp_path / "data")
    for attempt in range(2):
        run = tmp_path / f"run{attempt}"
        process = subprocess.Popen([sys.executable, "-m", "seld", "train", "--data", str(data), "--out", str(run),
                                    "--preset", "tiny", "epochs=1000", "workers=2"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        deadline = time.time() + 120
        while not (run / "last.pt").exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.3 * attempt)  # once right after an epoch's end (the workers are forked again), once later
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 130, stderr[-2000:]
        assert stderr.rstrip().endswith("seld train: interrupted") and "Traceback" not in stderr, stderr[-2000:]


def test_init_from_widens_only_the_first_convolution(tiny_run, tmp_path, capsys):
    """Other mel bands change the GRU's inputs: 4 of its 32 input weights were copied, the rest
    zeroed, and training went on as if it had the source's detector."""
    data = tiny_dataset(tmp_path / "data")
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny", "epochs=1",
                "features.n_mels=128", "features.gcc_lags=128", f"init_from={tiny_run}"]) == 1
    err = capsys.readouterr().err
    assert "init_from needs the same architecture; crnn.gru.weight_ih_l0 is" in err and "Traceback" not in err


def test_dataset_files_in_any_case_without_hidden_ones_and_an_output_folder_of_other_files(tmp_path, capsys):
    """X.WAV was passed over (a dataset of them: 'no recordings'); macOS's ._X.wav stopped the run
    ('no metadata file'); another program's config.json in --out was overwritten."""
    from seld.dataset import find_recordings

    data = tiny_dataset(tmp_path / "data")
    wav = next((data / "foa_dev" / "dev-train").glob("*.wav"))
    wav.rename(wav.with_suffix(".WAV"))
    (data / "foa_dev" / "dev-train" / f"._{wav.name}").write_bytes(b"AppleDouble")
    names = [recording.audio_path.name for recording in find_recordings(data, "foa", "dev-train")]
    assert wav.with_suffix(".WAV").name in names and len(names) == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"mine": 1}')
    assert cli(["train", "--data", str(data), "--out", str(foreign), "--preset", "tiny", "epochs=1"]) == 1
    assert f"--out {foreign}: its config.json is not a seld run's" in capsys.readouterr().err
    assert (foreign / "config.json").read_text() == '{"mine": 1}'
    logged = tmp_path / "logged"  # `... 2>&1 | tee runs/x/train.log`: the log is there first
    logged.mkdir()
    (logged / "train.log").write_text("")
    assert cli(["train", "--data", str(data), "--out", str(logged), "--preset", "tiny", "epochs=1"]) == 0
    (logged / "last.pt").unlink()  # as killed in its first epoch: its config.json is seld's, started again
    (logged / "best.pt").unlink()
    assert cli(["train", "--data", str(data), "--out", str(logged), "--preset", "tiny", "epochs=1"]) == 0


def test_a_validation_split_without_events_does_not_pick_the_best_epoch(tmp_path, caplog):
    data = tiny_dataset(tmp_path / "data")
    for csv_path in (data / "metadata_dev" / "dev-val").glob("*.csv"):
        csv_path.write_text("")
    with caplog.at_level("WARNING"):
        assert cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny", "epochs=1"]) == 0
    assert "validation split's metadata holds no events: not validated" in caplog.text
    assert "SELD" not in (tmp_path / "run" / "metrics.csv").read_text()


def test_normalization_statistics_come_from_files_spread_over_the_training_set(monkeypatch):
    """The first 50 files were taken: all of STARSS23's sony part, or the first rooms of a synth set."""
    import seld.train
    from seld.dataset import Recording
    from seld.model import preset
    from seld.network import SeldNetwork
    from seld.spectrum import FeatureConfig

    read = []

    def fake_read(path, channels=None):
        read.append(path.name)
        return np.zeros((channels, 24_000), np.float32), 24_000

    monkeypatch.setattr(seld.train, "read_audio", fake_read)
    network = SeldNetwork(FeatureConfig(), preset("tiny"), FOA)
    recordings = [Recording(Path(f"{index:03d}.wav"), Path(f"{index:03d}.csv"), 10) for index in range(100)]
    seld.train.normalization_statistics(network, recordings, 5, torch.device("cpu"))
    assert read == ["000.wav", "025.wav", "050.wav", "074.wav", "099.wav"]


def test_classes_that_contradict_dataset_json_are_refused(tmp_path, capsys):
    """A synth dataset of door,knock trained with classes=dog,knock,door: its door events (index 0)
    were trained as dog, without a word."""
    data = tiny_dataset(tmp_path / "data")
    (data / "dataset.json").write_text(json.dumps({"classes": ["door", "knock", "bell"]}))
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny", "epochs=1",
                "classes=dog,knock,door"]) == 1
    assert "the dataset's" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_resume_to_fewer_epochs_than_done_is_refused(tiny_run, tmp_path, capsys):
    """It said 'trained 2 epochs' and rewrote config.json to epochs=1."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "config.json").read_text()
    assert cli(["train", "--resume", str(run), "epochs=1"]) == 1
    assert f"--resume {run}: epochs=1, but 2 epochs are done" in capsys.readouterr().err
    assert (run / "config.json").read_text() == before


SQUARE = {"name": "square", "kind": "mic", "capsules_m": [[0.03, 0, 0], [0, 0.03, 0], [-0.03, 0, 0], [0, -0.03, 0]]}


def mic_dataset_of(folder: Path, array: dict) -> Path:
    """A tiny MIC dataset whose dataset.json says it was recorded with `array`."""
    data = tiny_dataset(folder, "mic")
    described = json.loads((data / "dataset.json").read_text()) if (data / "dataset.json").exists() else {}
    (data / "dataset.json").write_text(json.dumps({**described, "formats": {"mic": array}}))
    return data


def test_a_resume_on_a_dataset_of_another_array_is_refused(tmp_path, capsys):
    """`--resume RUN data=OTHER` of another array: 6 capsules were a traceback (and config.json, rewritten
    first, failed every later resume); another geometry of 4 trained on, its package naming the new array."""
    from seld.arrays import TETRAHEDRAL

    run = tmp_path / "run"
    assert cli(["train", "--data", str(tiny_dataset(tmp_path / "data", "mic")), "--out", str(run), "--format", "mic",
                "--preset", "tiny", "epochs=1"]) == 0
    settings = (run / "config.json").read_text()
    hexagon = {**SQUARE, "name": "hex", "capsules_m": [[0.03 * np.cos(a), 0.03 * np.sin(a), 0]
                                                        for a in np.arange(6) * np.pi / 3]}
    renamed = {**TETRAHEDRAL.to_dict(), "name": "my tetrahedron"}
    for array, refused in ((SQUARE, True), (hexagon, True), (renamed, False)):
        other = mic_dataset_of(tmp_path / array["name"], array)
        if refused:
            assert cli(["train", "--resume", str(run), f"data={other}", "epochs=2"]) == 1
            err = capsys.readouterr().err
            assert f"was recorded with the array {array['name']!r}" in err and "Traceback" not in err
            assert (run / "config.json").read_text() == settings
        else:
            assert cli(["train", "--resume", str(run), f"data={other}", "epochs=2"]) == 0
    assert cli(["train", "--resume", str(run), f"data={tmp_path / 'typo'}"]) == 1
    assert f"{tmp_path / 'typo'}: no such folder" in capsys.readouterr().err


def test_a_run_stopped_in_its_first_epoch_resumes_on_moved_data_of_any_array(tmp_path, capsys):
    """No weights yet: nothing to keep the array of. A dataset moved away from a run of a custom array
    was taken for another array (its old folder gone, the format's array was assumed)."""
    data = mic_dataset_of(tmp_path / "data", SQUARE)
    run = tmp_path / "run"
    assert cli(["train", "--data", str(data), "--out", str(run), "--format", "mic", "--preset", "tiny",
                "epochs=1"]) == 0
    for name in ("last.pt", "best.pt"):
        (run / name).unlink()  # as a kill in the first epoch leaves it
    moved = data.rename(tmp_path / "moved")
    assert cli(["train", "--resume", str(run), f"data={moved}"]) == 0


def test_a_resume_on_a_dataset_of_other_classes_is_refused(tiny_run, tmp_path, capsys):
    """`--resume RUN data=OTHER` (the recipe's later stages) skipped the classes check."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    other = tiny_dataset(tmp_path / "other")
    classes = json.loads((run / "config.json").read_text())["classes"]
    (other / "dataset.json").write_text(json.dumps({"classes": list(reversed(classes))}))
    assert cli(["train", "--resume", str(run), f"data={other}", "epochs=3"]) == 1
    assert "the dataset's" in capsys.readouterr().err
