"""Write files under a temporary name and rename them into place.

``os.replace`` is atomic on POSIX within one file system, so a reader (or a
crashed, killed or cancelled run) sees either the complete old file or the
complete new one, never a partial write.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def temp_name(path: str | os.PathLike) -> Path:
    p = Path(path)
    # keep the suffix: some writers choose the format from it
    return p.with_name(f".{p.stem}.tmp-{os.getpid()}{p.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    final = Path(path)
    tmp = temp_name(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
