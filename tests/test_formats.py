"""DCASE CSV reading and writing: every variant, detection, headers, errors, file pairing."""

import re
from pathlib import Path

import numpy as np
import pytest

from seld import SeldError
from seld.formats import (
    Events,
    find_csv_files,
    match_files,
    polar_to_cartesian,
    read_prediction,
    read_reference,
    write_prediction,
    write_reference,
)


def sample_events(with_distance: bool = True) -> Events:
    return Events(
        frame=[3, 0, 0, 12],
        class_index=[1, 0, 4, 12],
        track=[0, 0, 1, 2],
        azimuth=[-175.0, 30.0, 0.0, 179.5],
        elevation=[10.0, -20.0, 89.0, -45.25],
        distance=[1.5, 2.0, 0.37, 12.34] if with_distance else None,
    )


def assert_same_events(actual: Events, expected: Events, angle_tolerance: float = 1e-9) -> None:
    order = np.argsort(expected.frame, kind="stable")  # writers sort by frame
    np.testing.assert_array_equal(actual.frame, expected.frame[order])
    np.testing.assert_array_equal(actual.class_index, expected.class_index[order])
    np.testing.assert_array_equal(actual.track, expected.track[order])
    np.testing.assert_allclose(actual.azimuth, expected.azimuth[order], atol=angle_tolerance)
    np.testing.assert_allclose(actual.elevation, expected.elevation[order], atol=angle_tolerance)
    if expected.distance is None:
        assert actual.distance is None
    else:
        np.testing.assert_allclose(actual.distance, expected.distance[order], rtol=1e-12)


def test_reference_round_trip_with_distance_in_centimetres(tmp_path):
    events = sample_events()
    path = tmp_path / "ref.csv"
    write_reference(path, events)
    lines = path.read_text().splitlines()
    assert lines[0] == "0,0,0,30,-20,200"  # no header, sorted, distance in whole cm
    assert lines[1] == "0,4,1,0,89,37"
    assert_same_events(read_reference(path), events)


def test_reference_round_trip_without_distance(tmp_path):
    events = sample_events(with_distance=False)
    path = tmp_path / "ref.csv"
    write_reference(path, events)
    assert all(len(line.split(",")) == 5 for line in path.read_text().splitlines())
    assert_same_events(read_reference(path), events)


@pytest.mark.parametrize("cartesian", [False, True])
@pytest.mark.parametrize("with_distance", [False, True])
def test_prediction_round_trip_every_variant(tmp_path, cartesian, with_distance):
    events = sample_events(with_distance)
    path = tmp_path / "pred.csv"
    write_prediction(path, events, cartesian=cartesian)
    columns = {len(line.split(",")) for line in path.read_text().splitlines()}
    assert columns == {3 + (3 if cartesian else 2) + (1 if with_distance else 0)}
    assert_same_events(read_prediction(path), events, angle_tolerance=1e-9)


def test_six_columns_cartesian_when_every_row_is_a_direction_vector(tmp_path):
    x, y, z = polar_to_cartesian(np.array([90.0, -30.0]), np.array([0.0, 45.0]))
    path = tmp_path / "pred.csv"
    path.write_text(f"0,1,0,{x[0]},{y[0]},{z[0]}\n5,2,1,{x[1]:.6f},{y[1]:.6f},{z[1]:.6f}\n")
    events = read_prediction(path)
    assert events.distance is None
    np.testing.assert_allclose(events.azimuth, [90.0, -30.0], atol=1e-3)
    np.testing.assert_allclose(events.elevation, [0.0, 45.0], atol=1e-3)


def test_six_columns_cartesian_for_raw_accdoa_vectors_as_the_baselines_write_them(tmp_path):
    """The 2022/2023 baselines write their ACCDOA outputs as they are: shorter than 1."""
    path = tmp_path / "pred.csv"
    path.write_text("0,1,0,0.0,0.8,0.0\n3,2,0,-0.5,0.0,0.5\n4,2,0,0.71,0.71,0\n")
    events = read_prediction(path)
    assert events.distance is None
    np.testing.assert_allclose(events.azimuth, [90.0, 180.0, 45.0], atol=1e-9)
    np.testing.assert_allclose(events.elevation, [0.0, 45.0, 0.0], atol=1e-9)


def test_six_columns_as_the_caller_says(tmp_path):
    path = tmp_path / "pred.csv"
    path.write_text("0,1,0,0,0,1\n")  # polar straight ahead at 1 m, or Cartesian straight up
    assert read_prediction(path).elevation.tolist() == [90.0]
    polar = read_prediction(path, six_columns="polar")
    assert [polar.azimuth[0], polar.elevation[0], polar.distance[0]] == [0.0, 0.0, 1.0]
    path.write_text("0,1,0,0,0,2\n")
    assert read_prediction(path, six_columns="cartesian").elevation.tolist() == [90.0]
    with pytest.raises(ValueError, match="six_columns"):
        read_prediction(path, six_columns="spherical")


def test_six_columns_polar_when_one_row_is_not_a_unit_vector(tmp_path):
    path = tmp_path / "pred.csv"
    path.write_text("0,1,0,1.0,0.0,0.0\n1,1,0,20.0,10.0,2.5\n")
    events = read_prediction(path)
    np.testing.assert_allclose(events.azimuth, [1.0, 20.0])
    np.testing.assert_allclose(events.distance, [0.0, 2.5])  # metres, as written


def test_reference_six_columns_are_always_polar_in_centimetres(tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text("0,1,0,1,0,0\n")  # would be a unit vector, but references are polar
    events = read_reference(path)
    np.testing.assert_allclose([events.azimuth[0], events.elevation[0], events.distance[0]], [1, 0, 0])


def test_seven_column_cartesian_vector_length_is_ignored(tmp_path):
    path = tmp_path / "pred.csv"
    path.write_text("4,3,1,0.0,2.0,0.0,1.25\n")
    events = read_prediction(path)
    np.testing.assert_allclose([events.azimuth[0], events.elevation[0], events.distance[0]], [90, 0, 1.25])


def test_header_line_is_skipped(tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text("frame,class,source,azimuth,elevation,distance\n7,2,0,-90,5,150\n\n")
    events = read_reference(path)
    assert events.frame.tolist() == [7]
    np.testing.assert_allclose(events.distance, [1.5])


def test_a_first_row_with_a_typo_is_an_error_not_a_header(tmp_path):
    path = tmp_path / "dev-test" / "ref.csv"
    path.parent.mkdir()
    path.write_text("l0,1,0,10,20\n1,1,0,10,20\n")
    with pytest.raises(SeldError, match=f"{re.escape(str(path))} line 1: not a number"):
        read_reference(path)


def test_rows_keep_file_order(tmp_path):
    path = tmp_path / "pred.csv"
    path.write_text("5,0,0,10,0\n2,1,0,20,0\n5,0,1,30,0\n")
    events = read_prediction(path)
    assert events.frame.tolist() == [5, 2, 5]
    assert events.azimuth.tolist() == [10, 20, 30]


@pytest.mark.parametrize(
    "text, message",
    [
        ("0,1,0,10,0\n1,2,3\n", "labels.csv line 2: expected 5 to 7 columns, got 3"),
        ("0,1,0,10,0\n1,2,0,x,0\n", "labels.csv line 2: not a number"),
        ("0,1,0,10,0\n\n1,2,0,10,0,100\n", "labels.csv line 3: 6 columns, but line 1 has 5"),
        ("0,1,0,10,0,1,2,3\n", "labels.csv line 1: expected 5 to 7 columns, got 8"),
        ("0,1,0,10,0\n-1,1,0,10,0\n", "labels.csv line 2: frame and class must be >= 0"),
        ("0,1,0,nan,0\n", "labels.csv line 1: non-finite value"),
        ("0,1.5,0,10,0\n", "labels.csv line 1: not a number"),
        ("99999999999999999999,1,0,10,0\n", "labels.csv line 1: frame, class or track beyond 2147483647"),
        ("0,1,-99999999999999999999,10,0\n", "labels.csv line 1: frame, class or track beyond"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(SeldError, match=message.replace(".", r"\.")):
        read_reference(path)


def test_missing_file_is_a_seld_error(tmp_path):
    with pytest.raises(SeldError, match="no such file"):
        read_prediction(tmp_path / "absent.csv")


def test_empty_prediction_file(tmp_path):
    path = tmp_path / "pred.csv"
    path.write_text("")
    events = read_prediction(path)
    assert len(events) == 0
    assert events.has_distance  # nothing contradicts distance scoring
    write_prediction(tmp_path / "again.csv", events)
    assert (tmp_path / "again.csv").read_text() == ""


def test_write_is_whole_or_nothing(tmp_path):
    path = tmp_path / "pred.csv"
    path.write_text("old contents\n")

    events = sample_events()
    broken = Events(events.frame, events.class_index, events.track, events.azimuth, events.elevation,
                    np.array([1.0, 2.0, 3.0, 4.0]))
    object.__setattr__(broken, "distance", np.array([1.0]))  # too short: writing fails half way
    with pytest.raises(IndexError):
        write_prediction(path, broken)
    assert path.read_text() == "old contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.csv"]  # no temporary left behind


def test_find_and_match_files(tmp_path):
    references, predictions = tmp_path / "ref", tmp_path / "pred"
    for relative in ["dev-test/a.csv", "dev-test/b.csv", "dev-val/b.csv", "dev-val/c.csv", "x/.hidden.csv"]:
        (references / relative).parent.mkdir(parents=True, exist_ok=True)
        (references / relative).write_text("")
    for relative in ["a.csv", "dev-val/b.csv", "b.csv", "other/c.csv", "d.csv", "notes.txt"]:
        (predictions / relative).parent.mkdir(parents=True, exist_ok=True)
        (predictions / relative).write_text("")

    assert find_csv_files(references) == [Path(p) for p in
                                          ["dev-test/a.csv", "dev-test/b.csv", "dev-val/b.csv", "dev-val/c.csv"]]
    pairs = match_files(references, predictions)
    matched = {str(p.relative_to(predictions)): str(r.relative_to(references)) for p, r in pairs.matched}
    assert matched == {"a.csv": "dev-test/a.csv",  # by unique name
                       "dev-val/b.csv": "dev-val/b.csv",  # by relative path
                       "b.csv": "dev-test/b.csv",  # the only b.csv reference not taken by path
                       "other/c.csv": "dev-val/c.csv"}
    skipped = {str(p.relative_to(predictions)): why for p, why in pairs.skipped}
    assert list(skipped) == ["d.csv"]
    assert "no reference named d.csv" in skipped["d.csv"]


def test_ambiguous_names_are_skipped(tmp_path):
    references, predictions = tmp_path / "ref", tmp_path / "pred"
    for relative in ["s1/a.csv", "s2/a.csv"]:
        (references / relative).parent.mkdir(parents=True, exist_ok=True)
        (references / relative).write_text("")
    (predictions / "a.csv").parent.mkdir(parents=True)
    (predictions / "a.csv").write_text("")
    pairs = match_files(references, predictions)
    assert pairs.matched == []
    assert "2 references named a.csv" in pairs.skipped[0][1]


def test_predictions_inside_the_references_are_no_references(tmp_path):
    """`--ref data --pred data/annotations`: the predictions were found again as references, and
    every one was skipped as "2 references named a.csv"."""
    references = tmp_path / "data"
    for relative in ["metadata/a.csv", "annotations/a.csv"]:
        (references / relative).parent.mkdir(parents=True, exist_ok=True)
        (references / relative).write_text("")
    pairs = match_files(references, references / "annotations")
    assert pairs.matched == [(references / "annotations" / "a.csv", references / "metadata" / "a.csv")]
    assert pairs.skipped == [] and pairs.unpaired_references == 0
    assert len(match_files(references, references).matched) == 2  # one folder as both: each file is its own
    # The references inside the predictions' folder; and the predictions reached through a link
    (tmp_path / "b.csv").write_text("")
    (references / "metadata" / "b.csv").write_text("")
    pairs = match_files(references / "metadata", tmp_path)
    assert sorted(p.name for p, _ in pairs.matched) == ["a.csv", "b.csv"] and pairs.skipped == []
    (tmp_path / "link").symlink_to(references)
    assert match_files(tmp_path / "link", references / "annotations").skipped == []


def test_missing_folder(tmp_path):
    with pytest.raises(SeldError, match="no such folder"):
        find_csv_files(tmp_path / "nowhere")
