"""Fourier insertion of 2D slices into 3D half-complex accumulators (spec §4).

RELION's ``backprojectSlice_backward``: a *gather*.  Every target voxel k within
one voxel of the slice plane pulls ``(1 - |q_z|)`` times the bilinear value of
the 2D slice at ``q = Q k`` with ``Q = (B^-1)^T``; negative ``q_x`` reads the
Hermitian mirror (conjugated).  Data and weights get the same kernel.

Accumulators: ``D`` complex128 and ``W`` float64 of shape (2, s, s, s//2+1)
[half, z, y, x].  Threads own disjoint blocks of z planes and insert every slice of
a batch into their planes: no atomics, no per-thread copies of the volumes (memory
does not grow with threads), the same sums in the same order whatever the number
of threads, and a plane stays in cache while a batch of slices passes.  The fast
path sums each batch in single-precision planes first (``single=True``); RELION's
path adds every sample to the double-precision accumulators directly.
"""

from __future__ import annotations

import math
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

from .arraytypes import Complex128Array, Float32Array, Float64Array, Int64Array
from .prefetch import prefetch

PLANES_PER_BLOCK = 1
# values per sample of a packed slice, [Re, Im, weight]: the kernels load them one by one,
# so a fourth (padding) lane only made the slices a third larger in memory
LANES = 3

# the planes the slice kernels add to: the accumulators (complex128, float64) or the
# single-precision scratch of ``_insert_blocks_single`` (complex64, float32)
ComplexArray = NDArray[np.complexfloating]
RealArray = NDArray[np.floating]


@dataclass(frozen=True, kw_only=True)
class Accumulators:
    """Fourier data and weights per half set: (2, s, s, s//2+1) [half, z, y, x]."""

    data: Complex128Array  # complex128
    weight: Float64Array  # float64

    @classmethod
    def zeros(cls, box: int) -> Accumulators:
        sh = box // 2 + 1
        return cls(
            data=np.zeros((2, box, box, sh), np.complex128), weight=np.zeros((2, box, box, sh))
        )

    @staticmethod
    def nbytes(box: int) -> int:
        """Bytes of the accumulators of a box of ``box`` voxels."""
        return 2 * box * box * (box // 2 + 1) * 24


@dataclass(frozen=True, kw_only=True, slots=True)
class SliceBatch:
    """n prepared slices and where each goes (s: the box, sh = s//2+1)."""

    packed: Float32Array  # (n, s+1, sh+1, LANES) [Re, Im, weight] (:func:`packed_slices`)
    Q: Float64Array  # (n, 3, 3) slice matrices (B^-1)^T (:func:`slice_matrices`)
    max_freq: Int64Array  # (n,) radius in voxels up to which a slice is inserted
    half: Int64Array  # (n,) half set, 0 or 1


@njit(cache=True, nogil=True, inline="always")
def _position(qx: float, qy: float, h: int) -> tuple[float, float, float, int, int]:
    """Where a sample at (qx, qy) reads S: the sign (-1: the Hermitian mirror, conjugated),
    the mirrored position (xd, yd) with y wrapped into [0, h], and its lower corner
    (x0, y0) before y0 is clamped to h - 1."""
    sg = 1.0 if qx >= 0.0 else -1.0
    xd = qx * sg
    yd = qy * sg
    if yd < 0.0:
        yd += h
    return sg, xd, yd, int(xd), int(yd)


@njit(cache=True, nogil=True, inline="always")
def _sample(S: Float32Array, row: int, qx: float, qy: float, h: int, D: ComplexArray,
            W: RealArray, z: int, y: int, x: int, c: float) -> None:  # fmt: skip
    # S: a slice (h+1, wh+1, LANES) float32 [re, im, w] flattened, ``row`` = (wh+1)·LANES
    # values per row; row h repeats row 0 (y wraps), column wh repeats column wh-2
    # (RELION's last-column quirk)
    sg, xd, yd, x0, y0 = _position(qx, qy, h)
    xf = xd - x0
    yf = yd - y0
    y0 = min(y0, h - 1)
    cy0 = c * (1.0 - yf)
    cy1 = c * yf
    a = np.float32((1.0 - xf) * cy0)
    b = np.float32(xf * cy0)
    cc = np.float32((1.0 - xf) * cy1)
    d = np.float32(xf * cy1)
    # flat, unsigned indices (all are >= 0): one multiply, and none of Numba's stride
    # loads and negative-index fix-ups (kernels.py insertion: -4% at one thread, ~1% at
    # two, where the fast path waits on memory)
    i0 = np.uint64(y0 * row + x0 * LANES)
    i1 = i0 + np.uint64(row)
    n = np.uint64(LANES)  # the next column's sample
    re = a * S[i0] + b * S[i0 + n] + cc * S[i1] + d * S[i1 + n]
    i0 += np.uint64(1)
    i1 += np.uint64(1)
    im = a * S[i0] + b * S[i0 + n] + cc * S[i1] + d * S[i1 + n]
    i0 += np.uint64(1)
    i1 += np.uint64(1)
    wv = a * S[i0] + b * S[i0 + n] + cc * S[i1] + d * S[i1 + n]
    zu, yu, xu = np.uint64(z), np.uint64(y), np.uint64(x)
    D[zu, yu, xu] += complex(re, sg * im)
    W[zu, yu, xu] += wv


@njit(cache=True, nogil=True, inline="always")
def _prefetch_sample(S: Float32Array, row: int, qx: float, qy: float, h: int) -> None:
    """Start loading the two rows of S (flat, ``row`` values per row) that
    :func:`_sample` reads at (qx, qy)."""
    _, _, _, x0, y0 = _position(qx, qy, h)
    y0 = min(y0, h - 1)
    i = y0 * row + x0 * LANES
    if x0 >= 0 and y0 >= 0 and i + row < S.size:
        prefetch(S, i)
        prefetch(S, i + row)


@njit(cache=True, nogil=True, inline="always")
def _prefetch_run(on: bool, S: Float32Array, row: int, h: int, lo: float, hi: float, n: float,
                  bx: float, by: float, ax: float, ay: float, vmin: int,
                  vmax: int) -> None:  # fmt: skip
    """Start loading what a run reads: v in [vmin, vmax] with lo < n·v < hi, sampling S
    at (bx + ax·v, by + ay·v); its first, middle and last voxel.  Nothing if not ``on``
    (a compile-time constant: no code) or n = 0."""
    if not on or n == 0.0:
        return
    va, vb = _range(lo, hi, n)
    va = max(va, vmin)
    vb = min(vb, vmax)
    if vb >= va:
        vm = (va + vb) // 2
        _prefetch_sample(S, row, bx + ax * va, by + ay * va, h)
        _prefetch_sample(S, row, bx + ax * vm, by + ay * vm, h)
        _prefetch_sample(S, row, bx + ax * vb, by + ay * vb, h)


@njit(cache=True, nogil=True, inline="always")
def _isqrt(v: int) -> int:
    """The largest integer r with r² <= v (v >= 0), exactly, whatever sqrt's rounding."""
    r = int(math.sqrt(v))
    while (r + 1) * (r + 1) <= v:
        r += 1
    while r * r > v:
        r -= 1
    return r


@njit(cache=True, nogil=True, inline="always")
def _range(lo_num: float, hi_num: float, den: float) -> tuple[int, int]:
    """Integers v with lo_num < v*den < hi_num (as a closed candidate range); den != 0."""
    a = lo_num / den
    b = hi_num / den
    if a > b:
        a, b = b, a
    # a near-zero den (1e-17 from rounding) must not overflow the int conversion
    return math.ceil(max(a, -1e9)), math.floor(min(b, 1e9))


@njit(cache=True, nogil=True, inline="always")
def _y_run(t: float, ny: float, lo: int, hi: int, ry: int) -> tuple[int, int]:
    """Rows y (in lo..hi and the disc's -ry..ry) of a column whose voxels may have
    |t + ny·y| < 1: a closed range, empty as (1, 0).  ny = 0 (the band along y) happens
    on the long-run walk only."""
    if ny != 0.0:
        ya, yb = _range(-1.0 - t, 1.0 - t, ny)
    elif -1.0 < t < 1.0:
        ya, yb = lo, hi
    else:
        return 1, 0
    # the disc bound matters for long runs, which would mostly fall outside it
    return max(ya, lo, -ry), min(yb, hi, ry)


def _slice_planes(S: Float32Array, Q: Float64Array, R: int, D: ComplexArray,
                  W: RealArray, zlo: int, zhi: int, z0: int) -> None:  # fmt: skip
    """Insert one slice into the planes of signed frequency zlo..zhi (inclusive) of D, W.

    ``S`` is the packed slice (s+1, sh+1, LANES) flattened (sh = D.shape[2]); ``D[k]``,
    ``W[k]`` hold the plane of index ``z0 + k`` (0 for whole volumes).

    The voxels visited are exactly RELION's (|q_z| < 1, x <= sqrt(R² - y² - z²),
    |q_x| < wh, |q_y| < h/2 + 1).  In a plane z the slab is a band; it is walked in
    runs along whichever of x and y crosses it more steeply (runs of >= 2 voxels), over
    only the rows or columns that meet it inside the plane's half disc.  Each voxel is
    visited once, so the order of the sums does not depend on how it is enumerated.
    The two walks mirror each other but are written out: x runs start at x = 0 and
    stop at the disc, y runs wrap to negative indices, and each inner loop stays
    straight-line code.
    """
    s = D.shape[1]
    h2 = s
    wh2 = D.shape[2]
    ylim = h2 // 2 + 1
    row = (wh2 + 1) * LANES
    R2 = R * R
    nx, ny, nz = Q[2, 0], Q[2, 1], Q[2, 2]
    q00, q01, q02 = Q[0, 0], Q[0, 1], Q[0, 2]
    q10, q11, q12 = Q[1, 0], Q[1, 1], Q[1, 2]
    lo = -(s // 2)
    hi = s // 2 - 1
    xmax = min(D.shape[2] - 1, R)
    # RELION's build walks along the axis the band crosses more steeply: runs of 2-3
    # voxels.  The fast build (_LONG_RUNS, a constant of its own globals) walks along the
    # other axis: 2.4x fewer runs to set up for the same voxels, ~7% faster
    xrun = (abs(nx) < abs(ny)) == _LONG_RUNS  # RELION's: |nx| >= |ny|
    for zz in range(max(zlo, -R), min(zhi, R) + 1):
        rz2 = R2 - zz * zz  # the plane's disc: x² + y² <= rz2
        rz = _isqrt(rz2)
        xm = min(xmax, rz)
        zi = (zz + s if zz < 0 else zz) - z0
        c = nz * zz
        if nx == 0.0 and ny == 0.0:  # slice normal along z: the whole plane or nothing
            if not (-1.0 < c < 1.0):
                continue
        if xrun:
            # rows y: those where the band meets x in [0, xm]
            ex = nx * xm
            if ny != 0.0:
                ya, yb = _range(-1.0 - c - max(ex, 0.0), 1.0 - c - min(ex, 0.0), ny)
            else:
                ya, yb = -rz, rz
            ya = max(ya, lo, -rz)
            yb = min(yb, hi, rz)
            for yy in range(ya, yb + 1):
                rem = rz2 - yy * yy
                t = ny * yy + c
                if nx != 0.0:
                    xa, xb = _range(-1.0 - t, 1.0 - t, nx)
                    xa = max(xa, 0)
                    xb = min(xb, xm)
                else:
                    xa, xb = 0, xm
                yi = yy + s if yy < 0 else yy
                bx = q01 * yy + q02 * zz
                by = q11 * yy + q12 * zz
                ta = t + _AHEAD * ny  # the run _AHEAD rows on
                _prefetch_run(_PREFETCH, S, row, h2, -1.0 - ta, 1.0 - ta, nx, bx + _AHEAD * q01,
                              by + _AHEAD * q11, q00, q10, 0, xm)  # fmt: skip
                for x in range(xa, xb + 1):
                    if x * x > rem:
                        break
                    qz = t + nx * x
                    if not (-1.0 < qz < 1.0):
                        continue
                    qx = bx + q00 * x
                    qy = by + q10 * x
                    if abs(qx) < wh2 and abs(qy) < ylim:
                        _sample(S, row, qx, qy, h2, D, W, zi, yi, x, 1.0 - abs(qz))
        else:
            # columns x: those where the band meets y in [-rz, rz]
            ey = abs(ny) * rz
            if nx != 0.0:
                xa, xb = _range(-1.0 - c - ey, 1.0 - c + ey, nx)
                xa = max(xa, 0)
                xb = min(xb, xm)
            else:
                xa, xb = 0, xm
            for x in range(xa, xb + 1):
                rem = rz2 - x * x
                t = nx * x + c
                ya, yb = _y_run(t, ny, lo, hi, _isqrt(rem))
                bx = q00 * x + q02 * zz
                by = q10 * x + q12 * zz
                ta = t + _AHEAD * nx  # the run _AHEAD columns on
                _prefetch_run(_PREFETCH, S, row, h2, -1.0 - ta, 1.0 - ta, ny, bx + _AHEAD * q00,
                              by + _AHEAD * q10, q01, q11, lo, hi)  # fmt: skip
                for yy in range(ya, yb + 1):
                    if yy * yy > rem:
                        continue
                    qz = t + ny * yy
                    if not (-1.0 < qz < 1.0):
                        continue
                    qx = bx + q01 * yy
                    qy = by + q11 * yy
                    if abs(qx) < wh2 and abs(qy) < ylim:
                        yi = yy + s if yy < 0 else yy
                        _sample(S, row, qx, qy, h2, D, W, zi, yi, x, 1.0 - abs(qz))


_LONG_RUNS = False
# The fast build asks for each run's lines of S three runs ahead (``_PREFETCH``): the
# slices of a batch do not fit the caches (a plane's pass reads a strip of every one),
# and the loads of a run otherwise wait for them one after another (box 256, --j 2,
# 128 slices per batch: 0.75 -> 0.63 ms per slice, benchmarks/kernels.py insertion).
# RELION's walk, whose runs are 2-3 voxels, got slower with it in a trial build.
_PREFETCH = False
_AHEAD = 3


def _compiled(name: str, fastmath: bool, doc: str) -> Any:
    """:func:`_slice_planes` compiled as a kernel of its own named ``name``.

    Two builds of one body, without Numba's IR inlining (inlining it into two wrappers
    took ~1.4 s of a cold start).  The new qualname keeps them apart in Numba's cache,
    which is keyed by qualname and bytecode, not by compiler flags.  The fast build
    also walks its runs the long way (``_LONG_RUNS``) and prefetches them (``_PREFETCH``):
    globals, so compile-time constants; as arguments each constant would compile another
    specialisation.
    """
    g = dict(_slice_planes.__globals__, _LONG_RUNS=fastmath, _PREFETCH=fastmath)
    f = types.FunctionType(_slice_planes.__code__, g, name)
    f.__qualname__ = name
    f.__doc__ = doc
    return njit(cache=True, nogil=True, fastmath=fastmath)(f)


# (S (s+1, sh+1, LANES) flattened, Q (3, 3), R, D, W, zlo, zhi, z0) -> None; see _slice_planes
insert_slice_planes = _compiled(
    "insert_slice_planes", False,
    "Insert one slice into the planes zlo..zhi of D, W: RELION's voxels and arithmetic.",
)  # fmt: skip
_insert_slice_planes_fast = _compiled(
    "_insert_slice_planes_fast", True,
    "insert_slice_planes with fast math (fused multiply-adds, reassociation) for the fast\n"
    "path, whose maps only have to agree with RELION's by FSC; a voxel right at |q_z| = 1\n"
    "may fall either way.",
)  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _insert_block(S: Float32Array, Q: Float64Array, max_freq: Int64Array, half: Int64Array,
                  only: int, D: ComplexArray, W: RealArray, i0: int, i1: int, z0: int,
                  fast: bool) -> None:  # fmt: skip
    """Insert the slices (all, or those of half set ``only`` >= 0) into the planes of
    index i0..i1-1 of D[half], W[half], whose plane k holds index z0 + k; ``fast``: with
    :func:`_insert_slice_planes_fast`."""
    s = D.shape[2]
    # index -> signed frequency: split at s/2
    for part in range(2):
        if part == 0:
            a0, a1 = i0, min(i1, s // 2)
            off = 0
        else:
            a0, a1 = max(i0, s // 2), i1
            off = -s
        if a0 >= a1:
            continue
        for i in range(S.shape[0]):
            h = half[i]
            if not (only < 0 or h == only):
                continue
            if fast:
                _insert_slice_planes_fast(
                    S[i], Q[i], max_freq[i], D[h], W[h], a0 + off, a1 - 1 + off, z0
                )
            else:
                insert_slice_planes(S[i], Q[i], max_freq[i], D[h], W[h], a0 + off, a1 - 1 + off, z0)


@njit(cache=True, nogil=True)
def _insert_blocks(S: Float32Array, Q: Float64Array, max_freq: Int64Array, half: Int64Array,
                   D: Complex128Array, W: Float64Array, block: int, t: int,
                   T: int) -> None:  # fmt: skip
    """Insert the batch into every T-th block of ``block`` z planes of D, W (2, s, s, sh),
    starting at block t: one of T threads' share (:func:`insert_slices`)."""
    s = D.shape[1]
    nb = (s + block - 1) // block
    for b in range(t, nb, T):
        _insert_block(
            S, Q, max_freq, half, -1, D, W, b * block, min(s, b * block + block), 0, False
        )


@njit(cache=True, nogil=True, fastmath=True)
def _insert_blocks_single(S: Float32Array, Q: Float64Array, max_freq: Int64Array,
                          half: Int64Array, D: Complex128Array, W: Float64Array, block: int,
                          t: int, T: int) -> None:  # fmt: skip
    """``_insert_blocks`` summing each block's share of the batch in single precision.

    One half set's planes of the block are accumulated in complex64/float32 scratch (at
    box 256 ~0.4 MB per plane, which stays in L2 where the double-precision plane of both
    halves, 1.6 MB, does not) and then added to the double-precision accumulators.  Every
    voxel's sum over one batch is then rounded to float32 (relative ~1e-7); the fast
    path's maps do not depend on that (it agrees with the exact path at FSC >= 0.997),
    RELION's path does not use it.

    Only the ball the batch can reach (radius max(max_freq), the disc test of
    :func:`_slice_planes`) is added, and zeroed again in the same pass: half the cube.
    The add streams the double-precision volume through memory once per batch; over the
    whole cube it cost ~45 ms per batch at box 256, ~20% of the insertion (docs/benchmarks.md).
    The adds are written as loops: array expressions would compile Numba's
    shape-checking and error-formatting code (~5 s of a cold start).
    """
    s = D.shape[1]
    wh = D.shape[3]
    nb = (s + block - 1) // block
    counts = np.zeros(2, np.int64)
    R = 0
    for i in range(S.shape[0]):
        counts[half[i]] += 1
        R = max(R, max_freq[i])
    # zeroed once: each block's insertion writes only the ball, which its add zeroes
    Ds = np.zeros((2, block, s, wh), np.complex64)
    Ws = np.zeros((2, block, s, wh), np.float32)
    for b in range(t, nb, T):
        i0 = b * block
        i1 = min(s, i0 + block)
        for hh in range(2):
            if counts[hh] == 0:
                continue
            _insert_block(S, Q, max_freq, half, hh, Ds, Ws, i0, i1, i0, True)
            for zi in range(i0, i1):
                zz = zi if zi < s // 2 else zi - s
                rz2 = R * R - zz * zz
                if rz2 < 0:
                    continue
                rz = _isqrt(rz2)
                for yy in range(max(-rz, -(s // 2)), min(rz, s // 2 - 1) + 1):
                    yi = yy + s if yy < 0 else yy
                    xe = min(_isqrt(rz2 - yy * yy), wh - 1) + 1
                    k = zi - i0
                    for x in range(xe):
                        D[hh, zi, yi, x] += Ds[hh, k, yi, x]
                        W[hh, zi, yi, x] += Ws[hh, k, yi, x]
                        Ds[hh, k, yi, x] = 0
                        Ws[hh, k, yi, x] = 0


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(T: int) -> ThreadPoolExecutor:
    """A lasting pool of T threads for the insertion (made once per thread count)."""
    if T not in _POOLS:
        _POOLS[T] = ThreadPoolExecutor(T, thread_name_prefix="insert")
    return _POOLS[T]


def packed_slices(data: NDArray[np.complexfloating], weight: NDArray[np.floating]) -> Float32Array:
    """(n, s, sh) data and weights -> the (n, s+1, sh+1, LANES) float32 layout the kernel reads.

    [Re, Im, weight] per sample, so a bilinear corner's values are next to each other;
    row s repeats row 0 (y wraps) and column sh repeats column sh-2 (RELION's last-column
    quirk), so the kernel needs no index clamps.  ``extraction.finish_slices`` writes
    this layout directly.
    """
    data = np.asarray(data)
    n, h, wh = data.shape
    S = np.zeros((n, h + 1, wh + 1, LANES), np.float32)
    S[:, :h, :wh, 0] = data.real
    S[:, :h, :wh, 1] = data.imag
    S[:, :h, :wh, 2] = weight
    S[:, :h, wh] = S[:, :h, wh - 2]
    S[:, h] = S[:, 0]
    return S


def insert_slices(batch: SliceBatch, acc: Accumulators, *, block: int = PLANES_PER_BLOCK,
                  single: bool = False, threads: int | None = None) -> None:  # fmt: skip
    """Insert a batch of packed slices into the accumulators (2, s, s, s//2+1).

    ``block``: z planes per task.  ``single``: sum this batch in single precision before
    adding it to the accumulators (faster; see ``_insert_blocks_single``).  ``threads``:
    how many threads share the planes (default: Numba's thread count).
    """
    S, Q, max_freq, half = batch.packed, batch.Q, batch.max_freq, batch.half
    D, W = acc.data, acc.weight
    # the kernel does not check bounds: refuse mismatched shapes here
    n = S.shape[0]
    if D.ndim != 4 or D.shape[0] != 2 or W.shape != D.shape or D.shape[1] != D.shape[2]:
        raise ValueError(f"accumulators must be (2, s, s, s//2+1), got {D.shape} and {W.shape}")
    s = D.shape[1]
    if S.ndim != 4 or S.shape[1:] != (s + 1, s // 2 + 2, LANES) or S.dtype != np.float32:
        raise ValueError(
            f"slices must be float32 (n, {s + 1}, {s // 2 + 2}, {LANES}), got {S.shape} {S.dtype}"
        )
    if len(Q) != n or len(max_freq) != n or len(half) != n or (n and np.max(half) > 1):
        raise ValueError("Q, max_freq and half need one entry per slice; half is 0 or 1")
    kernel = _insert_blocks_single if single else _insert_blocks
    # one flat row per slice: the kernels index S[i] with one multiply (a view)
    args = (S.reshape(n, -1), np.ascontiguousarray(Q, dtype=np.float64),
            np.asarray(max_freq, np.int64), np.asarray(half, np.int64), D, W, block)  # fmt: skip
    # T threads own disjoint planes; Python threads running serial nogil kernels rather
    # than a parallel Numba kernel, whose compilation took ~10 s of a cold start
    T = min(threads if threads is not None else numba.get_num_threads(), (s + block - 1) // block)
    if T <= 1:
        kernel(*args, 0, 1)
        return
    for job in [_pool(T).submit(kernel, *args, t, T) for t in range(T)]:
        job.result()


def insert_slice(
    data: NDArray[np.complexfloating],
    weight: NDArray[np.floating],
    Q: ArrayLike,
    max_freq: int,
    D: Complex128Array,
    W: Float64Array,
) -> None:
    """Insert one slice, data and weights (s, s//2+1), with matrix Q (3, 3) up to radius
    ``max_freq`` into one half set's D, W (s, s, s//2+1)."""
    s = D.shape[0]
    S = packed_slices(np.asarray(data)[None], np.asarray(weight)[None])[0].reshape(-1)
    insert_slice_planes(
        S, np.ascontiguousarray(Q, np.float64), int(max_freq), D, W,
        zlo=-(s // 2), zhi=s // 2 - 1, z0=0,
    )  # fmt: skip


def slice_matrices(B: Float64Array) -> Float64Array:
    """Q = (B^-1)^T (n, 3, 3) for a stack of 3x3 matrices B (n, 3, 3)."""
    Q: Float64Array = np.ascontiguousarray(np.transpose(np.linalg.inv(B), (0, 2, 1)))
    return Q
