"""Errors that are the user's to fix.

An :class:`InputError` carries a one-line message naming the file, the
table/row/label and what is wrong.  The command line prints it without a
traceback; the napari widget shows it as a notification.
"""


class InputError(Exception):
    """Bad input: a file, a label, a value or a flag the user can correct."""


class Cancelled(Exception):
    """The run was cancelled by the user; nothing was written."""
