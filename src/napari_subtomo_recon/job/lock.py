"""One job at a time in a job folder.

``<o>/.subtomo-recon.lock`` is created exclusively (``O_EXCL``) before any work and
removed when the job ends, however it ends.  It names the process (host and pid), so a
lock left by a killed job is recognised on the same host and taken over; one held by a
running job — or by a job on another host, which cannot be checked — is refused with a
message saying which.  The same pass removes the temporary files a killed job left
behind (``.<name>.tmp-<pid>.<ext>`` and ``.<name>.old-<pid>.<ext>`` of processes that no
longer run).
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from types import TracebackType

from ..errors import InputError

LOCK_NAME = ".subtomo-recon.lock"
# temporary files (.half1.tmp-123.mrc) and the previous maps kept during the final renames
_TEMP = re.compile(r"^\..+\.(?:tmp|old)-(\d+)(\.[^.]*)?$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobLock:
    """``with JobLock(out_dir):`` — see the module docstring."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_stale()
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            remove_stale_temp_files(self.path.parent)
            return
        raise InputError(f"{self.path}: could not take the job folder's lock")

    def _take_over_stale(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
            host, pid = str(owner["host"]), int(owner["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            host, pid = "", -1  # unreadable: left half-written by a killed job
        if host and host != socket.gethostname():
            raise InputError(
                f"{self.path.parent}: another job (process {pid} on {host}) is writing into "
                f"this folder; if it no longer runs, remove {self.path}"
            )
        if pid > 0 and _alive(pid):
            raise InputError(
                f"{self.path.parent}: another job (process {pid}) is writing into this "
                "folder; wait for it, cancel it, or choose another output folder"
            )
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def holder(folder: Path) -> str | None:
    """Who holds the job folder's lock ("process 123", "process 123 on host"), or None."""
    try:
        owner = json.loads((Path(folder) / LOCK_NAME).read_text())
        host, pid = str(owner["host"]), int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return f"process {pid} on {host}"
    return f"process {pid}" if _alive(pid) else None


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Temporary files of processes that no longer run (a killed job's); returns them."""
    removed = []
    for sub in (folder, folder / "temp"):
        try:
            entries = list(sub.iterdir())
        except OSError:
            continue
        for p in entries:
            m = _TEMP.match(p.name)
            if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed
