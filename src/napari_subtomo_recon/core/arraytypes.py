"""Array aliases and the interface the numerics expect from a tilt series.

Shapes are given in the docstrings of the functions (teamtomo style: ``(n, s, sh)``
with ``sh = s//2 + 1`` the half-complex width); the aliases fix the dtype.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BoolArray",
    "Complex64Array",
    "Complex128Array",
    "Float32Array",
    "Float64Array",
    "Int32Array",
    "Int64Array",
    "TiltSeriesLike",
]

Float32Array = NDArray[np.float32]
Float64Array = NDArray[np.float64]
Complex64Array = NDArray[np.complex64]
Complex128Array = NDArray[np.complex128]
Int32Array = NDArray[np.int32]
Int64Array = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


class TiltSeriesLike(Protocol):
    """What the numerics read from a tilt series (``io.tomograms.TiltSeries``).

    Per-frame arrays are (fc,) float, indexed by frame f.
    """

    @property
    def pixel_size(self) -> float: ...  # Å per unbinned pixel
    @property
    def hand(self) -> float: ...
    @property
    def voltage(self) -> float: ...  # kV
    @property
    def cs(self) -> float: ...  # mm
    @property
    def q0(self) -> float: ...
    @property
    def bfactor_per_dose(self) -> float: ...
    @property
    def defocus_slope(self) -> float: ...
    @property
    def size(self) -> tuple[int, int, int]: ...  # tomogram (w0, h0, d0), unbinned px
    @property
    def image_size(self) -> tuple[int, int]: ...  # tilt image (W, H)
    @property
    def r4_projection(self) -> NDArray[Any] | None: ...  # (fc, 4, 4)
    @property
    def tilt_angles(self) -> NDArray[Any] | None: ...  # (fc, 3) deg
    @property
    def shifts_angst(self) -> NDArray[Any] | None: ...  # (fc, 2) Å
    @property
    def defocus_u(self) -> NDArray[Any]: ...  # Å
    @property
    def defocus_v(self) -> NDArray[Any]: ...  # Å
    @property
    def defocus_angle(self) -> NDArray[Any]: ...  # deg
    @property
    def pre_exposure(self) -> NDArray[Any]: ...  # e/Å²
    @property
    def ctf_scale(self) -> NDArray[Any]: ...
    @property
    def ctf_bfactor(self) -> NDArray[Any]: ...
    @property
    def phase_shift(self) -> NDArray[Any]: ...  # deg
    @property
    def frame_count(self) -> int: ...
