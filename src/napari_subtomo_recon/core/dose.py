"""Dose weighting and the dose-based frequency cut-off (RELION ``damage.cpp``, spec §3.5)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .arraytypes import Float32Array, Float64Array, Int32Array


def radial_frequency(s: int, pixel_size: float) -> Float64Array:
    """|k| in 1/Å on the half-complex (s, s//2+1) grid, float64."""
    sh = s // 2 + 1
    x = np.arange(sh, dtype=np.float64)
    y = np.arange(s, dtype=np.float64)
    y = np.where(y < s // 2, y, y - s)
    k: Float64Array = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2) / (s * pixel_size)
    return k


def dose_weights(
    pre_exposure: ArrayLike, s: int, pixel_size: float, bfactor_per_dose: float = 0.0
) -> Float32Array:
    """Per-frame dose weights (fc, s, s//2+1) float32 for the exposures (fc,) in e/Å².

    Default: Grant & Grigorieff critical exposure, D = exp(-N / (2 (0.245 k^-1.665 + 2.81)));
    with ``bfactor_per_dose`` b > 0: D = exp(-b N k² / 4).
    """
    n = np.asarray(pre_exposure, dtype=np.float64)[:, None, None]
    k = radial_frequency(s, pixel_size)[None]
    if bfactor_per_dose > 0:
        return np.exp(-bfactor_per_dose * n / 4.0 * k * k).astype(np.float32)
    with np.errstate(divide="ignore"):
        ne = 0.245 * np.power(k, -1.665) + 2.81  # inf at k = 0 -> weight 1
    return np.exp(-0.5 * n / ne).astype(np.float32)


def dose_x_ranges(weights: Float32Array, cutoff: float) -> Int32Array:
    """(fc, s) int32 for weights (fc, s, s//2+1): one past the last x in row y with
    x <= sqrt(s²/4 - y²) and D > cutoff.

    RELION's ``findDoseXRanges``: ``s*s/4`` is an integer division; rows outside
    the disc get 0.
    """
    fc, s, sh = weights.shape
    y = np.arange(s, dtype=np.float64)
    y = np.where(y < s // 2, y, y - s)
    with np.errstate(invalid="ignore"):
        xmax = np.sqrt((s * s) // 4 - y * y)  # NaN outside the disc: no x qualifies
    x = np.arange(sh, dtype=np.float64)
    inside = x[None, :] <= xmax[:, None]  # (s, sh); False where xmax is NaN
    ok = inside[None] & (weights.astype(np.float64) > cutoff)  # float promoted to double, as in C++
    # last qualifying x + 1, or 0
    idx = np.where(ok, x[None, None, :] + 1, 0).max(axis=2)
    ranges: Int32Array = idx.astype(np.int32)
    return ranges
