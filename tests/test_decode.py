import json
import subprocess
import sys

import numpy as np
import pytest

from seld.decode import (
    Detection,
    EventTracker,
    OutputLayout,
    angles_to_vector,
    assign_tracks,
    decode,
    frame_json,
    to_rows,
    track_events,
)
from seld.targets import encode_targets, label_events, reference_outputs

# A reference metadata CSV (frame, class, source, azimuth, elevation, distance_cm): one
# lone source, two of one class, three of one class, and one of a class moving.
METADATA = """\
0,1,0,30,10,150
1,1,0,32,10,150
1,4,0,-120,-20,300
1,4,1,60,40,250
2,2,0,0,0,100
2,2,1,120,0,200
2,2,2,-120,30,300
3,0,0,170,-5,120
4,0,0,-178,-5,125
"""


def metadata_events():
    rows = np.loadtxt(METADATA.splitlines(), delimiter=",")
    rows[:, 5] /= 100.0  # centimetres in reference metadata, metres in targets and predictions
    return label_events(rows)


@pytest.mark.parametrize("output_format", ["multi_accdoa", "accdoa", "sed_doa"])
@pytest.mark.parametrize("distance", [True, False])
def test_targets_from_metadata_decode_back_to_the_same_rows(output_format, distance):
    events = metadata_events()
    layout = OutputLayout(output_format, 5, 3, distance)
    if output_format != "multi_accdoa":  # one source per class: keep the lowest source id
        events = [e for e in events if e.source == 0]
    outputs = reference_outputs(encode_targets(events, 6, layout), layout)
    rows = to_rows(decode(outputs, layout))

    def key(row):
        return row[0], row[1], round(row[3], 3), round(row[4], 3)

    expected = sorted((e.frame, e.class_index, e.source, e.azimuth, e.elevation, e.distance_m) for e in events)
    assert sorted(map(key, rows)) == sorted(map(key, expected))
    for row in rows:
        match = next(e for e in expected if key(e) == key(row))
        if distance:
            assert row[5] == pytest.approx(match[5], abs=1e-6)
        else:
            assert row[5] is None


def multi(layout, frames, *entries):
    """Outputs with (frame, class, track, azimuth, elevation, length) set."""
    outputs = np.zeros((frames, layout.tracks, layout.axes, layout.num_classes))
    for frame, class_index, track, azimuth, elevation, length in entries:
        outputs[frame, track, :3, class_index] = length * angles_to_vector(azimuth, elevation)
    return outputs.reshape(frames, -1)


def test_threshold_on_accdoa_norm_is_configurable():
    layout = OutputLayout("multi_accdoa", 2, 3)
    outputs = multi(layout, 1, (0, 0, 0, 10, 0, 0.6), (0, 1, 1, 10, 0, 0.4))
    assert [(d.class_index, d.track) for d in decode(outputs, layout)] == [(0, 0)]
    assert len(decode(outputs, layout, threshold=0.3)) == 2
    detection = decode(outputs, layout)[0]
    assert detection.azimuth == pytest.approx(10) and detection.confidence == pytest.approx(0.6)


def test_tracks_of_one_class_closer_than_15_degrees_are_merged():
    layout = OutputLayout("multi_accdoa", 1, 3)
    # Tracks 0 and 2 are 10 degrees apart: merged and averaged; track 1 is far: kept.
    outputs = multi(layout, 1, (0, 0, 0, 0, 0, 1.0), (0, 0, 1, 90, 0, 1.0), (0, 0, 2, 10, 0, 1.0))
    detections = decode(outputs, layout)
    assert [(d.track, round(d.azimuth, 6)) for d in detections] == [(0, 5.0), (1, 90.0)]
    assert len(decode(outputs, layout, merge_threshold_deg=5.0)) == 3
    # Chained similarity merges all three, as the baseline does with two similar pairs.
    outputs = multi(layout, 1, (0, 0, 0, 0, 0, 1.0), (0, 0, 1, 12, 0, 1.0), (0, 0, 2, 24, 0, 1.0))
    assert [round(d.azimuth, 6) for d in decode(outputs, layout)] == [12.0]


def test_sed_doa_uses_sigmoid_of_logits_and_clips_distance():
    layout = OutputLayout("sed_doa", 2, distance=True)
    outputs = np.array([[0.3, -0.3, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, -0.5, 2.0]])
    (detection,) = decode(outputs, layout, frame_offset=7)
    assert detection.frame == 7 and detection.class_index == 0 and detection.azimuth == pytest.approx(90.0)
    assert detection.distance_m == 0.0
    assert detection.confidence == pytest.approx(1 / (1 + np.exp(-0.3)))


def test_layout_from_config_dicts():
    expected = OutputLayout("multi_accdoa", 13, 3, True)
    assert OutputLayout.of({"output_format": "multi_accdoa", "num_classes": 13, "num_tracks": 3, "distance": True}) \
        == expected
    assert OutputLayout.of({"format": "multi_accdoa", "num_classes": 13, "num_tracks": 3, "distance": True}) == expected
    assert expected.size == 3 * 4 * 13 and OutputLayout("sed_doa", 13).size == 4 * 13


def test_decode_rejects_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\[frames, 39\]"):
        decode(np.zeros((4, 40)), OutputLayout("accdoa", 13))


def detection(frame, class_index, azimuth, track=0):
    return Detection(frame, class_index, track, azimuth, 0.0, 2.0, 0.9)


def test_events_keep_their_track_ids_as_sources_cross_slots():
    # Two sources of class 3 moving apart; the output tracks swap at frame 2.
    detections = []
    for frame in range(5):
        detections.append(detection(frame, 3, 10 * frame, track=frame >= 2))
        detections.append(detection(frame, 3, 100 - 10 * frame, track=frame < 2))
    detections.append(detection(8, 3, -90))  # after a gap: a new event, the freed id 0
    events = track_events(detections, class_names=["a", "b", "c", "d"])
    assert [(e["track"], e["onset_s"], e["offset_s"]) for e in events] == [(0, 0.0, 0.5), (1, 0.0, 0.5), (0, 0.8, 0.9)]
    first = events[0]
    assert [f[1] for f in first["frames"]] == [0, 10, 20, 30, 40]
    assert first["azimuth"] == pytest.approx(20.0, abs=1e-6) and first["distance_m"] == 2.0
    assert first["class"] == 3 and first["class_name"] == "d"
    assert set(first) == {"class", "class_name", "track", "onset_s", "offset_s", "azimuth", "elevation",
                          "distance_m", "frames"}
    json.dumps(events)
    tracked = assign_tracks(detections)
    assert [d.track for d in tracked if d.azimuth >= 50 and d.frame < 5] == [1] * 5


def test_tracker_bridges_short_gaps_and_splits_jumps():
    tracker = EventTracker(max_step_deg=30.0, max_gap_frames=1)
    assert tracker.update(0, [detection(0, 1, 0)])[1] == []
    assert tracker.update(2, [detection(2, 1, 5)])[0][0].track == 0  # one missing frame: same event
    tracked, ended = tracker.update(3, [detection(3, 1, 90)])  # jump: another event
    assert tracked[0].track == 1 and ended == []
    tracked, ended = tracker.update(6, [])
    assert [e["track"] for e in ended] == [0, 1]
    assert tracker.flush() == []


def test_tracker_without_frame_history_gives_the_same_tracks_in_flat_memory():
    """A live stream's tracker: the same track ids, memory flat, and no event summaries (none wanted)."""
    full, flat = EventTracker(), EventTracker(keep_frames=False)
    ended_in_full = 0
    for frame in range(2000):  # an event that never ends, beside one that comes and goes
        detections = [detection(frame, 1, 40.0 + (frame % 7)), detection(frame, 1, -100.0)][: 1 + (frame // 50) % 2]
        (flat_tracked, flat_ended), (full_tracked, full_ended) = flat.update(frame, detections), full.update(frame, detections)
        assert [d.track for d in flat_tracked] == [d.track for d in full_tracked]
        assert flat_ended == []
        ended_in_full += len(full_ended)
    assert ended_in_full == 19  # the event that comes and goes, ended 19 times
    assert max(len(track.frames) for track in flat._open) == 1
    assert max(len(track.frames) for track in full._open) == 2000
    assert flat.flush() == [] and len(full.flush()) == 2


def test_frame_json_for_live_output():
    frame = frame_json(12, [detection(12, 0, 45.0)], class_names=["speech"])
    assert frame["time_s"] == pytest.approx(1.2)
    assert frame["events"][0]["class_name"] == "speech" and frame["events"][0]["azimuth"] == 45.0


def test_decode_and_targets_do_not_import_torch():
    code = "import sys, seld.decode, seld.targets; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
