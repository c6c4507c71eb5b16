"""The "Reconstruct particle" dock widget: RELION's job tabs, Run/Continue/Cancel, maps, FSC.

A view on :mod:`napari_subtomo_recon.io.jobstar` (fields, command, job.star) and on
:mod:`napari_subtomo_recon.job` (the run itself, through :mod:`.runner`).

**Continue!** has the meaning of RELION's button: it runs the job again in its own folder
with ``--only_do_unfinished`` (``rlnJobIsContinue 1`` in job.star, the command appended
to note.txt), so a cancelled or crashed job resumes from its per-tomogram checkpoints.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from magicgui.widgets import Container, Label
from qtpy.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .._reader import MAP_TAGS, map_layer_kwargs, project_for
from ..core.symmetry import validate_symmetry
from ..errors import InputError
from ..io import jobstar
from .fields import get_field, make_field, relative_to, set_field
from .fsc_plot import FscPlot
from .runner import (
    JobRunner,
    Outcome,
    run_in_process,
    run_subprocess,
    submit_to_queue,
    subprocess_argv,
)

ERROR_STYLE = "color: #ff6b6b;"
INVALID_FIELD_STYLE = "border: 1px solid #ff6b6b;"


def has_checkpoints(job_dir: Path) -> bool:
    """Per-tomogram checkpoints of an unfinished run (``<job>/temp/``)."""
    try:
        return any((Path(job_dir) / "temp").glob("checkpoint_rank*.json"))
    except OSError:
        return False


def can_continue(job_dir: Path) -> bool:
    """Continue! is possible: the job folder exists and has checkpoints or no final maps."""
    job_dir = Path(job_dir)
    return job_dir.is_dir() and (has_checkpoints(job_dir) or not (job_dir / "merged.mrc").exists())


def was_interrupted(job_dir: Path) -> bool:
    """A job that ran (note.txt, a status file or checkpoints) and did not finish."""
    job_dir = Path(job_dir)
    if not can_continue(job_dir) or (job_dir / "RELION_JOB_EXIT_SUCCESS").exists():
        return False
    ran = ("note.txt", "RELION_JOB_EXIT_FAILURE", "RELION_JOB_EXIT_ABORTED")
    return has_checkpoints(job_dir) or any((job_dir / f).exists() for f in ran)


def _warm_up_napari() -> None:
    """Make a throw-away 3D image layer now: napari's first layer loads pint's unit
    registry and more (~1 s), which would otherwise freeze the GUI when the first live
    preview arrives."""
    try:
        import numpy as np
        from napari.layers import Image

        Image(np.zeros((2, 2, 2), np.float32), rendering="iso")
    except Exception:
        pass


class ReconstructParticleWidget(QWidget):
    """RELION 5's Reconstruct particle job as a napari widget.

    ``fields`` maps RELION's job-option names (``box_size``, ``sym_name``, ...) to the
    magicgui widgets; ``values()`` / ``set_values()`` read and write them.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.options = jobstar.job_options()
        self.fields: dict[str, object] = {}
        self.preview_interval: float | None = 2.0  # s between live previews of the map
        self.use_subprocess = False  # also run nr_mpi = 1 through subtomo-recon
        self.last_error: str | None = None
        self.last_outcome: Outcome | None = None
        self._output_auto = True  # output_dir follows the next free job number
        self._updating = False
        self._pbar = None
        self._running_job: Path | None = None
        self._running_command: str | None = None
        self._fsc_dock = None

        self.setMinimumWidth(460)
        self.tabs = QTabWidget()
        self.tabs.setMinimumHeight(300)
        self.containers: dict[str, Container] = {}
        for tab in jobstar.TABS:
            widgets = []
            for opt in self.options.values():
                if opt.tab != tab:
                    continue
                w = make_field(opt, base_dir=lambda: str(self.project()))
                self.fields[opt.name] = w
                widgets.append(w)
                if opt.name == "sym_name":
                    self.sym_status = Label(name="sym_status", label=" ", value="")
                    self.sym_status.visible = False
                    widgets.append(self.sym_status)
            c = Container(widgets=widgets, name=tab)
            c.native.layout().addStretch(1)  # pack the fields at the top, as RELION does
            self.containers[tab] = c
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setWidget(c.native)
            self.tabs.addTab(scroll, tab)

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

        self.load_button = QPushButton("Load job.star…")
        self.save_button = QPushButton("Save job.star…")
        self.run_button = QPushButton("Run!")
        self.continue_button = QPushButton("Continue!")
        self.cancel_button = QPushButton("Cancel")
        self.load_button.setToolTip("Fill the fields from a RELION job.star")
        self.save_button.setToolTip("Write these settings as a RELION job.star")
        self.run_button.setToolTip("Write job.star and note.txt into the job folder and run")
        self.continue_button.setToolTip(
            "Run the job again in its output job folder with --only_do_unfinished: it "
            "resumes from the checkpoint of the last finished tomogram (after a cancel or a "
            "crash). Possible when the folder exists and has checkpoints or no final maps."
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
        for b in (
            self.load_button, self.save_button, self.run_button, self.continue_button,
            self.cancel_button,
        ):  # fmt: skip
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(self.command_label)
        layout.addWidget(self.command_view)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        if getattr(self.viewer, "window", None) is None:
            # without a main window (ViewerModel, tests) the plot lives in this widget
            layout.addWidget(self.fsc_plot)
            self.fsc_plot.hide()

        self.runner = JobRunner(self)
        app = QApplication.instance()
        if app is not None:  # no orphan job (or mpirun) when napari quits
            app.aboutToQuit.connect(self._shutdown)
        self.runner.progressed.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished)
        self.load_button.clicked.connect(self._load_dialog)
        self.save_button.clicked.connect(self._save_dialog)
        self.run_button.clicked.connect(self.run)
        self.continue_button.clicked.connect(self.continue_job)
        self.cancel_button.clicked.connect(self.cancel)
        for name, w in self.fields.items():
            w.changed.connect(lambda *_, n=name: self._on_changed(n))
        layers = getattr(self.viewer, "layers", None)
        if layers is not None:
            layers.events.inserted.connect(self._on_layer_inserted)

        _warm_up_napari()
        self._updating = True
        self.fields["project_dir"].value = os.getcwd()
        self._updating = False
        self._on_changed("project_dir")
        for name in ("use_direct_entries", "do_helix", "do_queue", "sym_name"):
            self._on_changed(name)

    # ------------------------------------------------------------------ values
    def values(self) -> dict[str, object]:
        return {n: get_field(w, self.options[n]) for n, w in self.fields.items()}

    def set_values(self, values: dict) -> list[str]:
        """Set fields by job-option name; returns notes about widened ranges."""
        notes = []
        if "output_dir" in values:
            self._output_auto = False
        self._updating = True
        try:
            for name, v in values.items():
                if name in self.fields:
                    note = set_field(self.fields[name], self.options[name], v)
                    if note:
                        notes.append(note)
        finally:
            self._updating = False
        for name in ("project_dir", "use_direct_entries", "do_helix", "do_queue", "sym_name"):
            self._on_changed(name)
        return notes

    def project(self) -> Path:
        p = str(self.fields["project_dir"].value or "").strip()
        return Path(p) if p else Path(os.getcwd())

    def job_dir(self) -> Path:
        return self.project() / str(self.fields["output_dir"].value).strip()

    def command(self) -> jobstar.JobCommand:
        return jobstar.build_command(self.values())

    def check(self) -> str | None:
        return jobstar.check_values(self.values(), self.project())

    # ------------------------------------------------------------------ field logic
    def _on_changed(self, name: str) -> None:
        if self._updating:
            return
        v = self.fields[name].value
        if name == "project_dir" and self._output_auto:
            self._set_output_auto()
        elif name == "output_dir":
            self._output_auto = False
        elif name == "use_direct_entries":
            for n in ("in_particles", "in_tomograms", "in_trajectories"):
                self.fields[n].enabled = bool(v)
        elif name == "do_helix":
            for n, opt in self.options.items():
                if opt.tab == "Helix" and n != "do_helix":
                    self.fields[n].enabled = bool(v)
        elif name == "do_queue":
            for n in self.fields:
                if n in ("queuename", "qsub", "qsubscript", "min_dedicated") or n.startswith(
                    "qsub_extra"
                ):
                    self.fields[n].enabled = bool(v)
        elif name == "sym_name":
            msg = validate_symmetry(str(v).strip())
            self.sym_status.value = "" if msg is None else msg
            self.sym_status.native.setStyleSheet(ERROR_STYLE)
            self.sym_status.native.setWordWrap(True)
            self.sym_status.visible = msg is not None
            self.fields[name].native.setStyleSheet("" if msg is None else INVALID_FIELD_STYLE)
        self._refresh()

    def _select_job(self, job_dir: Path) -> None:
        """Make ``job_dir`` the output job folder (no longer the next free one)."""
        self._updating = True
        try:
            rel = relative_to(job_dir, self.project()).rstrip("/") + "/"
            self.fields["output_dir"].value = rel
        finally:
            self._updating = False
        self._output_auto = False

    def _set_output_auto(self) -> None:
        self._updating = True
        try:
            self.fields["output_dir"].value = jobstar.next_job_dir(self.project())
        finally:
            self._updating = False
        self._output_auto = True

    def _refresh(self) -> None:
        """Show the command line and the first problem with the settings."""
        self._update_buttons()
        if self._running_command is not None:
            return  # the command view shows the running job's command
        try:
            self.command_view.setPlainText(str(self.command()))
        except InputError as e:
            self.command_view.setPlainText("")
            self.message.setText(str(e))
            return
        msg = self.check()
        self.message.setText(msg or "")

    def _update_buttons(self) -> None:
        running = self.runner.running
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running and not self.runner.cancelling)
        try:
            ok = not running and can_continue(self.job_dir())
        except (OSError, ValueError):
            ok = False
        self.continue_button.setEnabled(ok)

    # ------------------------------------------------------------------ loading / saving
    def load_job_star(self, path) -> bool:
        """Fill the fields from a RELION job.star.

        The output is the next free job folder, except for a job that ran and did not
        finish (cancelled, crashed): that folder stays selected, for Continue!.
        """
        try:
            job = jobstar.read_job_star(path)
            values, notes = jobstar.values_from_job_star(job)
        except InputError as e:
            self._error(str(e))
            return False
        file = Path(path)
        file = file / "job.star" if file.is_dir() else file
        project = project_for(file)
        values["project_dir"] = str(project)
        notes += self.set_values(values)
        if self.runner.running or not was_interrupted(file.parent):
            self._set_output_auto()
        else:
            self._select_job(file.parent)
            notes.append(f"{file.parent.name} did not finish: Continue! resumes it")
        self._refresh()
        self._info(f"loaded {file}" + ("; " + "; ".join(notes) if notes else ""))
        return True

    def use_optimisation_set(self, path) -> None:
        """Use an optimisation set (e.g. Extract/job010/optimisation_set.star) as input."""
        path = Path(path).resolve()
        project = project_for(path)
        self.set_values(
            {
                "project_dir": str(project),
                "in_optimisation": relative_to(path, project),
                "use_direct_entries": False,
                "in_particles": "",
                "in_tomograms": "",
                "in_trajectories": "",
            }
        )
        self._set_output_auto()
        self._refresh()

    def save_job_star(self, path=None) -> Path | None:
        """Write job.star (default: into the job folder)."""
        try:
            target = Path(path) if path is not None else self.job_dir()
            job = jobstar.JobStar(options=jobstar.job_star_values(self.values()))
            return jobstar.write_job_star(target, job)
        except (OSError, InputError) as e:
            self._error(f"cannot write job.star: {e}")
            return None

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

    def _on_layer_inserted(self, event) -> None:
        """The sample data set says where it is: use it as input."""
        meta = getattr(event.value, "metadata", {}) or {}
        ds = meta.get("subtomo_recon_dataset")
        if not ds or self.runner.running:
            return
        root = Path(ds["root"])
        self.set_values(
            {
                "project_dir": str(root),
                "in_optimisation": relative_to(ds["optimisation_set"], root),
                "use_direct_entries": False,
                "box_size": ds.get("box_size", 48),
                "binning": ds.get("binning", 2.0),
                "sym_name": ds.get("sym_name", "C1"),
            }
        )
        self._set_output_auto()
        self._refresh()

    # ------------------------------------------------------------------ running
    def run(self) -> bool:
        """Check the settings, write job.star and note.txt, and start the job."""
        return self._start(is_continue=False)

    def continue_job(self) -> bool:
        """RELION's Continue!: the job again in its own folder, with --only_do_unfinished.

        It resumes from the per-tomogram checkpoints in ``<job>/temp/``; job.star gets
        ``rlnJobIsContinue 1`` and note.txt the command.
        """
        return self._start(is_continue=True)

    def _start(self, is_continue: bool) -> bool:
        if self.runner.running:
            self._error("a job is running: cancel it first")
            return False
        values = self.values()
        project = self.project()
        out_rel = str(values["output_dir"]).strip()
        job_dir = project / out_rel
        if is_continue and not can_continue(job_dir):
            why = "has finished maps" if job_dir.is_dir() else "does not exist"
            self._error(f"Continue: the job folder {out_rel} {why}; nothing to continue")
            return False
        msg = jobstar.check_values(values, project, is_continue)
        if msg:
            self._error(msg)
            return False
        try:
            params, cmd = jobstar.params_from_values(values, is_continue)
            job_dir.mkdir(parents=True, exist_ok=True)
            options = jobstar.job_star_values(values)
            jobstar.write_job_star(
                job_dir, jobstar.JobStar(is_continue=is_continue, options=options)
            )
            jobstar.clear_status(job_dir)
            if cmd.queue:
                return self._submit_queue(values, cmd, project, job_dir)
            jobstar.append_note(job_dir, [str(cmd)])
        except (OSError, InputError) as e:
            self._error(f"cannot start the job: {e}")
            return False
        self.last_error = None
        self.last_outcome = None
        self._running_job = job_dir
        self._show_running_command(cmd, is_continue)
        self._start_progress(job_dir, "continuing…" if is_continue else "starting…")
        if cmd.nr_mpi > 1 or self.use_subprocess:
            self.runner.submit(run_subprocess, subprocess_argv(cmd), str(project), str(job_dir))
        else:
            self.runner.submit(
                run_in_process, params, str(project), str(cmd), self.preview_interval
            )
        return True

    def _submit_queue(self, values, cmd, project: Path, job_dir: Path) -> bool:
        template = project / str(values["qsubscript"])
        script_rel = str(values["output_dir"]).rstrip("/") + "/run_submit.script"
        text = jobstar.submission_script(
            template.read_text(), [str(cmd)], values, str(values["output_dir"])
        )
        script = project / script_rel
        script.write_text(text)
        script.chmod(0o755)
        jobstar.append_note(job_dir, [str(cmd)])
        argv = [*shlex.split(str(values["qsub"])), script_rel]
        self._running_job = job_dir
        self._show_running_command(cmd, "--only_do_unfinished" in cmd.args)
        self._start_progress(job_dir, busy="submitting to the queue…")
        self.runner.submit(submit_to_queue, argv, str(project), str(job_dir))
        return True

    def _show_running_command(self, cmd, is_continue: bool) -> None:
        self._running_command = str(cmd)
        self.command_label.setText("Continuing with:" if is_continue else "Running:")
        self.command_view.setPlainText(self._running_command)
        self.message.setText("")

    def cancel(self) -> None:
        if self.runner.running:
            self.runner.cancel()
            self.status.setText("Cancelling…")
            self.cancel_button.setEnabled(False)

    def _start_progress(self, job_dir: Path, busy: str = "starting…") -> None:
        self.run_button.setEnabled(False)
        self.continue_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        # no busy (indeterminate) bars: their animation makes Qt recomposite the window,
        # and with software OpenGL that steals the CPU from the job
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status.setText(f"{job_dir.name}: {busy}")
        self.message.setText("")
        if getattr(self.viewer, "window", None) is None:
            return  # napari's progress bars live in the window's activity dock
        try:
            from napari.utils import progress

            self._pbar = progress(total=1, desc=f"Reconstruct particle {job_dir.name}")
        except Exception:  # the GUI progress bar is a nicety
            self._pbar = None

    def _close_progress(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._running_command = None
        self.command_label.setText("Command:")
        self._update_buttons()

    def _on_progress(self, update) -> None:
        try:
            p = update.progress
            if p.total > 0:
                self.progress_bar.setRange(0, p.total)
                self.progress_bar.setValue(min(p.done, p.total))
            if p.stage == "backprojecting":
                text = (
                    f"Tomogram {p.tomogram_index}/{p.tomogram_count} ({p.tomogram}): "
                    f"{p.done}/{p.total} particle-tilts"
                )
            elif p.stage == "reading":
                text = f"Reading the inputs: {p.message}…" if p.message else "Reading the inputs…"
            else:
                text = p.message or p.stage
            self.status.setText(text)
            if self._pbar is not None:
                if p.total and self._pbar.total != p.total:
                    self._pbar.total = p.total
                if p.done > self._pbar.n:
                    self._pbar.update(p.done - self._pbar.n)
                self._pbar.set_description(f"{self._running_job.name}: {p.stage}")
            if p.preview is not None:
                self._show_map("merged", p.preview, p.voxel_size, True, update.levels)
        except Exception as e:  # a display hiccup must never stop the job
            self.status.setText(f"display error: {e}")

    def _on_finished(self, outcome: Outcome) -> None:
        self.last_outcome = outcome
        self._close_progress()
        job = self._running_job
        finished = outcome.status in ("ok", "submitted")
        try:
            if outcome.status == "ok":
                self._show_results(outcome)
            elif outcome.status == "submitted":
                self.status.setText(outcome.message)
                self._info(outcome.message)
            elif outcome.status == "cancelled":
                self._remove_maps(job)
                self.progress_bar.setRange(0, 1)
                self.progress_bar.setValue(0)
                text = f"{job.name if job else 'job'}: {outcome.message}"
                if job is not None and can_continue(job):
                    text += "; Continue! resumes it"
                self.status.setText(text)
                self._info(f"Reconstruct particle {outcome.message}")
            else:
                self._remove_maps(job)
                text = f"Failed: {outcome.message}"
                if job is not None and has_checkpoints(job):
                    text += " (Continue! resumes from the last finished tomogram)"
                self.status.setText(text)
                self._error(outcome.message)
        except Exception as e:
            self._error(f"cannot show the results: {e}")
        finally:
            self._running_job = None
            if finished or job is None:
                self._set_output_auto()  # the next run is a new job, as in RELION
            else:  # the interrupted job stays selected, for Continue!
                self._select_job(job)
            self._refresh()

    # ------------------------------------------------------------------ results
    def layer_name(self, tag: str, job_dir: Path | None = None) -> str:
        job_dir = job_dir or self._running_job
        return f"{job_dir.name} {tag}" if job_dir else tag

    def _show_map(self, tag, data, voxel_size, visible: bool, levels=None, job_dir=None):
        name = self.layer_name(tag, job_dir)
        kw = map_layer_kwargs(data, voxel_size or 1.0, name, iso=True, levels=levels)
        layers = self.viewer.layers
        if name in layers:
            layer = layers[name]
            layer.data = data
            if voxel_size:
                layer.scale = kw["scale"]
            layer.contrast_limits = kw["contrast_limits"]
            layer.iso_threshold = kw["iso_threshold"]
            layer.visible = visible
        else:
            kw["visible"] = visible
            layer = self.viewer.add_image(data, **kw)
            if tag == "merged":
                self.viewer.dims.ndisplay = 3
                self.viewer.reset_view()
        job = job_dir or self._running_job
        layer.metadata["subtomo_recon"] = {"job": str(job), "map": tag}
        return layer

    def _remove_maps(self, job_dir: Path | None) -> None:
        for tag in MAP_TAGS:
            name = self.layer_name(tag, job_dir)
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)

    def _show_results(self, out: Outcome) -> None:
        job = out.job_dir
        shown = {}
        for tag in ("half2", "half1", "merged"):
            if tag in out.maps:
                data, vs = out.maps[tag]
                levels = out.levels.get(tag)
                shown[tag] = self._show_map(tag, data, vs, tag == "merged", levels, job)
        if "merged" in shown:  # the live preview was added first: put merged back on top
            layers = self.viewer.layers
            layers.move(layers.index(shown["merged"]), len(layers))
            layers.selection.active = shown["merged"]
        self.viewer.dims.ndisplay = 3
        self.fsc_plot.set_curve(
            out.fsc, out.voxel_size, out.resolution_0143, out.resolution_05,
            title=f"{job.name}: half-map FSC (unmasked)",
        )  # fmt: skip
        self._show_fsc_dock()
        text = f"{job.name} finished in {out.elapsed:.1f} s"
        if out.resolution_0143:
            r1, r2 = out.resolution_0143, out.resolution_05
            text += f"; FSC 0.143: {r1:.2f} \u00c5, 0.5: {r2:.2f} \u00c5"
        self.status.setText(text)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        self._info(text)
        for w in out.warnings:
            self._warn(w)

    def _show_fsc_dock(self) -> None:
        window = getattr(self.viewer, "window", None)
        if window is None:
            self.fsc_plot.show()
            return
        if self._fsc_dock is None:
            self._fsc_dock = window.add_dock_widget(
                self.fsc_plot, name="Half-map FSC", area="right"
            )
        self._fsc_dock.show()

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
    def _shutdown(self) -> None:
        if self.runner.running:
            self.runner.cancel()
            self.runner.wait(5.0)  # lets the worker terminate an mpirun process group

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.runner.cancel()
        super().closeEvent(event)


__all__ = ["ReconstructParticleWidget"]
