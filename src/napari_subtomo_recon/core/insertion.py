"""Fourier insertion of 2D slices into 3D half-complex accumulators (spec §4).

RELION's ``backprojectSlice_backward``: a *gather*.  Every target voxel k within
one voxel of the slice plane pulls ``(1 - |q_z|)`` times the bilinear value of
the 2D slice at ``q = Q k`` with ``Q = (B^-1)^T``; negative ``q_x`` reads the
Hermitian mirror (conjugated).  Data and weights get the same kernel.

Accumulators: ``D`` complex128 and ``W`` float64 of shape (copies, 2, s, s, s//2+1)
[copy, half, z, y, x].  Threads own copies (per-thread accumulators): slice i goes
to copy ``i % copies``, so no two threads ever write the same voxel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True, inline="always")
def _bilinear_setup(qx, qy, wh, h):
    """Indices and weights for RELION's clipped bilinear 2D interpolation (complex and real)."""
    if qx >= 0.0:
        xd = qx
        yd = qy
        conj = False
    else:
        xd = -qx
        yd = -qy
        conj = True
    if yd < 0.0:
        yd += h
    x0 = int(xd)
    y0 = int(yd)
    xf = xd - x0
    yf = yd - y0
    if x0 >= wh:
        x0 = wh - 1
    x1 = x0 + 1
    if x1 >= wh:
        x1 = wh - 2  # RELION's quirk at the last column
    if y0 < 0:
        y0 = 0
    elif y0 >= h:
        y0 = h - 1
    y1 = (y0 + 1) % h
    return x0, x1, y0, y1, xf, yf, conj


@njit(cache=True, nogil=True)
def insert_slice(data, weight, Q, max_freq, D, W):
    """Insert one slice ``data``/``weight`` (s, sh) into ``D``/``W`` (s, s, sh)."""
    d3 = D.shape[0]
    h3 = D.shape[1]
    wh3 = D.shape[2]
    h2 = data.shape[0]
    wh2 = data.shape[1]
    ylim = h2 // 2 + 1
    nx, ny, nz = Q[2, 0], Q[2, 1], Q[2, 2]
    for z in range(d3):
        zz = z - d3 if z >= d3 // 2 else z
        for y in range(h3):
            yy = y - h3 if y >= h3 // 2 else y
            yz = ny * yy + nz * zz
            if nx == 0.0:
                if -1.0 < yz < 1.0:
                    x0 = 0
                    x1 = wh3 - 1
                else:
                    continue
            else:
                a0 = (-yz - 1.0) / nx
                a1 = (-yz + 1.0) / nx
                if a0 < a1:
                    x0 = math.ceil(a0)
                    x1 = math.floor(a1)
                else:
                    x0 = math.ceil(a1)
                    x1 = math.floor(a0)
                if x0 < 0:
                    x0 = 0
                if x1 > wh3 - 1:
                    x1 = wh3 - 1
            r2 = max_freq * max_freq - yy * yy - zz * zz
            if r2 < 0:
                continue
            mx = int(math.sqrt(r2))
            if x1 > mx:
                x1 = mx
            for x in range(x0, x1 + 1):
                qx = Q[0, 0] * x + Q[0, 1] * yy + Q[0, 2] * zz
                qy = Q[1, 0] * x + Q[1, 1] * yy + Q[1, 2] * zz
                qz = nx * x + ny * yy + nz * zz
                if -1.0 < qz < 1.0 and abs(qx) < wh2 and abs(qy) < ylim:
                    c = 1.0 - abs(qz)
                    x0i, x1i, y0i, y1i, xf, yf, conj = _bilinear_setup(qx, qy, wh2, h2)
                    v = (1 - yf) * ((1 - xf) * data[y0i, x0i] + xf * data[y0i, x1i]) + yf * (
                        (1 - xf) * data[y1i, x0i] + xf * data[y1i, x1i]
                    )
                    if conj:
                        v = v.conjugate()
                    wv = (1 - yf) * ((1 - xf) * weight[y0i, x0i] + xf * weight[y0i, x1i]) + yf * (
                        (1 - xf) * weight[y1i, x0i] + xf * weight[y1i, x1i]
                    )
                    D[z, y, x] += c * v
                    W[z, y, x] += c * wv


@njit(parallel=True, cache=True, nogil=True)
def insert_slices(data, weight, Q, max_freq, half, D, W):
    """Insert a batch of slices; copy t of the accumulators receives slices t, t+T, ..."""
    T = D.shape[0]
    n = data.shape[0]
    for t in prange(T):
        for i in range(t, n, T):
            insert_slice(data[i], weight[i], Q[i], max_freq[i], D[t, half[i]], W[t, half[i]])


def slice_matrices(B: np.ndarray) -> np.ndarray:
    """Q = (B^-1)^T for a stack of 3x3 matrices B (n, 3, 3)."""
    return np.ascontiguousarray(np.transpose(np.linalg.inv(B), (0, 2, 1)))
