"""What a running job tells its caller: typed events and their one-line serialisation.

The job (:func:`napari_subtomo_recon.job.run`) yields :class:`Progress` and
:class:`Preview` events and returns a :class:`Result`; it raises on failure.  The command
line, asked for events (``SUBTOMO_EVENTS=stderr``), writes every event — and a
:class:`Warning` per warning, a :class:`Failure` instead of an error message — as one line
``@subtomo-event {...json...}`` on stderr.  The napari widget starts ``subtomo-recon`` (or
``mpirun ... subtomo-recon``) and reads only these lines (:func:`decode`): it never parses
human-readable text or interprets exit codes by hand.

A preview is a small MRC file written atomically into the job's ``temp/`` folder; the
event carries its path, not the map.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

PREFIX = "@subtomo-event "
ENV = "SUBTOMO_EVENTS"  # "stderr": the command line writes events instead of text
PREVIEW_ENV = "SUBTOMO_PREVIEW_SECONDS"  # seconds between live previews (events only)


class Stage(str, Enum):
    """The job's stages, in order."""

    COMPILING = "compiling"  # Numba kernels (the warm-up, before a first job)
    SIMULATING = "simulating"  # writing the sample data set
    READING = "reading"  # star files and image headers
    CHECKING = "checking"  # every used tilt image readable and finite
    BACKPROJECTING = "backprojecting"
    FINALISING = "finalising"  # symmetry, gridding correction, weighting, crop, taper
    WRITING = "writing"
    DONE = "done"


class FailureKind(str, Enum):
    """Why a job stopped; each has its own exit code of ``subtomo-recon``."""

    INPUT = "input"  # the user's to fix: a file, a value, a flag
    INTERNAL = "internal"  # a defect
    CANCELLED = "cancelled"  # Cancel, SIGTERM, RELION_JOB_ABORT_NOW
    ENVIRONMENT = "environment"  # no space, no permission, out of memory


EXIT_CODES = {
    FailureKind.INPUT: 1,
    FailureKind.INTERNAL: 2,
    FailureKind.CANCELLED: 3,
    FailureKind.ENVIRONMENT: 4,
}


@dataclass(frozen=True)
class Progress:
    """What the job is doing; ``done``/``total`` count particle-tilts."""

    kind: ClassVar[str] = "progress"
    stage: Stage
    done: int = 0
    total: int = 0
    tomogram: str = ""
    tomogram_index: int = 0  # 1-based
    tomogram_count: int = 0
    message: str = ""
    elapsed: float = 0.0
    voxel_size: float = 0.0  # Å, of the maps (once known)


@dataclass(frozen=True)
class Preview:
    """A partial merged map, written to ``path`` (an MRC file) while the job runs."""

    kind: ClassVar[str] = "preview"
    path: Path
    voxel_size: float
    done: int
    total: int
    levels: tuple[float, float, float]  # iso threshold, contrast min, max


@dataclass(frozen=True)
class Warning:  # noqa: A001 (an event, not the builtin)
    kind: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True)
class Failure:
    """The job stopped without maps; ``message`` is one line, ``detail`` a traceback."""

    kind: ClassVar[str] = "failure"
    reason: FailureKind
    message: str
    detail: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.reason]


@dataclass
class Result:
    """A finished job."""

    kind: ClassVar[str] = "result"
    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)  # merged, half1, ..., note
    voxel_size: float = 0.0
    particle_tilts: int = 0
    particles: int = 0
    elapsed: float = 0.0
    fsc: np.ndarray | None = None  # (n_shells,) half-map FSC of the unmasked maps
    resolution_0143: float | None = None
    resolution_05: float | None = None
    warnings: list[str] = field(default_factory=list)


Event = Progress | Preview | Warning | Failure | Result
_TYPES: dict[str, type[Any]] = {c.kind: c for c in (Progress, Preview, Warning, Failure, Result)}


# --------------------------------------------------------------------------------------
# Serialisation


def _plain(v: Any) -> Any:
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)  # JSON has no nan/inf
    if isinstance(v, np.floating | np.integer):
        return _plain(v.item())
    return v


def to_dict(event: Event) -> dict[str, Any]:
    out = {"event": event.kind}
    for f in dataclasses.fields(event):
        out[f.name] = _plain(getattr(event, f.name))
    return out


def _number(v: Any) -> Any:
    return float(v) if isinstance(v, str) and v in ("nan", "inf", "-inf") else v


def from_dict(d: dict[str, Any]) -> Event:
    """The event of :func:`to_dict`; KeyError/TypeError/ValueError if it is not one."""
    cls = _TYPES[d["event"]]
    kw = {k: v for k, v in d.items() if k != "event"}
    if cls is Progress:
        kw["stage"] = Stage(kw["stage"])
    elif cls is Preview:
        kw["path"] = Path(kw["path"])
        kw["levels"] = tuple(float(_number(x)) for x in kw["levels"])
    elif cls is Failure:
        kw["reason"] = FailureKind(kw["reason"])
    elif cls is Result:
        kw["output_dir"] = Path(kw["output_dir"])
        kw["files"] = {k: Path(p) for k, p in kw.get("files", {}).items()}
        if kw.get("fsc") is not None:
            kw["fsc"] = np.array([_number(x) for x in kw["fsc"]], dtype=np.float64)
        for key in ("resolution_0143", "resolution_05", "voxel_size", "elapsed"):
            if key in kw:
                kw[key] = _number(kw[key])
    return cls(**kw)  # type: ignore[no-any-return]


def encode(event: Event) -> str:
    """One line (no newline): ``@subtomo-event {json}``."""
    return PREFIX + json.dumps(to_dict(event), separators=(",", ":"))


def decode(line: str) -> Event | None:
    """The event on a line of output, or None for any other line (text, noise)."""
    line = line.rstrip("\r\n")
    if not line.startswith(PREFIX):
        return None
    try:
        return from_dict(json.loads(line[len(PREFIX) :]))
    except (KeyError, TypeError, ValueError):
        return None
