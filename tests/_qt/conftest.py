"""Fixtures of the napari widget's tests: a small data set, a widget on a ViewerModel, a
slowed-down ``subtomo-recon`` for cancelling in mid-run."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

SMALL = {
    "n_tomograms": 3,  # Continue! resumes after the first tomogram's checkpoint
    "particles_per_tomogram": 10,
    "n_tilts": 21,
    "image_size": (256, 256),
    "tomo_size": (256, 256, 100),
}
FAST = {"box_size": 32, "binning": 2.0, "threads": 2}  # ~1 s
SLOW = {"box_size": 96, "binning": 1.0, "threads": 1}  # a few seconds


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    from napari_subtomo_recon.simulate import simulate

    return simulate(tmp_path_factory.mktemp("sim"), **SMALL)


def set_params(widget, **values):
    """Set form fields by parameter name, as a user would type them."""
    for name, value in values.items():
        widget.form.set_value(name, value)
        widget.form.changed.emit(name)


@pytest.fixture
def widget(qtbot, dataset):
    from napari.components import ViewerModel

    from napari_subtomo_recon._widget import ReconstructParticleWidget

    w = ReconstructParticleWidget(ViewerModel())
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: not w.warmup.running, timeout=300_000)
    set_params(w, project_dir=str(dataset.root), optimisation_set="optimisation_set.star", **FAST)
    yield w
    for runner in (w.jobs, w.warmup, w.samples):
        runner.cancel()
        assert runner.wait(20), "a task did not stop"


@pytest.fixture
def errors(monkeypatch):
    """Error notifications shown to the user."""
    import napari.utils.notifications as nt

    shown: list[str] = []
    monkeypatch.setattr(nt, "show_error", lambda msg: shown.append(str(msg)))
    return shown


def wait_done(qtbot, w, timeout=120_000):
    qtbot.waitUntil(lambda: w.last_outcome is not None and not w.jobs.running, timeout=timeout)
    assert w.jobs.wait(10)
    return w.last_outcome


def wait_layers(qtbot, viewer, names, timeout=10_000):
    """The maps arrive one per turn of the event loop after the job's end."""
    qtbot.waitUntil(lambda: all(n in viewer.layers for n in names), timeout=timeout)


def maps_in(job_dir: Path) -> list[str]:
    return sorted(p.name for p in job_dir.glob("*.mrc")) if job_dir.exists() else []


def relative_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


def assert_same_maps(job_dir: Path, ref_dir: Path) -> None:
    from napari_subtomo_recon.io.mrc import read_map

    for tag in ("merged", "half1", "half2"):
        a, b = read_map(job_dir / f"{tag}.mrc")[0], read_map(ref_dir / f"{tag}.mrc")[0]
        assert a.shape == b.shape and relative_rms(a, b) <= 1e-6, tag


# subtomo-recon itself (SIGTERM handling, exit codes and status files included), with a
# pause after each batch of the backprojection
SLOW_PROGRAM = """
import sys, time
import napari_subtomo_recon.core.backprojection as bp
real = bp.backproject
def backproject(*args, **kwargs):
    for n in real(*args, **kwargs):
        yield n
        time.sleep(0.04)
bp.backproject = backproject
from napari_subtomo_recon.cli import main
sys.exit(main(sys.argv[1:]))
"""


class SlowProgram:
    """Switches the widget's ``subtomo-recon`` to the slowed-down one (``on``/``off``)."""

    def __init__(self) -> None:
        self._mp = pytest.MonkeyPatch()

    def on(self) -> None:
        from napari_subtomo_recon.job import launch

        real = launch.program_tokens
        tokens = [sys.executable, "-c", SLOW_PROGRAM]

        def program(module: str = "napari_subtomo_recon") -> list[str]:
            return tokens if module == "napari_subtomo_recon" else real(module)

        self._mp.setattr(launch, "program_tokens", program)

    def off(self) -> None:
        self._mp.undo()


@pytest.fixture
def slow_program():
    ctl = SlowProgram()
    ctl.on()
    yield ctl
    ctl.off()


def cancel_mid_backprojection(widget, min_tomogram: int = 1) -> dict:
    """Click Cancel on the first backprojection report with done > 0 (of tomogram
    ``min_tomogram`` or later); returns when it was clicked and what had been seen."""
    from napari_subtomo_recon import events as ev

    state: dict = {"seen": []}

    def on_progress(u):
        p = u.event
        if not isinstance(p, ev.Progress) or p.stage != ev.Stage.BACKPROJECTING:
            return
        state["seen"].append((p.tomogram_index, p.done, p.total))
        if "t" not in state and p.done > 0 and p.tomogram_index >= min_tomogram:
            state["t"] = time.perf_counter()
            widget.cancel_button.click()

    widget.jobs.progressed.connect(on_progress)
    state["disconnect"] = lambda: widget.jobs.progressed.disconnect(on_progress)
    return state
