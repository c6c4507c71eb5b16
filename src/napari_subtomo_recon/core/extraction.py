"""Cutting particles out of tilt images and turning them into 2D Fourier slices (spec §3.3).

The exact path follows RELION's ``TomoExtraction::extractAt2D_Fourier``:

1. an ``s02D = round(bin*s)`` window at the rounded projected centre, edges clamped;
2. circle crop with a 5 px cosine edge and subtraction of the mean outside the circle;
3. ``ifftshift`` and a unitary r2c FFT;
4. Fourier crop to ``s`` and division by ``bin``;
5. a sub-pixel phase shift that puts the projected centre on the phase origin.

Windows are batched: one tilt image, many particles.  Kernels release the GIL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numba
import numpy as np
import scipy.fft as sfft
from numba import njit, prange
from numpy.typing import ArrayLike, NDArray

from .arraytypes import (
    Complex64Array,
    Complex128Array,
    Float32Array,
    Float64Array,
    Int32Array,
    Int64Array,
)
from .ctf import TiltCtfTerms
from .insertion import LANES

EDGE_FALLOFF = 5.0

_Complex = TypeVar("_Complex", bound=np.complexfloating[Any, Any])


@njit(cache=True, nogil=True, inline="always")
def _c_round(v: float) -> float:
    # C round(): halves away from zero
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


@njit(cache=True, nogil=True, inline="always")
def _chord(dy2: float, rad2: float, c: float, w: int) -> tuple[int, int]:
    """First and last column k (0 <= k < w) with (k - c)² + dy2 <= rad2 (empty: a > b).

    Found with a square root and then settled with the exact predicate, so that the
    pixels on either side are classified exactly as a per-pixel test would."""
    rem = rad2 - dy2
    if rem < 0.0:
        return w, -1
    h = math.sqrt(rem)
    a = max(0, int(math.floor(c - h)) - 1)
    b = min(w - 1, int(math.ceil(c + h)) + 1)
    while a <= b and (a - c) * (a - c) + dy2 > rad2:
        a += 1
    while b >= a and (b - c) * (b - c) + dy2 > rad2:
        b -= 1
    return a, b


@njit(cache=True, nogil=True)
def _inner_chord(dy2: float, a: int, b: int, inner2: float, ccx: float,
                 w: int) -> tuple[int, int]:  # fmt: skip
    """Columns strictly inside the inner circle of a row whose chord is [a, b] (the plain
    interior); none: (b + 1, b)."""
    ia, ib = _chord(dy2, inner2, ccx, w)
    while ia <= ib and (ia - ccx) * (ia - ccx) + dy2 >= inner2:
        ia += 1
    while ib >= ia and (ib - ccx) * (ib - ccx) + dy2 >= inner2:
        ib -= 1
    if ia > ib:
        return b + 1, b
    return ia, ib


@njit(cache=True, nogil=True)
def _edge_factors(ej: Float64Array, chords: Int64Array, dy2: float, rad2: float, inner2: float,
                  ccx: float, w: int, rad: float, falloff: float) -> None:  # fmt: skip
    # the row's chord [a, b] and plain interior [ia, ib] into ``chords`` (4,), and the
    # raised cosine for its ring pixels (chord minus interior), 0 on the circle
    a, b = _chord(dy2, rad2, ccx, w)
    ia, ib = _inner_chord(dy2, a, b, inner2, ccx, w)
    chords[0], chords[1], chords[2], chords[3] = a, b, ia, ib
    for k in range(max(a, 0), ia):
        ej[k] = _edge_factor(k, ccx, dy2, rad, rad2, falloff)
    for k in range(ib + 1, min(b, w - 1) + 1):
        ej[k] = _edge_factor(k, ccx, dy2, rad, rad2, falloff)


@njit(cache=True, nogil=True)
def _edge_factor(k: int, ccx: float, dy2: float, rad: float, rad2: float, falloff: float) -> float:
    dx = k - ccx
    r2 = dx * dx + dy2
    if r2 < rad2:
        return 0.5 - 0.5 * math.cos(math.pi * (rad - math.sqrt(r2)) / falloff)
    return 0.0


@njit(cache=True, nogil=True)
def _put_run(dest: Float32Array, row: Float32Array, k0: int, k1: int, half: int, w: int,
             mean_out: float) -> None:  # fmt: skip
    # row[k] - mean for k in [k0, k1] into the ifftshifted ``dest``: two straight runs
    # (the shift splits at half).  Written over views from index 0: with offset indices
    # (dest[k + w - half]) Numba's negative-index handling kept the compiler from
    # vectorising, 3x slower.  The mean is subtracted in single precision: in double,
    # every pixel was converted there and back
    m = np.float32(mean_out)
    a, b = k0, min(k1, half - 1) + 1
    if b > a:
        d = dest[a + w - half : b + w - half]
        r = row[a:b]
        for k in range(b - a):
            d[k] = r[k] - m
    a, b = max(k0, half), k1 + 1
    if b > a:
        d = dest[a - half : b - half]
        r = row[a:b]
        for k in range(b - a):
            d[k] = r[k] - m


@njit(cache=True, nogil=True)
def _zero_outside(dest: Float32Array, zeros: Float32Array, k0: int, k1: int, half: int,
                  w: int) -> None:  # fmt: skip
    # zero columns [0, k0) and (k1, w) of the ifftshifted ``dest``: _put_run's runs from a
    # row of zeros.  np.int64(0), not 0: a literal argument compiles another
    # specialisation of the callee
    _put_run(dest, zeros, np.int64(0), k0 - 1, half, w, 0.0)
    _put_run(dest, zeros, k1 + 1, w - 1, half, w, 0.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class WindowCentres:
    """Where n windows are cut out of one image, in pixels of that image."""

    x: Float64Array  # (n,) window centre, column (before rounding)
    y: Float64Array  # (n,) window centre, row
    circle_dx: Float64Array  # (n,) the crop circle's centre minus the window centre, x
    circle_dy: Float64Array  # (n,) and y: 0 on RELION's path

    def take(self, k: slice | NDArray[np.intp]) -> WindowCentres:
        """The windows ``k`` (a slice or indices) of these."""
        return WindowCentres(
            x=self.x[k], y=self.y[k], circle_dx=self.circle_dx[k], circle_dy=self.circle_dy[k]
        )


def extract_windows(
    img: Float32Array,
    centres: WindowCentres,
    *,
    out: Float32Array,
    circle_crop: bool,
    falloff: float,
) -> None:
    """Cut w×w windows around ``centres`` of ``img`` (H, W) into ``out`` (n, w, w) float32,
    already ifftshifted.

    The window origin is ``round(c) - w//2`` (C rounding); out-of-image pixels are
    clamped to the nearest edge pixel.  With ``circle_crop`` the mean of the
    pixels outside radius ``w//2`` is subtracted and a raised-cosine edge of
    ``falloff`` px (RELION: 5) applied inside that radius.  The circle is centred
    (circle_dx, circle_dy) px from the window centre: 0 for RELION's path; the fast path
    uses it to put the circle where RELION's would be.
    """
    n, w, w2 = out.shape
    if w != w2 or centres.x.shape != (n,) or img.ndim != 2:
        raise ValueError(
            f"windows must be (n, w, w) for n centres and the image 2-D, got {out.shape}, "
            f"{centres.x.shape} centres and an image of shape {img.shape}"
        )
    _extract_windows(img, centres.x, centres.y, w, circle_crop, out, falloff,
                     centres.circle_dx, centres.circle_dy)  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _sum_run(src: Float32Array, k0: int, k1: int) -> float:
    """sum(src[k0:k1]) in double precision, in four interleaved partial sums, so that the
    additions do not each wait for the one before."""
    s0 = s1 = s2 = s3 = 0.0
    k = k0
    while k + 4 <= k1:
        s0 += src[k]
        s1 += src[k + 1]
        s2 += src[k + 2]
        s3 += src[k + 3]
        k += 4
    while k < k1:
        s0 += src[k]
        k += 1
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def _outside_mean(img: Float32Array, ox: int, oy: int, w: int, chords: Int64Array) -> float:
    """Mean of the window's pixels outside the circle (clamped at the image edges); row
    j's chord is chords[j, 0:2]."""
    H, W = img.shape
    acc = 0.0
    cnt = 0
    within = ox >= 0 and ox + w <= W
    for j in range(w):
        src = img[min(max(oy + j, 0), H - 1)]
        a, b = chords[j, 0], chords[j, 1]
        # pixels outside the circle: left of a and right of b
        if within:  # no clamping: straight sums
            acc += _sum_run(src, ox, ox + min(a, w))
            acc += _sum_run(src, ox + max(b + 1, 0), ox + w)
        else:
            for k in range(0, min(a, w)):
                acc += src[min(max(ox + k, 0), W - 1)]
            for k in range(max(b + 1, 0), w):
                acc += src[min(max(ox + k, 0), W - 1)]
        cnt += min(a, w) + w - max(b + 1, 0)
    return acc / cnt if cnt > 0 else 0.0


@njit(cache=True, nogil=True)
def _extract_windows(img: Float32Array, cx: Float64Array, cy: Float64Array, w: int,
                     circle_crop: bool, out: Float32Array, falloff: float, mdx: Float64Array,
                     mdy: Float64Array) -> None:  # fmt: skip
    """The kernel of :func:`extract_windows` (``mdx``, ``mdy``: the circle offsets)."""
    H, W = img.shape
    n = cx.shape[0]
    half = w // 2
    m = float(half)
    rad = m
    inner2 = (rad - falloff) ** 2 if rad > falloff else -1.0
    rad2 = rad * rad
    clamped = np.empty(w, np.float32)  # one window row, clamped at the image edges
    zeros = np.zeros(w, np.float32)
    # the cosine edge's factors for every pixel of the ring and each row's chords, kept
    # while the circle's offset stays the same (always on RELION's path): a cosine and a
    # square root per ring pixel were a third of the cut-out, and the chords are the same
    # for every window with that offset
    edge = np.zeros((w, w))
    chords = np.zeros((w, 4), np.int64)
    edge_dx = edge_dy = np.nan
    for i in range(n):
        ox = int(_c_round(cx[i])) - half
        oy = int(_c_round(cy[i])) - half
        ccx = m + mdx[i]
        if circle_crop and not (mdx[i] == edge_dx and mdy[i] == edge_dy):
            edge_dx, edge_dy = mdx[i], mdy[i]
            for j in range(w):
                dy = j - m - mdy[i]
                _edge_factors(edge[j], chords[j], dy * dy, rad2, inner2, ccx, w, rad, falloff)
        mean_out = _outside_mean(img, ox, oy, w, chords) if circle_crop else 0.0
        inside = ox >= 0 and ox + w <= W
        for j in range(w):
            src = img[min(max(oy + j, 0), H - 1)]
            if inside:
                row = src[ox : ox + w]  # a view: no copy for windows within the image
            else:
                row = clamped
                for k in range(w):
                    row[k] = src[min(max(ox + k, 0), W - 1)]
            dest = out[i, j - half if j >= half else j + w - half]
            if not circle_crop:  # loops: a slice copy compiles Numba's shape checks (~2 s)
                _put_run(dest, row, np.int64(0), w - 1, half, w, 0.0)  # int64: see _zero_outside
                continue
            # columns strictly inside the inner circle: the plain interior, no tests
            a, b, ia, ib = chords[j, 0], chords[j, 1], chords[j, 2], chords[j, 3]
            _put_run(dest, row, ia, ib, half, w, mean_out)
            # the rest: zero outside [a, b], the cosine edge in between
            _zero_outside(dest, zeros, min(a, ia), max(b, ib), half, w)
            ej = edge[j]
            for k in range(max(a, 0), ia):
                kk = k - half if k >= half else k + w - half
                dest[kk] = np.float32(ej[k] * (row[k] - mean_out))
            for k in range(ib + 1, min(b, w - 1) + 1):
                kk = k - half if k >= half else k + w - half
                dest[kk] = np.float32(ej[k] * (row[k] - mean_out))


def window_origins(cx: ArrayLike, cy: ArrayLike, w: int) -> tuple[Float64Array, Float64Array]:
    """Integer window origins (round(c) - w//2) as float arrays, as RELION stores them."""
    from .geometry import c_round

    return c_round(cx) - (w // 2), c_round(cy) - (w // 2)


def crop_rows(h0: int, h1: int) -> Int64Array:
    """Rows of an FFTW half-complex array of height h0 kept when cropping to height h1."""
    y = np.arange(h1, dtype=np.int64)
    rows: Int64Array = np.where(y < h1 // 2, y, y - h1 + h0)
    return rows


def fourier_crop(F: NDArray[_Complex], factor: float) -> NDArray[_Complex]:
    """RELION's ``FourierCrop_fftwHalfStack`` on (..., h0, wh0): keep low frequencies.

    ``w1 = round(w0/factor)`` with ``w0 = 2(wh0-1)`` and ``h1 = round(h0/factor)``
    (``(int)(v+0.5)``).  No rescaling here.
    """
    h0, wh0 = F.shape[-2:]
    w0 = (wh0 - 1) * 2
    w1 = int(w0 / factor + 0.5)
    h1 = int(h0 / factor + 0.5)
    rows = crop_rows(h0, h1)
    cropped: NDArray[_Complex] = F[..., rows, : w1 // 2 + 1]
    return cropped


def cropped_width(window: int, binning: float) -> int:
    """Columns of the Fourier-cropped window (RELION's ``FourierCrop_fftwHalfStack``).

    The crop takes its width from ``w0 = 2*(window//2)``: for an odd window and
    ``binning < 2`` that gives one column fewer than ``box//2+1``; RELION then shifts
    with the narrower width and leaves the last column empty.  Reproduced on purpose.
    """
    if binning == 1.0:
        return window // 2 + 1
    w0 = 2 * (window // 2)
    return int(w0 / binning + 0.5) // 2 + 1


def shift_phase(s: int, tx: ArrayLike, ty: ArrayLike) -> Complex64Array:
    """exp(+2πi (kx tx / w + ky ty / h)) on the (s, s//2+1) grid for shifts of shape (...):
    (..., s, s//2+1) complex64."""
    sh = s // 2 + 1
    w = 2 * (sh - 1)
    kx = np.arange(sh, dtype=np.float64)
    ky = np.arange(s, dtype=np.float64)
    ky = np.where(ky < s // 2, ky, ky - s)
    tx = np.asarray(tx, float)[..., None, None]
    ty = np.asarray(ty, float)[..., None, None]
    phi = 2 * np.pi * tx / w * kx[None, :] + 2 * np.pi * ty / s * ky[:, None]
    phase: Complex64Array = np.exp(1j * phi).astype(np.complex64)
    return phase


@njit(cache=True, nogil=True)
def rotation_table(theta: float, M: int, out: Float64Array) -> None:
    """out[m] = (cos mθ, sin mθ) for m = 0..M (``out`` (>= M+1, 2) float64): exact every 64
    entries, a rotation by θ in between (error ~64 ulp) instead of a sine and a cosine per
    entry."""
    wc = math.cos(theta)
    ws = math.sin(theta)
    c = 1.0
    s = 0.0
    for m in range(M + 1):
        if m % 64 == 0:
            c = math.cos(theta * m)
            s = math.sin(theta * m)
        else:
            c, s = c * wc - s * ws, s * wc + c * ws
        out[m, 0] = c
        out[m, 1] = s


@dataclass(frozen=True, kw_only=True, slots=True)
class FourierCrop:
    """How the transforms of the windows are cropped to the output box s."""

    rows: Int64Array  # (s,) the window spectrum's row for each output row (:func:`crop_rows`)
    ncols: int  # columns taken from the spectrum (<= s//2+1; :func:`cropped_width`)
    inv_bin: float  # 1/bin: the factor on the cropped values


@dataclass(frozen=True, kw_only=True, slots=True)
class SliceTerms:
    """Per-slice values of a batch of n slices of one tilt (sh = s//2+1)."""

    ex: Complex128Array  # (n, sh) x factor of the sub-pixel shift (:func:`shift_factors`)
    ey: Complex128Array  # (n, s) y factor of the sub-pixel shift
    beta: Float64Array  # (n,) π·λ·Δz for the slice's depth-dependent defocus offset Δz
    group: Int64Array  # (n,) 0-based optics group


@dataclass(frozen=True, kw_only=True, slots=True)
class TiltFilters:
    """What multiplies every slice of one tilt besides the CTF (sh = s//2+1)."""

    dose: Float32Array  # (s, sh) the tilt's dose weights
    x_ranges: Int32Array  # (s,) data for x < x_ranges[y] only (the dose cut-off)
    odd: Complex128Array  # (G, s, sh) exp(-i·odd Zernike phase) per optics group, or (0, 1, 1)
    noise: Float32Array  # (s, sh) the whitening filter, or (0, 1)


def finish_slices(
    spectra: Complex64Array,
    *,
    crop: FourierCrop,
    slices: SliceTerms,
    ctf: TiltCtfTerms,
    filters: TiltFilters,
    do_ctf: bool,
    sign: float,
    out: Float32Array,
) -> None:
    """Fourier crop, 1/bin, sub-pixel shift, CTF·dose premultiplication for a batch of slices.

    ``spectra`` (n, win, >= ncols) complex64: the windows' unitary 2D transforms (only
    the columns the crop keeps are read).  All slices come from one tilt: ``ctf`` holds
    -sin γ0 and cos γ0 times the envelope (G, s, sh) (see :func:`~.ctf.tilt_ctf_terms`),
    ``filters`` the tilt's
    dose weights, their cut-off, the whitening filter and the odd Zernike factors.  Per
    slice i (``slices``): the shift phase ``ex[i, x]·ey[i, y]``, ``beta[i]`` and the
    optics ``group`` picking the CTF tables a, b (when G > 1) and the odd Zernike factor (when
    there are any).

    With γ = γ0 - beta·(x² + ky²)·u2_unit and CTF = -sin(γ)·envelope (|CTF| >= 1e-8):
    data = sign·CTF·D·shift(crop(F))/bin for x < x_ranges[y], else 0;
    weight = (CTF·D)² (or 1 everywhere without CTF, as RELION's --no_ctf).
    CTF = a·cos(mθ) + b·sin(mθ) with θ = beta·u2_unit and m = x² + ky² an integer: one
    table of (cos mθ, sin mθ) per slice (:func:`rotation_table`) instead of a sine per
    sample.  The shift and crop factors multiply in single precision, as the spectra are.

    ``out`` (n, s+1, sh+1, LANES) float32 receives [Re data, Im data, weight] per
    sample, the layout the insertion reads (see :func:`~.insertion.packed_slices`):
    row s repeats row 0 and column sh repeats column sh-2.
    ``crop.ncols`` columns come from ``spectra``; beyond them the cropped data are zero
    (RELION's odd-window case, see :func:`cropped_width`).
    """
    n = spectra.shape[0]
    s, sh = out.shape[1] - 1, out.shape[2] - 1
    if (
        out.shape != (n, s + 1, sh + 1, LANES)
        or slices.ex.shape != (n, sh)
        or slices.ey.shape != (n, s)
        or slices.beta.shape != (n,)
        or slices.group.shape != (n,)
        or crop.rows.shape != (s,)
        or filters.dose.shape != (s, sh)
        or filters.x_ranges.shape != (s,)
    ):
        raise ValueError(
            f"finish_slices: {n} spectra into {out.shape}: shifts {slices.ex.shape}, "
            f"{slices.ey.shape}, beta {slices.beta.shape}, group {slices.group.shape}, "
            f"rows {crop.rows.shape}, dose {filters.dose.shape}, x ranges "
            f"{filters.x_ranges.shape} do not fit"
        )
    _finish_slices(
        spectra, crop.rows, crop.ncols, crop.inv_bin, slices.ex, slices.ey, ctf.a, ctf.b,
        ctf.u2_unit, slices.beta, filters.odd, slices.group,
        filters.dose, filters.x_ranges, filters.noise, do_ctf, sign, out,
    )  # fmt: skip


# M typed up front: as a literal 0 in the first pass of type inference it compiled a
# second rotation_table (~0.1 s of a cold start)
@njit(cache=True, nogil=True, locals={"M": numba.int64})
def _finish_slices(F: Complex64Array, rows: Int64Array, ncols: int, inv_bin: float,
                   ex: Complex128Array, ey: Complex128Array, ctf_a: Float64Array,
                   ctf_b: Float64Array, u2_unit: float, beta: Float64Array,
                   odd: Complex128Array, group: Int64Array, dose: Float32Array, xr: Int32Array,
                   noise: Float32Array, do_ctf: bool, sign: float,
                   out: Float32Array) -> None:  # fmt: skip
    """The kernel of :func:`finish_slices`, the records' arrays passed one by one.

    The shift factors are rounded to complex64 and the spectra multiplied in single
    precision, as the spectra are single precision already (with the CTF's a, b tables,
    box 256: 0.218 -> 0.130 ms per slice, ``benchmarks/kernels.py finish``)."""
    n = F.shape[0]
    s = out.shape[1] - 1
    sh = out.shape[2] - 1
    has_odd = odd.shape[0] > 0
    has_noise = noise.shape[0] > 0
    groups = ctf_a.shape[0]
    sg = np.float32(sign)
    M = 0  # the largest x² + ky² with data
    for y in range(s):
        ky = y if y < s // 2 else y - s
        lim = xr[y] if do_ctf else sh
        if lim > 0:
            M = max(M, (lim - 1) * (lim - 1) + ky * ky)
    rot = np.empty((M + 1 if do_ctf else 1, 2))
    exs = np.empty(sh, np.complex64)
    for i in range(n):
        g = group[i] if groups > 1 else 0
        if do_ctf:
            rotation_table(beta[i] * u2_unit, M, rot)
        for x in range(sh):
            exs[x] = np.complex64(ex[i, x])
        for y in range(s):
            Fy = F[i, rows[y]]
            ky = y if y < s // 2 else y - s
            ky2 = ky * ky
            lim = xr[y] if do_ctf else sh
            eyy = np.complex64(ey[i, y] * inv_bin)
            o = out[i, y]
            for x in range(lim):
                # beyond the spectrum's columns: no data, but the CTF's weight
                v = exs[x] * (eyy * Fy[x]) if x < ncols else np.complex64(0.0)
                if do_ctf:
                    m = x * x + ky2
                    c = ctf_a[g, y, x] * rot[m, 0] + ctf_b[g, y, x] * rot[m, 1]
                    if abs(c) < 1e-8:
                        c = 1e-8 if c >= 0 else -1e-8
                    cw = sg * np.float32(c) * dose[y, x]
                    v = v * cw
                    wgt = cw * cw
                else:
                    v = v * sg
                    wgt = np.float32(1.0)
                if has_odd:
                    v = np.complex64(v * odd[group[i], y, x])
                if has_noise:
                    v = v * noise[y, x]
                    wgt = wgt * noise[y, x]
                o[x, 0] = v.real
                o[x, 1] = v.imag
                o[x, 2] = wgt
            for x in range(lim, sh):  # beyond the dose cut-off (none without CTF): no data
                for c in range(LANES):
                    o[x, c] = 0.0
            for c in range(LANES):  # loops: slice copies compile Numba's shape checks
                o[sh, c] = o[sh - 2, c]
        for x in range(sh + 1):
            for c in range(LANES):
                out[i, s, x, c] = out[i, 0, x, c]


def shift_factors(
    s: int, w: int, tx: ArrayLike, ty: ArrayLike
) -> tuple[Complex128Array, Complex128Array]:
    """exp(2πi·kx·tx/w) (n, s//2+1) and exp(2πi·ky·ty/s) (n, s): a separable phase shift.

    ``w`` is the width RELION's shift uses (2·(cropped columns - 1)).
    """
    sh = s // 2 + 1
    kx = np.arange(sh, dtype=np.float64)
    ky = np.arange(s, dtype=np.float64)
    ky = np.where(ky < s // 2, ky, ky - s)
    ex = np.exp(2j * np.pi * np.outer(np.asarray(tx, float), kx) / w)
    ey = np.exp(2j * np.pi * np.outer(np.asarray(ty, float), ky) / s)
    return ex, ey


def effective_binning(box: int, binning: float) -> float:
    """The binning RELION really applies: window round(bin·box) px cut to ``box`` px."""
    return int(binning * box + 0.5) / box


def fast_window(box: int, binning: float, oversampling: float = 1.5) -> tuple[int, int, int]:
    """(num, den, window) for the fast path: tilts binned by num/den, windows of ``window`` px.

    The tilt images are Fourier-binned once to ``oversampling`` times finer than the
    output pixel, then each window (``oversampling``·box px) is cut out, masked,
    transformed and cropped to ``box`` as RELION does with its unbinned windows.
    Oversampling keeps most of what the mask's edge spreads across the output band's
    border: at 1.5 the maps agree with RELION's path to FSC >= 0.997 on simulated
    data (1.0 gives 0.988 at Nyquist).  Where RELION's window is no larger than that,
    or no even window up to it gives a ratio with prime factors 2, 3 and 5 only, the
    tilts are not binned at all and both paths are the same.
    """
    s02d = int(binning * box + 0.5)
    window = int(round(oversampling * box))
    if s02d <= window:
        return 1, 1, s02d
    # The binned tilt must be a whole number of samples: its padded size is a multiple of
    # num, and a quick-to-transform size that is one exists only if num has no prime
    # factor above 5 (s02d = 97 would never find one).  Odd windows break the half-complex
    # crop.  So: the smallest even window from oversampling·box up that gives such a ratio,
    # or no binning at all (RELION's windows).
    for w in range(window + window % 2, s02d, 2):
        g = math.gcd(s02d, w)
        if _five_smooth(s02d // g):
            return s02d // g, w // g, w
    return 1, 1, s02d


def _five_smooth(n: int) -> bool:
    """No prime factor above 5."""
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def _fast_size(n: int, multiple: int) -> int:
    """The smallest n' >= n that is a multiple of ``multiple`` and quick to transform.

    Sizes with large prime factors make the FFT many times slower (4868 = 4·1217).
    """
    m: int = sfft.next_fast_len(n, real=True)
    while m % multiple:
        m = sfft.next_fast_len(m + 1, real=True)
    return m


@njit(parallel=True, cache=True, nogil=True)
def _edge_pad(img: Float32Array, out: Float32Array, pad: int) -> None:
    """``np.pad(img, ..., mode="edge")`` into ``out`` (Hp, Wp) with ``pad`` rows/columns
    before: one pass instead of numpy's copy and four edge fills."""
    H, W = img.shape
    Hp, Wp = out.shape
    for y in prange(Hp):
        src = img[min(max(y - pad, 0), H - 1)]
        row = out[y]
        for x in range(pad):
            row[x] = src[0]
        row[pad : pad + W] = src
        for x in range(pad + W, Wp):
            row[x] = src[W - 1]


@dataclass
class BinWork:
    """The arrays :func:`bin_image` works in, kept from one call to the next.

    Binning a 3710x3838 tilt by 4/3 makes ~300 MB of intermediate arrays.  Fresh ones
    for every tilt were mapped anew each time, and filling their pages took longer than
    the FFTs: 0.46 s per tilt, 0.28 s of it system time, against 0.18 s reused
    (``benchmarks/kernels.py binning``, on this project's 2-core VM).
    """

    arrays: dict[str, NDArray[Any]] = field(default_factory=dict)

    def get(self, name: str, shape: tuple[int, ...], dtype: type[np.generic]) -> NDArray[Any]:
        """Array ``name`` of this shape and dtype: the one from the last call if it fits."""
        a = self.arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self.arrays[name] = np.empty(shape, dtype)
        return a


def bin_image(
    img: NDArray[Any], num: int, den: int, margin: int = 0, work: BinWork | None = None,
    slot: int = 0,
) -> tuple[Float32Array, int]:  # fmt: skip
    """Fourier-bin a whole image (H, W) of any real dtype by the rational factor num/den (>= 1).

    The image is first padded with its edge values by at least ``margin`` px on every
    side (RELION clamps windows at the image edges; padding keeps the periodic FFT
    from wrapping one edge into the other) and to a multiple of ``num``, so the
    binned size is exact; values are scaled by den/num to keep grey levels.
    Returns (binned image float32, pad): unbinned position c maps to (c + pad)·den/num.

    ``work``: arrays reused between calls.  The binned image is then ``work``'s output
    number ``slot``, valid until the next call with the same slot (a caller that keeps
    one image while it bins the next alternates two slots).
    """
    if num == den:
        return np.ascontiguousarray(img, dtype=np.float32), 0
    work = BinWork() if work is None else work
    pad = -(-margin // num) * num
    H, W = img.shape
    Hp, Wp = _fast_size(H + 2 * pad, num), _fast_size(W + 2 * pad, num)
    padded = work.get("padded", (Hp, Wp), np.float32)
    _edge_pad(np.ascontiguousarray(img, dtype=np.float32), padded, pad)
    hb, wb = Hp // num * den, Wp // num * den
    nc = wb // 2 + 1
    # numpy's FFTs (pocketfft, as scipy's) write into given arrays; one thread, which is
    # what a tilt loaded beside the windows' threads gets anyway
    rows_ft = work.get("rows_ft", (Hp, Wp // 2 + 1), np.complex64)
    np.fft.rfft(padded, axis=1, norm="ortho", out=rows_ft)
    # the column transform only for the columns that are kept
    F = work.get("F", (Hp, nc), np.complex64)
    np.fft.fft(rows_ft[:, :nc], axis=0, norm="ortho", out=F)
    rows = np.r_[0 : hb // 2, Hp - (hb - hb // 2) : Hp]
    crop = work.get("crop", (hb, nc), np.complex64)
    np.take(F, rows, axis=0, out=crop)
    np.fft.ifft(crop, axis=0, norm="ortho", out=crop)
    out: Float32Array = work.get(f"out{slot}", (hb, wb), np.float32)
    # (numpy's stubs expect a float64 ``out``; complex64 input is transformed in float32)
    np.fft.irfft(crop, n=wb, axis=1, norm="ortho", out=out)  # type: ignore[arg-type]
    out *= den / num
    return out, pad
