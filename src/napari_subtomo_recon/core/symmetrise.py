"""Fourier-space symmetrisation: RELION's ``Symmetry::symmetrise_FS_complex`` /
``symmetrise_FS_real`` with their trilinear half-complex interpolation (spec §6).

The operators come from :func:`.symmetry.symmetry_operators`.  Fourier arrays are
``[z, y, x]`` in the FFTW half-complex layout.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike, NDArray

from .arraytypes import Complex128Array, Float64Array

__all__ = ["symmetrise_fourier"]


@njit(cache=True, nogil=True, inline="always")
def _corners(xs: float, ys: float, zs: float, xdim: int, ydim: int, zdim: int, wrap: bool,
             ) -> tuple[int, int, int, int, int, int, float, float, float, bool]:  # fmt: skip
    """Shared index logic of ``linearXYZ_FftwHalf_*`` (quirks included).

    RELION's quirk that ``wrap`` corrects: a frequency a rounding error below 0 (an
    operator entry of 3e-16 instead of 0) becomes ``ydim`` after the wrap and is clamped
    to ``ydim - 1``, the far edge, instead of read at 0."""
    if xs > 0.0:
        xd, yd, zd = xs, ys, zs
        conj = False
    else:  # x == 0 also takes the conjugate branch
        xd, yd, zd = -xs, -ys, -zs
        conj = True
    if yd < 0.0:
        yd += ydim
        if wrap and yd >= ydim:
            yd -= ydim
    if zd < 0.0:
        zd += zdim
        if wrap and zd >= zdim:
            zd -= zdim
    x0 = int(xd)
    y0 = int(yd)
    z0 = int(zd)
    # fractions before clamping, as RELION
    xf = xd - x0
    yf = yd - y0
    zf = zd - z0
    if x0 >= xdim:
        x0 = xdim - 1
    x1 = x0 + 1
    if x1 >= xdim:
        x1 = xdim - 2  # RELION's "mirror" of the last column, not a wrap
    if y0 < 0:
        y0 = 0
    elif y0 >= ydim:
        y0 = ydim - 1
    y1 = (y0 + 1) % ydim
    if z0 < 0:
        z0 = 0
    elif z0 >= zdim:
        z0 = zdim - 1
    z1 = (z0 + 1) % zdim
    return x0, x1, y0, y1, z0, z1, xf, yf, zf, conj


@njit(cache=True, nogil=True, inline="always")
def _trilinear(img: Float64Array, x0: int, x1: int, y0: int, y1: int, z0: int, z1: int,
               xf: float, yf: float, zf: float) -> float:  # fmt: skip
    vx00: float = (1 - xf) * img[z0, y0, x0] + xf * img[z0, y0, x1]
    vx10: float = (1 - xf) * img[z0, y1, x0] + xf * img[z0, y1, x1]
    vx01: float = (1 - xf) * img[z1, y0, x0] + xf * img[z1, y0, x1]
    vx11: float = (1 - xf) * img[z1, y1, x0] + xf * img[z1, y1, x1]
    vxy0 = (1 - yf) * vx00 + yf * vx10
    vxy1 = (1 - yf) * vx01 + yf * vx11
    return (1 - zf) * vxy0 + zf * vxy1


@njit(parallel=True, nogil=True, cache=True)
def _symmetrise_kernel(d_re: Float64Array, d_im: Float64Array, wgt: Float64Array,
                       mats: Float64Array, o_re: Float64Array, o_im: Float64Array,
                       o_w: Float64Array, wrap: bool) -> None:  # fmt: skip
    # Real and imaginary parts are interpolated separately: the same float operations
    # as RELION's tComplex (scalar × complex never mixes the parts).
    d, h, wh = d_re.shape
    w = 2 * (wh - 1)
    sc = mats.shape[0]
    norm = float(sc + 1)
    two_pi = 2 * 3.14159265358979323846
    for z in prange(d):
        zz = float(z) if z < d // 2 else float(z - d)
        for y in range(h):
            yy = float(y) if y < h // 2 else float(y - h)
            for x in range(wh):
                xx = float(x)
                a_re = d_re[z, y, x]
                a_im = d_im[z, y, x]
                a_w = wgt[z, y, x]
                for k in range(sc):
                    px = mats[k, 0, 0] * xx + mats[k, 0, 1] * yy + mats[k, 0, 2] * zz
                    py = mats[k, 1, 0] * xx + mats[k, 1, 1] * yy + mats[k, 1, 2] * zz
                    pz = mats[k, 2, 0] * xx + mats[k, 2, 1] * yy + mats[k, 2, 2] * zz
                    x0, x1, y0, y1, z0, z1, xf, yf, zf, conj = _corners(px, py, pz, wh, h, d, wrap)
                    v_re = _trilinear(d_re, x0, x1, y0, y1, z0, z1, xf, yf, zf)
                    v_im = _trilinear(d_im, x0, x1, y0, y1, z0, z1, xf, yf, zf)
                    if conj:
                        v_im = -v_im
                    dotp = two_pi * (
                        (xx / w) * mats[k, 0, 3]
                        + (yy / h) * mats[k, 1, 3]
                        + (zz / d) * mats[k, 2, 3]
                    )
                    c = np.cos(dotp)
                    s = np.sin(dotp)
                    a_re += v_re * c - v_im * s
                    a_im += v_re * s + v_im * c
                    a_w += _trilinear(wgt, x0, x1, y0, y1, z0, z1, xf, yf, zf)
                o_re[z, y, x] = a_re / norm
                o_im[z, y, x] = a_im / norm
                o_w[z, y, x] = a_w / norm


def symmetrise_fourier(
    D: NDArray[Any], W: NDArray[Any], ops: ArrayLike, threads: int = 1, wrap: bool = False
) -> tuple[Complex128Array, Float64Array]:
    """RELION's ``symmetrise_FS_complex`` (D) and ``symmetrise_FS_real`` (W).

    ``wrap`` reads frequencies that land a rounding error below 0 at 0, where RELION reads
    the far edge of the volume (``--fix_symmetry_wrap``; docs/conventions.md).

    ``D`` complex and ``W`` real, both (d, h, w//2+1) [z, y, x] half-complex; ``ops``
    (m, 4, 4) from :func:`symmetry_operators`.  Returns new arrays (complex128, float64);
    the inputs are not modified.
    """
    D = np.asarray(D)
    W = np.asarray(W)
    ops = np.asarray(ops, dtype=np.float64)
    if D.ndim != 3 or D.shape != W.shape:
        raise ValueError(f"D {D.shape} and W {W.shape} must be equal 3-D half-complex shapes")
    if ops.ndim != 3 or ops.shape[1:] != (4, 4):
        raise ValueError(f"ops must be (m, 4, 4), got {ops.shape}")
    if len(ops) == 0:
        return D.astype(np.complex128, copy=True), W.astype(np.float64, copy=True)
    if D.shape[2] < 2:
        raise ValueError(f"half-complex x size must be at least 2, got {D.shape[2]}")
    d_re = np.ascontiguousarray(D.real, dtype=np.float64)
    d_im = np.ascontiguousarray(D.imag, dtype=np.float64)
    wgt = np.ascontiguousarray(W, dtype=np.float64)
    o_re = np.empty_like(d_re)
    o_im = np.empty_like(d_re)
    o_w = np.empty_like(d_re)
    old = numba.get_num_threads()
    # NUMBA_NUM_THREADS is set when numba.config is loaded, invisible to mypy
    top: int = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    numba.set_num_threads(max(1, min(int(threads), top)))
    try:
        _symmetrise_kernel(d_re, d_im, wgt, np.ascontiguousarray(ops), o_re, o_im, o_w, wrap)
    finally:
        numba.set_num_threads(old)
    out = np.empty(D.shape, dtype=np.complex128)
    out.real = o_re
    out.imag = o_im
    return out, o_w
