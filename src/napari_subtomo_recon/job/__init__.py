"""The Reconstruct particle job: stages, their collaborators, RELION bookkeeping.

- :mod:`.runner`: :func:`run` / :class:`Job`, load → plan → backproject → finalise → write;
- :mod:`.inputs`, :mod:`.plan`, :mod:`.finalise`, :mod:`.outputs`: the stages' work;
- :mod:`.collaborators`: MPI agreement and reduction, checkpoints, live previews;
- :mod:`.relion`: job.star, the command RELION's GUI builds, note.txt, status files;
- :mod:`.launch`: running a program that reports through events in a child process.

The parameters are :class:`~napari_subtomo_recon.params.ReconstructParams`; the events
:mod:`napari_subtomo_recon.events`.  The names below are imported on first use (PEP 562):
the napari widget imports :mod:`.relion` and :mod:`.launch` without the numerics.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "MAP_TAGS": "finalise",
    "preview_map": "finalise",
    "finalise_steps": "finalise",
    "Inputs": "inputs",
    "load_inputs": "inputs",
    "OutputGroup": "outputs",
    "TomoPlan": "plan",
    "fit_memory": "plan",
    "memory_estimate": "plan",
    "plan_work": "plan",
    "settings_of": "plan",
    "split_plans": "plan",
    "Job": "runner",
    "check_tilt_images": "runner",
    "fingerprint": "runner",
    "run": "runner",
    "run_to_completion": "runner",
}

__all__ = sorted([*_WHERE, "Progress", "Result", "ReconstructParams"])


def __getattr__(name: str) -> Any:
    if name in ("Progress", "Result"):
        from .. import events

        return getattr(events, name)
    if name == "ReconstructParams":
        from ..params import ReconstructParams

        return ReconstructParams
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
