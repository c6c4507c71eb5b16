"""Fourier shell correlation between two maps."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft as sfft
from numpy.typing import ArrayLike, NDArray

from .arraytypes import Float64Array


def _half_transform(a: NDArray[Any]) -> NDArray[np.complex128]:
    """rfftn of a real (n, n, n) map in double precision, without a double copy of it."""
    n = a.shape[0]
    A = np.empty((n, n, a.shape[2] // 2 + 1), np.complex128)
    for z in range(n):  # the x transforms plane by plane, from the map's own dtype
        A[z] = sfft.rfft(np.asarray(a[z], np.float64), axis=-1)
    out: NDArray[np.complex128] = sfft.fftn(A, axes=(0, 1), overwrite_x=True)
    return out


def fsc(a: NDArray[Any], b: NDArray[Any]) -> Float64Array:
    """FSC per integer shell 0..n/2 (shell i holds round(|k|) == i) of two cubic maps
    (n, n, n) of a real dtype: (n//2+1,) float64.

    Sums plane by plane: besides the two transforms no volume-sized array (at box 512
    the whole-volume version took 4 GB more).
    """
    return fsc_spectra(_half_transform(a), _half_transform(b))


def fsc_spectra(A: NDArray[np.complexfloating], B: NDArray[np.complexfloating]) -> Float64Array:
    """:func:`fsc` of the maps ``irfftn(A)``, ``irfftn(B)`` (n, n, n) from their half
    transforms A, B (n, n, n//2+1) (any common scaling): no transform at all.

    A real map's transform is Hermitian, so in the planes x = 0 and x = n/2 (n even)
    ``irfftn`` keeps only the Hermitian part (G(k) + conj G(-k))/2 of what it is
    given; those planes are summed that way, the rest as they are.  (At box 512 the two
    transforms :func:`fsc` needs take ~4 s: ``benchmarks/kernels.py maps``.)
    """
    n = A.shape[0]
    sh = A.shape[2]
    f = np.fft.fftfreq(n) * n
    fx = np.arange(sh)
    ryx = f[:, None] ** 2 + fx[None, :] ** 2
    nsh = n // 2 + 1
    num = np.zeros(nsh)
    da = np.zeros(nsh)
    db = np.zeros(nsh)
    neg = (-np.arange(n)) % n
    edges = [0, n // 2] if n % 2 == 0 else [0]

    def plane(G: NDArray[np.complexfloating], z: int) -> NDArray[np.complex128]:
        P = np.array(G[z], np.complex128)
        for x in edges:  # the Hermitian part of the planes x = 0 and n/2
            P[:, x] = 0.5 * (G[z, :, x] + np.conj(G[neg[z], neg, x]))
        return P

    for z in range(n):
        shell = np.floor(np.sqrt(f[z] ** 2 + ryx) + 0.5).astype(np.int64).ravel()
        keep = shell < nsh
        shell = shell[keep]
        Az = plane(A, z).ravel()[keep]
        Bz = plane(B, z).ravel()[keep]
        num += np.bincount(shell, (Az * np.conj(Bz)).real, minlength=nsh)
        da += np.bincount(shell, np.abs(Az) ** 2, minlength=nsh)
        db += np.bincount(shell, np.abs(Bz) ** 2, minlength=nsh)
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
