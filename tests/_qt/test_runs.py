"""The widget runs jobs as child processes: progress, previews, maps, cancel, Continue!,
MPI, the queue, errors.  Against napari's ViewerModel (no canvas)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from napari_subtomo_recon import events as ev
from napari_subtomo_recon.io import jobstar as js
from napari_subtomo_recon.job import relion

from .conftest import (
    SLOW,
    assert_same_maps,
    cancel_mid_backprojection,
    maps_in,
    set_params,
    wait_done,
    wait_layers,
)

pytestmark = pytest.mark.gui


@pytest.fixture
def quick_previews(monkeypatch):
    import napari_subtomo_recon._qt.job_widget as jw

    monkeypatch.setattr(jw, "PREVIEW_SECONDS", 0.05)


def test_full_run(qtbot, widget, quick_previews):
    viewer = widget.viewer
    seen = []
    previews_shown = []

    def on_update(u):
        seen.append(u.event)
        if isinstance(u.event, ev.Preview):
            previews_shown.append(widget.layer_name("merged") in viewer.layers)

    widget.jobs.progressed.connect(on_update)
    widget.more_maps.setChecked(True)
    set_params(widget, crop_size=24, symmetry="C6")
    job_dir = widget.job_dir()
    assert widget.run(), widget.last_error
    out = wait_done(qtbot, widget)
    assert out.status == "ok", out.message
    name = job_dir.name
    wait_layers(qtbot, viewer, [f"{name} merged", f"{name} half1", f"{name} merged_full"])
    stages = [e.stage for e in seen if isinstance(e, ev.Progress)]
    assert ev.Stage.BACKPROJECTING in stages and stages[-1] == ev.Stage.DONE
    assert previews_shown, "no live preview"
    voxel = 2.0 * 2.0  # pixel size x binning
    merged = viewer.layers[f"{name} merged"]
    assert merged.rendering == "iso" and merged.visible and merged.data.shape == (24, 24, 24)
    for tag in ("half1", "half2", "merged_full"):
        assert not viewer.layers[f"{name} {tag}"].visible
    assert np.allclose(merged.scale, voxel) and out.result.voxel_size == pytest.approx(voxel)
    lo, hi = merged.contrast_limits
    assert lo < merged.iso_threshold < hi
    assert viewer.dims.ndisplay == 3
    qtbot.waitUntil(lambda: viewer.layers.selection.active is merged, timeout=5000)
    assert viewer.layers[-1] is merged  # on top
    # the FSC plot with both resolutions
    plot = widget.fsc_plot
    assert plot.isVisibleTo(widget) and plot.curve is not None and plot.curve.size == 17
    assert plot.resolutions[0.143] == pytest.approx(out.result.resolution_0143)
    assert "0.143" in widget.status.text()
    # the job folder as RELION's pipeliner would leave it, and nothing else
    names = {p.name for p in job_dir.iterdir()}
    assert {"job.star", "note.txt", "run.out", "run.err", "merged.mrc", "half1.mrc",
            "RELION_JOB_EXIT_SUCCESS", "optimisation_set.star"} <= names  # fmt: skip
    assert "temp" not in names and not any(n.startswith(".") for n in names)
    assert js.read_job_star(job_dir).options["sym_name"] == "C6"
    assert "subtomo-recon --i optimisation_set.star" in (job_dir / "note.txt").read_text()
    assert widget.params().output_dir != f"Reconstruct/{name}/"  # the next run: a new job


def test_previews_keep_the_users_threshold_and_colormap(qtbot, widget, quick_previews):
    viewer = widget.viewer
    set_params(widget, **SLOW)
    user = {}

    def on_update(u):
        name = widget.layer_name("merged")
        if isinstance(u.event, ev.Preview) and name in viewer.layers and not user:
            layer = viewer.layers[name]
            lo, hi = layer.contrast_limits
            user["iso"] = lo + 0.37 * (hi - lo)  # the user moves the slider
            layer.iso_threshold = user["iso"]
            layer.colormap = "magma"
            user["camera"] = viewer.camera.angles = (10.0, 20.0, 30.0)

    widget.jobs.progressed.connect(on_update)
    assert widget.run(), widget.last_error
    out = wait_done(qtbot, widget)
    assert out.status == "ok", out.message
    qtbot.wait(300)  # the final maps arrive one per event-loop turn
    assert user, "no preview arrived"
    merged = viewer.layers[widget.layer_name("merged", out.result.output_dir)]
    assert merged.iso_threshold == pytest.approx(user["iso"])
    assert merged.colormap.name == "magma"
    assert viewer.camera.angles == pytest.approx(user["camera"])


def test_twenty_runs_never_show_an_error(qtbot, widget):
    said: list[str] = []
    real = widget.status.setText
    widget.status.setText = lambda text: (said.append(text), real(text))[1]
    for _ in range(20):
        widget.last_outcome = None
        assert widget.run(), widget.last_error
        assert wait_done(qtbot, widget).status == "ok"
        qtbot.wait(50)
    assert said and not [t for t in said if "error" in t.lower()], said


def test_cancel_stops_promptly_and_leaves_no_maps(qtbot, widget, slow_program):
    set_params(widget, **SLOW)
    job_dir = widget.job_dir()
    state = cancel_mid_backprojection(widget)
    assert widget.run(), widget.last_error
    out = wait_done(qtbot, widget)
    took = time.perf_counter() - state["t"]
    assert out.status == "cancelled", out.message
    assert took < 2.5, f"cancel took {took:.2f} s"
    assert maps_in(job_dir) == [] and not (job_dir / "temp" / "preview.mrc").exists()
    assert relion.status_of(job_dir) == "aborted"
    assert (job_dir / "job.star").exists()
    assert widget.layer_name("merged", job_dir) not in widget.viewer.layers
    assert "cancelled" in widget.status.text() and "Continue!" in widget.status.text()
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    from napari_subtomo_recon.job.launch import session_alive

    assert not session_alive(out.pid)
    # the program itself ended the job on SIGTERM and said so, through an event
    assert out.failure is not None and out.failure.reason == ev.FailureKind.CANCELLED
    # the interrupted job stays selected for Continue!, also when its job.star is loaded
    assert widget.job_dir() == job_dir and widget.continue_button.isEnabled()
    set_params(widget, output_dir="Reconstruct/job099/")
    assert not widget.continue_button.isEnabled()
    assert widget.load_job_star(job_dir / "job.star")
    assert widget.job_dir() == job_dir and widget.continue_button.isEnabled()


def test_continue_after_cancel_gives_the_uninterrupted_maps(
    qtbot, widget, slow_program, dataset
):  # fmt: skip
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

    slow_program.off()
    seen = []
    widget.jobs.progressed.connect(lambda u: seen.append(u.event))
    widget.last_outcome = None
    widget.continue_button.click()
    assert widget.jobs.running, widget.last_error
    assert "--only_do_unfinished" in widget.command_view.toPlainText()
    assert widget.command_label.text() == "Continuing with:"
    out = wait_done(qtbot, widget)
    assert out.status == "ok", out.message
    assert out.result.output_dir == job_dir
    # it resumed: the first backprojection report is past tomogram 1
    first = [p for p in seen if isinstance(p, ev.Progress) and p.stage == "backprojecting"]
    assert first[0].tomogram_index >= 2 and first[0].done > 0
    assert js.read_job_star(job_dir).is_continue
    notes = (job_dir / "note.txt").read_text().split("Executing new job")
    assert len(notes) == 3 and "--only_do_unfinished" not in notes[1]
    assert "--only_do_unfinished" in notes[2]
    assert relion.status_of(job_dir) == "success"
    assert not (job_dir / "temp").exists()
    # the same maps as an uninterrupted run
    ref = "Reconstruct/uninterrupted/"
    run_to_completion(
        relion.run_params(widget.params().replace(output_dir=ref)), root=str(dataset.root)
    )
    assert_same_maps(job_dir, Path(dataset.root) / ref)
    # a finished job has nothing to continue
    assert widget.job_dir() != job_dir and not widget.continue_button.isEnabled()
    set_params(widget, output_dir=str(job_dir.relative_to(dataset.root)))
    assert not widget.continue_button.isEnabled()
    assert widget.continue_job() is False and "nothing to continue" in widget.last_error


def test_failed_run_is_a_notification(qtbot, widget, errors, dataset):
    bad = Path(dataset.root) / "bad_optimisation_set.star"
    bad.write_text("data_\n_rlnTomoParticlesFile particles.star\n_rlnTomoTomogramsFile nope.star\n")
    set_params(widget, optimisation_set=bad.name)
    job_dir = widget.job_dir()
    assert widget.run()
    out = wait_done(qtbot, widget)
    assert out.status == "error" and out.failure.reason == ev.FailureKind.INPUT
    assert errors == ["nope.star: tomogram set not found"]
    assert relion.status_of(job_dir) == "failure"
    assert widget.run_button.isEnabled()
    assert "Failed: nope.star: tomogram set not found" in widget.status.text()


def test_a_crash_without_a_result_is_reported(qtbot, widget, errors, monkeypatch):
    """A child that dies without saying why (killed, out of memory) is an error too."""
    from napari_subtomo_recon.job import launch

    monkeypatch.setattr(
        launch, "program_tokens",
        lambda module="x": ["python3", "-c", "import os, signal; os.kill(os.getpid(), 9)"],
    )  # fmt: skip
    job_dir = widget.job_dir()
    assert widget.run()
    out = wait_done(qtbot, widget)
    assert out.status == "error" and "killed by signal 9 without a result" in out.message
    assert relion.status_of(job_dir) == "failure"


def test_new_submit_cancels_the_old_task(qtbot):
    """napari-cryoet-data-portal's pattern: stale tasks never reach the GUI."""
    from napari_subtomo_recon._qt.runner import TaskRunner, Update
    from napari_subtomo_recon.job.launch import Outcome

    def slow(tag, cancel):
        for i in range(200):
            if cancel.is_set():
                return Outcome("cancelled", tag)
            time.sleep(0.01)
            yield Update(ev.Progress(ev.Stage.READING, i))
        return Outcome("ok", tag)

    runner = TaskRunner()
    got, seen = [], []
    runner.finished.connect(got.append)
    runner.progressed.connect(lambda u: seen.append(u.event))
    runner.submit(slow, "first")
    qtbot.waitUntil(lambda: len(seen) > 2, timeout=5000)
    runner.submit(slow, "second")
    n = len(seen)
    runner.cancel()
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)
    assert runner.wait(5)
    assert [(o.status, o.message) for o in got] == [("cancelled", "second")]
    assert len(seen) <= n + 1


@pytest.mark.mpi
def test_mpi_run_cancel_and_continue(qtbot, widget, monkeypatch, slow_program):
    """mpirun -n 2: a run; a run cancelled in the middle of the backprojection (mpirun
    and its ranks go within ~2 s, no maps); Continue! ends with the first run's maps."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    slow_program.off()  # the first run at full speed
    set_params(widget, nr_mpi=2, threads=1)
    assert widget.command_view.toPlainText().startswith("mpirun -n 2 subtomo-recon --i ")
    totals = []
    widget.jobs.progressed.connect(
        lambda u: totals.append(u.event.total) if isinstance(u.event, ev.Progress) else None
    )
    assert widget.run(), widget.last_error
    out = wait_done(qtbot, widget)
    assert out.status == "ok", out.message
    assert max(totals) > 0 and out.result.resolution_0143 is not None
    assert {m.tag for m in out.maps} == {"merged"}  # (the half maps on request)
    ref_dir = out.result.output_dir
    # cancel in rank 0's second tomogram (its first is checkpointed)
    slow_program.on()
    job_dir = widget.job_dir()
    state = cancel_mid_backprojection(widget, min_tomogram=2)
    widget.last_outcome = None
    assert widget.run()
    out = wait_done(qtbot, widget)
    took = time.perf_counter() - state["t"]
    state["disconnect"]()
    assert out.status == "cancelled", out.message
    assert took < 2.5, f"cancel took {took:.2f} s"
    from napari_subtomo_recon.job.launch import session_alive

    assert not session_alive(out.pid)
    left = [
        p.name
        for p in Path("/proc").glob("[0-9]*")
        if str(job_dir.name) in _cmdline(p) and "subtomo" in _cmdline(p)
    ]
    assert left == [], f"processes left behind: {left}"
    assert maps_in(job_dir) == []
    assert relion.status_of(job_dir) == "aborted"
    assert (job_dir / "temp" / "checkpoint_rank0.json").is_file()
    assert "cancelled" in widget.status.text() and widget.continue_button.isEnabled()
    # Continue!: mpirun again in the same folder, from the checkpoints
    slow_program.off()
    first = []
    widget.jobs.progressed.connect(
        lambda u: (
            first.append(u.event)
            if isinstance(u.event, ev.Progress) and u.event.stage == "backprojecting"
            else None
        )
    )
    widget.last_outcome = None
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
    set_params(widget, do_queue=True, qsub="echo submitted", qsubscript=template.name, nr_mpi=3)
    job = widget.params().output_dir
    assert widget.command_view.toPlainText().startswith("subtomo-recon --i")
    assert widget.run(), widget.last_error
    out = wait_done(qtbot, widget)
    assert out.status == "submitted"
    assert f"submitted echo submitted {job}run_submit.script" in out.message
    script = (Path(dataset.root) / job / "run_submit.script").read_text()
    assert f"#SBATCH -p openmpi -n 3 -c 2 -o {job}run.out" in script
    assert f"mpirun -n 3 subtomo-recon --i optimisation_set.star --theme classic --o {job}" in (
        script
    )


def test_a_run_waits_for_the_kernel_warm_up(qtbot, widget, monkeypatch):
    """Run while the warm-up compiles: the job starts when it ends, and says so."""
    import napari_subtomo_recon._qt.job_widget as jw

    monkeypatch.setitem(jw._KERNELS, "ready", False)
    release = threading.Event()

    def warm(cancel):  # a warm-up that takes as long as the test wants
        yield from ()
        release.wait(30)
        from napari_subtomo_recon.job.launch import Outcome

        return Outcome("ok")

    widget.warmup.submit(warm)
    assert widget.run(), widget.last_error
    assert not widget.jobs.running and "waits for the kernels" in widget.status.text()
    assert widget.cancel_button.isEnabled() and not widget.run_button.isEnabled()
    release.set()
    out = wait_done(qtbot, widget)
    assert out.status == "ok", out.message


def test_an_empty_half_set_is_a_warning_and_no_fsc(qtbot, widget, dataset, monkeypatch):
    """Issue 14: every particle in half 1 — the maps are written, the user is warned that
    the half-map FSC is not available, and the status gives no resolution."""
    import napari.utils.notifications as nt
    import starfile

    warned: list[str] = []
    monkeypatch.setattr(nt, "show_warning", lambda msg: warned.append(str(msg)))
    root = Path(dataset.root)
    blocks = starfile.read(root / "particles.star", always_dict=True)
    blocks["particles"]["rlnRandomSubset"] = 1
    starfile.write(blocks, root / "one_half.star")
    (root / "one_half_optimisation_set.star").write_text(
        "data_\n_rlnTomoParticlesFile one_half.star\n_rlnTomoTomogramsFile tomograms.star\n"
    )
    set_params(widget, optimisation_set="one_half_optimisation_set.star")
    assert widget.run()
    out = wait_done(qtbot, widget)
    assert out.status == "ok", out.message
    qtbot.waitUntil(lambda: any("FSC is not available" in w for w in warned), timeout=10_000)
    assert "FSC" not in widget.status.text() and "finished" in widget.status.text()
