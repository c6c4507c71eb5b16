"""Contrast transfer function on the half-complex grid (RELION ``src/ctf.{h,cpp}``, spec §3.4).

Defocus is in Å (positive = underfocus), Cs in mm, voltage in kV, angles in degrees.
The grid is FFTW half-complex: shape (s, s//2+1) as [y, x], row y has signed
frequency y if y < s/2 else y - s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .arraytypes import Float32Array, Float64Array


def wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å."""
    v = voltage_kv * 1e3
    lam: float = 12.2643247 / np.sqrt(v * (1.0 + v * 0.978466e-6))
    return lam


@dataclass(frozen=True)
class CtfConstants:
    """The defocus-independent part of the CTF of one tilt (RELION's K1..K5)."""

    k1: float  # pi * lambda
    k2: float  # pi/2 * Cs * lambda^3
    phase: float  # K5 + K3: phase shift plus amplitude-contrast phase
    bfactor: float
    scale: float


def ctf_constants(
    voltage_kv: float,
    cs_mm: float,
    q0: float,
    bfactor: float = 0.0,
    scale: float = 1.0,
    phase_shift_deg: float = 0.0,
) -> CtfConstants:
    """K1..K5 from the microscope (kV, mm), amplitude contrast ``q0`` and phase shift (deg)."""
    lam = wavelength(voltage_kv)
    k1 = np.pi * lam
    k2 = np.pi / 2.0 * cs_mm * 1e7 * lam**3
    k3 = np.arctan(q0 / np.sqrt(1.0 - q0 * q0)) if q0 < 1.0 else np.pi / 2.0
    return CtfConstants(k1, k2, np.deg2rad(phase_shift_deg) + k3, bfactor, scale)


def astigmatism_form(
    defocus_u: ArrayLike, defocus_v: ArrayLike, angle_deg: ArrayLike
) -> tuple[Float64Array, Float64Array, Float64Array]:
    """(Axx, Axy, Ayy) with Δf(X, Y) = -(Axx X² + 2 Axy X Y + Ayy Y²); broadcast shapes."""
    a = np.deg2rad(np.asarray(angle_deg, float))
    c, s = np.cos(a), np.sin(a)
    u, v = np.asarray(defocus_u, float), np.asarray(defocus_v, float)
    return -(u * c * c + v * s * s), -(u - v) * c * s, -(u * s * s + v * c * c)


def frequency_grid(s: int, pixel_size: float) -> tuple[Float64Array, Float64Array]:
    """Half-complex frequencies (X, Y) in 1/Å, each (s, s//2+1) float64, for a box of ``s``
    px of ``pixel_size`` Å."""
    sh = s // 2 + 1
    x = np.arange(sh, dtype=np.float64)
    y = np.arange(s, dtype=np.float64)
    y = np.where(y < s // 2, y, y - s)
    X = np.broadcast_to(x[None, :] / (s * pixel_size), (s, sh))
    Y = np.broadcast_to(y[:, None] / (s * pixel_size), (s, sh))
    return X, Y


def ctf_phase(
    X: Float64Array,
    Y: Float64Array,
    defocus_u: float,
    defocus_v: float,
    angle_deg: float,
    const: CtfConstants,
) -> Float64Array:
    """The CTF's phase γ at frequencies (X, Y) (1/Å, same shape), without Zernike offsets.

    γ = -πλΔf(X, Y) + (π/2)Cs λ³ |k|⁴ - φ - atan(Q0/√(1-Q0²)), in that order of
    operations (RELION's ``getGamma``), float64 of the shape of X.
    """
    axx, axy, ayy = astigmatism_form(defocus_u, defocus_v, angle_deg)
    u2 = X * X + Y * Y
    gamma: Float64Array = (
        const.k1 * (axx * X * X + 2.0 * axy * X * Y + ayy * Y * Y)
        + const.k2 * u2 * u2
        - const.phase
    )
    return gamma


def ctf_image(
    s: int,
    pixel_size: float,
    defocus_u: float,
    defocus_v: float,
    angle_deg: float,
    const: CtfConstants,
    gamma_offset: Float64Array | None = None,
) -> Float32Array:
    """CTF = -sin(γ)·exp(-B k²/4)·scale on the (s, s//2+1) grid, as float32.

    γ is :func:`ctf_phase` (+ the even-Zernike offset ``gamma_offset`` (s, s//2+1)).
    Values with |CTF| < 1e-8 become ±1e-8 (0 counts as positive), as in RELION.
    """
    X, Y = frequency_grid(s, pixel_size)
    gamma = ctf_phase(X, Y, defocus_u, defocus_v, angle_deg, const)
    u2 = X * X + Y * Y
    if gamma_offset is not None:
        gamma = gamma + gamma_offset
    ctf = -np.sin(gamma) * np.exp(-const.bfactor / 4.0 * u2) * const.scale
    small = np.abs(ctf) < 1e-8
    ctf[small] = np.where(ctf[small] >= 0, 1e-8, -1e-8)
    return ctf.astype(np.float32)


@dataclass(frozen=True, kw_only=True, slots=True)
class TiltCtfTerms:
    """The particle-independent parts of one tilt's CTF (see :func:`tilt_ctf_terms`).

    G is the number of optics groups with their own even-Zernike offset (1 without).
    A slice whose γ is γ0 - φ has CTF = -sin(γ0 - φ)·envelope = a·cos φ + b·sin φ.
    """

    a: Float64Array  # (G, s, s//2+1) -sin γ0·envelope
    b: Float64Array  # (G, s, s//2+1) cos γ0·envelope
    u2_unit: float  # |k|² in 1/Å² per unit of x² + ky²: 1/(s·pixel size)²


def tilt_ctf_terms(s: int, pixel_size: float, defocus_u: float, defocus_v: float, angle_deg: float,
                   const: CtfConstants, gamma_offset: Float64Array | None = None,
                   ) -> TiltCtfTerms:  # fmt: skip
    """The particle-independent parts of one tilt's CTF on the (s, s//2+1) grid.

    Adding Δz to both defoci changes γ by -π·λ·Δz·u², and u² = (x² + ky²)·u2_unit on
    this grid, so per particle only ``beta = const.k1 * Δz`` is needed:
    γ = gamma0 - beta·(x² + ky²)·u2_unit.  ``gamma0`` (:func:`ctf_phase`) enters only
    through its sine and cosine, which the envelope exp(-B|k|²/4)·scale multiplies (the
    per-particle part is then a rotation, see ``extraction.finish_slices``): one (s, sh)
    pair per optics group's even-Zernike offset in ``gamma_offset`` (G, s, sh), or G = 1
    without offsets (None or empty).
    """
    X, Y = frequency_grid(s, pixel_size)
    gamma0 = ctf_phase(X, Y, defocus_u, defocus_v, angle_deg, const)[None]
    u2 = X * X + Y * Y
    if gamma_offset is not None and len(gamma_offset):
        gamma0 = gamma0 + gamma_offset
    envelope = np.exp(-const.bfactor / 4.0 * u2) * const.scale
    return TiltCtfTerms(
        a=-np.sin(gamma0) * envelope,
        b=np.cos(gamma0) * envelope,
        u2_unit=1.0 / (s * pixel_size) ** 2,
    )
