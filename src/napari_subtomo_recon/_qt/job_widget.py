"""The "Reconstruct particle" dock widget: RELION's job tabs, Run/Continue/Cancel, maps, FSC.

A thin view: the form is built from :mod:`..params`, the job folder is kept by
:mod:`..job.relion` (job.star, note.txt, status files, Continue!), and every job runs as a
child process (:mod:`..job.launch`) whose events (:mod:`..events`) arrive through
:mod:`.runner`.  Nothing heavy runs on napari's interpreter: the widget imports no Numba,
warms the kernel cache in a child process when it opens, and a Run started meanwhile
waits for it.

**Continue!** has the meaning of RELION's button: it runs the job again in its own folder
with ``--only_do_unfinished`` (``rlnJobIsContinue 1`` in job.star, the command appended
to note.txt), so a cancelled or crashed job resumes from its per-tomogram checkpoints.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import events as ev
from ..errors import EnvironmentFault, InputError
from ..job import relion
from ..job.launch import Child, Outcome, job_argv, program_tokens
from ..params import ReconstructParams
from .form import ParamsForm, relative_to
from .fsc_plot import FscPlot
from .layers import one_per_turn, prepare_map, remove_layers, show_map
from .runner import (
    MORE_MAPS,
    SHOWN_MAPS,
    MapData,
    TaskRunner,
    Update,
    child_work,
    read_map_data,
    submit_work,
)

ERROR_STYLE = "color: #ff6b6b;"
PREVIEW_SECONDS = 2.0  # between live previews of the merged map
JOB_NICE = 10  # jobs run at a lower CPU priority than napari (they get what it leaves)
_KERNELS = {"ready": False}  # a warm-up succeeded in this napari session: no need again


def _warm_napari_in_background(done: threading.Event) -> None:
    """Prepare what napari's first 3D layer needs (~1-2 s: pint's unit registry, the layer,
    its controls, the histogram) off the GUI thread, so that the first map (a preview, the
    sample's truth) does not freeze napari.

    pint's lazily built application registry is not thread-safe: a complete registry is
    built here and installed on the GUI thread, and only if napari has not built one yet.
    """
    built: dict[str, Any] = {}

    def warm() -> None:
        try:
            import napari._qt.layer_controls.qt_image_controls  # noqa: F401
            import napari._vispy.layers.image  # noqa: F401
            import napari.components.histogram  # noqa: F401
            import napari.layers.image  # noqa: F401
            import pint
            import scipy.ndimage  # noqa: F401
            import scipy.spatial.transform  # noqa: F401  (napari's 3D camera)

            built["registry"] = pint.UnitRegistry()
            built["registry"].Unit("angstrom")
            import OpenGL.GL  # noqa: F401  (PyOpenGL, when napari's canvas wants it)
        except Exception:
            pass

    def install() -> None:
        if thread.is_alive():
            QTimer.singleShot(100, install)
            return
        done.set()
        try:
            import pint
            from pint.registry import LazyRegistry

            if "registry" in built and isinstance(pint.get_application_registry().get(),
                                                  LazyRegistry):  # fmt: skip
                pint.set_application_registry(built["registry"])
        except Exception:
            pass

    thread = threading.Thread(target=warm, name="subtomo-recon-warm-napari", daemon=True)
    thread.start()
    QTimer.singleShot(100, install)


class ReconstructParticleWidget(QWidget):
    """RELION 5's Reconstruct particle job as a napari widget."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.last_error: str | None = None
        self.last_outcome: Outcome | None = None
        self._output_auto = True  # output_dir follows the next free job number
        self._running_job: Path | None = None
        self._preview_box = 0  # the merged map's box in voxels, for its preview layer
        self._pending: Child | None = None  # a run waiting for the kernel warm-up

        self.form = ParamsForm(base_dir=lambda: str(self.project()))
        self.form.setMinimumHeight(300)
        self.command_label = QLabel("Command:")
        self.command_view = QPlainTextEdit()
        self.command_view.setReadOnly(True)
        self.command_view.setMaximumHeight(90)
        self.command_view.setToolTip(
            "The equivalent command line (run from the project folder); while a job runs, "
            "the command it runs"
        )
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setStyleSheet(ERROR_STYLE)
        self.live_preview = QCheckBox("Live preview")
        self.live_preview.setChecked(True)
        self.live_preview.setToolTip(
            f"While the job runs, show the partial merged map every {PREVIEW_SECONDS:g} s "
            "(the job spends a little time making it)"
        )
        self.more_maps = QCheckBox("Half maps as layers")
        self.more_maps.setToolTip(
            "Also add half1, half2 and (when cropping) the full-box merged map as hidden "
            "layers when the job has finished; the half-map FSC is plotted either way"
        )
        self.load_button = QPushButton("Load job.star…")
        self.save_button = QPushButton("Save job.star…")
        self.run_button = QPushButton("Run!")
        self.continue_button = QPushButton("Continue!")
        self.cancel_button = QPushButton("Cancel")
        self.load_button.setToolTip("Fill the fields from a RELION job.star")
        self.save_button.setToolTip("Write these settings as a RELION job.star")
        self.run_button.setToolTip("Write job.star and note.txt into the job folder and run")
        self.continue_button.setToolTip(
            "Run the job again in its output job folder with --only_do_unfinished: it resumes "
            "from the checkpoint of the last finished tomogram (after a cancel or a crash). "
            "Possible when the folder exists and has checkpoints or no final maps."
        )
        self.cancel_button.setToolTip(
            "Stop the running job; no maps are written (Continue! resumes it later)"
        )
        self.continue_button.setEnabled(False)
        self.cancel_button.setEnabled(False)
        self.status = QLabel("Ready")
        self.status.setWordWrap(True)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.fsc_plot = FscPlot()

        buttons = QHBoxLayout()
        for b in (self.load_button, self.save_button, self.run_button, self.continue_button,
                  self.cancel_button):  # fmt: skip
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form, 3)
        layout.addWidget(self.command_label)
        layout.addWidget(self.command_view)
        layout.addWidget(self.message)
        switches = QHBoxLayout()
        switches.addWidget(self.live_preview)
        switches.addWidget(self.more_maps)
        switches.addStretch(1)
        layout.addLayout(switches)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        # the plot lives here, not in a dock of its own: showing a new dock when the
        # maps arrive would resize napari's canvas and redraw it at that moment
        layout.addWidget(self.fsc_plot, 2)

        self.jobs = TaskRunner(self)
        self.warmup = TaskRunner(self)
        self.samples = TaskRunner(self)
        self.jobs.progressed.connect(self._on_progress)
        self.jobs.finished.connect(self._on_finished)
        self.warmup.progressed.connect(self._on_warmup_progress)
        self.warmup.finished.connect(self._on_warmup_finished)
        self.samples.finished.connect(self._on_sample_written)
        self.samples.progressed.connect(self._on_sample_progress)
        app = QApplication.instance()
        if app is not None:  # no orphan job (or mpirun) when napari quits
            app.aboutToQuit.connect(self._shutdown)
        self.load_button.clicked.connect(self._load_dialog)
        self.save_button.clicked.connect(self._save_dialog)
        self.run_button.clicked.connect(self.run)
        self.continue_button.clicked.connect(self.continue_job)
        self.cancel_button.clicked.connect(self.cancel)
        self.form.changed.connect(self._on_changed)
        layers = getattr(self.viewer, "layers", None)
        if layers is not None:
            layers.events.inserted.connect(self._on_layer_inserted)

        self.form.set_value("project_dir", os.getcwd())
        self._set_output_auto()
        self.napari_ready = threading.Event()  # set when napari's first layer is prepared
        _warm_napari_in_background(self.napari_ready)
        self.start_warmup()

    # ------------------------------------------------------------------ values
    def params(self) -> ReconstructParams:
        """The form's parameters; InputError names the first bad field."""
        return self.form.params()

    def set_params(self, p: ReconstructParams) -> None:
        self.form.set_params(p)
        self._refresh()

    def project(self) -> Path:
        p = self.form.text("project_dir").strip()
        return Path(p) if p else Path(os.getcwd())

    def job_dir(self) -> Path:
        return self.project() / self.form.text("output_dir").strip()

    def command(self) -> relion.JobCommand:
        return relion.build_command(self.params())

    # ------------------------------------------------------------------ field logic
    def _on_changed(self, name: str) -> None:
        if name == "project_dir" and self._output_auto:
            self._set_output_auto()
        elif name == "output_dir":
            self._output_auto = False
        self._refresh()

    def _select_job(self, job_dir: Path) -> None:
        """Make ``job_dir`` the output job folder (no longer the next free one)."""
        self.form.set_value("output_dir", relative_to(job_dir, self.project()).rstrip("/") + "/")
        self._output_auto = False

    def _set_output_auto(self) -> None:
        self.form.set_value("output_dir", relion.next_job_dir(self.project()))
        self._output_auto = True
        self._refresh()

    def _refresh(self) -> None:
        """Show the command line and the first problem with the settings."""
        self._update_buttons()
        if self._running_job is not None:
            return  # the command view shows the running job's command
        msg = self.form.problem()
        if msg is None:
            try:
                self.command_view.setPlainText(str(self.command()))
            except InputError as e:
                self.command_view.setPlainText("")
                msg = str(e)
            else:
                msg = relion.check(self.params())
        else:
            self.command_view.setPlainText("")
        self.message.setText(msg or "")

    def _update_buttons(self) -> None:
        running = self.jobs.running or self._pending is not None
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running and not self.jobs.cancelling)
        try:
            ok = not running and relion.can_continue(self.job_dir())
        except (OSError, ValueError):
            ok = False
        self.continue_button.setEnabled(ok)

    # ------------------------------------------------------------------ loading / saving
    def load_job_star(self, path: str | os.PathLike[str]) -> bool:
        """Fill the fields from a RELION job.star (or a job folder).

        The output is the next free job folder, except for a job that ran and did not
        finish (cancelled, crashed): that folder stays selected, for Continue!.
        """
        try:
            params, _, notes = relion.read_job(path)
        except InputError as e:
            self._error(str(e))
            return False
        file = Path(path)
        file = file / "job.star" if file.is_dir() else file
        self.form.set_params(params)
        running = self.jobs.running or self._pending is not None
        if running or not relion.was_interrupted(file.parent):
            self._set_output_auto()
        else:
            self._select_job(file.parent)
            notes.append(f"{file.parent.name} did not finish: Continue! resumes it")
        self._refresh()
        self._info(f"loaded {file}" + ("; " + "; ".join(notes) if notes else ""))
        return True

    def use_optimisation_set(self, path: str | os.PathLike[str]) -> None:
        """Use an optimisation set (e.g. Extract/job010/optimisation_set.star) as input."""
        path = Path(path).resolve()
        project = relion.project_for(path)
        for name, value in (
            ("project_dir", str(project)),
            ("optimisation_set", relative_to(path, project)),
            ("use_direct_entries", False), ("particles", ""), ("tomograms", ""),
            ("trajectories", ""),
        ):  # fmt: skip
            self.form.set_value(name, value)
        self._set_output_auto()

    def save_job_star(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Write job.star (default: into the job folder)."""
        try:
            target = Path(path) if path is not None else self.job_dir()
            return relion.write_job(target, self.params())
        except (OSError, InputError) as e:
            self._error(f"cannot write job.star: {e}")
            return None

    def open_job_maps(self, job_dir: str | os.PathLike[str]) -> None:
        """Show the maps of a finished job (read off the GUI thread)."""
        job_dir = Path(job_dir)
        files = {t: job_dir / f"{t}.mrc" for t in self._shown() if (job_dir / f"{t}.mrc").is_file()}
        if not files:
            return

        def work(cancel: threading.Event) -> Outcome:
            maps = [m for t, p in files.items() if (m := read_map_data(p, t)) is not None]
            return Outcome("ok", maps=maps, result=ev.Result(output_dir=job_dir))

        runner = TaskRunner(self)
        runner.finished.connect(lambda out: self._show_maps(out.maps, job_dir))
        runner.submit(work)

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load job.star", str(self.project()), "RELION job (job.star *.star)"
        )
        if path:
            self.load_job_star(path)

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save job.star", str(self.job_dir() / "job.star"), "RELION job (*.star)"
        )
        if path:
            saved = self.save_job_star(path)
            if saved:
                self._info(f"wrote {saved}")

    # ------------------------------------------------------------------ kernel warm-up
    def start_warmup(self) -> None:
        """Compile (or load) the kernels in a child process, in the background (once per
        napari session)."""
        if _KERNELS["ready"]:
            return
        self._warmup_child = Child(
            program_tokens("napari_subtomo_recon.warmup"), os.getcwd(), nice=JOB_NICE
        )
        self.status.setText("Preparing the reconstruction kernels…")
        self.warmup.submit(child_work, self._warmup_child)

    def _on_warmup_progress(self, update: Update) -> None:
        e = update.event
        if isinstance(e, ev.Progress) and not self.jobs.running:
            text = e.message[:1].upper() + e.message[1:]
            if self._pending is not None:
                text = f"Run waits for the kernels: {e.message}"
            self.status.setText(text + "…")

    def _on_warmup_finished(self, outcome: Outcome) -> None:
        _KERNELS["ready"] = outcome.status == "ok"
        if outcome.status == "error":  # the job compiles what it needs itself
            self._warn(f"kernel warm-up failed ({outcome.message}); jobs compile on first use")
        if self._pending is not None:
            child, self._pending = self._pending, None
            self._submit_job(child)
        elif not self.jobs.running:
            if _KERNELS["ready"]:
                self.status.setText("Ready")

    # ------------------------------------------------------------------ sample data
    def _on_layer_inserted(self, event: Any) -> None:
        """The sample data set announces itself with an empty ground-truth layer: write
        it (in a child process) and use it as input."""
        meta = getattr(event.value, "metadata", {}) or {}
        sample = meta.get("subtomo_recon_sample")
        if not sample or sample.get("written"):
            return
        root = Path(sample["root"])
        self.status.setText(f"Writing the sample data set to {root}…")
        argv = [*program_tokens("napari_subtomo_recon._sample_data"), str(root)]
        self._sample_layer = event.value
        self._pause_warmup(True)  # two background jobs on a small machine: one at a time
        child = Child(argv, str(root), nice=JOB_NICE)
        self.samples.submit(child_work, child, shown=("ground_truth",))

    def _on_sample_progress(self, update: Update) -> None:
        if isinstance(update.event, ev.Progress) and not self.jobs.running:
            self.status.setText(update.event.message + "…")

    def _pause_warmup(self, paused: bool) -> None:
        child = getattr(self, "_warmup_child", None)
        if child is not None and self.warmup.running:
            child.pause(paused)

    def _on_sample_written(self, outcome: Outcome) -> None:
        if outcome.status != "ok" or outcome.result is None:
            self._pause_warmup(False)
            self._error(f"sample data: {outcome.message}")
            return
        from .._sample_data import SAMPLE_PARAMS

        files, root = outcome.result.files, outcome.result.output_dir
        layer = getattr(self, "_sample_layer", None)
        truth = next((m for m in outcome.maps if m.tag == "ground_truth"), None)

        def show_truth() -> None:
            if layer is not None and truth is not None and layer in self.viewer.layers:
                layer.metadata["subtomo_recon_sample"]["written"] = True
                show_map(self.viewer, layer.name, truth.data, truth.voxel_size, truth.levels)

        def to_3d() -> None:
            if self.viewer.dims.ndisplay != 3:
                self.viewer.dims.ndisplay = 3

        def fill() -> None:
            p = self.params() if self.form.problem() is None else ReconstructParams.for_gui()
            self.form.set_params(p.replace(
                project_dir=str(root),
                optimisation_set=relative_to(files["optimisation_set"], root),
                use_direct_entries=False, **SAMPLE_PARAMS,
            ))  # fmt: skip
            self._set_output_auto()
            if not self.jobs.running:
                self.status.setText(f"Sample data set in {root}: ready to run")

        def resume() -> None:  # after napari has drawn the map in 3D
            self._later(1000, lambda: self._pause_warmup(False))

        one_per_turn([show_truth, to_3d, self.viewer.reset_view, fill], resume)

    # ------------------------------------------------------------------ running
    def run(self) -> bool:
        """Check the settings, write job.star and note.txt, and start the job."""
        return self._start(is_continue=False)

    def continue_job(self) -> bool:
        """RELION's Continue!: the job again in its own folder, with --only_do_unfinished."""
        return self._start(is_continue=True)

    def _start(self, is_continue: bool) -> bool:
        if self.jobs.running or self._pending is not None:
            self._error("a job is running: cancel it first")
            return False
        msg = self.form.problem()
        if msg:
            self._error(msg)
            return False
        p = self.params()
        project, job_dir = self.project(), self.job_dir()
        if is_continue and not relion.can_continue(job_dir):
            why = "has finished maps" if job_dir.is_dir() else "does not exist"
            self._error(f"Continue: the job folder {p.output_dir} {why}; nothing to continue")
            return False
        msg = relion.check(p, is_continue)
        if msg:
            self._error(msg)
            return False
        try:
            cmd = relion.build_command(p, is_continue)
            relion.start(job_dir, p, is_continue, [str(cmd)])
            if cmd.queue:
                script, argv = relion.write_submission_script(p, cmd)
        except (OSError, InputError, EnvironmentFault) as e:
            self._error(f"cannot start the job: {e}")
            return False
        self.last_error = None
        self.last_outcome = None
        self._running_job = job_dir
        self._show_running_command(cmd, is_continue)
        self._start_progress(job_dir, "continuing…" if is_continue else "starting…")
        if cmd.queue:
            self.status.setText(f"{job_dir.name}: submitting to the queue…")
            self.jobs.submit(submit_work, argv, str(project))
            return True
        env = {ev.PREVIEW_ENV: str(PREVIEW_SECONDS)} if self.live_preview.isChecked() else {}
        child = Child(
            job_argv(cmd), str(project), env=env, log_dir=job_dir, status_dir=job_dir,
            nice=JOB_NICE,
        )  # fmt: skip
        self._preview_box = p.crop_size if 0 < p.crop_size < p.box_size else p.box_size
        if self.warmup.running:
            self._pending = child
            self.status.setText(f"{job_dir.name}: waits for the kernels to be ready…")
            self._update_buttons()
        else:
            self._submit_job(child)
        return True

    def _shown(self) -> tuple[str, ...]:
        return SHOWN_MAPS + (MORE_MAPS if self.more_maps.isChecked() else ())

    def _submit_job(self, child: Child) -> None:
        self.jobs.submit(child_work, child, shown=self._shown())

    def _show_running_command(self, cmd: relion.JobCommand, is_continue: bool) -> None:
        self.command_label.setText("Continuing with:" if is_continue else "Running:")
        self.command_view.setPlainText(str(cmd))
        self.message.setText("")

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending = None
            job = self._running_job
            if job is not None:
                relion.mark_status(job, "aborted")
            self._on_finished(Outcome("cancelled", "cancelled before it started"))
            return
        if self.jobs.running:
            self.jobs.cancel()
            self.status.setText("Cancelling…")
            self.cancel_button.setEnabled(False)

    def _start_progress(self, job_dir: Path, text: str) -> None:
        self.run_button.setEnabled(False)
        self.continue_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status.setText(f"{job_dir.name}: {text}")
        self.message.setText("")

    def _on_progress(self, update: Update) -> None:
        e = update.event
        if isinstance(e, ev.Preview) and update.map is not None:
            if self.live_preview.isChecked():
                self._show_map("merged", update.map)
            return
        if not isinstance(e, ev.Progress):
            return
        if e.voxel_size > 0 and self._running_job is not None:
            self._prepare_preview(self._running_job, e.voxel_size)
        if e.total > 0:
            self.progress_bar.setRange(0, e.total)
            self.progress_bar.setValue(min(e.done, e.total))
        if e.stage == ev.Stage.BACKPROJECTING:
            text = (
                f"Tomogram {e.tomogram_index}/{e.tomogram_count} ({e.tomogram}): "
                f"{e.done}/{e.total} particle-tilts"
            )
        elif e.stage in (ev.Stage.READING, ev.Stage.CHECKING):
            text = f"Reading the inputs: {e.message}…" if e.message else "Reading the inputs…"
        else:
            text = e.message or e.stage.value
        self.status.setText(text)

    def _prepare_preview(self, job: Path, voxel_size: float) -> None:
        """The merged map's layer, made (hidden, empty) once the job knows its voxel size,
        a little before its first preview, so that the preview only fills it."""
        name, n = self.layer_name("merged", job), self._preview_box
        if n > 0 and self.live_preview.isChecked() and name not in self.viewer.layers:
            prepare_map(self.viewer, name, (n, n, n), voxel_size)
            self.viewer.layers[name].metadata["subtomo_recon"] = {"job": str(job), "map": "merged"}

    def _on_finished(self, outcome: Outcome) -> None:
        self.last_outcome = outcome
        job = self._running_job
        self._running_job = None
        self.command_label.setText("Command:")
        finished = outcome.status in ("ok", "submitted")
        try:
            if outcome.status == "ok":
                self._show_results(outcome, job)
            elif outcome.status == "submitted":
                self.status.setText(outcome.message)
                self._info(outcome.message)
            elif outcome.status == "cancelled":
                self._cancelled(outcome, job)
            else:
                self._failed(outcome, job)
        finally:
            if finished or job is None:
                self._set_output_auto()  # the next run is a new job, as in RELION
            else:  # the interrupted job stays selected, for Continue!
                self._select_job(job)
            self._refresh()

    def _cancelled(self, outcome: Outcome, job: Path | None) -> None:
        if job is not None:
            remove_layers(self.viewer, [self.layer_name("merged", job)])
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        text = f"{job.name if job else 'job'}: {outcome.message}"
        if job is not None and relion.can_continue(job):
            text += "; Continue! resumes it"
        self.status.setText(text)
        self._info(f"Reconstruct particle {outcome.message}")

    def _failed(self, outcome: Outcome, job: Path | None) -> None:
        if job is not None:
            remove_layers(self.viewer, [self.layer_name("merged", job)])
        text = f"Failed: {outcome.message}"
        if job is not None and relion.has_checkpoints(job):
            text += " (Continue! resumes from the last finished tomogram)"
        self.status.setText(text)
        self._error(outcome.message)

    # ------------------------------------------------------------------ results
    def layer_name(self, tag: str, job_dir: Path | None = None) -> str:
        job_dir = job_dir or self._running_job
        return f"{job_dir.name} {tag}" if job_dir else tag

    def _show_map(self, tag: str, m: MapData, job_dir: Path | None = None,
                  visible: bool = True) -> Any:  # fmt: skip
        job = job_dir or self._running_job
        meta = {"subtomo_recon": {"job": str(job), "map": tag}}
        return show_map(self.viewer, self.layer_name(tag, job), m.data, m.voxel_size, m.levels,
                        visible=visible, metadata=meta)  # fmt: skip

    def _show_maps(self, maps: list[MapData], job: Path, then: Any = None) -> None:
        """Add the maps one per turn of the event loop; merged last, on top, selected."""
        ordered = sorted(maps, key=lambda m: m.tag == "merged")

        def step(m: MapData) -> Any:
            return lambda: self._show_map(m.tag, m, job, visible=m.tag == "merged")

        def on_top() -> None:  # each of these redraws napari: one per turn
            name = self.layer_name("merged", job)
            layers = self.viewer.layers
            if name in layers and layers.index(name) != len(layers) - 1:
                layers.move(layers.index(name), len(layers))

        def select() -> None:
            name = self.layer_name("merged", job)
            layers = self.viewer.layers
            if name in layers and layers.selection.active is not layers[name]:
                layers.selection.active = layers[name]

        one_per_turn([*(step(m) for m in ordered), on_top, select], then)

    def _show_results(self, out: Outcome, job: Path | None) -> None:
        r = out.result
        assert r is not None and job is not None
        self.fsc_plot.set_curve(
            r.fsc, r.voxel_size, r.resolution_0143, r.resolution_05,
            title=f"{job.name}: half-map FSC (unmasked)",
        )  # fmt: skip
        text = f"{job.name} finished in {r.elapsed:.1f} s"
        if r.resolution_0143:
            text += (
                f"; FSC 0.143: {r.resolution_0143:.2f} \u00c5, 0.5: {r.resolution_05:.2f} \u00c5"
            )
        self.status.setText(text)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)

        def done() -> None:  # (no notification for a success: the status line says it)
            one_per_turn([partial(self._warn, w) for w in out.warnings])

        self._show_maps(out.maps, job, done)

    def _later(self, ms: int, fn: Callable[[], object]) -> None:
        """``fn`` in ``ms`` ms, unless the widget is gone by then (the timer is its child:
        a bare ``QTimer.singleShot`` would call into deleted widgets)."""
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.timeout.connect(fn)
        timer.timeout.connect(timer.deleteLater)
        timer.start(ms)

    # ------------------------------------------------------------------ messages
    def _error(self, msg: str) -> None:
        self.last_error = msg
        self.message.setText(msg)
        try:
            from napari.utils.notifications import show_error

            show_error(msg)
        except Exception:
            pass

    def _info(self, msg: str) -> None:
        try:
            from napari.utils.notifications import show_info

            show_info(msg)
        except Exception:
            pass

    def _warn(self, msg: str) -> None:
        try:
            from napari.utils.notifications import show_warning

            show_warning(msg)
        except Exception:
            pass

    # ------------------------------------------------------------------ lifetime
    def _shutdown(self, wait: float = 5.0) -> None:
        """Cancel every background task; ``wait`` lets a worker terminate an mpirun
        process group."""
        self._pause_warmup(False)  # a stopped process would not see the SIGTERM
        for runner in (self.jobs, self.warmup, self.samples):
            if runner.running:
                runner.cancel()
                if wait:
                    runner.wait(wait)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        self._shutdown(wait=0)
        super().closeEvent(event)


__all__ = ["ReconstructParticleWidget"]
