"""DCASE metrics: the shared reference cases, hand-computed scenes, the scorer and the CLI."""

import json
import math
from pathlib import Path

import pytest

from seld import SeldError
from seld.formats import Events
from seld.metrics import SeldScorer, evaluate_folders

CASES = Path(__file__).resolve().parents[2] / "shared" / "metric_cases"
needs_cases = pytest.mark.skipif(
    not (CASES / "expected.json").is_file(),
    reason=f"shared metric cases not found at {CASES} (clone shared/ beside the repository)",
)

# expected.json variant -> (metrics, average, use_distance)
VARIANTS = {
    "dcase2023_segment_macro": ("dcase2023", "macro", None),
    "dcase2023_segment_micro": ("dcase2023", "micro", None),
    "dcase2024_frame_dist_macro": ("dcase2024", "macro", True),
    "dcase2024_frame_dist_micro": ("dcase2024", "micro", True),
    "dcase2024_frame_nodist_macro": ("dcase2024", "macro", False),
}
ANGLES = {"LE", "AngE"}


def expected_cases() -> list[str]:
    if not (CASES / "expected.json").is_file():
        return []
    return sorted(json.loads((CASES / "expected.json").read_text())["cases"])


def assert_close(actual: float, expected: float | None, key: str, where: str) -> None:
    if expected is None:
        assert actual is None or math.isnan(actual), f"{where} {key}: {actual}, expected NaN"
        return
    tolerance = 1e-3 if key in ANGLES else 1e-4
    assert actual is not None and abs(actual - expected) <= tolerance, f"{where} {key}: {actual}, expected {expected}"


@needs_cases
@pytest.mark.parametrize("form", ["pred_cart", "pred_polar"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("case", expected_cases())
def test_reference_cases(case, variant, form):
    expected = json.loads((CASES / "expected.json").read_text())["cases"][case][variant]
    metrics, average, use_distance = VARIANTS[variant]
    result = evaluate_folders(CASES / case / "ref", CASES / case / form, metrics=metrics, average=average,
                              use_distance=use_distance)
    assert list(result.metrics) == list(expected["metrics"])
    for key, value in expected["metrics"].items():
        assert_close(result.metrics[key], value, key, f"{case}/{form} {variant}")
    if expected["classwise"]:
        assert list(result.classwise) == list(expected["classwise"])
        for key, values in expected["classwise"].items():
            assert len(result.classwise[key]) == len(values)
            for class_index, value in enumerate(values):
                assert_close(result.classwise[key][class_index], value, key, f"{case}/{form} {variant} class {class_index}")


@needs_cases
def test_distance_is_used_automatically_when_both_sides_have_it():
    case = CASES / "c11_distance_errors"
    result = evaluate_folders(case / "ref", case / "pred_polar")
    assert "RelDistE" in result.metrics and result.settings["use_distance"]
    assert [p.name for p, _ in result.files] == ["fold4_room23_mix001.csv"]


@needs_cases
def test_cli_json_matches_expected(seld_cli, tmp_path):
    case = "c08_same_class_overlap_one_missed"
    expected = json.loads((CASES / "expected.json").read_text())["cases"][case]["dcase2023_segment_macro"]
    # a prediction without a reference is reported on stderr and skipped
    predictions = tmp_path / "pred"
    predictions.mkdir()
    (predictions / "fold4_room23_mix001.csv").write_text(
        (CASES / case / "pred_cart" / "fold4_room23_mix001.csv").read_text())
    (predictions / "stray.csv").write_text("0,1,0,10,0\n")
    completed = seld_cli("evaluate", "--ref", CASES / case / "ref", "--pred", predictions,
                         "--metrics", "dcase2023", "--json")
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)  # exactly one JSON object
    assert list(document) == [*expected["metrics"], "classwise"]
    for key, value in expected["metrics"].items():
        assert_close(document[key], value, key, "cli")
    for key, values in expected["classwise"].items():
        for actual, value in zip(document["classwise"][key], values):
            assert_close(actual, value, key, "cli classwise")
    assert "stray.csv" in completed.stderr and "skipped" in completed.stderr


@needs_cases
def test_cli_json_writes_nan_as_null(seld_cli):
    case = CASES / "c13_empty_prediction"
    completed = seld_cli("evaluate", "--ref", case / "ref", "--pred", case / "pred_polar", "--json")
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert document["AngE"] is None and document["SELD"] == 1.0
    assert document["classwise"]["DistE"] == [None] * 13


@needs_cases
def test_cli_table(seld_cli):
    case = CASES / "c03_azi_plus10"
    completed = seld_cli("evaluate", "--ref", case / "ref", "--pred", case / "pred_cart", "--no-distance")
    assert completed.returncode == 0, completed.stderr
    assert "dcase2024" in completed.stdout and "LE" in completed.stdout
    assert len([line for line in completed.stdout.splitlines() if line.strip()[:2].strip().isdigit()]) == 13


def test_cli_errors(seld_cli, tmp_path):
    completed = seld_cli("evaluate", "--ref", tmp_path / "absent", "--pred", tmp_path)
    assert completed.returncode == 1
    assert "absent" in completed.stderr and "does not exist" in completed.stderr
    (tmp_path / "a-file.csv").write_text("")
    completed = seld_cli("evaluate", "--ref", tmp_path / "a-file.csv", "--pred", tmp_path)
    assert completed.returncode == 1 and "a-file.csv: reference folder is a file" in completed.stderr
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "a.csv").write_text("0,0,0,0,0\n5,0,0,0,0\n")
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "b.csv").write_text("0,0,0,0,0\n")
    completed = seld_cli("evaluate", "--ref", tmp_path / "ref", "--pred", tmp_path / "pred")
    assert completed.returncode == 1
    assert "no prediction CSV" in completed.stderr and "no reference named b.csv" in completed.stderr


def test_cli_reads_six_columns_as_told(seld_cli, tmp_path):
    """A polar row straight ahead at 1 m is also a unit vector straight up: --pred-format decides."""
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "a.csv").write_text("0,0,0,0,0,100\n1,0,0,0,0,100\n")
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "a.csv").write_text("0,0,0,0,0,1\n")
    scores = {}
    for form in ("auto", "polar"):
        completed = seld_cli("evaluate", "--ref", tmp_path / "ref", "--pred", tmp_path / "pred", "--classes", "1",
                             "--pred-format", form, "--json")
        assert completed.returncode == 0, completed.stderr
        scores[form] = json.loads(completed.stdout)
    assert scores["auto"]["LE"] == pytest.approx(90.0) and "DistE" not in scores["auto"]  # no distance: x, y, z
    assert scores["polar"]["AngE"] == pytest.approx(0.0, abs=1e-3) and scores["polar"]["DistE"] == pytest.approx(0.0)


# ----------------------------------------------------------------------------- hand-computed scenes


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def small_scene(tmp_path):
    """Three reference frames (the last one is not frame-scored), 3 classes.

    class 0: reference at (0, 0), 1 m in frames 0-2; predicted 10 deg off and 1.5 m in
             frame 0, 30 deg off in frame 1, exact in frame 2 and once more in frame 5.
    class 1: reference in frame 1 only, never predicted.
    class 2: predicted in frame 1 only, no reference.
    """
    write(tmp_path / "ref" / "dev-test" / "scene.csv",
          "0,0,0,0,0,100\n1,0,0,0,0,100\n1,1,3,90,0,200\n2,0,0,0,0,100\n")
    write(tmp_path / "pred" / "scene.csv",
          "0,0,0,10,0,1.5\n1,0,0,30,0,1.0\n1,2,0,0,0,1.0\n2,0,0,0,0,1.0\n5,0,0,0,0,1.0\n")
    return tmp_path


def test_small_scene_dcase2024_by_hand(small_scene):
    # Frames 0 and 1 are scored. Frame 0: class 0 matched, 10 deg, distance error 0.5 m
    # (relative 0.5) -> TP. Frame 1: class 0 matched at 30 deg -> spatial FP; class 1
    # missed -> FN; class 2 spurious -> FP. Frame 1 has 2 FP and 1 FN: S=1, I=1.
    macro = evaluate_folders(small_scene / "ref", small_scene / "pred", num_classes=3)
    assert macro.settings["use_distance"]
    expected_seld_0 = (0.5 + 20 / 180 + 0.25) / 3  # F_0 = 1/(1+1), AngE_0 = 20, RDE_0 = 0.25
    expected = {"ER": 2 / 3, "F": 0.5 / 3, "AngE": 20.0, "DistE": 0.25, "RelDistE": 0.25, "LR": 1 / 3,
                "SELD": (expected_seld_0 + 1 + 1) / 3}
    for key, value in expected.items():
        assert macro.metrics[key] == pytest.approx(value, abs=1e-6), key
    assert macro.classwise["F"] == pytest.approx([0.5, 0.0, 0.0], abs=1e-9)
    assert macro.classwise["LR"] == pytest.approx([1.0, 0.0, 0.0], abs=1e-9)
    assert macro.classwise["SELD"] == pytest.approx([expected_seld_0, 1.0, 1.0], abs=1e-6)
    assert math.isnan(macro.classwise["AngE"][1]) and math.isnan(macro.classwise["AngE"][2])

    micro = evaluate_folders(small_scene / "ref", small_scene / "pred", average="micro", num_classes=3)
    # F = 1 / (1 + 1 + 0.5 * (1 FP + 1 FN)); LR = 2 matched / 3 references
    expected = {"ER": 2 / 3, "F": 1 / 3, "AngE": 20.0, "DistE": 0.25, "RelDistE": 0.25, "LR": 2 / 3,
                "SELD": (2 / 3 + 20 / 180 + 0.25) / 3}
    for key, value in expected.items():
        assert micro.metrics[key] == pytest.approx(value, abs=1e-6), key


def test_small_scene_dcase2024_without_distance_by_hand(small_scene):
    result = evaluate_folders(small_scene / "ref", small_scene / "pred", use_distance=False, num_classes=3)
    # distance ignored: the frame-0 pair still a TP, everything else as above
    seld_0 = (2 / 3 + 0.5 + 20 / 180 + 0) / 4
    seld_absent = (2 / 3 + 1 + 1) / 3  # nanmean(ER, 1 - F, NaN, 1 - LR)
    assert result.metrics["LE"] == pytest.approx(20.0, abs=1e-6)
    assert result.metrics["SELD"] == pytest.approx((seld_0 + 2 * seld_absent) / 3, abs=1e-6)


def test_small_scene_dcase2023_by_hand(small_scene):
    # One segment (ceil(2 / 10)), frames 0-9: so reference frame 2 and the prediction
    # in frame 5 are both read. Class 0: one track matched in frames 0, 1, 2 with
    # errors 10, 30, 0 -> mean 13.33 <= 20 -> TP. Class 1: FN. Class 2: FP. S = 1.
    macro = evaluate_folders(small_scene / "ref", small_scene / "pred", metrics="dcase2023", num_classes=3)
    le_0 = 40 / 3
    seld_0 = (0.5 + 0 + le_0 / 180 + 0) / 4
    expected = {"ER": 0.5, "F": 1 / 3, "LE": (le_0 + 360) / 3, "LR": 1 / 3, "SELD": (seld_0 + 2 * 0.875) / 3}
    for key, value in expected.items():
        assert macro.metrics[key] == pytest.approx(value, abs=1e-6), key
    assert macro.classwise["LE"] == pytest.approx([le_0, 180.0, 180.0], abs=1e-6)

    micro = evaluate_folders(small_scene / "ref", small_scene / "pred", metrics="dcase2023", average="micro",
                             num_classes=3)
    expected = {"ER": 0.5, "F": 0.5, "LE": le_0, "LR": 0.5, "SELD": (0.5 + 0.5 + le_0 / 180 + 0.5) / 4}
    for key, value in expected.items():
        assert micro.metrics[key] == pytest.approx(value, abs=1e-6), key


def events(rows: list[tuple], with_distance: bool = False) -> Events:
    """Events from (frame, class, track, azimuth, elevation[, distance_m]) tuples."""
    columns = list(zip(*rows)) if rows else [[]] * 6
    return Events(columns[0], columns[1], columns[2], columns[3], columns[4],
                  columns[5] if with_distance else None)


def test_scorer_dcase2023_no_common_frame_quirk():
    # Class 0 in segment 0: reference in frames 0-1, prediction in frames 3-4 (no frame in
    # common): the official code adds the predicted count to FN and no FP at all.
    reference = events([(0, 0, 0, 0, 0), (1, 0, 0, 0, 0), (12, 3, 0, 50, 0)])
    prediction = events([(3, 0, 0, 0, 0), (4, 0, 0, 0, 0), (12, 3, 0, 50, 0)])
    scorer = SeldScorer(metrics="dcase2023", num_classes=4)
    scorer.add(reference, prediction)
    counters = scorer.result().counters
    assert counters["FN"] == [1, 0, 0, 0] and counters["FP"] == [0, 0, 0, 0]
    assert counters["TP"] == [0, 0, 0, 1]  # class 3 at frame 12: segment 1 of ceil(12 / 10) = 2
    assert (counters["S"], counters["D"], counters["I"]) == (0, 1, 0)


def test_scorer_hungarian_ignores_track_ids_and_accumulates_files():
    # Two same-class references swap sides between frames; predictions keep one track id.
    reference = events([(0, 1, 0, 45, 0), (0, 1, 1, -45, 0), (1, 1, 0, -45, 0), (1, 1, 1, 45, 0), (2, 1, 0, 0, 0)])
    prediction = events([(0, 1, 7, -45, 0), (0, 1, 7, 45, 0), (1, 1, 7, 45, 0), (1, 1, 7, -45, 0)])
    scorer = SeldScorer(metrics="dcase2024", use_distance=False, num_classes=2, average="micro")
    scorer.add(reference, prediction)
    scorer.add(reference, prediction)
    result = scorer.result()
    assert result.counters["TP"] == [0, 8]
    assert result.metrics["F"] == pytest.approx(1.0)
    assert result.metrics["LE"] == pytest.approx(8.1e-4, abs=1e-4)  # the official 1e-10 under the root
    assert result.settings["files"] == 2


def test_scorer_with_in_memory_distance_and_thresholds():
    reference = events([(0, 0, 0, 0, 0, 2.0), (1, 0, 0, 0, 0, 2.0)], with_distance=True)
    prediction = events([(0, 0, 0, 0, 0, 4.5)], with_distance=True)  # relative error 1.25 > 1.0
    scorer = SeldScorer(num_classes=1)
    scorer.add(reference, prediction)
    result = scorer.result()
    assert result.counters["FP_spatial"] == [1]
    assert result.metrics["DistE"] == pytest.approx(2.5)
    assert result.metrics["RelDistE"] == pytest.approx(1.25)
    loose = SeldScorer(num_classes=1, relative_distance_threshold=2.0)
    loose.add(reference, prediction)
    assert loose.result().counters["TP"] == [1]


def test_scorer_errors():
    with_distance = events([(0, 0, 0, 0, 0, 1.0), (1, 0, 0, 0, 0, 1.0)], with_distance=True)
    without = events([(0, 0, 0, 0, 0)])
    with pytest.raises(SeldError, match="no distances"):
        SeldScorer(use_distance=True, num_classes=1).add(with_distance, without, name="x.csv")
    with pytest.raises(SeldError, match="class 5"):
        SeldScorer(num_classes=3, use_distance=False).add(without, events([(0, 5, 0, 0, 0)]))
    with pytest.raises(ValueError):
        SeldScorer(metrics="dcase2019")
    with pytest.raises(SeldError, match="^ref.csv: reference has class 5"):  # names the file at fault
        SeldScorer(num_classes=3, use_distance=False).add(events([(0, 5, 0, 0, 0)]), without, "pred.csv", "ref.csv")


@pytest.mark.parametrize("metrics", ["dcase2024", "dcase2023"])
def test_a_reference_without_events_counts_every_false_alarm(metrics):
    """The official code fails on such a file; its frames through the prediction's last count."""
    false_alarms = events([(0, 0, 0, 0, 0), (14, 0, 0, 10, 0), (30, 1, 0, 0, 0)])
    scorer = SeldScorer(metrics=metrics, num_classes=2, use_distance=False, average="micro")
    scorer.add(events([]), false_alarms)
    scorer.add(events([]), events([]))
    result = scorer.result()
    assert result.counters["FP"] == [2, 1] and result.counters["TP"] == [0, 0]
    assert result.metrics["F"] == 0.0


def test_mixed_distance_folder_falls_back_to_no_distance(tmp_path):
    write(tmp_path / "ref" / "a.csv", "0,0,0,0,0,100\n3,0,0,0,0,100\n")
    write(tmp_path / "pred" / "a.csv", "0,0,0,0,0\n")
    result = evaluate_folders(tmp_path / "ref", tmp_path / "pred", num_classes=1)
    assert not result.settings["use_distance"] and "LE" in result.metrics
    with pytest.raises(SeldError, match="no distances"):
        evaluate_folders(tmp_path / "ref", tmp_path / "pred", num_classes=1, use_distance=True)
    with pytest.raises(SeldError, match="dcase2023"):
        evaluate_folders(tmp_path / "ref", tmp_path / "pred", metrics="dcase2023", use_distance=True)
    assert result.to_json()["classwise"]["LR"] == pytest.approx([1.0])


def test_the_class_count_comes_from_the_datasets_own_description(seld_cli, tmp_path):
    """A 3-class dataset was scored as 13 classes: its macro F divided by 13 / 3."""
    references = tmp_path / "data" / "metadata_dev" / "dev-test"
    references.mkdir(parents=True)
    (tmp_path / "data" / "dataset.json").write_text(json.dumps({"classes": ["door", "knock", "bell"]}))
    (references / "mix.csv").write_text("".join(f"{frame},1,0,30,10,150\n" for frame in range(20)))
    predictions = tmp_path / "pred"
    predictions.mkdir()
    (predictions / "mix.csv").write_text("".join(f"{frame},1,0,31,10,1.5\n" for frame in range(20)))
    completed = seld_cli("evaluate", "--ref", references, "--pred", predictions, "--json")
    assert completed.returncode == 0, completed.stderr
    assert len(json.loads(completed.stdout)["classwise"]["F"]) == 3
    assert f"3 classes, as {tmp_path / 'data' / 'dataset.json'} names them" in completed.stderr
    completed = seld_cli("evaluate", "--ref", references, "--pred", predictions, "--json", "--classes", "13")
    assert len(json.loads(completed.stdout)["classwise"]["F"]) == 13
    (predictions / "mix.csv").write_text("0,1,0,31,10,1.5\n7,5,0,31,10,1.5\n")
    completed = seld_cli("evaluate", "--ref", references, "--pred", predictions)
    assert "mix.csv: prediction has class 5 (first at frame 7), but only 3 classes are scored" in completed.stderr


def test_folders_given_the_other_way_round_are_warned_of(seld_cli, tmp_path):
    references, predictions = tmp_path / "ref", tmp_path / "pred"
    references.mkdir()
    predictions.mkdir()
    (references / "mix.csv").write_text("".join(f"{frame},1,0,30,10,150\n" for frame in range(20)))
    (predictions / "mix.csv").write_text("".join(f"{frame},1,0,31,10,1.5\n" for frame in range(20)))
    right = seld_cli("evaluate", "--ref", references, "--pred", predictions)
    assert right.returncode == 0 and "warning" not in right.stderr
    swapped = seld_cli("evaluate", "--ref", predictions, "--pred", references)
    assert f"are --ref {predictions} and --pred {references} the other way round?" in swapped.stderr


def test_what_evaluate_guessed_or_left_out_is_said(seld_cli, tmp_path):
    references, predictions = tmp_path / "ref", tmp_path / "pred"
    references.mkdir()
    predictions.mkdir()
    for name in ("a", "b", "c"):
        (references / f"{name}.csv").write_text("".join(f"{frame},1,0,30,10,150\n" for frame in range(20)))
    (predictions / "a.csv").write_text("".join(f"{frame},1,0,0.8,0.4,0.1\n" for frame in range(20)))  # x,y,z
    (predictions / "b.csv").write_text("".join(f"{frame},1,0,31,10\n" for frame in range(20)))  # no distance
    result = seld_cli("evaluate", "--ref", references, "--pred", predictions)
    assert result.returncode == 0, result.stderr
    assert "1 6-column prediction file(s) read as x,y,z" in result.stderr and "--pred-format polar" in result.stderr
    assert "1 reference file(s) without a prediction: not scored (as the DCASE code does)" in result.stderr
    assert "distance not scored: 2 of 2 file pairs have none" not in result.stderr  # all lack it: nothing to say
    (predictions / "a.csv").write_text("".join(f"{frame},1,0,31,10,1.5\n" for frame in range(20)))
    result = seld_cli("evaluate", "--ref", references, "--pred", predictions)
    assert f"distance not scored: 1 of 2 file pairs have none, e.g. {predictions / 'b.csv'}" in result.stderr
    (predictions / "b.csv").write_text("0;1;0;31;10;1.5\n")  # other separators: no header, an error
    result = seld_cli("evaluate", "--ref", references, "--pred", predictions)
    assert result.returncode == 1 and "b.csv" in result.stderr and "columns" in result.stderr


def test_a_polar_file_within_a_degree_of_the_front_is_read_as_its_folder_is(tmp_path):
    """Polar rows of sources within a degree of the front and under a metre away fit the x,y,z
    guess: alone among polar files, such a file was read as x,y,z and turned distance scoring off
    for the whole folder (two perfect predictions: F 0.5, LE 34 degrees)."""
    from seld.metrics import evaluate_folders

    references, predictions = tmp_path / "ref", tmp_path / "pred"
    references.mkdir()
    predictions.mkdir()
    for name, (azimuth, elevation, distance) in {"near": (0.6, 0.9, 0.85), "far": (60, 10, 2.5)}.items():
        (references / f"{name}.csv").write_text(
            "".join(f"{frame},1,0,{azimuth},{elevation},{int(distance * 100)}\n" for frame in range(20)))
        (predictions / f"{name}.csv").write_text(
            "".join(f"{frame},1,0,{azimuth},{elevation},{distance}\n" for frame in range(20)))
    metrics = evaluate_folders(references, predictions, average="micro", num_classes=13).metrics
    assert metrics["F"] == pytest.approx(1.0) and metrics["DistE"] == pytest.approx(0.0, abs=1e-6)
