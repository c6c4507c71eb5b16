"""The event protocol between the job and its reader (the napari widget)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_subtomo_recon import events as ev

EVENTS = [
    ev.Progress(ev.Stage.BACKPROJECTING, 10, 200, "TS_01", 1, 2, "tomogram 1/2", 3.5, 4.0),
    ev.Progress(ev.Stage.COMPILING, message="compiling 12 of 12 kernels"),
    ev.Preview(Path("/p/temp/preview.mrc"), 4.0, 10, 200, (0.5, -1.0, 2.0)),
    ev.Warning("no particles for tomograms: TS_03"),
    ev.Failure(ev.FailureKind.ENVIRONMENT, "/x/merged.mrc: No space left on device", "tb"),
    ev.Result(
        Path("/p/job"),
        {"merged": Path("/p/job/merged.mrc")},
        4.0,
        2465,
        80,
        2.5,
        np.array([1.0, 0.9, float("nan")]),
        10.0,
        12.5,
        ["w"],
    ),
    ev.Result(Path("/p/job")),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_round_trip(event):
    line = ev.encode(event)
    assert line.startswith(ev.PREFIX) and "\n" not in line
    back = ev.decode(line + "\n")
    assert type(back) is type(event)
    if isinstance(event, ev.Result):
        assert (back.output_dir, back.files, back.warnings) == (
            event.output_dir, event.files, event.warnings,
        )  # fmt: skip
        if event.fsc is None:
            assert back.fsc is None
        else:
            np.testing.assert_array_equal(back.fsc, event.fsc)  # nan survives
        assert (back.resolution_0143, back.particles) == (event.resolution_0143, event.particles)
    else:
        assert back == event


def test_other_lines_are_not_events():
    assert ev.decode("warning: something") is None
    assert ev.decode(ev.PREFIX + "{not json") is None
    assert ev.decode(ev.PREFIX + '{"event": "unknown"}') is None
    assert ev.decode(ev.PREFIX + '{"event": "progress"}') is None  # no stage


def test_every_failure_kind_has_its_exit_code():
    codes = {ev.Failure(k, "").exit_code for k in ev.FailureKind}
    assert codes == {1, 2, 3, 4}
