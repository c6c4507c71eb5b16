"""From accumulated Fourier data and weights to maps (spec §7).

Per output: checkerboard centring, unitary inverse FFT, sinc² gridding correction
(the ``data_*.mrc`` map), weight division (Wiener with 1/SNR, or RELION's
heuristic), inverse FFT, optional centre crop, taper.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import scipy.fft as sfft
from numba import njit, prange
from numpy.typing import NDArray

from .arraytypes import Complex128Array, Float64Array, Int32Array, Int64Array

_Scalar = TypeVar("_Scalar", bound=np.generic)


def signed_freq(n: int) -> Float64Array:
    """Signed FFT frequencies (n,) as float64: 0, 1, .., n//2 - 1, -(n - n//2), .., -1."""
    i = np.arange(n)
    return np.where(i < n // 2, i, i - n).astype(np.float64)


def _radius_squared(a: NDArray[np.integer], b: NDArray[np.integer],
                    c: NDArray[np.integer]) -> Int32Array:  # fmt: skip
    """Integer a² + b² + c² on the broadcast grid (len(a), len(b), len(c)) (int32: exact, and
    a quarter the memory)."""
    a32, b32, c32 = (np.asarray(v, np.int32) for v in (a, b, c))
    r2: Int32Array = (
        (a32 * a32)[:, None, None] + (b32 * b32)[None, :, None] + (c32 * c32)[None, None, :]
    )
    return r2


def gridding_correct(D: NDArray[np.complexfloating], workers: int = 1) -> Float64Array:
    """Centre (checkerboard), inverse FFT and divide by sinc²(r/s): the ``data_*`` map.

    ``D`` (s, s, sh) complex is not modified; returns (s, s, 2(sh-1)) float64.
    """
    s = D.shape[0]
    sh = D.shape[2]
    w = 2 * (sh - 1)
    i = np.arange(s)
    ix = np.arange(sh)
    chk = (
        (1 - 2 * (i[:, None, None] % 2))
        * (1 - 2 * (i[None, :, None] % 2))
        * (1 - 2 * (ix[None, None, :] % 2))
    )
    img: Float64Array = sfft.irfftn(D * chk, s=(s, s, w), norm="ortho", workers=workers)
    # sinc² depends on r² only, an integer: evaluate it once per value (sin() of every
    # voxel took most of the time)
    r2 = _radius_squared(np.arange(s) - s // 2, np.arange(s) - s // 2, np.arange(w) - w // 2)
    r = np.sqrt(np.arange(int(r2.max()) + 1, dtype=np.float64))
    d = r / w
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc2 = (np.sin(np.pi * d) / (np.pi * d)) ** 2
    sinc2 = np.where((sinc2 < 1e-2) | (d > 1.0), 1e-2, sinc2)
    sinc2[0] = 1.0
    img /= sinc2[r2]
    return img


def _half_radius_lookup(s: int) -> tuple[Int32Array, Int64Array, Float64Array]:
    """Integer |k|² on the (s, s, s//2+1) half-complex grid [z, y, x], and tables of
    r0 = floor(|k|) and f = |k| - r0 indexed by |k|²."""
    f = signed_freq(s).astype(np.int64)
    r2 = _radius_squared(f, f, np.arange(s // 2 + 1))
    r = np.sqrt(np.arange(int(r2.max()) + 1, dtype=np.float64))
    r0 = r.astype(np.int64)
    return r2, r0, r - r0


@njit(cache=True, nogil=True)
def _radial_sums(Wt: Float64Array, r2: Int32Array, r0t: Int64Array, ft: Float64Array,
                 sh: int) -> tuple[Float64Array, Float64Array]:  # fmt: skip
    avg = np.zeros(sh)
    wgh = np.zeros(sh)
    for z in range(Wt.shape[0]):
        for y in range(Wt.shape[1]):
            for x in range(Wt.shape[2]):
                k = r2[z, y, x]
                i = r0t[k]
                f = ft[k]
                if i < sh:
                    avg[i] += (1 - f) * Wt[z, y, x]
                    wgh[i] += 1 - f
                if i + 1 < sh:
                    avg[i + 1] += f * Wt[z, y, x]
                    wgh[i + 1] += f
    return avg, wgh


def radial_average_half(Wt: NDArray[np.floating]) -> Float64Array:
    """Linearly binned radial average (sh,) over the stored half volume (s, s, sh) (RELION
    ``fftwHalf_3D_lin``)."""
    s, _, sh = Wt.shape
    r2, r0t, ft = _half_radius_lookup(s)
    return _radial_mean(np.ascontiguousarray(Wt, np.float64), r2, r0t, ft, sh)


def _radial_mean(
    Wt: Float64Array, r2: Int32Array, r0t: Int64Array, ft: Float64Array, sh: int
) -> Float64Array:
    avg, wgh = _radial_sums(Wt, r2, r0t, ft, sh)
    mean: Float64Array = np.where(wgh > 0, avg / np.where(wgh > 0, wgh, 1), 0.0)
    return mean


@njit(parallel=True, cache=True, nogil=True)
def _heuristic_divide(G: Complex128Array, Wt: Float64Array, r2: Int32Array, r0t: Int64Array,
                      ft: Float64Array, rad: Float64Array, sh: int) -> None:  # fmt: skip
    # G / max(W, 0.001 × the radial mean of W interpolated at |k|); |k| >= sh - 1 zeroed
    for z in prange(G.shape[0]):
        for y in range(G.shape[1]):
            for x in range(G.shape[2]):
                k = r2[z, y, x]
                i = r0t[k]
                f = ft[k]
                if i + 1 >= sh:
                    G[z, y, x] = 0
                    continue
                avg = f * rad[i + 1] + (1.0 - f) * rad[i]
                wg = max(Wt[z, y, x], avg * 0.001)
                if wg > 0:
                    g = G[z, y, x]
                    G[z, y, x] = complex(g.real / wg, g.imag / wg)


def divide_weights(
    img: Float64Array, Wt: NDArray[np.floating], snr: float, workers: int = 1
) -> Float64Array:
    """Fourier-divide a gridding-corrected map (s, s, s) by its weights (s, s, s//2+1).

    ``snr > 0``: Wiener, G / (W + 1/snr).  Otherwise RELION's heuristic: zero |k| >= s/2
    and divide by max(W, 0.001 × radial mean of W).
    """
    G: Complex128Array = sfft.rfftn(img, norm="ortho", workers=workers)
    if snr > 0:
        G /= Wt + 1.0 / snr
    else:
        s, _, sh = Wt.shape
        r2, r0t, ft = _half_radius_lookup(s)
        Wt64 = np.ascontiguousarray(Wt, np.float64)
        rad = _radial_mean(Wt64, r2, r0t, ft, sh)
        _heuristic_divide(G, Wt64, r2, r0t, ft, rad, sh)
    out: Float64Array = sfft.irfftn(G, s=img.shape, norm="ortho", workers=workers)
    return out


def expand_weights(Wt: NDArray[_Scalar]) -> NDArray[_Scalar]:
    """Half-complex weights (s, s, sh) -> full (s, s, s) volume with DC at the centre.

    RELION's ``fftwHalfToHumanFull``: one loop (z, then y, then x) that writes the
    stored value and, for x > 0, its mirror at (-z, -y, s-x); then fftshift.  Only the
    Nyquist column x = s/2 is written twice; there the later write in (z, y) order wins.
    """
    s, _, sh = Wt.shape
    full = np.zeros((s, s, s), dtype=Wt.dtype)
    full[:, :, :sh] = Wt
    zi = (-np.arange(s)) % s
    mirrored = Wt[zi][:, zi]  # mirrored[z, y] = Wt[-z, -y]
    full[:, :, sh:] = mirrored[:, :, 1 : s - sh + 1][:, :, ::-1]
    if 2 * (sh - 1) == s:
        ny = sh - 1
        lex = np.arange(s)[:, None] * s + np.arange(s)[None, :]
        lex_m = zi[:, None] * s + zi[None, :]
        full[:, :, ny] = np.where(lex >= lex_m, Wt[:, :, ny], mirrored[:, :, ny])
    return np.fft.fftshift(full)


def crop_centre(vol: NDArray[_Scalar], crop: int) -> NDArray[_Scalar]:
    """Centre crop with RELION's offset b = (s - crop) // 2 (size s - 2b)."""
    s = vol.shape[0]
    b = (s - crop) // 2
    return vol[b : s - b, b : s - b, b : s - b]


def taper(vol: Float64Array, dist: float) -> Float64Array:
    """Raised-cosine taper to the inscribed sphere and subtraction of the weighted inner mean.

    ``vol`` (n, n, n) float; returns a new float64 volume.
    """
    n = vol.shape[0]
    m = n / 2.0
    c = np.arange(n, dtype=np.float64) - m
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    inside = r < m
    with np.errstate(invalid="ignore", divide="ignore"):
        mask = np.where(r < m - dist, 1.0, 0.5 - 0.5 * np.cos(np.pi * (m - r) / dist))
    mask = np.where(inside, mask, 0.0)
    wsum = mask[inside].sum()
    avg = (mask * vol)[inside].sum() / wsum if wsum > 0 else 0.0
    tapered: Float64Array = np.where(inside, mask * (vol - avg), 0.0)
    return tapered
