"""Per-tomogram checkpoints of the accumulated Fourier volumes, for ``--only_do_unfinished``.

After each finished tilt series the summed data and weights (both half sets, full
double precision) are saved under ``<o>/temp/``.  Every file is written under a
temporary name and renamed; the small JSON file, renamed last, is the commit
record: it names the finished tilt series and the volume files that belong to
them, so a run killed at any moment leaves either the previous checkpoint or the
new one, never a mix.  A resumed run therefore ends with the same maps as an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from .atomic import atomic_path, fault, remove_quietly, write_text_atomic


def _what_changed(then: object, now: dict[str, Any]) -> str:
    """The first difference between two fingerprints, for the message."""
    if not isinstance(then, dict):
        return "an older version of the program"
    for key in ("params", "files"):
        old, new = then.get(key) or {}, now.get(key) or {}
        for name in (*new, *(k for k in old if k not in new)):
            if old.get(name) != new.get(name):
                if key == "params":
                    return f"{name} = {old.get(name)!r}, not {new.get(name)!r}"
                if name not in old:
                    return f"other inputs ({name} was not one of them)"
                if name not in new:
                    return f"other inputs ({name} was one of them)"
                return f"other inputs: {name} has changed since (size or time)"
    return f"another MPI layout (rank {then.get('rank')} of {then.get('size')})"


class Checkpoint:
    """The checkpoint files of one rank in ``folder``.

    The volumes are the accumulators of :class:`~napari_subtomo_recon.core.backprojection.
    Accumulators`: ``data`` complex128 and ``weight`` float64, both (2, s, s, s//2+1)
    [half set, z, y, x].  ``fingerprint`` (JSON-serialisable) identifies the inputs and
    settings; a checkpoint made with another fingerprint is refused.
    """

    def __init__(self, folder: Path, fingerprint: dict[str, Any], rank: int = 0):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.prefix = f"checkpoint_rank{rank}"

    @property
    def record(self) -> Path:
        return self.folder / f"{self.prefix}.json"

    def save(
        self, finished: list[str], data: NDArray[np.complex128], weight: NDArray[np.float64]
    ) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise fault(self.folder, e, "cannot create the checkpoint folder") from None
        gen = len(finished)
        names = {
            "data": f"{self.prefix}_{gen}_data.npy",
            "weight": f"{self.prefix}_{gen}_weight.npy",
        }
        old = self._read_record()
        kept = set() if old is None else set(old.get("files", {}).values())
        try:
            for key, arr in (("data", data), ("weight", weight)):
                with atomic_path(self.folder / names[key]) as tmp:
                    np.save(tmp, arr)
            write_text_atomic(
                self.record,
                json.dumps({"fingerprint": self.fingerprint, "finished": finished, "files": names}),
            )
        except BaseException:
            # the previous checkpoint stays the valid one: drop this generation's volumes
            for name in names.values():
                if name not in kept:
                    remove_quietly(self.folder / name)
            raise
        if old is not None:  # the previous generation is no longer referenced
            for name in old.get("files", {}).values():
                if name not in names.values():
                    remove_quietly(self.folder / name)

    def _read_record(self) -> dict[str, Any] | None:
        try:
            record: dict[str, Any] = json.loads(self.record.read_text())
            return record
        except (OSError, ValueError):
            return None

    def load(self) -> tuple[list[str], NDArray[np.complex128], NDArray[np.float64]] | None:
        """The saved state, or None if there is none.  Refuses a checkpoint of other settings."""
        rec = self._read_record()
        if rec is None:
            return None
        now = json.loads(json.dumps(self.fingerprint))
        then = rec.get("fingerprint")
        if then != now:
            raise InputError(
                f"{self.record}: the checkpoint was made with {_what_changed(then, now)}; "
                "remove the temp folder or run without --only_do_unfinished"
            )
        try:
            data: NDArray[np.complex128] = np.load(self.folder / rec["files"]["data"])
            weight: NDArray[np.float64] = np.load(self.folder / rec["files"]["weight"])
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{self.record}: checkpoint volumes are unreadable ({e})") from None
        return list(rec["finished"]), data, weight

    def clear_all(self) -> None:
        """Remove every rank's checkpoint files (the job has finished)."""
        if not self.folder.is_dir():
            return
        for p in self.folder.iterdir():
            if p.name.startswith("checkpoint_rank"):
                try:
                    p.unlink()
                except OSError:
                    pass
        try:
            os.rmdir(self.folder)
        except OSError:
            pass


def has_checkpoints(job_dir: str | os.PathLike[str]) -> bool:
    """Whether ``<job_dir>/temp/`` holds the checkpoint of an unfinished run."""
    try:
        return any((Path(job_dir) / "temp").glob("checkpoint_rank*.json"))
    except OSError:
        return False
