"""Running a program that reports through events, in a child process (Qt-free).

The napari widget never runs a job on napari's interpreter: Numba compilation and the
kernels would hold its GIL.  It starts ``subtomo-recon`` (or ``mpirun -n N subtomo-recon``,
the kernel warm-up, the sample-data writer) as RELION's GUI starts its programs, and
reads the :mod:`~napari_subtomo_recon.events` lines of the child's stderr.  Every other
line goes to ``run.out`` / ``run.err`` in the job folder.

Cancel terminates the child's whole session (mpirun's ranks included): the program turns
SIGTERM into a cancel and writes no maps; whatever still runs after a grace period is
killed.  :func:`submit` hands a job to a queue instead.
"""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .. import events as ev
from .relion import JobCommand, mark_status, status_of

GRACE = 2.0  # s between SIGTERM and SIGKILL on cancel


@dataclass
class Outcome:
    """How a child ended."""

    status: str  # "ok", "error", "cancelled", "submitted"
    message: str = ""
    result: ev.Result | None = None
    failure: ev.Failure | None = None
    warnings: list[str] = field(default_factory=list)
    exit_code: int | None = None
    pid: int | None = None  # also the child's session and process group id
    maps: list[Any] = field(default_factory=list)  # read by the caller (the widget's worker)


def program_tokens(module: str = "napari_subtomo_recon") -> list[str]:
    """How to start one of our programs with the same Python environment as napari."""
    if module == "napari_subtomo_recon":
        exe = Path(sys.executable).with_name("subtomo-recon")
        if exe.is_file() and os.access(exe, os.X_OK):
            return [str(exe)]
    return [sys.executable, "-m", module]


def job_argv(cmd: JobCommand) -> list[str]:
    """``[mpirun -n N] subtomo-recon <flags>`` with our interpreter's program."""
    head = program_tokens()
    if cmd.nr_mpi > 1:
        head = [*shlex.split(cmd.mpirun), "-n", str(cmd.nr_mpi), *head]
    return head + list(cmd.args)


class Child:
    """A child program whose stderr carries events.

    ``log_dir``: where ``run.out`` / ``run.err`` collect the other output (None: dropped).
    ``status_dir``: a RELION job folder whose exit-status file is written here when the
    child could not write it (killed, not started).
    """

    def __init__(
        self,
        argv: list[str],
        cwd: str | os.PathLike[str],
        *,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        status_dir: Path | None = None,
        nice: int = 0,
    ) -> None:
        # a lower CPU priority (coreutils' nice, inherited by mpirun's ranks): the child
        # takes all the CPU the viewer does not need, and the viewer stays responsive
        import shutil

        self.program = Path(argv[0]).name  # for messages
        self.argv = ["nice", "-n", str(nice), *argv] if nice and shutil.which("nice") else argv
        self.cwd = cwd
        self.env = {**os.environ, ev.ENV: "stderr", **(env or {})}
        self.log_dir = log_dir
        self.status_dir = status_dir
        self.proc: subprocess.Popen[str] | None = None

    def events(self, cancel: threading.Event) -> Generator[ev.Event, None, Outcome]:
        """Start the child; yield its events; return how it ended.  Setting ``cancel``
        terminates it."""
        try:
            self.proc = self._start()
        except OSError as e:
            self._mark("failure")
            return Outcome("error", f"cannot start {self.program}: {e.strerror or e}")
        proc = self.proc
        lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        pumps = [
            threading.Thread(target=_pump, args=(proc.stdout, "out", lines), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, "err", lines), daemon=True),
        ]
        for t in pumps:
            t.start()
        final: ev.Result | ev.Failure | None = None
        warnings: list[str] = []
        tail: list[str] = []
        cancelled_at: float | None = None
        try:
            with self._logs() as (out, err):
                open_streams = 2
                while open_streams or proc.poll() is None:
                    if cancelled_at is None and cancel.is_set() and proc.poll() is None:
                        terminate(proc)
                        cancelled_at = time.perf_counter()
                    if cancelled_at is not None and time.perf_counter() - cancelled_at > 1.0:
                        break  # a stray process holds the pipes open: stop reading them
                    try:
                        tag, line = lines.get(timeout=0.05)
                    except queue.Empty:
                        continue
                    if line is None:
                        open_streams -= 1
                        continue
                    event = ev.decode(line) if tag == "err" else None
                    if event is None:
                        (err if tag == "err" else out).write(line + "\n")
                        if tag == "err" and line.strip():
                            tail = [*tail[-19:], line.strip()]
                        continue
                    if isinstance(event, ev.Result | ev.Failure):
                        final = event
                    elif isinstance(event, ev.Warning):
                        warnings.append(event.message)
                    elif cancelled_at is None:
                        yield event
        finally:
            if proc.poll() is None:
                terminate(proc)
            for t in pumps:
                t.join(timeout=1.0)
        rc = proc.wait()
        return self._outcome(rc, final, warnings, tail, cancelled_at is not None)

    def pause(self, paused: bool) -> None:
        """Stop (SIGSTOP) or continue (SIGCONT) the child and what it started: background
        work that should give way to other work for a while."""
        if self.proc is not None and self.proc.poll() is None:
            _signal_session(self.proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def _start(self) -> subprocess.Popen[str]:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            start_new_session=True,
        )  # fmt: skip

    def _logs(self) -> Any:
        import contextlib

        if self.log_dir is None:
            return contextlib.nullcontext((_Null(), _Null()))
        stack = contextlib.ExitStack()
        out = stack.enter_context(open(self.log_dir / "run.out", "a"))
        err = stack.enter_context(open(self.log_dir / "run.err", "a"))

        @contextlib.contextmanager
        def both() -> Generator[tuple[IO[str], IO[str]], None, None]:
            with stack:
                yield out, err

        return both()

    def _mark(self, status: str) -> None:
        """RELION's exit-status file, unless the program wrote one."""
        if self.status_dir is not None and status_of(self.status_dir) is None:
            mark_status(self.status_dir, status)

    def _outcome(
        self, rc: int, final: ev.Result | ev.Failure | None, warnings: list[str],
        tail: list[str], cancelled: bool,
    ) -> Outcome:  # fmt: skip
        pid = self.proc.pid if self.proc is not None else None
        if isinstance(final, ev.Result) and rc == 0:
            return Outcome("ok", result=final, warnings=warnings, exit_code=rc, pid=pid)
        if cancelled or (isinstance(final, ev.Failure)
                         and final.reason == ev.FailureKind.CANCELLED):  # fmt: skip
            self._mark("aborted")
            why = f" ({final.message})" if isinstance(final, ev.Failure) else ""
            return Outcome("cancelled", f"cancelled{why}: no maps were written",
                           failure=final if isinstance(final, ev.Failure) else None,
                           warnings=warnings, exit_code=rc, pid=pid)  # fmt: skip
        self._mark("failure")
        if isinstance(final, ev.Failure):
            return Outcome("error", final.message, failure=final, warnings=warnings,
                           exit_code=rc, pid=pid)  # fmt: skip
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        last = f": {tail[-1]}" if tail else ""
        return Outcome("error", f"{self.program} {how} without a result{last}", warnings=warnings,
                       exit_code=rc, pid=pid)  # fmt: skip


class _Null:
    def write(self, text: str) -> int:
        return len(text)


def _pump(stream: IO[str] | None, tag: str, q: queue.Queue[tuple[str, str | None]]) -> None:
    try:
        if stream is not None:
            for line in stream:
                q.put((tag, line.rstrip("\n")))
    finally:
        q.put((tag, None))


# --------------------------------------------------------------------------------------
# Terminating a child and everything it started


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
    """Whether a child started with ``start_new_session`` (``sid`` = its pid) or anything
    it started (mpirun's ranks) still runs."""
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


def terminate(proc: subprocess.Popen[str], grace: float = GRACE) -> None:
    """SIGTERM to every process of the child's session, then SIGKILL.

    The session, not only the process group: Open MPI's mpirun puts each rank in a
    group of its own, and forwards a SIGTERM to them only after a delay.
    """
    sid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal_session(sid, sig)
        _signal_session(sid, signal.SIGCONT)  # a paused child acts on its SIGTERM
        end = time.perf_counter() + grace
        while time.perf_counter() < end:
            if proc.poll() is not None and not session_alive(sid):
                return
            time.sleep(0.02)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


# --------------------------------------------------------------------------------------
# Queue submission


def submit(argv: list[str], cwd: str | os.PathLike[str], timeout: float = 120.0) -> Outcome:
    """Run the queue's submit command (e.g. ``sbatch Reconstruct/job001/run_submit.script``)."""
    try:
        res = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return Outcome("error", f"queue submission failed: {str(e).splitlines()[0]}")
    if res.returncode != 0:
        err = (res.stderr or res.stdout).strip().splitlines()
        tail = err[-1] if err else f"exit code {res.returncode}"
        return Outcome("error", f"{shlex.join(argv)}: {tail}")
    said = (res.stdout.strip().splitlines() or [""])[-1]
    return Outcome("submitted", f"submitted {shlex.join(argv)}" + (f": {said}" if said else ""))
