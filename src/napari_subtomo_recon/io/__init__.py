"""Reading and writing: STAR and MRC files, and the dataclasses the rest of the code uses.

The names below are imported on first use (PEP 562), so that ``io.jobstar`` or
``io.atomic`` can be imported without mrcfile, starfile and pandas (the napari widget
imports them while napari waits).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "FrameReader": "mrc",
    "read_map": "mrc",
    "write_map": "mrc",
    "OptimisationSet": "optimisation_set",
    "read_optimisation_set": "optimisation_set",
    "resolve_inputs": "optimisation_set",
    "ParticleSet": "particles",
    "read_particle_set": "particles",
    "read_trajectories": "particles",
    "TiltSeries": "tomograms",
    "TomogramSet": "tomograms",
    "read_tomogram_set": "tomograms",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
