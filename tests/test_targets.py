from dataclasses import dataclass

import numpy as np
import pytest

from seld.decode import OutputLayout, angles_to_vector
from seld.targets import (
    LabelEvent,
    adpit_arrangements,
    adpit_slots,
    encode_accdoa,
    encode_multi_accdoa,
    encode_sed_doa,
    encode_targets,
    label_events,
    reference_outputs,
)

CLASSES = 4


def test_sed_doa_holds_activity_and_unit_vector_per_class():
    events = [LabelEvent(1, 2, 0, 90.0, 0.0, 1.5), LabelEvent(1, 0, 3, 0.0, 90.0, 2.0)]
    target = encode_sed_doa(events, 3, CLASSES, distance=True).reshape(3, 5, CLASSES)
    assert target.dtype == np.float32
    np.testing.assert_array_equal(target[1, 0], [1, 0, 1, 0])
    np.testing.assert_allclose(target[1, 1:4, 2], [0, 1, 0], atol=1e-7)
    np.testing.assert_allclose(target[1, 1:4, 0], [0, 0, 1], atol=1e-7)
    np.testing.assert_allclose(target[1, 4], [2.0, 0, 1.5, 0])
    assert not target[0].any() and not target[2].any()


def test_accdoa_is_activity_times_vector():
    events = [LabelEvent(0, 1, 0, -90.0, 0.0)]
    target = encode_accdoa(events, 2, CLASSES).reshape(2, 3, CLASSES)
    np.testing.assert_allclose(target[0, :, 1], [0, -1, 0], atol=1e-7)
    assert np.count_nonzero(np.abs(target) > 1e-7) == 1


def test_multi_accdoa_fills_the_group_of_the_source_count():
    a = LabelEvent(0, 1, 5, 10.0, 0.0, 1.0)
    b0, b1 = LabelEvent(1, 1, 0, 20.0, 0.0, 2.0), LabelEvent(1, 1, 1, -60.0, 0.0, 3.0)
    c = [LabelEvent(2, 3, source, 100.0 * source, 0.0, 1.0 + source) for source in (2, 0, 1, 3)]
    target = encode_multi_accdoa([a, b1, b0, *c], 3, CLASSES, distance=True)
    assert target.shape == (3, 6, 5, CLASSES)
    assert target[0, :, 0, 1].tolist() == [1, 0, 0, 0, 0, 0]
    assert target[1, :, 0, 1].tolist() == [0, 1, 1, 0, 0, 0]
    np.testing.assert_allclose(target[1, 1, 1:4, 1], angles_to_vector(20.0, 0.0), atol=1e-6)  # lower source first
    np.testing.assert_allclose(target[1, 2, 4, 1], 3.0)
    # Four sources of one class: the first three by source id, in C0 C1 C2.
    assert target[2, :, 0, 3].tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(target[2, 3:, 4, 3], [1.0, 2.0, 3.0])
    assert target[:, :, :, [0, 2]].sum() == 0


def test_adpit_arrangements_are_the_baselines_13():
    assert adpit_slots(3) == 6
    arrangements = adpit_arrangements(3)
    assert [k for k, _ in arrangements] == [1] + [2] * 6 + [3] * 6
    assert arrangements[0][1] == (0, 0, 0)
    assert [slots for _, slots in arrangements[1:7]] == [
        (1, 1, 2), (1, 2, 1), (1, 2, 2), (2, 1, 1), (2, 1, 2), (2, 2, 1)]
    assert [slots for _, slots in arrangements[7:]] == [
        (3, 4, 5), (3, 5, 4), (4, 3, 5), (4, 5, 3), (5, 3, 4), (5, 4, 3)]
    assert len(adpit_arrangements(2)) == 1 + 2


def test_frames_beyond_the_end_are_dropped_and_bad_events_rejected():
    assert not encode_accdoa([LabelEvent(5, 0, 0, 0.0, 0.0)], 5, CLASSES).any()
    with pytest.raises(ValueError, match="class 7"):
        encode_accdoa([LabelEvent(0, 7, 0, 0.0, 0.0)], 5, CLASSES)
    with pytest.raises(ValueError, match="no distance"):
        encode_multi_accdoa([LabelEvent(0, 1, 0, 0.0, 0.0)], 5, CLASSES, distance=True)


def test_label_events_adapts_rows_dicts_and_objects():
    @dataclass
    class Row:  # the shape of a CSV reader's row
        frame: int
        class_index: int
        source: int
        azimuth: float
        elevation: float
        distance: float | None

    expected = LabelEvent(3, 1, 2, 45.0, -10.0, 1.25)
    forms = [
        [(3, 1, 2, 45, -10, 1.25)],
        np.array([[3, 1, 2, 45, -10, 1.25]]),
        [{"frame": 3, "class": 1, "track": 2, "azimuth": 45, "elevation": -10, "distance": 1.25}],
        [Row(3, 1, 2, 45.0, -10.0, 1.25)],
    ]
    for form in forms:
        assert label_events(form) == [expected]
    assert label_events([(3, 1, 2, 45, -10)])[0].distance_m is None


def test_label_events_reads_the_csv_readers_columns(tmp_path):
    from seld.formats import read_reference

    path = tmp_path / "fold1_room1_mix001.csv"
    path.write_text("3,1,2,45,-10,125\n4,0,0,0,0,300\n")
    events = label_events(read_reference(path))
    assert events == [LabelEvent(3, 1, 2, 45.0, -10.0, 1.25), LabelEvent(4, 0, 0, 0.0, 0.0, 3.0)]


@pytest.mark.parametrize("output_format", ["sed_doa", "accdoa", "multi_accdoa"])
def test_encode_targets_matches_layout_size(output_format):
    layout = OutputLayout(output_format, CLASSES, 3, distance=True)
    events = [LabelEvent(0, 1, 0, 30.0, 10.0, 2.0)]
    target = encode_targets(events, 4, layout)
    outputs = reference_outputs(target, layout)
    assert outputs.shape == (4, layout.size)
