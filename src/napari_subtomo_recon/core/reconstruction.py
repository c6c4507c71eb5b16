"""From accumulated Fourier data and weights to maps (spec §7).

Per output: checkerboard centring, unitary inverse FFT, sinc² gridding correction
(the ``data_*.mrc`` map), weight division (Wiener with 1/SNR, or RELION's
heuristic), inverse FFT, optional centre crop, taper.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import scipy.fft as sfft
from numba import njit
from numpy.typing import DTypeLike, NDArray

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


def inverse_half(G: Complex128Array, workers: int = 1) -> Float64Array:
    """Unitary inverse FFT of a half-complex volume (s, s, sh) to (s, s, 2(sh-1)) real.

    ``G`` is overwritten (the z and y transforms run in place): the only new memory is
    the real output, where ``scipy.fft.irfftn`` takes a second complex volume as well
    (2 GB more at box 512).
    """
    s, _, sh = G.shape
    H = sfft.ifftn(G, axes=(0, 1), norm="ortho", overwrite_x=True, workers=workers)
    img: Float64Array = sfft.irfft(H, n=2 * (sh - 1), axis=2, norm="ortho", workers=workers)
    return img


def forward_half(img: Float64Array, workers: int = 1) -> Complex128Array:
    """Unitary forward FFT of a real volume (s, s, w) to half-complex (s, s, w//2+1)."""
    G = sfft.rfft(img, axis=2, norm="ortho", workers=workers)
    out: Complex128Array = sfft.fftn(G, axes=(0, 1), norm="ortho", overwrite_x=True,
                                     workers=workers)  # fmt: skip
    return out


def gridding_correct(
    D: NDArray[np.complexfloating], workers: int = 1, consume: bool = False
) -> Float64Array:
    """Centre (checkerboard), inverse FFT and divide by sinc²(r/s): the ``data_*`` map.

    ``D`` (s, s, sh) complex; returns (s, s, 2(sh-1)) float64.  ``consume``: ``D``
    (complex128, C-contiguous) is used as the FFT's workspace and overwritten, so the
    step needs no memory beyond the output; otherwise it works on a copy.
    """
    s = D.shape[0]
    sh = D.shape[2]
    w = 2 * (sh - 1)
    own = consume and D.dtype == np.complex128 and D.flags.c_contiguous
    G: Complex128Array = D if own else np.array(D, dtype=np.complex128)  # type: ignore[assignment]
    sign = 1 - 2 * (np.arange(max(s, sh)) % 2)
    chk = (sign[:s, None] * sign[None, :sh]).astype(np.float64)  # (-1)^(y+x)
    for z in range(s):  # plane by plane: no volume-sized temporaries
        G[z] *= chk if z % 2 == 0 else -chk
    img = inverse_half(G, workers)
    del G
    # sinc² depends on r² only, an integer: evaluate it once per value (sin() of every
    # voxel took most of the time)
    cz = (np.arange(s) - s // 2).astype(np.int64)
    cx = (np.arange(w) - w // 2).astype(np.int64)
    r2yx = (cz * cz)[:, None] + (cx * cx)[None, :]
    r = np.sqrt(np.arange(int(2 * (s // 2) ** 2 + (w // 2) ** 2) + 1, dtype=np.float64))
    d = r / w
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc2 = (np.sin(np.pi * d) / (np.pi * d)) ** 2
    sinc2 = np.where((sinc2 < 1e-2) | (d > 1.0), 1e-2, sinc2)
    sinc2[0] = 1.0
    for z in range(s):
        img[z] /= sinc2[cz[z] * cz[z] + r2yx]
    return img


def _half_radius_lookup(s: int) -> tuple[Int32Array, Int64Array, Float64Array]:
    """Integer |k|² on the (s, s, s//2+1) half-complex grid [z, y, x], and tables of
    r0 = floor(|k|) and f = |k| - r0 indexed by |k|²."""
    f = signed_freq(s).astype(np.int64)
    r2 = _radius_squared(f, f, np.arange(s // 2 + 1))
    r = np.sqrt(np.arange(int(r2.max()) + 1, dtype=np.float64))
    r0 = r.astype(np.int64)
    return r2, r0, r - r0


def _radial_sums(Wt: Float64Array, r2: Int32Array, r0t: Int64Array, ft: Float64Array,
                 sh: int) -> tuple[Float64Array, Float64Array]:  # fmt: skip
    """Linear-interpolation sums per shell: each voxel adds (1 - f)·w to shell r0 and f·w
    to shell r0 + 1, where r0, f depend on the integer |k|² alone.  So W is first summed
    per |k|² (one bincount per plane) and the few |k|² values are then spread over the
    shells: ~3x faster at box 512 (``kernels.py maps``) than spreading every voxel, the
    same sums up to their order (a Numba loop cost ~0.6 s to compile)."""
    nk = r0t.size
    per_k = np.zeros(nk)  # sum of W over the voxels of each |k|²
    count = np.zeros(nk)  # how many voxels have each |k|²
    for z in range(Wt.shape[0]):
        k = r2[z].ravel()
        per_k += np.bincount(k, Wt[z].ravel(), minlength=nk)
        count += np.bincount(k, minlength=nk)
    i = np.minimum(r0t, sh)  # shells from sh on are dropped (the extra bin)
    i1 = np.minimum(r0t + 1, sh)
    sums: list[Float64Array] = [
        np.bincount(i, (1 - ft) * v, minlength=sh + 1)[:sh].astype(np.float64)
        + np.bincount(i1, ft * v, minlength=sh + 1)[:sh]
        for v in (per_k, count)
    ]
    return sums[0], sums[1]


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


@njit(cache=True, nogil=True)  # serial: ~0.3 s at box 512, where parfor cost 1 s to compile
def _heuristic_divide(G: Complex128Array, Wt: Float64Array, r2: Int32Array, r0t: Int64Array,
                      ft: Float64Array, rad: Float64Array, sh: int) -> None:  # fmt: skip
    # G / max(W, 0.001 × the radial mean of W interpolated at |k|); |k| >= sh - 1 zeroed
    for z in range(G.shape[0]):
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
    G = forward_half(img, workers)
    divide_fourier(G, Wt, snr)
    return inverse_half(G, workers)


def divide_fourier(G: Complex128Array, Wt: NDArray[np.floating], snr: float) -> None:
    """:func:`divide_weights` on the map's half-complex transform ``G``, in place."""
    if snr > 0:
        for z in range(G.shape[0]):  # plane by plane: no volume-sized temporary
            G[z] /= Wt[z] + 1.0 / snr
    else:
        s, _, sh = Wt.shape
        r2, r0t, ft = _half_radius_lookup(s)
        Wt64 = np.ascontiguousarray(Wt, np.float64)
        rad = _radial_mean(Wt64, r2, r0t, ft, sh)
        _heuristic_divide(G, Wt64, r2, r0t, ft, rad, sh)


def expand_weights(Wt: NDArray[_Scalar], dtype: DTypeLike | None = None) -> NDArray[Any]:
    """Half-complex weights (s, s, sh) -> full (s, s, s) volume with DC at the centre.

    RELION's ``fftwHalfToHumanFull``: one loop (z, then y, then x) that writes the
    stored value and, for x > 0, its mirror at (-z, -y, s-x); then fftshift.  Only the
    Nyquist column x = s/2 is written twice; there the later write in (z, y) order wins.
    In ``dtype`` (default: Wt's); see :class:`ExpandedWeights` for the planes one by one.
    """
    s = Wt.shape[0]
    full = np.empty((s, s, s), dtype=Wt.dtype if dtype is None else dtype)
    ExpandedWeights(Wt).fill(0, s, full)
    return full


class ExpandedWeights:
    """:func:`expand_weights` of ``Wt`` (s, s, sh), made a slab of planes at a time
    (``fill``) for whoever writes it: at box 512 the whole volume is 0.5 GB of new
    memory that only goes to a file."""

    def __init__(self, Wt: NDArray[Any]) -> None:
        self.Wt = Wt
        s = Wt.shape[0]
        self.shape = (s, s, s)

    def fill(self, z0: int, z1: int, out: NDArray[Any]) -> None:
        """Planes z0..z1-1 of the expanded volume into ``out`` (z1 - z0, s, s).

        Plane by plane (stored half, then its mirror, then the fftshift of y and x as
        four block copies: fancy indexing took 2.3x as long at box 512).
        """
        Wt = self.Wt
        s, _, sh = Wt.shape
        zi = (-np.arange(s)) % s
        k = s // 2  # fftshift: index i lands at (i + k) % s
        nyquist = 2 * (sh - 1) == s
        P = np.empty((s, s), out.dtype)  # the plane before the shift of y and x
        for zo in range(z0, z1):
            z = (zo - s // 2) % s  # the stored plane that lands at zo
            P[:, :sh] = Wt[z]
            # x' = sh..s-1 mirror x = s-x' = s-sh..1 of plane -z, row -y
            P[:, sh:] = Wt[zi[z]][zi, s - sh : 0 : -1]
            if nyquist:  # x = s/2 is its own mirror: the later write in (z, y) order
                ny = sh - 1
                later = z * s + np.arange(s) >= zi[z] * s + zi
                P[:, ny] = np.where(later, Wt[z, :, ny], Wt[zi[z], zi, ny])
            o = out[zo - z0]
            o[k:, k:] = P[: s - k, : s - k]
            o[k:, :k] = P[: s - k, s - k :]
            o[:k, k:] = P[s - k :, : s - k]
            o[:k, :k] = P[s - k :, s - k :]


def crop_centre(vol: NDArray[_Scalar], crop: int) -> NDArray[_Scalar]:
    """Centre crop with RELION's offset b = (s - crop) // 2 (size s - 2b)."""
    s = vol.shape[0]
    b = (s - crop) // 2
    return vol[b : s - b, b : s - b, b : s - b]


def taper(vol: NDArray[np.floating], dist: float, inplace: bool = False) -> Float64Array:
    """Raised-cosine taper to the inscribed sphere and subtraction of the weighted inner mean.

    ``vol`` (n, n, n) float; returns a new float64 volume (``inplace``: ``vol`` itself,
    float64).  Worked plane by plane: no volume-sized temporaries.
    """
    n = vol.shape[0]
    m = n / 2.0
    c = np.arange(n, dtype=np.float64) - m
    cy2 = c[:, None] ** 2
    cx2 = c[None, :] ** 2

    def plane_mask(z: int) -> tuple[NDArray[np.bool_], Float64Array]:
        r = np.sqrt(c[z] ** 2 + cy2 + cx2)
        inside = r < m
        with np.errstate(invalid="ignore", divide="ignore"):
            mask = np.where(r < m - dist, 1.0, 0.5 - 0.5 * np.cos(np.pi * (m - r) / dist))
        return inside, np.where(inside, mask, 0.0)

    wsum = wvol = 0.0
    for z in range(n):
        inside, mask = plane_mask(z)
        wsum += mask[inside].sum()
        wvol += (mask * vol[z])[inside].sum()
    avg = wvol / wsum if wsum > 0 else 0.0
    own = inplace and vol.dtype == np.float64
    out: Float64Array = vol if own else np.empty(vol.shape, np.float64)  # type: ignore[assignment]
    for z in range(n):
        inside, mask = plane_mask(z)
        out[z] = np.where(inside, mask * (vol[z] - avg), 0.0)
    return out
