"""A child program as the widget runs it: how it ended is read from its events only."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from napari_subtomo_recon import events as ev
from napari_subtomo_recon.job import relion
from napari_subtomo_recon.job.launch import Child


def run(code: str, tmp_path: Path, cancel: threading.Event | None = None):
    child = Child([sys.executable, "-c", code], tmp_path, log_dir=tmp_path,
                  status_dir=tmp_path)  # fmt: skip
    gen = child.events(cancel or threading.Event())
    seen = []
    while True:
        try:
            seen.append(next(gen))
        except StopIteration as stop:
            return seen, stop.value


def emit(event: ev.Event) -> str:
    return f"print({ev.encode(event)!r}, file=sys.stderr, flush=True)"


def test_events_not_text_or_exit_codes_decide(tmp_path):
    progress = ev.Progress(ev.Stage.BACKPROJECTING, 5, 10, "TS_01", 1, 1)
    result = ev.Result(tmp_path, {"merged": tmp_path / "merged.mrc"}, 4.0)
    code = f"import sys\n{emit(progress)}\n{emit(ev.Warning('careful'))}\n{emit(result)}\n"
    seen, out = run(code + "print('subtomo-recon: error: not an event', file=sys.stderr)", tmp_path)
    assert seen == [progress] and out.status == "ok" and out.warnings == ["careful"]
    assert out.result.files == result.files
    assert "not an event" in (tmp_path / "run.err").read_text()  # logged, not parsed
    # a failure event is a failure, whatever the exit code says
    failure = ev.Failure(ev.FailureKind.INPUT, "particles.star: no such file")
    _, out = run(f"import sys\n{emit(failure)}\nsys.exit(0)", tmp_path)
    assert (out.status, out.message, out.failure) == ("error", failure.message, failure)
    assert relion.status_of(tmp_path) == "failure"
    # text that looks like an error, and no event: the exit code is reported as such
    relion.clear_status(tmp_path)
    _, out = run("import sys\nprint('subtomo-recon: error: boom', file=sys.stderr)\n"
                 "sys.exit(1)", tmp_path)  # fmt: skip
    assert out.status == "error" and out.failure is None
    assert out.message == "python exited with code 1 without a result: subtomo-recon: error: boom"
    cancelled = ev.Failure(ev.FailureKind.CANCELLED, "stopped by signal 15")
    relion.clear_status(tmp_path)
    _, out = run(f"import sys\n{emit(cancelled)}\nsys.exit(3)", tmp_path)
    assert out.status == "cancelled" and relion.status_of(tmp_path) == "aborted"


def test_cancel_ends_the_child_and_everything_it_started(tmp_path):
    from napari_subtomo_recon.job.launch import session_alive

    cancel = threading.Event()
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"{emit(ev.Progress(ev.Stage.READING))}\n"
        "time.sleep(60)\n"
    )
    child = Child([sys.executable, "-c", f"import sys\n{code}"], tmp_path)
    gen = child.events(cancel)
    assert isinstance(next(gen), ev.Progress)
    cancel.set()
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        out = stop.value
    assert out.status == "cancelled"
    assert not session_alive(out.pid)
