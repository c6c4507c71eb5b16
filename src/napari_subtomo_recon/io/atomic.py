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

if TYPE_CHECKING:  # (keeps this module free of run-time imports beyond the standard library)
    from ._typing import StrPath


def temp_name(path: StrPath) -> Path:
    p = Path(path)
    # keep the suffix: some writers choose the format from it
    return p.with_name(f".{p.stem}.tmp-{os.getpid()}{p.suffix}")


@contextlib.contextmanager
def atomic_path(path: StrPath) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    final = Path(path)
    tmp = temp_name(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: StrPath, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
