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
    system.  The message names the file and the cause; nothing half-written is left.

    ``cause`` alone (e.g. "No space left on device"), for a caller that names the file
    differently (a temporary file's final name).
    """

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause or message
