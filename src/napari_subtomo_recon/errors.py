"""Errors that are the user's to fix.

An :class:`InputError` carries a one-line message naming the file, the
table/row/label and what is wrong.  The command line prints it without a
traceback; the napari widget shows it as a notification.
"""


class InputError(Exception):
    """Bad input: a file, a label, a value or a flag the user can correct."""


class Cancelled(Exception):
    """The run was cancelled by the user; nothing was written."""


class EnvironmentFault(Exception):
    """The machine stopped the job: a full disk, a missing permission, a read-only file
    system.  The message names the file and the cause; nothing half-written is left."""


def failure_kind(e: BaseException) -> str:
    """How a failure ends a job: "input" (exit 1), "cancelled" (3), "environment" (4: a
    full disk, a missing permission, memory) or "internal" (2: a defect)."""
    if isinstance(e, InputError):
        return "input"
    if isinstance(e, Cancelled):
        return "cancelled"
    if isinstance(e, EnvironmentFault | MemoryError) or (
        isinstance(e, OSError) and e.errno is not None
    ):
        return "environment"
    return "internal"
