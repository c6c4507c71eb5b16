"""Write files under a temporary name and rename them into place.

``os.replace`` is atomic on POSIX within one file system, so a reader (or a
crashed, killed or cancelled run) sees either the complete old file or the
complete new one, never a partial write.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EnvironmentFault

if TYPE_CHECKING:  # (keeps this module free of run-time imports beyond the standard library)
    from ._typing import StrPath


def temp_name(path: StrPath) -> Path:
    p = Path(path)
    # keep the suffix: some writers choose the format from it
    return p.with_name(f".{p.stem}.tmp-{os.getpid()}{p.suffix}")


def fault(path: StrPath, e: OSError, doing: str = "cannot write") -> EnvironmentFault:
    """An OSError while writing ``path`` as one line naming the file and the cause.

    numpy reports a full disk as ``OSError: N requested and M written`` without an errno;
    that is the disk too, so every OSError here is the machine's, not the program's.
    """
    cause = e.strerror or str(e) or type(e).__name__
    if e.errno is None and "requested and" in str(e):
        cause = f"no space left on device? ({e})"
    return EnvironmentFault(f"{path}: {doing} ({cause})")


@contextlib.contextmanager
def atomic_path(path: StrPath) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    However the body ends, the temporary file is gone afterwards; an OSError (no space,
    no permission, a folder in the way) becomes an :class:`EnvironmentFault` naming ``path``.
    """
    final = Path(path)
    tmp = temp_name(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as e:
        raise fault(final, e) from None
    finally:
        remove_quietly(tmp)


def remove_quietly(path: StrPath) -> None:
    """Remove a file if it is there; a file that cannot be removed is left (and said so by
    whoever wrote it): cleaning up must not hide the error that made it necessary."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError:
        pass


def write_text_atomic(path: StrPath, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
