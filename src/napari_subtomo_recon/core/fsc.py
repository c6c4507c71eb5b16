"""Fourier shell correlation between two maps."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .arraytypes import Float64Array


def fsc(a: NDArray[Any], b: NDArray[Any]) -> Float64Array:
    """FSC per integer shell 0..n/2 (shell i holds round(|k|) == i) of two cubic maps
    (n, n, n) of a real dtype: (n//2+1,) float64."""
    n = a.shape[0]
    A = np.fft.rfftn(a.astype(np.float64))
    B = np.fft.rfftn(b.astype(np.float64))
    f = np.fft.fftfreq(n) * n
    fx = np.arange(n // 2 + 1)
    r = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + fx[None, None, :] ** 2)
    shell = np.floor(r + 0.5).astype(np.int64).ravel()
    nsh = n // 2 + 1
    keep = shell < nsh
    shell = shell[keep]
    A = A.ravel()[keep]
    B = B.ravel()[keep]
    num = np.bincount(shell, (A * np.conj(B)).real, minlength=nsh)
    da = np.bincount(shell, np.abs(A) ** 2, minlength=nsh)
    db = np.bincount(shell, np.abs(B) ** 2, minlength=nsh)
    den = np.sqrt(da * db)
    curve: Float64Array = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return curve


def resolution_at(curve: ArrayLike, threshold: float, voxel_size: float) -> float | None:
    """Resolution (Å) where the curve first drops below ``threshold`` (linear interpolation).

    Shell i of an n-voxel box is the frequency i / (n · voxel_size).  Returns the
    Nyquist resolution if it never drops, and None for an empty curve.
    """
    c = np.asarray(curve, dtype=np.float64)
    if c.size < 2:
        return None
    n = 2 * (c.size - 1)
    for i in range(1, c.size):
        if c[i] < threshold:
            x0, y0, y1 = i - 1, c[i - 1], c[i]
            t = (y0 - threshold) / (y0 - y1) if y0 != y1 else 0.0
            shell = x0 + t
            return float(n * voxel_size / shell) if shell > 0 else None
    return float(2.0 * voxel_size)


def shell_resolutions(n_shells: int, box: int, voxel_size: float) -> Float64Array:
    """Resolution (Å) of each shell; shell 0 is infinite."""
    i = np.arange(n_shells, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(i > 0, box * voxel_size / np.where(i > 0, i, 1), np.inf)
