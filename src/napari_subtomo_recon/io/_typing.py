"""Type aliases shared by the readers and writers (no run-time dependencies beyond numpy)."""

from __future__ import annotations

import os
from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

#: A file-system path as the readers accept it.
StrPath: TypeAlias = str | os.PathLike[str]

#: float64 arrays (coordinates, angles, per-frame metadata).
FloatArray: TypeAlias = NDArray[np.float64]

#: int64 arrays (optics groups, half sets).
IntArray: TypeAlias = NDArray[np.int64]

#: bool arrays (frame masks).
BoolArray: TypeAlias = NDArray[np.bool_]
