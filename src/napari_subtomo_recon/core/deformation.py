"""2D image deformations from RELION's frame alignment (Polish), spec §2.5.

RELION 5 moves the projected particle centre ``p`` (unbinned pixels of the tilt image,
first pixel at 0) to ``D_f(p) = p + d_f(p)`` (``Tomogram::projectPoint``).  ``d_f`` is one of
three models (``src/jaz/tomography/motion/modular_alignment/*_2D_deformation_model.h``),
each with its own coefficient layout per frame, as written in
``rlnTomoDeformationCoefficients``:

* ``spline``: cubic Hermite patches on a ``gx × gy`` grid of nodes spanning the image
  (node spacing ``W/(gx-1)``, ``H/(gy-1)``); per node and direction the value, the slopes
  along x and y and the twist, in pixels per grid cell.  ``8·gx·gy`` numbers laid out as
  ``[direction][node y][node x][value, slope_x, slope_y, twist]``.  Points outside the
  grid are clamped to it.
* ``Fourier``: ``Σ_i re_i cos(k_i·p) + im_i sin(k_i·p)`` over the frequencies of
  :func:`fourier_frequencies`; ``4·N`` numbers laid out as ``[direction][i][re, im]``.
* ``linear``: ``(axx·rx, axy·rx + ayy·ry)`` with ``r = p − (W/2, H/2)``; 3 numbers.

Only the centre moves: the window is cut around ``D_f(p)`` and shifted so that ``D_f(p)``
is its phase origin, visibility is tested at ``D_f(p)``, and nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arraytypes import Float64Array

KINDS = ("spline", "Fourier", "linear")


@dataclass(frozen=True)
class ImageDeformation:
    """The deformations of the frames of one tilt series.

    ``kind`` is one of :data:`KINDS` (RELION's spelling); ``grid`` = (gx, gy) from
    ``rlnTomoDeformationGridSizeX/Y`` (unused by ``linear``); ``image_size`` = (W, H) of the
    tilt images; ``coefficients`` (fc, :func:`coefficient_count`) float64, one row per frame.
    """

    kind: str
    grid: tuple[int, int]
    image_size: tuple[int, int]
    coefficients: Float64Array

    def __post_init__(self) -> None:
        n = coefficient_count(self.kind, self.grid)
        if self.coefficients.ndim != 2 or self.coefficients.shape[1] != n:
            raise ValueError(
                f"{self.kind} deformation on a {self.grid} grid needs (fc, {n}) coefficients, "
                f"got {self.coefficients.shape}"
            )

    def apply(self, points: Float64Array) -> Float64Array:
        """``D_f(p)`` for points (..., fc, 2) whose axis −2 is the frame f."""
        return points + self.shifts(points)

    def shifts(self, points: Float64Array) -> Float64Array:
        """``d_f(p)`` for points (..., fc, 2) whose axis −2 is the frame f: (..., fc, 2)."""
        p = np.asarray(points, dtype=np.float64)
        out = np.empty_like(p)
        for f in range(self.coefficients.shape[0]):
            c = self.coefficients[f]
            q = p[..., f, :]
            if self.kind == "spline":
                out[..., f, :] = spline_shift(q, c, self.grid, self.image_size)
            elif self.kind == "Fourier":
                out[..., f, :] = fourier_shift(q, c, self.grid, self.image_size)
            else:
                out[..., f, :] = linear_shift(q, c, self.image_size)
        return out


def fourier_frequencies(grid: tuple[int, int], image_size: tuple[int, int]) -> Float64Array:
    """The angular frequencies (N, 2) (radians per pixel) of RELION's Fourier model, in order.

    ``Fourier2DDeformationModel``'s constructor: rows y < gy/2 have x = 0…gx/2 (without the
    constant term at y = 0); the other rows have signed y − gy and x = 1…gx/2.  The unit is
    π/W (a half period over the image), not 2π/W.
    """
    gx, gy = grid
    W, H = image_size
    out = []
    for y in range(gy):
        if y < gy // 2:
            out += [(x * np.pi / W, y * np.pi / H) for x in range(0 if y > 0 else 1, gx // 2 + 1)]
        else:
            out += [(x * np.pi / W, (y - gy) * np.pi / H) for x in range(1, gx // 2 + 1)]
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def coefficient_count(kind: str, grid: tuple[int, int]) -> int:
    """Numbers per frame: RELION's ``getParameterCount`` of the model (what Polish writes)."""
    gx, gy = grid
    if kind == "spline":
        return 8 * gx * gy
    if kind == "Fourier":
        return 4 * int(fourier_frequencies(grid, (1, 1)).shape[0])
    if kind == "linear":
        return 3
    raise ValueError(f"unknown deformation type {kind!r} (RELION knows {', '.join(KINDS)})")


def spline_shift(
    points: Float64Array,
    coefficients: Float64Array,
    grid: tuple[int, int],
    image_size: tuple[int, int],
) -> Float64Array:
    """The spline model's shift (..., 2) at points (..., 2); ``coefficients`` (8·gx·gy,).

    ``Spline2DDeformationModel::computeShift``: the point in grid units is clamped to
    [0, g − 1 − 1e-10], its cell is the integer part and ``t`` the fraction; with the
    Hermite bases ``h(t) = (1−3t²+2t³, 3t²−2t³, t−2t²+t³, −t²+t³)`` the shift is
    ``h(tx)ᵀ·F·h(ty)`` with F = [[v00, v01, sy00, sy01], [v10, v11, sy10, sy11],
    [sx00, sx01, w00, w01], [sx10, sx11, w10, w11]] (node (cx+i, cy+j) → index ij).
    """
    gx, gy = grid
    W, H = image_size
    p = np.asarray(points, dtype=np.float64)
    data = np.asarray(coefficients, dtype=np.float64).reshape(2, gy, gx, 4)
    eps = 1e-10
    g = np.stack(
        [
            np.clip(p[..., 0] / (W / (gx - 1.0)), 0.0, gx - 1 - eps),
            np.clip(p[..., 1] / (H / (gy - 1.0)), 0.0, gy - 1 - eps),
        ],
        -1,
    )
    cell = g.astype(np.int64)  # g >= 0: truncation is floor
    t = g - cell
    h = _hermite(t)  # (..., 2, 4)
    cx, cy = cell[..., 0], cell[..., 1]
    hx, hy = h[..., 0, :], h[..., 1, :]
    out = np.empty(p.shape, dtype=np.float64)
    for dim in range(2):
        d00, d01 = data[dim, cy, cx], data[dim, cy + 1, cx]  # (..., 4)
        d10, d11 = data[dim, cy, cx + 1], data[dim, cy + 1, cx + 1]
        v, sx, sy, tw = 0, 1, 2, 3
        F = np.stack(
            [
                np.stack([d00[..., v], d01[..., v], d00[..., sy], d01[..., sy]], -1),
                np.stack([d10[..., v], d11[..., v], d10[..., sy], d11[..., sy]], -1),
                np.stack([d00[..., sx], d01[..., sx], d00[..., tw], d01[..., tw]], -1),
                np.stack([d10[..., sx], d11[..., sx], d10[..., tw], d11[..., tw]], -1),
            ],
            -2,
        )  # (..., 4, 4)
        out[..., dim] = np.einsum("...i,...ij,...j->...", hx, F, hy)
    return out


def _hermite(t: Float64Array) -> Float64Array:
    """The four cubic Hermite bases at fractions t (...): (..., 4)."""
    t2, t3 = t * t, t * t * t
    h: Float64Array = np.stack(
        [1.0 - 3.0 * t2 + 2.0 * t3, 3.0 * t2 - 2.0 * t3, t - 2.0 * t2 + t3, -t2 + t3], -1
    )
    return h


def fourier_shift(
    points: Float64Array,
    coefficients: Float64Array,
    grid: tuple[int, int],
    image_size: tuple[int, int],
) -> Float64Array:
    """The Fourier model's shift (..., 2) at points (..., 2); ``coefficients`` (4·N,).

    ``Fourier2DDeformationModel::computeShift``: per direction,
    ``Σ_i re_i cos(k_i·p) + im_i sin(k_i·p)`` with ``k_i`` from :func:`fourier_frequencies`
    and p in absolute pixels (no centring).
    """
    k = fourier_frequencies(grid, image_size)  # (N, 2)
    c = np.asarray(coefficients, dtype=np.float64).reshape(2, k.shape[0], 2)
    phase = np.asarray(points, dtype=np.float64) @ k.T  # (..., N)
    cos, sin = np.cos(phase), np.sin(phase)
    out: Float64Array = np.stack([cos @ c[dim, :, 0] + sin @ c[dim, :, 1] for dim in range(2)], -1)
    return out


def linear_shift(
    points: Float64Array, coefficients: Float64Array, image_size: tuple[int, int]
) -> Float64Array:
    """The linear model's shift (..., 2) at points (..., 2); ``coefficients`` (axx, axy, ayy).

    ``Linear2DDeformationModel::computeShift``, about the image centre (W/2.0, H/2.0) (real
    halves, unlike the projection's integer ones).
    """
    axx, axy, ayy = (float(v) for v in coefficients)
    r = np.asarray(points, dtype=np.float64) - 0.5 * np.asarray(image_size, dtype=np.float64)
    out: Float64Array = np.stack([axx * r[..., 0], axy * r[..., 0] + ayy * r[..., 1]], -1)
    return out
