"""The Reconstruct particle widget against napari's ViewerModel (no canvas): fields, runs,
cancel, continue, errors, job.star, MPI subprocess, queue submission, GUI latency."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_subtomo_recon.io import jobstar as js

pytestmark = pytest.mark.gui

SMALL = {
    "n_tomograms": 3,  # Continue! resumes after the first tomogram's checkpoint
    "particles_per_tomogram": 10,
    "n_tilts": 21,
    "image_size": (256, 256),
    "tomo_size": (256, 256, 100),
}
FAST = {"box_size": 32, "binning": 2, "nr_threads": 2}  # ~1 s
SLOW = {"box_size": 96, "binning": 1, "nr_threads": 1}  # a few seconds, for cancel/latency


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from napari_subtomo_recon.simulate import simulate

    return simulate(tmp_path_factory.mktemp("sim"), **SMALL)


@pytest.fixture
def widget(qtbot, dataset):
    from napari.components import ViewerModel

    from napari_subtomo_recon._widget import ReconstructParticleWidget

    viewer = ViewerModel()
    w = ReconstructParticleWidget(viewer)
    qtbot.addWidget(w)
    w.set_values(
        {"project_dir": str(dataset.root), "in_optimisation": "optimisation_set.star", **FAST}
    )
    yield w
    w.runner.cancel()
    assert w.runner.wait(20), "the job did not stop"


@pytest.fixture
def errors(monkeypatch):
    """Error notifications shown to the user."""
    import napari.utils.notifications as nt

    shown: list[str] = []
    monkeypatch.setattr(nt, "show_error", lambda msg: shown.append(str(msg)))
    return shown


def wait_done(qtbot, w, timeout=90_000):
    qtbot.waitUntil(lambda: not w.runner.running, timeout=timeout)
    assert w.runner.wait(10)
    return w.last_outcome


def maps_in(job_dir: Path) -> list[str]:
    return sorted(p.name for p in job_dir.glob("*.mrc")) if job_dir.exists() else []


def relative_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


def assert_same_maps(job_dir: Path, ref_dir: Path) -> None:
    from napari_subtomo_recon.io.mrc import read_map

    for tag in ("merged", "half1", "half2"):
        a, b = read_map(job_dir / f"{tag}.mrc")[0], read_map(ref_dir / f"{tag}.mrc")[0]
        assert a.shape == b.shape and relative_rms(a, b) <= 1e-6, tag


# ---------------------------------------------------------------------------------------


def test_tabs_fields_and_defaults(qtbot, tmp_path):
    from napari.components import ViewerModel

    from napari_subtomo_recon._widget import ReconstructParticleWidget

    w = ReconstructParticleWidget(ViewerModel())
    qtbot.addWidget(w)
    w.set_values({"project_dir": str(tmp_path)})
    tabs = [w.tabs.tabText(i) for i in range(w.tabs.count())]
    assert tabs == ["I/O", "Average", "Helix", "Running"]
    opts = js.job_options()
    for name, opt in opts.items():
        f = w.fields[name]
        assert f.name == name and f.label == opt.label.rstrip() and f.tooltip == opt.help
        assert name in [x.name for x in w.containers[opt.tab]]
        if opt.kind in ("int", "float"):
            assert (f.min, f.max, f.step) == (opt.min, opt.max, opt.step), name
        if name not in ("project_dir", "output_dir"):
            assert f.value == opt.default, name
    assert w.fields["binning"].value == 1.0 and w.fields["box_size"].value == 128
    assert w.fields["crop_size"].value == -1 and w.fields["snr"].value == 0
    assert w.fields["sym_name"].value == "C1" and w.fields["helical_twist"].value == -1
    assert w.fields["output_dir"].value == "Reconstruct/job001/"
    assert w.values()["project_dir"] == str(tmp_path)
    # RELION greys out what the switches do not activate
    assert not w.fields["in_particles"].enabled and not w.fields["helical_rise"].enabled
    assert not w.fields["qsubscript"].enabled
    w.fields["use_direct_entries"].value = True
    w.fields["do_helix"].value = True
    w.fields["do_queue"].value = True
    assert w.fields["in_particles"].enabled and w.fields["helical_rise"].enabled
    assert w.fields["qsubscript"].enabled
    (tmp_path / "p2" / "Extract" / "job007").mkdir(parents=True)
    w.fields["project_dir"].value = str(tmp_path / "p2")
    assert w.fields["output_dir"].value == "Reconstruct/job008/"


def test_symmetry_is_validated_while_typing(widget):
    sym = widget.fields["sym_name"]
    for typed in ("C", "C6x", "Q7"):
        sym.native.clear()
        for ch in typed:  # as typed, one key at a time
            sym.native.insert(ch)
        assert widget.sym_status.value, typed
    sym.value = "D"
    assert widget.sym_status.value
    sym.value = "C6"
    assert widget.sym_status.value == "" and widget.message.text() == ""
    assert "--sym C6" in widget.command_view.toPlainText()


def test_equivalent_command_line_is_shown(widget):
    widget.set_values({"crop_size": 24, "snr": 0.00005, "mem": 2, "other_args": "--whiten"})
    out = widget.fields["output_dir"].value
    assert widget.command_view.toPlainText() == (
        f"subtomo-recon --i optimisation_set.star --theme classic --o {out} --b 32 --crop 24 "
        f"--bin 2 --SNR 5e-05 --j 2 --j_out 2 --j_in 1 --sym C1 --mem 2 --whiten "
        f"--pipeline_control {out}"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"box_size": 64, "crop_size": 96}, "--crop 96: the cropped box must not exceed the box"),
        ({"sym_name": "C7x"}, "--sym C7x"),
        ({"in_optimisation": "Extract/job099/optimisation_set.star"}, "file not found"),
        ({"use_direct_entries": True, "in_optimisation": ""}, "no tomogram set"),
        ({"other_args": "--bogus"}, "unknown flag --bogus"),
    ],
)
def test_invalid_settings_are_refused(widget, errors, change, message):
    widget.set_values(change)
    job_dir = widget.job_dir()
    assert widget.run() is False
    assert not widget.runner.running and not job_dir.exists()
    assert message in widget.last_error and "\n" not in widget.last_error
    assert errors == [widget.last_error]
    assert message in widget.message.text()


def test_load_and_write_job_star(widget, tmp_path):
    project = tmp_path / "project"
    job_dir = project / "Reconstruct" / "job011"
    values = {
        **js.default_values(), "in_optimisation": "Extract/job010/optimisation_set.star",
        "binning": 6, "box_size": 192, "crop_size": 96, "sym_name": "C6", "nr_mpi": 5,
        "nr_threads": 12, "mem": 50, "other_args": "--whiten",
    }  # fmt: skip
    js.write_job_star(job_dir, js.JobStar(options=js.job_star_values(values)))
    assert widget.load_job_star(job_dir / "job.star")
    got = widget.values()
    for k in ("in_optimisation", "binning", "box_size", "crop_size", "sym_name", "nr_mpi"):
        assert got[k] == values[k], k
    assert (got["nr_threads"], got["mem"], got["other_args"]) == (12, 50, "--whiten")
    assert Path(got["project_dir"]) == project.resolve()
    assert got["output_dir"] == "Reconstruct/job012/"  # a new job, as RELION numbers them
    assert "--crop 96 --bin 6 --j 12 --j_out 12 --j_in 1 --sym C6 --mem 50 --whiten" in (
        widget.command_view.toPlainText()
    )
    saved = widget.save_job_star(tmp_path / "copy" / "job.star")
    assert js.read_job_star(saved).options == js.read_job_star(job_dir).options
    # a job.star of another job type is refused with a message
    other = tmp_path / "other"
    other.mkdir()
    (other / "job.star").write_text("data_job\n_rlnJobTypeLabel relion.autopick\n")
    assert not widget.load_job_star(other)
    assert "relion.autopick" in widget.last_error


def test_full_run_on_sample_data(qtbot, widget, tmp_path):
    from napari_subtomo_recon._sample_data import make_sample_data

    viewer = widget.viewer
    (data, kw, kind) = make_sample_data(tmp_path / "sample", **{**SMALL, "n_tomograms": 2})[0]
    viewer.add_image(data, **kw)  # what napari does with sample data: the widget fills in
    root = (tmp_path / "sample").resolve()
    assert Path(widget.fields["project_dir"].value).resolve() == root
    assert widget.fields["in_optimisation"].value == "optimisation_set.star"
    assert widget.fields["sym_name"].value == "C6"
    widget.set_values({"box_size": 32, "nr_threads": 2})
    widget.preview_interval = 0.0  # a preview with every progress report
    previews = []  # the preview layer's scale, from Progress.voxel_size

    def on_progress(u):
        name = widget.layer_name("merged")
        if u.progress.preview is not None and name in viewer.layers:
            previews.append(tuple(viewer.layers[name].scale))

    widget.runner.progressed.connect(on_progress)
    assert widget.run(), widget.last_error
    out = wait_done(qtbot, widget)
    assert out.status == "ok", out.message
    job_dir = root / "Reconstruct" / "job001"
    assert out.job_dir == job_dir
    voxel = 2.0 * 2.0  # pixel size x binning
    assert previews, "no live preview of the merged map"
    assert np.allclose(previews, voxel)
    names = [lay.name for lay in viewer.layers]
    assert names == ["ground truth", "job001 half2", "job001 half1", "job001 merged"]
    merged = viewer.layers["job001 merged"]
    assert merged.rendering == "iso" and merged.visible
    assert not viewer.layers["job001 half1"].visible and not viewer.layers["job001 half2"].visible
    assert np.allclose(merged.scale, voxel) and out.voxel_size == pytest.approx(voxel)
    lo, hi = merged.contrast_limits
    assert lo < merged.iso_threshold < hi
    assert 0.001 < float((merged.data > merged.iso_threshold).mean()) < 0.3
    assert viewer.dims.ndisplay == 3
    # FSC plot with both resolutions
    plot = widget.fsc_plot
    assert plot.isVisibleTo(widget) and plot.curve is not None and plot.curve.size == 17
    assert plot.resolutions[0.143] == pytest.approx(out.resolution_0143)
    assert 2 * voxel <= out.resolution_0143 <= out.resolution_05 < 40
    assert "0.143" in widget.status.text()
    # the job folder as RELION's pipeliner would leave it
    for f in ("job.star", "note.txt", "merged.mrc", "half1.mrc", "half2.mrc"):
        assert (job_dir / f).is_file(), f
    assert (job_dir / "RELION_JOB_EXIT_SUCCESS").exists()
    assert js.read_job_star(job_dir).options["sym_name"] == "C6"
    assert "subtomo-recon --i optimisation_set.star" in (job_dir / "note.txt").read_text()
    assert widget.fields["output_dir"].value == "Reconstruct/job002/"  # next run: new job


@pytest.fixture
def slow_job(monkeypatch):
    """The real job, with a pause after each backprojection progress report: however fast
    the machine, the GUI's cancel then lands in the middle of the backprojection.
    Set ``slow_job["delay"] = 0`` to run at full speed again."""
    import napari_subtomo_recon.job as job

    real = job.run
    control = {"delay": 0.05}

    def run(*args, **kwargs):
        gen = real(*args, **kwargs)
        try:
            while True:
                try:
                    p = next(gen)
                except StopIteration as stop:
                    return stop.value
                yield p
                if p.stage == "backprojecting":
                    time.sleep(control["delay"])
        finally:
            gen.close()

    monkeypatch.setattr(job, "run", run)
    return control


# subtomo-recon itself (SIGTERM handling, exit codes and status files included), with a
# pause after each batch of the backprojection, for the widget's subprocess runs
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


class _SlowProgram:
    def __init__(self):
        self._mp = pytest.MonkeyPatch()

    def on(self) -> None:
        from napari_subtomo_recon._qt import runner

        tokens = [sys.executable, "-c", SLOW_PROGRAM]
        self._mp.setattr(runner, "program_tokens", lambda: tokens)

    def off(self) -> None:
        self._mp.undo()


@pytest.fixture
def slow_program():
    """subtomo-recon with a pause after each backprojection progress report (see
    slow_job) for the widget's subprocess runs; ``.off()`` / ``.on()`` switch it."""
    ctl = _SlowProgram()
    ctl.on()
    yield ctl
    ctl.off()


def cancel_mid_backprojection(widget, min_tomogram: int = 1) -> dict:
    """Click Cancel on the first backprojection report with done > 0 (of tomogram
    ``min_tomogram`` or later); returns when it was clicked and what had been seen."""
    state = {"seen": []}

    def on_progress(u):
        p = u.progress
        if p.stage != "backprojecting":
            return
        state["seen"].append((p.tomogram_index, p.done, p.total))
        if "t" not in state and p.done > 0 and p.tomogram_index >= min_tomogram:
            state["t"] = time.perf_counter()
            widget.cancel_button.click()

    widget.runner.progressed.connect(on_progress)
    state["disconnect"] = lambda: widget.runner.progressed.disconnect(on_progress)
    return state


def no_process_left(pid: int) -> bool:
    """Nothing of the subprocess' session (mpirun and its ranks) runs any more."""
    from napari_subtomo_recon._qt.runner import session_alive

    return not session_alive(pid)


def test_cancel_stops_promptly_and_leaves_no_maps(qtbot, widget, slow_job):
    widget.set_values(SLOW)
    job_dir = widget.job_dir()
    state = {}

    def on_progress(u):
        if u.progress.stage == "backprojecting" and "t" not in state:
            state["t"] = time.perf_counter()
            widget.cancel_button.click()

    widget.runner.progressed.connect(on_progress)
    assert widget.run(), widget.last_error
    out = wait_done(qtbot, widget)
    took = time.perf_counter() - state["t"]
    assert out.status == "cancelled"
    assert took < 1.0, f"cancel took {took:.2f} s"
    assert maps_in(job_dir) == []
    assert (job_dir / "RELION_JOB_EXIT_ABORTED").exists()
    assert (job_dir / "job.star").exists()
    assert widget.layer_name("merged", job_dir) not in widget.viewer.layers
    assert "cancelled" in widget.status.text() and "Continue!" in widget.status.text()
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    # the interrupted job stays selected for Continue!, also when its job.star is loaded
    assert widget.job_dir() == job_dir and widget.continue_button.isEnabled()
    widget.fields["output_dir"].value = "Reconstruct/job099/"
    assert not widget.continue_button.isEnabled()
    assert widget.load_job_star(job_dir / "job.star")
    assert widget.job_dir() == job_dir and widget.continue_button.isEnabled()


def test_continue_after_cancel_gives_the_uninterrupted_maps(qtbot, widget, slow_job, dataset):
    """RELION's Continue!: same job, same folder, --only_do_unfinished, from the checkpoint."""
    from napari_subtomo_recon.job import run_to_completion

    job_dir = widget.job_dir()
    assert not widget.continue_button.isEnabled()  # a new job folder: nothing to continue
    state = cancel_mid_backprojection(widget, min_tomogram=2)  # tomogram 1 is checkpointed
    assert widget.run(), widget.last_error
    assert wait_done(qtbot, widget).status == "cancelled"
    state["disconnect"]()
    assert maps_in(job_dir) == []
    assert (job_dir / "temp" / "checkpoint_rank0.json").is_file()
    assert widget.job_dir() == job_dir and widget.continue_button.isEnabled()
    assert not js.read_job_star(job_dir).is_continue

    slow_job["delay"] = 0.0
    seen = []
    widget.runner.progressed.connect(lambda u: seen.append(u.progress))
    widget.continue_button.click()
    assert widget.runner.running, widget.last_error
    assert "--only_do_unfinished" in widget.command_view.toPlainText()
    assert widget.command_label.text() == "Continuing with:"
    out = wait_done(qtbot, widget)
    assert out.status == "ok", out.message
    assert out.job_dir == job_dir
    # it resumed: the first backprojection report is past tomogram 1
    first = [p for p in seen if p.stage == "backprojecting"]
    assert first, [(p.stage, p.message) for p in seen]
    assert first[0].tomogram_index >= 2 and first[0].done > 0
    assert js.read_job_star(job_dir).is_continue
    notes = (job_dir / "note.txt").read_text().split("Executing new job")
    assert len(notes) == 3 and "--only_do_unfinished" not in notes[1]
    assert "--only_do_unfinished" in notes[2]
    assert (job_dir / "RELION_JOB_EXIT_SUCCESS").exists()
    assert not (job_dir / "RELION_JOB_EXIT_ABORTED").exists()
    assert not (job_dir / "temp").exists()
    assert "--only_do_unfinished" not in widget.command_view.toPlainText()
    # the same maps as an uninterrupted run
    ref = "Reconstruct/uninterrupted/"
    params, _ = js.params_from_values({**widget.values(), "output_dir": ref})
    run_to_completion(params, root=str(dataset.root))
    assert_same_maps(job_dir, Path(dataset.root) / ref)
    # a finished job has nothing to continue
    assert widget.job_dir() != job_dir and not widget.continue_button.isEnabled()
    widget.set_values({"output_dir": str(job_dir.relative_to(dataset.root))})
    assert not widget.continue_button.isEnabled()
    assert widget.continue_job() is False and "nothing to continue" in widget.last_error


def test_failed_run_is_a_notification(qtbot, widget, errors, dataset):
    bad = Path(dataset.root) / "bad_optimisation_set.star"
    bad.write_text("data_\n_rlnTomoParticlesFile particles.star\n_rlnTomoTomogramsFile nope.star\n")
    widget.set_values({"in_optimisation": bad.name})
    assert widget.run()
    out = wait_done(qtbot, widget)
    assert out.status == "error"
    # paths in messages are joined with the project folder
    assert errors == [f"{Path(dataset.root) / 'nope.star'}: tomogram set not found"]
    assert (out.job_dir / "RELION_JOB_EXIT_FAILURE").exists()
    assert widget.run_button.isEnabled()


def test_new_submit_cancels_the_old_task(qtbot):
    """napari-cryoet-data-portal's pattern: stale tasks never reach the GUI."""
    from napari_subtomo_recon._qt.runner import JobRunner, Outcome, Update

    def slow(tag, cancel):
        for i in range(200):
            if cancel.is_set():
                return Outcome("cancelled", tag)
            time.sleep(0.01)
            yield Update(i)
        return Outcome("ok", tag)

    runner = JobRunner()
    got, seen = [], []
    runner.finished.connect(got.append)
    runner.progressed.connect(lambda u: seen.append(u.progress))
    runner.submit(slow, "first")
    qtbot.waitUntil(lambda: len(seen) > 2, timeout=5000)
    runner.submit(slow, "second")
    n = len(seen)
    runner.cancel()
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)
    assert runner.wait(5)
    assert [(o.status, o.message) for o in got] == [("cancelled", "second")]
    assert len(seen) <= n + 1


def test_gui_stays_responsive_while_running(qtbot, widget):
    import gc

    widget.preview_interval = 0.3
    assert widget.run()  # warm-up: loads the compiled kernels once per process
    assert wait_done(qtbot, widget).status == "ok"
    # the garbage of earlier tests (viewers, windows) is not this widget's: a full
    # collection of it on the GUI thread takes ~0.3 s, so collect it before measuring
    gc.collect()
    gc.freeze()
    try:
        gaps, busy, n = _event_loop_gaps(qtbot, widget)
    finally:
        gc.unfreeze()
    assert busy > 1.0 and n > 40
    assert gaps.max() < 0.2, f"event loop blocked for {gaps.max() * 1000:.0f} ms"


def _event_loop_gaps(qtbot, widget):
    """Run jobs until the worker has been busy for 2 s, with a 20 ms timer on the GUI
    thread; the gaps between its ticks, the busy time and the number of ticks."""
    from qtpy.QtCore import QTimer

    widget.set_values(SLOW)
    stamps: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    timer.start()
    busy = 0.0  # jobs until the worker has been busy long enough to say something
    for _ in range(8):
        t0 = time.perf_counter()
        assert widget.run()
        out = wait_done(qtbot, widget)
        busy += time.perf_counter() - t0
        assert out.status == "ok"
        if busy > 2.0:
            break
    timer.stop()
    return np.diff(stamps), busy, len(stamps)


def test_subprocess_run_and_cancel(qtbot, widget, slow_program):
    """The subprocess path (used for MPI) with one process: progress, maps, cancel in the
    middle of the backprojection."""
    widget.use_subprocess = True
    stages = []
    widget.runner.progressed.connect(lambda u: stages.append(u.progress.stage))
    assert widget.run(), widget.last_error
    out = wait_done(qtbot, widget)
    assert out.status == "ok", out.message
    assert "backprojecting" in stages and out.fsc is not None
    assert widget.layer_name("merged", out.job_dir) in widget.viewer.layers
    assert "particle-tilts" in (out.job_dir / "run.out").read_text()
    assert (out.job_dir / "RELION_JOB_EXIT_SUCCESS").exists()
    # cancel in the middle of the backprojection: the process group goes, no maps
    job_dir = widget.job_dir()
    state = cancel_mid_backprojection(widget)
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)
    took = time.perf_counter() - state["t"]
    out = widget.last_outcome
    assert out.status == "cancelled", out.message
    assert state["seen"][-1][1] < state["seen"][-1][2]  # it was still backprojecting
    assert took < 2.5, f"cancel took {took:.2f} s"
    assert no_process_left(out.pid)
    assert maps_in(job_dir) == []
    # subtomo-recon itself ended the job on SIGTERM and said so
    assert "subtomo-recon: cancelled: stopped by signal" in (job_dir / "run.err").read_text()
    assert (job_dir / "RELION_JOB_EXIT_ABORTED").exists()
    assert not (job_dir / "RELION_JOB_EXIT_FAILURE").exists()
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert widget.continue_button.isEnabled() and "cancelled" in widget.status.text()


@pytest.mark.mpi
def test_mpi_run_cancel_and_continue(qtbot, widget, monkeypatch, slow_program):
    """mpirun -n 2: a run; a run cancelled in the middle of the backprojection (mpirun
    and its ranks go within ~2 s, no maps); Continue! ends with the first run's maps."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    slow_program.off()  # the first run at full speed
    widget.set_values({"nr_mpi": 2, "nr_threads": 1})
    assert widget.command_view.toPlainText().startswith("mpirun -n 2 subtomo-recon --i ")
    totals = []
    widget.runner.progressed.connect(lambda u: totals.append(u.progress.total))
    assert widget.run(), widget.last_error
    out = wait_done(qtbot, widget)
    assert out.status == "ok", out.message
    assert max(totals) > 0 and out.resolution_0143 is not None
    assert set(out.maps) == {"merged", "half1", "half2"}
    ref_dir = out.job_dir
    # cancel in rank 0's second tomogram (its first is checkpointed): mpirun and its
    # ranks go, no maps are written
    slow_program.on()
    job_dir = widget.job_dir()
    state = cancel_mid_backprojection(widget, min_tomogram=2)
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60_000)
    took = time.perf_counter() - state["t"]
    state["disconnect"]()
    out = widget.last_outcome
    assert out.status == "cancelled", out.message
    assert took < 2.5, f"cancel took {took:.2f} s"
    assert no_process_left(out.pid)
    left = [
        p.name
        for p in Path("/proc").glob("[0-9]*")
        if str(job_dir.name) in _cmdline(p) and "subtomo" in _cmdline(p)
    ]
    assert left == [], f"processes left behind: {left}"
    assert maps_in(job_dir) == []
    # one exit-status file, subtomo-recon's (the widget does not contradict it); under MPI
    # the ranks' cancel is reported as a failure until job._agree passes Cancelled on
    status = [f for f in js.STATUS_FILES if (job_dir / f).exists()]
    assert status in (["RELION_JOB_EXIT_ABORTED"], ["RELION_JOB_EXIT_FAILURE"])
    assert (job_dir / "temp" / "checkpoint_rank0.json").is_file()
    assert "cancelled" in widget.status.text() and widget.continue_button.isEnabled()
    # Continue!: mpirun again in the same folder, from the checkpoints
    slow_program.off()
    first = []
    widget.runner.progressed.connect(
        lambda u: first.append(u.progress) if u.progress.stage == "backprojecting" else None
    )
    assert widget.continue_job(), widget.last_error
    assert widget.command_view.toPlainText().startswith("mpirun -n 2 subtomo-recon ")
    assert "--only_do_unfinished" in widget.command_view.toPlainText()
    out = wait_done(qtbot, widget)
    assert out.status == "ok", out.message
    assert first[0].done > 0  # rank 0 resumed after its first tomogram
    assert js.read_job_star(job_dir).is_continue
    assert_same_maps(job_dir, ref_dir)


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_queue_submission(qtbot, widget, dataset):
    template = Path(dataset.root) / "qsub_template.sh"
    template.write_text(
        "#!/bin/bash\n#SBATCH -p XXXqueueXXX -n XXXmpinodesXXX -c XXXthreadsXXX "
        "-o XXXoutfileXXX\nmpirun -n XXXmpinodesXXX XXXcommandXXX\n"
    )
    widget.set_values(
        {"do_queue": True, "qsub": "echo submitted", "qsubscript": template.name, "nr_mpi": 3}
    )
    job = widget.fields["output_dir"].value
    assert widget.command_view.toPlainText().startswith("subtomo-recon --i")
    assert widget.run(), widget.last_error
    out = wait_done(qtbot, widget)
    assert out.status == "submitted"
    assert f"submitted {job}run_submit.script" in out.message
    script = (Path(dataset.root) / job / "run_submit.script").read_text()
    assert f"#SBATCH -p openmpi -n 3 -c 2 -o {job}run.out" in script
    assert f"mpirun -n 3 subtomo-recon --i optimisation_set.star --theme classic --o {job}" in (
        script
    )
