"""Child processes off napari's GUI thread, as napari workers.

The work functions are generators for napari's ``create_worker``: they start a
:class:`~..job.launch.Child` (``subtomo-recon``, ``mpirun … subtomo-recon``, the kernel
warm-up, the sample-data writer), yield its events — a preview with the map read from its
file, here, off the GUI thread — and return its :class:`~..job.launch.Outcome`, with the
finished job's maps read and their display levels computed.  The GUI thread only moves
arrays into layers.

:class:`TaskRunner` follows napari-cryoet-data-portal's task pattern: every submit gets
a task id, a new submit cancels the previous task, and signals of stale tasks are
ignored.
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, Signal

from .. import events as ev
from ..job.launch import Child, Outcome, submit

SHOWN_MAPS = ("merged",)  # the maps of a finished job shown as layers
MORE_MAPS = ("half1", "half2", "merged_full")  # ... and these on request


@dataclass
class MapData:
    """A map read off the GUI thread, with its display levels."""

    tag: str
    data: np.ndarray
    voxel_size: float
    levels: tuple[float, float, float]


@dataclass
class Update:
    """An event of the running child; previews come with their map."""

    event: ev.Event
    map: MapData | None = None


def read_map_data(
    path: Path, tag: str, levels: tuple[float, float, float] | None = None
) -> MapData | None:
    """The map at ``path``; ``levels`` if the job computed them already (previews)."""
    from ..display import display_levels
    from ..io.mrc import read_map

    try:
        data, vs = read_map(path)
    except Exception:  # the file went away (the job finished) or is being replaced
        return None
    return MapData(tag, data, vs, levels if levels is not None else display_levels(data))


def child_work(
    child: Child, cancel: threading.Event, shown: tuple[str, ...] = SHOWN_MAPS
) -> Generator[Update, None, Outcome]:
    """Run ``child``; previews are read here, and the maps ``shown`` of its result."""
    gen = child.events(cancel)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            outcome: Outcome = stop.value
            break
        if isinstance(event, ev.Preview):
            m = read_map_data(event.path, "preview", event.levels)
            if m is not None:
                yield Update(event, m)
        else:
            yield Update(event)
    if outcome.status == "ok" and outcome.result is not None:
        outcome.maps = [
            m
            for tag in shown
            if (path := outcome.result.files.get(tag)) is not None
            and (m := read_map_data(Path(path), tag)) is not None
        ]
    return outcome


def submit_work(
    argv: list[str], cwd: str, cancel: threading.Event
) -> Generator[Any, None, Outcome]:
    """Hand the job to the queue (a generator like the other work functions)."""
    return submit(argv, cwd)
    yield  # noqa: B901


@dataclass
class _Task:
    id: int
    worker: Any
    cancel: threading.Event
    done: bool = False


class TaskRunner(QObject):
    """One task at a time, as a napari worker; see the module docstring."""

    progressed = Signal(object)  # Update of the current task
    finished = Signal(object)  # Outcome of the current task

    _ids = itertools.count(1)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._task: _Task | None = None
        self._all: dict[int, _Task] = {}  # every task still running, stale ones included

    @property
    def running(self) -> bool:
        return self._task is not None

    @property
    def cancelling(self) -> bool:
        return self._task is not None and self._task.cancel.is_set()

    def submit(self, work: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
        from napari.qt.threading import create_worker

        self.cancel()
        self._task = None  # signals of the previous task are stale from here on
        tid = next(self._ids)
        ev_ = threading.Event()
        worker = create_worker(work, *args, cancel=ev_, _start_thread=False, **kwargs)
        task = _Task(tid, worker, ev_)
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

    def _on_yielded(self, tid: int, value: Any) -> None:
        if self._current(tid) and self._task is not None and not self._task.cancel.is_set():
            self._emit("progressed", value)

    def _deliver(self, tid: int, outcome: Outcome) -> None:
        if not self._current(tid):
            return
        assert self._task is not None
        self._task.done = True
        self._task = None
        self._emit("finished", outcome)

    def _emit(self, signal: str, value: Any) -> None:
        try:
            getattr(self, signal).emit(value)
        except RuntimeError:  # the widget was closed while the task ran
            pass

    def _on_returned(self, tid: int, value: Any) -> None:
        if not isinstance(value, Outcome):
            value = Outcome("error", f"unexpected result {value!r}")
        self._deliver(tid, value)

    def _on_errored(self, tid: int, exc: BaseException) -> None:
        detail = "".join(traceback.format_exception(exc))
        failure = ev.Failure(ev.FailureKind.INTERNAL, str(exc), detail)
        self._deliver(tid, Outcome("error", f"{exc.__class__.__name__}: {exc}", failure=failure))

    def _on_finished(self, tid: int) -> None:
        self._all.pop(tid, None)
        self._deliver(tid, Outcome("cancelled", "cancelled"))
