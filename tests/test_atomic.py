"""Whole-or-nothing files (seld.atomic), which every writer of the project goes through."""

import os
import stat

import numpy as np
import pytest

from seld.atomic import atomic_path, write_text_atomic
from seld.formats import Events, read_reference, write_reference


def test_writes_whole_file_with_the_mode_open_gives(tmp_path):
    write_text_atomic(tmp_path / "deep" / "a.csv", "1,2\n")
    with open(tmp_path / "plain", "w"):
        pass
    assert (tmp_path / "deep" / "a.csv").read_text() == "1,2\n"
    assert stat.S_IMODE(os.stat(tmp_path / "deep" / "a.csv").st_mode) == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["a.csv"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_an_interrupted_write_raises_and_leaves_the_old_file(tmp_path, error):
    target = tmp_path / "a.csv"
    target.write_text("old\n")
    with pytest.raises(type(error)):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise error
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]


def test_reference_csv_round_trips_through_the_atomic_writer(tmp_path):
    events = Events(np.array([3, 1]), np.array([0, 2]), np.array([0, 1]), np.array([10.0, -170.5]),
                    np.array([5.0, 0.0]), np.array([1.5, 2.0]))
    write_reference(tmp_path / "m.csv", events)
    assert (tmp_path / "m.csv").read_text() == "1,2,1,-170.5,0,200\n3,0,0,10,5,150\n"
    assert read_reference(tmp_path / "m.csv").frame.tolist() == [1, 3]
