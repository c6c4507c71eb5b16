"""Running the job off the GUI thread: in-process generator, MPI subprocess, queue submission.

The work functions are generators for napari's ``create_worker``: they yield
:class:`Update` (progress, sometimes a preview map) and return an :class:`Outcome`.
Cancelling sets a ``threading.Event`` that the work function checks between steps: it
then closes the job generator itself (so nothing is left half done and no maps are
written) or terminates the subprocess' process group (``subtomo-recon`` turns SIGTERM
into a cancel: exit code 3, ``RELION_JOB_EXIT_ABORTED``, no maps).

The in-process job runs with ``root=<project folder>``: relative paths (flags and paths
inside STAR files) are resolved against it, so napari's working directory never changes
and jobs of different projects can run side by side.

:class:`JobRunner` follows napari-cryoet-data-portal's task pattern: every submit gets
a task id, a new submit cancels the previous task, and signals of stale tasks are
ignored.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Signal

from ..errors import Cancelled, InputError
from ..io.jobstar import STATUS_FILES, mark_status

PROGRESS_INTERVAL = 0.05  # s between progress updates sent to the GUI


@dataclass
class Update:
    progress: object  # job.Progress (its voxel_size scales the preview)
    levels: tuple | None = None  # display levels of progress.preview, computed here


@dataclass
class Outcome:
    status: str  # "ok", "error", "cancelled", "submitted"
    message: str = ""
    job_dir: Path | None = None  # absolute
    maps: dict = field(default_factory=dict)  # tag -> (data, voxel_size)
    levels: dict = field(default_factory=dict)  # tag -> display levels (iso, min, max)
    voxel_size: float = 0.0
    fsc: np.ndarray | None = None
    resolution_0143: float | None = None
    resolution_05: float | None = None
    warnings: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    detail: str = ""  # traceback of unexpected errors
    pid: int | None = None  # of a subprocess run: also its session and process group id


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else e.__class__.__name__


def _read_maps(job_dir: Path, outcome: Outcome, files: dict | None = None) -> Outcome:
    """merged/half1/half2 of a finished job, and their FSC when it is not known yet.

    ``files``: the job's ``Result.files`` (paths joined with the project folder).
    """
    from .._reader import display_levels
    from ..io.mrc import read_map

    for tag in ("merged", "half1", "half2"):
        p = Path(files[tag]) if files and tag in files else job_dir / f"{tag}.mrc"
        if p.is_file():
            outcome.maps[tag] = read_map(p)
            outcome.levels[tag] = display_levels(outcome.maps[tag][0])
    if "merged" in outcome.maps and not outcome.voxel_size:
        outcome.voxel_size = outcome.maps["merged"][1]
    if outcome.fsc is None and "half1" in outcome.maps and "half2" in outcome.maps:
        from ..core.fsc import fsc, resolution_at

        h1, h2 = outcome.maps["half1"][0], outcome.maps["half2"][0]
        if h1.shape == h2.shape:
            outcome.fsc = fsc(h1, h2)
            outcome.resolution_0143 = resolution_at(outcome.fsc, 0.143, outcome.voxel_size)
            outcome.resolution_05 = resolution_at(outcome.fsc, 0.5, outcome.voxel_size)
    return outcome


class _Throttle:
    """Pass a progress report to the GUI when the stage or tomogram changes, or after
    PROGRESS_INTERVAL (the job reports every tilt image while reading and backprojecting)."""

    def __init__(self):
        self.last = -1e9
        self.key = None

    def __call__(self, p) -> bool:
        now = time.perf_counter()
        key = (p.stage, p.tomogram_index, p.tomogram, p.message)
        if key != self.key or now - self.last > PROGRESS_INTERVAL:
            self.key, self.last = key, now
            return True
        return False


def _mark_unless_reported(job_dir: Path, status: str) -> None:
    """Write RELION's exit-status file unless the job (the CLI) already wrote one."""
    if not any((job_dir / f).exists() for f in STATUS_FILES):
        mark_status(job_dir, status)


def run_in_process(params, project: str, command: str, preview_interval, cancel):
    """The job generator of ``napari_subtomo_recon.job`` in this process (nr_mpi = 1)."""
    from .._reader import display_levels
    from ..job import run

    project = Path(project)
    job_dir = project / params.o
    t0 = time.perf_counter()
    gen = None
    try:
        gen = run(params, command=command, preview_interval=preview_interval, root=str(project))
        throttle = _Throttle()
        stage = ""
        while True:
            # once the maps are written ("done") the job has finished: no cancel then
            if cancel.is_set() and stage != "done":
                gen.close()  # GeneratorExit inside the job: no maps are written
                mark_status(job_dir, "aborted")
                return Outcome("cancelled", "cancelled: no maps were written", job_dir)
            try:
                p = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            stage = p.stage
            if p.preview is not None:
                yield Update(p, display_levels(p.preview))
            elif throttle(p):
                yield Update(p)
        out = Outcome(
            "ok", job_dir=job_dir, voxel_size=result.voxel_size, fsc=result.fsc,
            resolution_0143=result.resolution_0143, resolution_05=result.resolution_05,
            warnings=list(result.warnings),
        )  # fmt: skip
        _read_maps(job_dir, out, result.files)
        out.elapsed = time.perf_counter() - t0
        mark_status(job_dir, "success")
        return out
    except Cancelled as e:  # RELION_JOB_ABORT_NOW
        mark_status(job_dir, "aborted")
        return Outcome("cancelled", _one_line(e), job_dir)
    except InputError as e:
        mark_status(job_dir, "failure")
        return Outcome("error", _one_line(e), job_dir)
    except MemoryError:
        mark_status(job_dir, "failure")
        return Outcome("error", "out of memory (try a smaller box, fewer threads or --mem)")
    except Exception as e:
        mark_status(job_dir, "failure")
        return Outcome(
            "error", f"{e.__class__.__name__}: {_one_line(e)}", job_dir,
            detail=traceback.format_exc(),
        )  # fmt: skip
    finally:
        if gen is not None:
            gen.close()


def program_tokens() -> list[str]:
    """How to start ``subtomo-recon`` from the same Python environment as napari."""
    exe = Path(sys.executable).with_name("subtomo-recon")
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "napari_subtomo_recon"]


def subprocess_argv(cmd) -> list[str]:
    """``[mpirun -n N] subtomo-recon <flags>`` with our interpreter's program."""
    head = program_tokens()
    if cmd.nr_mpi > 1:
        head = [*shlex.split(cmd.mpirun), "-n", str(cmd.nr_mpi), *head]
    return head + list(cmd.args)


def _pump(stream, tag: str, q: queue.Queue) -> None:
    try:
        for line in stream:
            q.put((tag, line.rstrip("\n")))
    finally:
        q.put((tag, None))


def session_members(sid: int) -> list[int] | None:
    """Live (not zombie) processes of session ``sid``; None where /proc is missing."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    out = []
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()  # state, ppid, pgrp, session, ...
        if len(rest) > 3 and rest[3] == str(sid) and rest[0] not in ("Z", "X"):
            out.append(int(d.name))
    return out


def session_alive(sid: int) -> bool:
    """Whether a subprocess started with ``start_new_session`` (``sid`` = its pid) or
    anything it started (mpirun's ranks) still runs."""
    members = session_members(sid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(sid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _signal_session(sid: int, sig: int) -> None:
    try:
        os.killpg(sid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in session_members(sid) or []:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _terminate(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """SIGTERM to every process of the subprocess' session, then SIGKILL.

    The session, not only the process group: Open MPI's mpirun puts each rank in a
    group of its own, and forwards a SIGTERM to them only after a delay.
    ``subtomo-recon`` turns SIGTERM into a cancel (no maps); whatever still runs after
    ``grace`` seconds is killed.
    """
    sid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal_session(sid, sig)
        end = time.perf_counter() + grace
        while time.perf_counter() < end:
            if proc.poll() is not None and not session_alive(sid):
                return
            time.sleep(0.02)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


def run_subprocess(argv: list[str], project: str, job_dir: str, cancel, env=None):
    """``mpirun -n N subtomo-recon ...`` in its own process group, progress from its stderr.

    ``subtomo-recon`` writes RELION's exit-status file itself (under
    ``--pipeline_control``); this writes one only when it could not (killed, not started).
    """
    from ..job import Progress

    job_dir = Path(job_dir)
    t0 = time.perf_counter()
    full_env = {**os.environ, "SUBTOMO_PROGRESS": "json", **(env or {})}
    job_dir.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.Popen(
            argv, cwd=project, env=full_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            start_new_session=True,
        )  # fmt: skip
    except OSError as e:
        mark_status(job_dir, "failure")
        return Outcome("error", f"cannot start {argv[0]}: {e.strerror or e}", job_dir)
    q: queue.Queue = queue.Queue()
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, "out", q), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "err", q), daemon=True),
    ]
    for t in pumps:
        t.start()
    errors: list[str] = []
    open_streams = 2
    throttle = _Throttle()
    cancelled_at = None  # when the process group was terminated on request
    try:
        with open(job_dir / "run.out", "a") as fo, open(job_dir / "run.err", "a") as fe:
            while open_streams or proc.poll() is None:
                if cancelled_at is None and cancel.is_set() and proc.poll() is None:
                    # (a process that ended before the cancel request reports how it ended)
                    _terminate(proc)
                    cancelled_at = time.perf_counter()
                if cancelled_at is not None and time.perf_counter() - cancelled_at > 1.0:
                    break  # a stray process holds the pipes open: stop reading them
                try:
                    tag, line = q.get(timeout=0.05)
                except queue.Empty:
                    continue
                if line is None:
                    open_streams -= 1
                    continue
                if tag == "err" and line.startswith("@progress "):
                    if cancelled_at is not None:
                        continue
                    try:
                        rec = json.loads(line[len("@progress ") :])
                        p = Progress(**rec)
                    except (ValueError, TypeError):
                        continue
                    if throttle(p):
                        yield Update(p)
                    continue
                (fe if tag == "err" else fo).write(line + "\n")
                if tag == "err" and line.strip():
                    errors.append(line.strip())
    finally:
        if proc.poll() is None:
            _terminate(proc)
        for t in pumps:
            t.join(timeout=1.0)
    rc = proc.wait()
    if rc == 0:
        out = _read_maps(job_dir, Outcome("ok", job_dir=job_dir, pid=proc.pid))
        out.warnings = [e[len("warning: ") :] for e in errors if e.startswith("warning: ")]
        out.elapsed = time.perf_counter() - t0
        _mark_unless_reported(job_dir, "success")
        return out
    if cancelled_at is not None:
        _mark_unless_reported(job_dir, "aborted")  # killed before it could say so
        return Outcome("cancelled", "cancelled: no maps were written", job_dir, pid=proc.pid)
    if rc == 3:
        _mark_unless_reported(job_dir, "aborted")
        msg = next((e for e in reversed(errors) if "cancelled:" in e), "")
        msg = msg.split("cancelled:", 1)[1].strip() if msg else "RELION_JOB_ABORT_NOW"
        return Outcome("cancelled", f"cancelled ({msg}): no maps were written", job_dir,
                       pid=proc.pid)  # fmt: skip
    _mark_unless_reported(job_dir, "failure")  # e.g. killed, or a crash the CLI did not report
    msg = next((e for e in reversed(errors) if "error:" in e), None)
    if msg is None:
        msg = errors[-1] if errors else f"{Path(argv[0]).name} exited with code {rc}"
    if "subtomo-recon: error: " in msg:
        msg = msg.split("subtomo-recon: error: ", 1)[1]
    return Outcome("error", msg, job_dir, pid=proc.pid)


def submit_to_queue(argv: list[str], project: str, job_dir: str, cancel, timeout=120.0):
    """Run the queue's submit command (e.g. ``sbatch Reconstruct/job001/run_submit.script``)."""
    try:
        res = subprocess.run(
            argv, cwd=project, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return Outcome("error", f"queue submission failed: {_one_line(e)}", Path(job_dir))
    if res.returncode != 0:
        err = (res.stderr or res.stdout).strip().splitlines()
        tail = err[-1] if err else f"exit code {res.returncode}"
        return Outcome("error", f"{shlex.join(argv)}: {tail}", Path(job_dir))
    said = (res.stdout.strip().splitlines() or [""])[-1]
    return Outcome("submitted", f"submitted {shlex.join(argv)}" + (f": {said}" if said else ""),
                   Path(job_dir))  # fmt: skip
    yield  # a generator like the other work functions  # noqa: B901


@dataclass
class _Task:
    id: int
    worker: object
    cancel: threading.Event
    done: bool = False


class JobRunner(QObject):
    """One job at a time, as a napari worker; see the module docstring."""

    progressed = Signal(object)  # Update of the current task
    finished = Signal(object)  # Outcome of the current task

    _ids = itertools.count(1)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._task: _Task | None = None
        self._all: dict[int, _Task] = {}  # every task still running, stale ones included

    @property
    def running(self) -> bool:
        return self._task is not None

    @property
    def cancelling(self) -> bool:
        return self._task is not None and self._task.cancel.is_set()

    def submit(self, work, *args, **kwargs) -> int:
        from napari.qt.threading import create_worker

        self.cancel()
        self._task = None  # signals of the previous task are stale from here on
        tid = next(self._ids)
        ev = threading.Event()
        worker = create_worker(work, *args, cancel=ev, _start_thread=False, **kwargs)
        task = _Task(tid, worker, ev)
        if hasattr(worker, "yielded"):
            worker.yielded.connect(partial(self._on_yielded, tid))
        worker.returned.connect(partial(self._on_returned, tid))
        worker.errored.connect(partial(self._on_errored, tid))
        worker.finished.connect(partial(self._on_finished, tid))
        self._task = task
        self._all[tid] = task
        worker.start()
        return tid

    def cancel(self) -> None:
        """Ask the current task to stop; it finishes with a "cancelled" outcome."""
        if self._task is not None:
            self._task.cancel.set()

    def wait(self, timeout: float = 10.0) -> bool:
        """Block until every task has finished (for shutdown and tests)."""
        from qtpy.QtCore import QCoreApplication

        end = time.perf_counter() + timeout
        while self._all and time.perf_counter() < end:
            QCoreApplication.processEvents()
            time.sleep(0.01)
        return not self._all

    def _current(self, tid: int) -> bool:
        return self._task is not None and self._task.id == tid and not self._task.done

    def _on_yielded(self, tid: int, value) -> None:
        if self._current(tid) and not self._task.cancel.is_set():
            self._emit(self.progressed, value)

    def _deliver(self, tid: int, outcome: Outcome) -> None:
        if not self._current(tid):
            return
        self._task.done = True
        self._task = None
        self._emit(self.finished, outcome)

    @staticmethod
    def _emit(signal, value) -> None:
        try:
            signal.emit(value)
        except RuntimeError:  # the widget was closed while the job ran
            pass

    def _on_returned(self, tid: int, value) -> None:
        if not isinstance(value, Outcome):
            value = Outcome("error", f"unexpected result {value!r}")
        self._deliver(tid, value)

    def _on_errored(self, tid: int, exc: BaseException) -> None:
        detail = "".join(traceback.format_exception(exc))
        self._deliver(tid, Outcome("error", f"{exc.__class__.__name__}: {_one_line(exc)}",
                                   detail=detail))  # fmt: skip

    def _on_finished(self, tid: int) -> None:
        self._all.pop(tid, None)
        self._deliver(tid, Outcome("cancelled", "cancelled"))
