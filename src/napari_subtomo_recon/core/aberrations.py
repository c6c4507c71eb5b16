"""Zernike aberrations of an optics group on the half-complex grid (RELION ``AberrationsCache``).

Even coefficients add a phase to the CTF's γ; odd coefficients shift the phase of
the observed slices by exp(-i φ_odd).  Frequencies are in 1/Å, not normalised,
with the pixel size of the output (first tomogram's pixel size × binning).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from math import factorial

import numpy as np

from .arraytypes import Float64Array


def even_index_to_mn(i: int) -> tuple[int, int]:
    k = int(np.sqrt(float(i)))
    return 2 * (i - k * k - k), 2 * k


def odd_index_to_mn(i: int) -> tuple[int, int]:
    k = int((np.sqrt(1 + 4 * i) - 1.0) / 2.0)
    n = 2 * k + 1
    return 2 * (i - k * k - k) - n, n


def radial_polynomial(m: int, n: int, rho: Float64Array) -> Float64Array:
    """Zernike radial polynomial R_n^|m| at ``rho`` (any shape)."""
    m = abs(m)
    if (n - m) % 2:
        return np.zeros_like(rho)
    out = np.zeros_like(rho)
    for k in range((n - m) // 2 + 1):
        c = (
            (-1) ** k
            * factorial(n - k)
            / (factorial(k) * factorial((n + m) // 2 - k) * factorial((n - m) // 2 - k))
        )
        out = out + c * rho ** (n - 2 * k)
    return out


def zernike(m: int, n: int, x: Float64Array, y: Float64Array) -> Float64Array:
    """Zernike polynomial Z_n^m at (x, y) (same shape), not normalised."""
    rho = np.sqrt(x * x + y * y)
    phi = np.arctan2(y, x)  # 0 at the origin, as RELION
    r = radial_polynomial(m, n, rho)
    z: Float64Array = r * np.cos(m * phi) if m >= 0 else r * np.sin(-m * phi)
    return z


def aberration_phase(coeffs: Iterable[float], s: int, pixel_size: float, odd: bool) -> Float64Array:
    """Σ c_i Z_i on the (s, s//2+1) grid, float64, for coefficients (k,); ``odd`` selects
    the antisymmetric index map."""
    sh = s // 2 + 1
    a = pixel_size * s
    x = np.arange(sh, dtype=np.float64)[None, :] / a
    y = np.arange(s, dtype=np.float64)
    y = (np.where(y < s // 2, y, y - s) / a)[:, None]
    x, y = np.broadcast_arrays(x, y)
    out = np.zeros((s, sh))
    for i, c in enumerate(coeffs):
        m, n = odd_index_to_mn(i) if odd else even_index_to_mn(i)
        out += c * zernike(m, n, x, y)
    return out


def group_phases(
    coeff_list: Sequence[Iterable[float]] | None, s: int, pixel_size: float, odd: bool
) -> Float64Array:
    """(G, s, sh) phases for every optics group, or an empty (0, 1, 1) array."""
    if not coeff_list:
        return np.zeros((0, 1, 1))
    return np.stack([aberration_phase(c, s, pixel_size, odd) for c in coeff_list])
