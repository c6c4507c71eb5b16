"""Noise whitening filters from the tilt images' power spectra (RELION ``computeNoiseWeight``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

from .arraytypes import Float32Array, Float64Array


def periodogram_average(img: NDArray[Any], block: int, overlap: float = 2.0) -> Float64Array:
    """Mean |rfft2_ortho|² (block, block//2+1) float64 over blocks of ``block`` px of a real
    image (H, W), stepping ``int(block/overlap)``."""
    h, w = img.shape
    step = int(block / overlap)
    ny = (h - block) // step + 1
    nx = (w - block) // step + 1
    acc = np.zeros((block, block // 2 + 1))
    for by in range(ny):
        rows = img[by * step : by * step + block].astype(np.float64)
        blocks = np.stack([rows[:, bx * step : bx * step + block] for bx in range(nx)])
        acc += (np.abs(sfft.rfft2(blocks, norm="ortho")) ** 2).sum(axis=0)
    mean: Float64Array = acc / (nx * ny)
    return mean


def radial_average_2d(ps: Float64Array) -> Float64Array:
    """Linearly binned radial average of a half-complex 2D array (h, wh); ``wh`` bins."""
    h, wh = ps.shape
    y = np.arange(h, dtype=np.float64)
    y = np.where(y >= h // 2, y - h, y)
    r = np.sqrt(np.arange(wh, dtype=np.float64)[None, :] ** 2 + y[:, None] ** 2)
    r0 = r.astype(np.int64)
    f = r - r0
    avg = np.zeros(wh)
    wgh = np.zeros(wh)
    m0 = r0 < wh
    np.add.at(avg, r0[m0], ((1 - f) * ps)[m0])
    np.add.at(wgh, r0[m0], (1 - f)[m0])
    m1 = r0 + 1 < wh
    np.add.at(avg, r0[m1] + 1, (f * ps)[m1])
    np.add.at(wgh, r0[m1] + 1, f[m1])
    return np.where(wgh > 0, avg / np.where(wgh > 0, wgh, 1.0), avg)


def whitening_filter(img: NDArray[Any], box: int, binning: float) -> Float32Array:
    """1/sqrt(radial power) of one tilt image (H, W) at radius ``binning``·|k|, on the
    (box, box//2+1) grid as float32."""
    s0 = int(binning * box + 0.5)
    ps1d = radial_average_2d(periodogram_average(img, s0))
    weights = np.where(ps1d > 0, 1.0 / np.sqrt(np.where(ps1d > 0, ps1d, 1.0)), 0.0).astype(
        np.float32
    )
    sh = box // 2 + 1
    y = np.arange(box, dtype=np.float64)
    y = np.where(y < box / 2.0, y, y - box)
    rd = binning * np.sqrt(np.arange(sh, dtype=np.float64)[None, :] ** 2 + y[:, None] ** 2)
    r0 = rd.astype(np.int64)
    b = weights.size
    t = rd - r0
    inner = r0 + 1 < b
    r0c = np.minimum(r0, b - 2)
    val = (1 - t) * weights[r0c] + t * weights[r0c + 1]
    filt: Float32Array = np.where(inner, val, weights[b - 1]).astype(np.float32)
    return filt
