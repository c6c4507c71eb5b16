"""Simulated RELION-5 tomography data sets with a known ground-truth map.

:func:`simulate` writes a small, realistic data set in the format read by
``relion_tomo_reconstruct_particle`` (optimisation set, ``tomograms.star`` with
one star file and one MRC stack per tilt series, ``particles.star`` and, if asked
for, ``motion.star``), plus ``ground_truth.mrc``.  It is used by the demo, by
the tests that compare a reconstruction with the truth, and to produce inputs
for running the real RELION.

Every path written into the star files is **relative to the data-set root**:
run the reconstruction with the working directory set to ``root`` (RELION
resolves paths against the working directory, not against the star file).
:meth:`SimulatedDataset.command` returns matching arguments.

The forward model is written independently of :mod:`napari_subtomo_recon.core`
(nothing is imported from it), from the conventions of the spec
(``relion-reconstruct-particle.md`` §1–§3):

* Tilt geometry (§2.1): ``P_f = T(shift/px + floor(W/2), floor(H/2)) ·
  Rz(zr)·Ry(yt)·Rx(xt) · T(−floor(tomo/2))`` with active rotations; the third row
  of ``M_f = Rz·Ry·Rx`` is the beam direction (depth).
* Particles (§2.3, §2.6): ``pos = p0 − A_sub·origin/px``, orientation
  ``A = A_sub·A_part`` with RELION's ``E(rot, tilt, psi) = Rz(−psi)·Ry(−tilt)·Rz(−rot)``.
  Map voxel ``x`` (binned, centre ``box//2``) sits at tomogram pixel
  ``pos + A·(x − box//2)·binning``.
* Trajectories (§2.4): the particle is drawn at ``pos + shift_f/px`` in frame f;
  the shift does not change the CTF depth.
* CTF (§3.4) with the depth offset ``Δz = hand·px·M_f[2,:]·(pos − tomo/2.0)``
  (§2.8) added to both defoci; ``CTF = −sin γ`` so that ``CTF(0) = +Q0``.
* Dose (§3.5): Grant–Grigorieff ``exp(−N/(2·(0.245·k^−1.665 + 2.81)))`` with
  ``N`` = the tilt's pre-exposure.
* Contrast: image = ``−CTF·dose ⊛ projection`` (protein dark), so that the
  reconstruction, which multiplies the data by ``−CTF·dose`` (§3.6), is positive.

**Method.** The phantom is a sum of isotropic 3D Gaussian blobs (helix-like rods
of small blobs, a right-handed spiral, one or two globular domains).  The line
integral of a 3D Gaussian along any direction is a 2D Gaussian whose Fourier
transform is known in closed form, so each particle image is computed
*analytically* in Fourier space: for particle i and tilt f the blob centres are
rotated by ``M_f·A``, their in-plane coordinates give the phases, and the
spectrum of the projection on a ``Pp×Pp`` patch (``Pp = 2·round(binning·box)``
unbinned pixels) is a separable sum, evaluated as one complex matrix product per
tilt.  It is multiplied by ``−CTF·dose``, inverse-FFT'ed, and added to the tilt
image at the nearest integer pixel (the sub-pixel part of the projected centre
is in the phases; patches are clipped at the image edges).  There is no
interpolation error; the only approximation is the periodic patch (CTF
delocalisation beyond ``Pp/2`` wraps around).  The ground truth is the same sum
of Gaussians sampled on the ``box³`` grid at ``pixel_size·binning``; the
projections are normalised so that, at the binned voxel size, a projection
equals the map summed along the beam (image grey value = sum over map voxels).
All particles of a tilt share one image; Gaussian white noise (and, optionally,
a smooth background) is added per pixel.

The CTF uses the particle-centre defocus for the whole particle (no Ewald-sphere
or thickness effect), as RELION's reconstruction assumes.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import mrcfile
import numpy as np
import scipy.fft as sfft
from numpy.typing import ArrayLike

__all__ = ["SimulatedDataset", "SimulationConfig", "make_phantom", "simulate"]


# ---------------------------------------------------------------------------------------------
# Rotations (active, degrees) and RELION Euler matrices
# ---------------------------------------------------------------------------------------------


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _euler(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's Euler matrix (spec §2.6), written out element by element."""
    a, b, g = math.radians(rot), math.radians(tilt), math.radians(psi)
    ca, sa, cb, sb, cg, sg = (
        math.cos(a),
        math.sin(a),
        math.cos(b),
        math.sin(b),
        math.cos(g),
        math.sin(g),
    )
    return np.array(
        [
            [cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb],
            [-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb],
            [sb * ca, sb * sa, cb],
        ]
    )


def _tilt_matrix(xt: float, yt: float, zr: float) -> np.ndarray:
    """M_f = Rz(zr)·Ry(yt)·Rx(xt) (spec §2.1)."""
    return _rz(zr) @ _ry(yt) @ _rx(xt)


def _projection_matrix(
    xt: float,
    yt: float,
    zr: float,
    xs: float,
    ys: float,
    px: float,
    tomo_size: tuple[int, int, int],
    image_size: tuple[int, int],
) -> np.ndarray:
    """The 4×4 P_f of spec §2.1 (floor halves for the specimen and image centres)."""
    m = _tilt_matrix(xt, yt, zr)
    c_int = np.array([t // 2 for t in tomo_size], dtype=np.float64)
    t = -m @ c_int + np.array([xs / px + image_size[0] // 2, ys / px + image_size[1] // 2, 0.0])
    p = np.eye(4)
    p[:3, :3] = m
    p[:3, 3] = t
    return p


# ---------------------------------------------------------------------------------------------
# Phantom: a sum of Gaussian blobs
# ---------------------------------------------------------------------------------------------


@dataclass
class _Blobs:
    centres: np.ndarray  # (J, 3) Å, (x, y, z) relative to the particle centre
    sigmas: np.ndarray  # (J,) Å
    amps: np.ndarray  # (J,) peak density


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _rod(start: np.ndarray, direction: np.ndarray, length: float, sigma: float) -> list:
    n = max(2, int(math.ceil(length / (1.1 * sigma))) + 1)
    return [(start + direction * length * t, sigma, 1.0) for t in np.linspace(0.0, 1.0, n)]


def _spiral(radius: float, pitch: float, turns: float, sigma: float, z0: float) -> list:
    """Right-handed helix about z (counter-clockwise seen from +z while rising)."""
    length = turns * math.hypot(2 * math.pi * radius, pitch)
    n = max(3, int(math.ceil(length / (1.1 * sigma))) + 1)
    out = []
    for t in np.linspace(0.0, turns, n):
        phi = 2 * math.pi * t
        out.append(
            (np.array([radius * math.cos(phi), radius * math.sin(phi), z0 + pitch * t]), sigma, 1.0)
        )
    return out


def _domain(centre: np.ndarray, sigma: float, n_sat: int, rng: np.random.Generator) -> list:
    out = [(centre, sigma, 0.8)]
    for _ in range(n_sat):
        out.append((centre + _unit(rng) * 0.9 * sigma, 0.55 * sigma, 0.6))
    return out


def _subunit(
    R: float, v: float, rng: np.random.Generator, scale: float, offset: np.ndarray
) -> list:
    """An asymmetric unit: a domain, two rods and a short spiral arc, around ``offset``."""
    sig = 1.0 * v
    blobs = _domain(offset, max(1.6 * v, 0.16 * R * scale), 4, rng)
    for _ in range(2):
        d = _unit(rng)
        length = (0.35 + 0.25 * rng.random()) * R * scale
        start = offset + _unit(rng) * 0.2 * R * scale - d * 0.5 * length
        blobs += _rod(start, d, length, sig)
    arc = _spiral(0.12 * R * scale, 0.2 * R * scale, 0.9, sig, -0.1 * R * scale)
    blobs += [(c + offset + np.array([0.0, 0.0, 0.15 * R * scale]), s, a) for c, s, a in arc]
    return blobs


def _parse_symmetry(symmetry: str) -> tuple[str, int]:
    s = symmetry.strip().upper()
    if len(s) >= 2 and s[0] in "CD" and s[1:].isdigit() and int(s[1:]) >= 1:
        return s[0], int(s[1:])
    raise ValueError(f"symmetry '{symmetry}': only Cn and Dn phantoms are supported")


def _phantom_blobs(box: int, voxel_size: float, symmetry: str = "C1", seed: int = 0) -> _Blobs:
    """The Gaussian blobs of :func:`make_phantom` (Å, relative to the centre)."""
    kind, n = _parse_symmetry(symmetry)
    rng = np.random.default_rng(seed)
    v = float(voxel_size)
    R = 0.35 * box * v  # everything within |c| + 2σ <= R
    sig = 1.0 * v  # rod / spiral blob width: band-limited at the voxel size
    blobs: list = []
    if kind == "C" and n == 1:
        # Two globular domains, a right-handed spiral and helix-like rods: chiral, no symmetry.
        blobs += _domain(np.array([0.42, 0.18, -0.30]) * R, max(1.8 * v, 0.17 * R), 5, rng)
        blobs += _domain(np.array([-0.35, -0.40, 0.25]) * R, max(1.4 * v, 0.12 * R), 3, rng)
        blobs += _spiral(0.28 * R, 0.35 * R, 1.6, sig, -0.30 * R)
        for _ in range(5):
            d = _unit(rng)
            length = (0.45 + 0.35 * rng.random()) * R
            c = _unit(rng) * 0.45 * R * rng.random() ** (1 / 3)
            blobs += _rod(c - 0.5 * length * d, d, length, sig)
        rings = [np.eye(3)]
    else:
        scale = min(1.0, 1.6 * math.sin(math.pi / max(n, 2)))
        zoff = 0.25 * R if kind == "D" else 0.0
        offset = np.array([0.45 * R, 0.0, zoff])
        blobs += _subunit(R, v, rng, scale, offset)
        rings = [_rz(360.0 * k / n) for k in range(n)]
        if kind == "D":
            rings = rings + [_rx(180.0) @ r for r in rings]
    centres = np.array([b[0] for b in blobs], dtype=np.float64)
    sigmas = np.array([b[1] for b in blobs], dtype=np.float64)
    amps = np.array([b[2] for b in blobs], dtype=np.float64)
    # Centre of mass at the origin (the mass of a blob is ∝ a·σ³).  Symmetric phantoms keep
    # their axis: only z is re-centred for Cn; Dn is already centred.
    mass = amps * sigmas**3
    com = (centres * mass[:, None]).sum(0) / mass.sum()
    if kind == "C" and n == 1:
        centres = centres - com
    elif kind == "C":
        centres[:, 2] -= com[2]
    # Fit inside the sphere of radius R.
    reach = np.linalg.norm(centres, axis=1) + 2 * sigmas
    if reach.max() > R:
        f = (R - 2 * sigmas.max()) / max(np.linalg.norm(centres, axis=1).max(), 1e-9)
        centres = centres * min(1.0, f)
    if len(rings) > 1:
        centres = np.concatenate([centres @ r.T for r in rings])
        sigmas = np.tile(sigmas, len(rings))
        amps = np.tile(amps, len(rings))
    return _Blobs(centres, sigmas, amps)


def _render(blobs: _Blobs, box: int, voxel_size: float) -> np.ndarray:
    """Sample the blobs on the box³ grid [z, y, x]; voxel box//2 is the origin."""
    x = (np.arange(box, dtype=np.float64) - box // 2) * voxel_size
    s2 = 2 * blobs.sigmas[:, None] ** 2
    gx = np.exp(-((x[None, :] - blobs.centres[:, 0:1]) ** 2) / s2)
    gy = np.exp(-((x[None, :] - blobs.centres[:, 1:2]) ** 2) / s2)
    gz = np.exp(-((x[None, :] - blobs.centres[:, 2:3]) ** 2) / s2) * blobs.amps[:, None]
    zy = (gz[:, :, None] * gy[:, None, :]).reshape(len(blobs.amps), box * box)
    return (zy.T @ gx).reshape(box, box, box).astype(np.float32)


def make_phantom(box: int, voxel_size: float, symmetry: str = "C1", seed: int = 0) -> np.ndarray:
    """Protein-like density (z, y, x) float32, positive, centred at voxel box//2.

    A sum of Gaussian blobs (σ ≥ 1 voxel, so the map is band-limited at the voxel
    size): helix-like rods of small blobs, a right-handed spiral and globular domains,
    all inside a sphere of radius 0.35·box.  ``'C1'`` gives a chiral, asymmetric
    object; ``'Cn'`` repeats an asymmetric unit n times about the z axis and ``'Dn'``
    adds the two-fold about x (RELION's point-group axes).  The centre of mass is at
    the centre voxel.
    """
    return _render(_phantom_blobs(box, voxel_size, symmetry, seed), box, voxel_size)


# ---------------------------------------------------------------------------------------------
# Image formation
# ---------------------------------------------------------------------------------------------


def _wavelength(voltage_kv: float) -> float:
    v = voltage_kv * 1e3
    return 12.2643247 / math.sqrt(v * (1.0 + 0.978466e-6 * v))


def _signed(n: int) -> np.ndarray:
    i = np.arange(n)
    return np.where(i < n // 2, i, i - n).astype(np.float64)


def _patch_size(box: int, binning: float) -> int:
    """Side of the simulated patch (unbinned pixels): twice the extraction window, even."""
    return 2 * int(binning * box + 0.5)


def _c_round(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, np.floor(x + 0.5), np.ceil(x - 0.5))


def _powers(z: np.ndarray, n: int) -> np.ndarray:
    """z**k, k = 0..n-1, along a new axis 1: (F, J) -> (F, n, J) (running product, error ~k·eps)."""
    out = np.empty((z.shape[0], n, z.shape[1]), dtype=np.complex128)
    out[:, 0, :] = 1.0
    if n > 1:
        np.cumprod(
            np.broadcast_to(z[:, None, :], (z.shape[0], n - 1, z.shape[1])),
            axis=1,
            out=out[:, 1:, :],
        )
    return out


def _projection_spectra(
    blobs: _Blobs, R: np.ndarray, delta: np.ndarray, px: float, voxel_size: float, P: int
) -> np.ndarray:
    """Unnormalised DFT (rfft2 layout, (F, P, P//2+1)) of each tilt's projection (P even).

    ``R`` (F, 3, 3): rotations M_f·A taking particle-frame vectors to (image x, image y,
    depth).  ``delta`` (F, 2): the sub-pixel offset of the projected centre from patch
    pixel 0.  The projection is ∫ρ dz / voxel_size (the map summed along the beam).
    """
    u = np.einsum("fij,nj->fni", R[:, :2, :], blobs.centres) / px + delta[:, None, :]  # (F,J,2) px
    s = blobs.sigmas / px  # blob widths in pixels
    # The line integral of blob j is the 2D Gaussian b·exp(-|u-u_j|²/2s²), b = a·sqrt(2π)·σ/voxel;
    # its DFT at integer frequency k is b·2π s²·exp(-2π² s² |k/P|²)·exp(-2πi k·u_j/P): separable
    # in (kx, ky), so the sum over the blobs is one matrix product per tilt.
    w = blobs.amps * math.sqrt(2 * math.pi) * blobs.sigmas / voxel_size * 2 * math.pi * s**2
    nh = P // 2 + 1
    k = np.arange(nh, dtype=np.float64)
    env = np.exp(-2 * math.pi**2 * (k[:, None] / P) ** 2 * s[None, :] ** 2)  # (nh, J)
    ex = (_powers(np.exp(-2j * math.pi / P * u[:, :, 0]), nh) * env).astype(np.complex64)
    py = _powers(np.exp(-2j * math.pi / P * u[:, :, 1]), nh) * (env * w)
    # Rows in FFT order: ky = 0..P/2-1, then -P/2..-1 (conjugates of the positive powers).
    ey = np.empty((u.shape[0], P, u.shape[1]), dtype=np.complex64)
    ey[:, : P // 2] = py[:, : P // 2]
    ey[:, P // 2 :] = np.conj(py[:, P // 2 : 0 : -1])
    return np.matmul(ey, ex.transpose(0, 2, 1))


class _Filter:
    """−CTF·dose on the (F, P, P//2+1) rfft2 grid of one tilt series (spec §3.4, §3.5).

    Per-tilt defoci U, V in Å (underfocus positive), astigmatism angle in degrees (from
    image x to U), pre-exposure in e/Å².  :meth:`__call__` adds a per-tilt defocus
    offset Δz (Å) to both U and V.  ``ctf=False``: −dose only.
    """

    def __init__(
        self,
        P: int,
        px: float,
        defu,
        defv,
        angle,
        pre_exposure,
        voltage: float,
        cs: float,
        q0: float,
        scale,
        ctf: bool,
        dose_weighting: bool,
    ):
        fy = _signed(P)[:, None] / (P * px)
        fx = np.arange(P // 2 + 1, dtype=np.float64)[None, :] / (P * px)
        k2 = fx**2 + fy**2
        nf = len(defu)
        amp = np.ones((nf,) + k2.shape)
        if dose_weighting:
            with np.errstate(divide="ignore"):
                ne = 0.245 * np.sqrt(k2) ** -1.665 + 2.81
            amp *= np.exp(-np.asarray(pre_exposure)[:, None, None] / (2 * ne[None]))
        self.ctf = ctf
        if ctf:
            lam = _wavelength(voltage)
            self.k1 = math.pi * lam
            k2c = 0.5 * math.pi * (cs * 1e7) * lam**3
            k3 = math.atan(q0 / math.sqrt(1 - q0 * q0))
            a = np.radians(np.asarray(angle))[:, None, None]
            ca, sa = np.cos(a), np.sin(a)
            df = (
                np.asarray(defu)[:, None, None] * (ca * fx + sa * fy) ** 2
                + np.asarray(defv)[:, None, None] * (-sa * fx + ca * fy) ** 2
            )
            # gamma = -K1·Δf + K2·k⁴ - K3; CTF = -sin(gamma)·scale, and the image gets -CTF.
            self.gamma0 = (-self.k1 * df + k2c * k2**2 - k3).astype(np.float32)
            self.k1k2 = (self.k1 * k2).astype(np.float32)
            amp *= np.asarray(scale)[:, None, None]
        else:
            amp = -amp
        self.amp = amp.astype(np.float32)

    def __call__(self, dz: np.ndarray) -> np.ndarray:
        if not self.ctf:
            return self.amp
        gamma = self.gamma0 - np.asarray(dz, dtype=np.float32)[:, None, None] * self.k1k2
        return self.amp * np.sin(gamma)


def _add_patch(img: np.ndarray, patch: np.ndarray, x0: int, y0: int) -> None:
    """img[y0:y0+P, x0:x0+P] += patch, clipped at the image edges."""
    H, W = img.shape
    P = patch.shape[0]
    ya, yb = max(y0, 0), min(y0 + P, H)
    xa, xb = max(x0, 0), min(x0 + P, W)
    if ya < yb and xa < xb:
        img[ya:yb, xa:xb] += patch[ya - y0 : yb - y0, xa - x0 : xb - x0]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int = 6) -> np.ndarray:
    """A smooth random field with unit standard deviation (low-order cosine series)."""
    H, W = shape
    i = np.arange(cells)
    cy = np.cos(math.pi * i[:, None] * ((np.arange(H) + 0.5) / H)[None, :])  # (cells, H)
    cx = np.cos(math.pi * i[:, None] * ((np.arange(W) + 0.5) / W)[None, :])  # (cells, W)
    c = rng.normal(size=(cells, cells)) / (1.0 + i[:, None] ** 2 + i[None, :] ** 2)
    c[0, 0] = 0.0
    f = cy.T @ c @ cx
    return f / max(f.std(), 1e-12)


# ---------------------------------------------------------------------------------------------
# STAR / MRC writing (deterministic: no time stamps)
# ---------------------------------------------------------------------------------------------


@overload
def _q(x: float) -> float: ...
@overload
def _q(x: np.ndarray) -> np.ndarray: ...
def _q(x: float | np.ndarray) -> float | np.ndarray:
    """Round to what ``%.6f`` prints, so that the simulation uses the values as written."""
    if np.ndim(x) == 0:
        return float(f"{float(x):.6f}")
    return np.array([float(f"{float(v):.6f}") for v in np.ravel(x)]).reshape(np.shape(x))


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6f}"
    s = str(v)
    return f'"{s}"' if (" " in s or not s) else s


_Block = tuple[str, dict[str, Any], bool]  # (name, {label: value or list}, is_loop)


def _star_text(blocks: list[_Block]) -> str:
    """Blocks as (name, {label: value or list}, is_loop)."""
    lines = ["", "# version 50001", ""]
    for name, data, loop in blocks:
        lines += [f"data_{name}", ""]
        if loop:
            lines.append("loop_")
            labels = list(data)
            lines += [f"_{lab} #{i + 1}" for i, lab in enumerate(labels)]
            n = len(data[labels[0]]) if labels else 0
            for r in range(n):
                lines.append("  ".join(_fmt(data[lab][r]) for lab in labels))
        else:
            lines += [f"_{lab}  {_fmt(val)}" for lab, val in data.items()]
        lines += ["", ""]
    return "\n".join(lines)


def _write_star(path: Path, blocks: list[_Block]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_star_text(blocks))


def _write_mrc(path: Path, data: np.ndarray, voxel_size: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(data, dtype=np.float32))
        if data.ndim == 3 and path.suffix == ".mrcs":
            m.set_image_stack()
        m.voxel_size = float(voxel_size)  # set_data set the header's statistics
        m.header.label[0] = b"napari_subtomo_recon.simulate"
        m.header.nlabl = 1


def _vec(row: np.ndarray) -> str:
    return "[" + ",".join(repr(float(v)) for v in row) + "]"


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationConfig:
    """Everything :func:`simulate` can vary, with its defaults (the built-in sample data set).

    **Geometry.**  ``n_tomograms`` tilt series of ``n_tilts`` tilts each, at nominal angles
    k·step (step = ``tilt_max`` / (n_tilts // 2)), acquired in dose-symmetric order.  Sizes:
    ``image_size = (W, H)`` tilt images, ``tomo_size = (X, Y, Z)``, both in unbinned pixels
    of ``pixel_size`` Å (``odd_sizes`` makes all of them odd); the phantom has ``box``
    voxels (even) of ``pixel_size·binning`` Å.  The stage tilt ``rlnTomoYTilt`` = nominal +
    ``tilt_offset`` (+ jitter), ``rlnTomoXTilt`` ≈ ``x_tilt``, ``rlnTomoZRot`` ≈
    ``tilt_axis`` and shifts ~N(0, ``shift_sigma``) Å, each slightly different per tomogram
    and frame.  ``hand`` (+1 or −1) is ``rlnTomoHand``, the sign of the depth offset.

    **Optics.**  ``voltage`` (kV), ``cs`` (mm), amplitude contrast ``q0``; ``defocus`` is the
    range of the mean defocus per tomogram (Å, underfocus positive), ``astigmatism`` =
    DefocusU − DefocusV (Å); each tilt receives ``dose_per_tilt`` e/Å².

    **Particles.**  ``particles_per_tomogram`` copies of a phantom with point group
    ``symmetry`` (``'C1'``, ``'Cn'`` or ``'Dn'``), at random positions and orientations.
    ``half_sets`` writes ``rlnRandomSubset`` (1 and 2, balanced per tomogram); ``motion``
    writes ``motion.star`` and draws the particles at ``pos + shift_f/px`` (smooth shifts of
    rms ``motion_amplitude`` Å); ``origins`` writes small non-zero ``rlnOrigin*Angst``;
    ``subtomo_angles`` writes random ``rlnTomoSubtomogram*`` angles (orientation
    ``A_sub·A_part``, origins rotated by ``A_sub``).

    **Noise.**  ``snr`` is the per-pixel signal-to-noise ratio (variance ratio) of a particle
    in the least-exposed tilt: the mean-square of the CTF-modulated particle signal inside its
    disc over the noise variance.  ``noise=False``: no noise and no background;
    ``background=False``: white noise only (no smooth background).

    **File layout.**  Rows of a tilt-series star file are in acquisition (dose-symmetric)
    order; the stack holds the frames sorted by tilt angle (``stack_layout='stack'``) or
    there is one ``.mrc`` per tilt (``stack_layout='per_tilt_files'``).  ``relion4`` writes
    the RELION 4 format instead (projection matrices, ``rlnCoordinate*`` in pixels, stack in
    row order).

    **Test switches.**  ``ctf=False`` (image = −projection), ``dose_weighting=False``;
    ``particle_coords`` (N, 3) true particle centres (Å from the tomogram centre, i.e. after
    the origin offsets) and ``particle_angles`` (N, 3) rot/tilt/psi in degrees override the
    random particles (N = n_tomograms·particles_per_tomogram, in file order).
    ``deformation(tomogram, c2)`` moves the projected centres c2 (nf, 2) (unbinned pixels,
    row f = frame f) before drawing, as a 2D image deformation from Polish does; the
    ``rlnTomoDeformation*`` labels are the caller's to write.

    **Randomness.**  ``numpy.random.default_rng((seed, tomogram, quantity))``, one stream per
    tomogram and quantity (tilt geometry, positions, angles, ...), so the same seed gives the
    same geometry and particles whatever the switches above (``ctf``, ``motion``,
    ``particle_angles``, ...).

    The constructor checks the combinations RELION cannot read (``ValueError``).
    """

    # --- geometry
    n_tomograms: int = 2
    n_tilts: int = 31
    tilt_max: float = 60.0  # degrees
    pixel_size: float = 2.0  # Å, the tilt-series pixel size
    image_size: tuple[int, int] = (512, 512)  # (W, H) unbinned pixels
    tomo_size: tuple[int, int, int] = (512, 512, 200)  # (X, Y, Z) unbinned pixels
    box: int = 48  # phantom box (binned voxels), even
    binning: float = 2.0
    odd_sizes: bool = False
    hand: float = 1.0
    tilt_axis: float = 85.0  # degrees
    tilt_offset: float = 0.5  # degrees
    x_tilt: float = 0.3  # degrees
    shift_sigma: float = 30.0  # Å
    # --- optics
    voltage: float = 300.0  # kV
    cs: float = 2.7  # mm
    q0: float = 0.1
    defocus: tuple[float, float] = (30000.0, 40000.0)  # Å
    astigmatism: float = 300.0  # Å
    dose_per_tilt: float = 3.0  # e/Å²
    # --- particles
    particles_per_tomogram: int = 40
    symmetry: str = "C1"
    half_sets: bool = True
    motion: bool = False
    motion_amplitude: float = 3.0  # Å
    origins: bool = False
    subtomo_angles: bool = False
    # --- noise
    snr: float = 3.0
    noise: bool = True
    background: bool = True
    # --- file layout
    stack_layout: str = "stack"  # or 'per_tilt_files'
    relion4: bool = False
    # --- test switches
    ctf: bool = True
    dose_weighting: bool = True
    particle_coords: ArrayLike | None = None  # (N, 3) Å from the tomogram centre
    particle_angles: ArrayLike | None = None  # (N, 3) rot, tilt, psi in degrees
    # (tomogram index, projected centres (nf, 2)) -> where the particle is drawn (nf, 2)
    deformation: Callable[[int, np.ndarray], np.ndarray] | None = None
    # --- randomness
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stack_layout not in ("stack", "per_tilt_files"):
            raise ValueError(
                f"stack_layout must be 'stack' or 'per_tilt_files', not {self.stack_layout!r}"
            )
        if self.relion4 and self.stack_layout != "stack":
            raise ValueError("the RELION 4 format stores each tilt series as one stack")
        if self.box % 2:
            raise ValueError("box must be even (RELION's reconstruction assumes it)")
        if self.hand not in (1.0, -1.0):
            raise ValueError("hand must be +1 or -1")


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


@dataclass
class SimulatedDataset:
    """A simulated data set.  All paths written inside it are relative to ``root``:
    run the reconstruction **from ``root``** (``cd root``)."""

    root: Path
    optimisation_set: Path  # root/optimisation_set.star
    tomograms: Path  # root/tomograms.star
    particles: Path  # root/particles.star
    trajectories: Path | None  # root/motion.star if written
    ground_truth: Path  # root/ground_truth.mrc (voxel size pixel_size*binning, centre box//2)
    box: int  # suggested --b
    binning: float  # suggested --bin
    pixel_size: float  # tilt-series pixel size, Å
    symmetry: str  # symmetry of the phantom, suggested --sym

    def command(self, out_dir: str) -> list[str]:
        """RELION-style arguments (paths relative to ``root``; run from ``root``)."""
        return [
            "--i",
            os.path.relpath(self.optimisation_set, self.root),
            "--o",
            str(out_dir),
            "--b",
            str(self.box),
            "--bin",
            f"{self.binning:g}",
            "--sym",
            self.symmetry,
        ]


def simulate(
    root: str | os.PathLike[str], config: SimulationConfig | None = None, **overrides: Any
) -> SimulatedDataset:
    """Write a simulated RELION-5 data set under ``root`` and return its description.

    ``config`` (default ``SimulationConfig()``) holds the parameters; keyword ``overrides``
    replace single fields of it, so ``simulate(root, n_tomograms=3, motion=True)`` is
    ``simulate(root, SimulationConfig(n_tomograms=3, motion=True))``.  See
    :class:`SimulationConfig` for what each parameter does.

    The steps, per tomogram unless noted: the phantom and its ground-truth map (once); the
    geometry and CTF parameters of the tilt series; the particles (positions, angles,
    origins, half sets); the image of each particle in each tilt (analytic projection,
    −CTF·dose, added to the tilt images); then, once the signal level of all particles is
    known, noise and background; the tilt images; the star files (tomograms, tilt series,
    particles, trajectories, optimisation set).
    """
    cfg = _configure(config, overrides)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sizes = _sizes(cfg)
    blobs = _phantom_blobs(cfg.box, sizes.vs, cfg.symmetry.strip(), cfg.seed)
    _write_mrc(root / "ground_truth.mrc", _render(blobs, cfg.box, sizes.vs), sizes.vs)
    coords, angles = _explicit_particles(cfg)

    series: list[_TiltSeries] = []
    rows = _StarRows()
    signal_ms: list[float] = []
    for ti in range(cfg.n_tomograms):
        ts = _tilt_series(cfg, sizes, ti)
        particles = _tomogram_particles(cfg, sizes, ti, coords, angles)
        signal_ms += _image_particles(cfg, sizes, blobs, ts, particles, rows)
        series.append(ts)

    sigma_n = _noise_sigma(cfg, signal_ms)
    for ts in series:
        _add_noise(ts.images, sigma_n, cfg.background, _rng(cfg.seed, ts.index, 7))
        ts.refs = _write_tilt_images(root, ts, cfg.stack_layout, sizes.px)

    trajectories = _write_star_files(root, cfg, sizes, series, rows)
    return SimulatedDataset(
        root=root,
        optimisation_set=root / "optimisation_set.star",
        tomograms=root / "tomograms.star",
        particles=root / "particles.star",
        trajectories=trajectories,
        ground_truth=root / "ground_truth.mrc",
        box=int(cfg.box),
        binning=sizes.binning,
        pixel_size=sizes.px,
        symmetry=cfg.symmetry.strip(),
    )


def _configure(config: SimulationConfig | None, overrides: dict[str, Any]) -> SimulationConfig:
    """``config`` (or the defaults) with ``overrides`` replacing single fields."""
    return dataclasses.replace(config if config is not None else SimulationConfig(), **overrides)


# ---------------------------------------------------------------------------------------------
# Steps of the simulation
# ---------------------------------------------------------------------------------------------


def _rng(seed: int, *key: int) -> np.random.Generator:
    """One stream per tomogram and quantity: options that add random draws (motion, origins,
    ...) or explicit particles do not change the rest of a seed's data set."""
    return np.random.default_rng((seed,) + key)


@dataclass(frozen=True)
class _Sizes:
    """Sizes derived from the configuration (unbinned pixels unless noted)."""

    px: float  # tilt-series pixel size, Å
    binning: float
    vs: float  # voxel size of the phantom, Å (px·binning)
    image_size: tuple[int, int]  # (W, H), odd if asked for
    tomo_size: tuple[int, int, int]  # (X, Y, Z), odd if asked for
    centre: np.ndarray  # (3,) tomo_size / 2.0
    patch: int  # P: side of the simulated patch of one particle image
    disc: np.ndarray  # (P, P) bool: the particle's disc in a patch (for the signal level)


def _sizes(cfg: SimulationConfig) -> _Sizes:
    px = float(cfg.pixel_size)
    binning = float(cfg.binning)
    W, H = (int(v) for v in cfg.image_size)
    X, Y, Z = (int(v) for v in cfg.tomo_size)
    if cfg.odd_sizes:
        W, H = W - 1 + W % 2, H - 1 + H % 2
        X, Y, Z = (t - 1 + t % 2 for t in (X, Y, Z))
    P = _patch_size(cfg.box, binning)
    r_disc = 0.35 * cfg.box * binning  # particle radius in unbinned pixels
    yy, xx = np.mgrid[0:P, 0:P]
    return _Sizes(
        px=px,
        binning=binning,
        vs=px * binning,
        image_size=(W, H),
        tomo_size=(X, Y, Z),
        centre=np.array((X, Y, Z), dtype=np.float64) / 2.0,
        patch=P,
        disc=(xx - P // 2) ** 2 + (yy - P // 2) ** 2 <= r_disc**2,
    )


def _explicit_particles(cfg: SimulationConfig) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``particle_coords`` and ``particle_angles`` as (N, 3) float64 arrays (or None)."""
    n_total = cfg.n_tomograms * cfg.particles_per_tomogram
    coords = angles = None
    if cfg.particle_coords is not None:
        coords = np.asarray(cfg.particle_coords, dtype=np.float64).reshape(n_total, 3)
    if cfg.particle_angles is not None:
        angles = np.asarray(cfg.particle_angles, dtype=np.float64).reshape(n_total, 3)
    return coords, angles


# --- the tilt series --------------------------------------------------------------------------


@dataclass
class _TiltSeries:
    """One tilt series as written: per-frame arrays (nf,) in row (acquisition) order."""

    index: int  # tomogram number (0-based), the key of its random streams
    name: str
    nominal: np.ndarray  # nominal stage tilt, degrees
    xt: np.ndarray  # rlnTomoXTilt, degrees
    yt: np.ndarray  # rlnTomoYTilt, degrees
    zr: np.ndarray  # rlnTomoZRot, degrees
    xs: np.ndarray  # rlnTomoXShiftAngst
    ys: np.ndarray  # rlnTomoYShiftAngst
    defu: np.ndarray  # rlnDefocusU, Å
    defv: np.ndarray  # rlnDefocusV, Å
    dang: np.ndarray  # rlnDefocusAngle, degrees
    pre: np.ndarray  # rlnMicrographPreExposure, e/Å²
    ctf_scale: np.ndarray  # rlnCtfScalefactor
    proj: np.ndarray  # (nf, 4, 4) P_f (spec §2.1)
    stack_idx: list[int]  # position of each frame in the stack
    images: np.ndarray  # (nf, H, W) float32 tilt images, in row order
    refs: list[str] = dataclasses.field(default_factory=list)  # rlnMicrographName per frame


def _tilt_series(cfg: SimulationConfig, sizes: _Sizes, ti: int) -> _TiltSeries:
    """Tilt angles, shifts, defoci and doses of tomogram ``ti`` (rows in acquisition =
    dose-symmetric order), its projection matrices and empty images."""
    nf = cfg.n_tilts
    nominal = np.array(_dose_symmetric_order(nf), dtype=np.float64) * (
        cfg.tilt_max / max(1, nf // 2)
    )
    rng = _rng(cfg.seed, ti, 0)
    xt, yt, zr, xs, ys = _tilt_geometry(cfg, nominal, rng)
    defu, defv, dang = _tilt_defoci(cfg, nf, rng)
    proj = np.array(
        [
            _projection_matrix(
                xt[f], yt[f], zr[f], xs[f], ys[f], sizes.px, sizes.tomo_size, sizes.image_size
            )
            for f in range(nf)
        ]
    )
    W, H = sizes.image_size
    return _TiltSeries(
        index=ti,
        name=f"TS_{ti + 1:02d}",
        nominal=nominal,
        xt=xt,
        yt=yt,
        zr=zr,
        xs=xs,
        ys=ys,
        defu=defu,
        defv=defv,
        dang=dang,
        pre=_q(np.arange(nf) * cfg.dose_per_tilt),
        ctf_scale=np.ones(nf),
        proj=proj,
        stack_idx=_stack_order(nominal, cfg.relion4),
        images=np.zeros((nf, H, W), dtype=np.float32),
    )


def _tilt_geometry(
    cfg: SimulationConfig, nominal: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(xt, yt, zr, xs, ys) per frame, as written: the nominal tilts with a per-tomogram
    offset and per-frame jitter, the tilt axis and the shifts (the first draws of ``rng``)."""
    nf = len(nominal)
    off_t = cfg.tilt_offset + rng.normal(0.0, 0.1)
    yt = _q(nominal + off_t + rng.normal(0.0, 0.05, nf))
    xt = _q(np.full(nf, cfg.x_tilt + rng.normal(0.0, 0.05)))
    zr = _q(cfg.tilt_axis + rng.normal(0.0, 0.5) + rng.normal(0.0, 0.2, nf))
    xs = _q(rng.normal(0.0, cfg.shift_sigma, nf))
    ys = _q(rng.normal(0.0, cfg.shift_sigma, nf))
    return xt, yt, zr, xs, ys


def _tilt_defoci(
    cfg: SimulationConfig, nf: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(DefocusU, DefocusV, DefocusAngle) per frame, as written: a mean defocus per tomogram
    in the ``defocus`` range with per-frame jitter (the draws after :func:`_tilt_geometry`)."""
    mean_def = rng.uniform(min(cfg.defocus), max(cfg.defocus))
    dmean = mean_def + rng.normal(0.0, 150.0, nf)
    ast = cfg.astigmatism * (1.0 + rng.normal(0.0, 0.1))
    defu = _q(dmean + 0.5 * ast)
    defv = _q(dmean - 0.5 * ast)
    dang = _q(rng.uniform(-90.0, 90.0) + rng.normal(0.0, 2.0, nf))
    return defu, defv, dang


def _stack_order(nominal: np.ndarray, relion4: bool) -> list[int]:
    """Position of each frame in the stack: sorted by tilt angle (R5); row order (R4)."""
    nf = len(nominal)
    if relion4:
        return list(range(nf))
    stack_idx = [0] * nf
    for pos_in_stack, f in enumerate(np.argsort(nominal, kind="stable")):
        stack_idx[int(f)] = pos_in_stack
    return stack_idx


# --- the particles ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Particles:
    """The particles of one tomogram, (n, ...) arrays in file order."""

    true_pos: np.ndarray  # (n, 3) true centres, tomogram pixels (after the origin offsets)
    ang: np.ndarray  # (n, 3) rlnAngleRot/Tilt/Psi, degrees
    sub: np.ndarray | None  # (n, 3) rlnTomoSubtomogramRot/Tilt/Psi, or None
    orig: np.ndarray  # (n, 3) rlnOrigin*Angst
    subsets: np.ndarray | None  # (n,) rlnRandomSubset, or None


def _tomogram_particles(
    cfg: SimulationConfig,
    sizes: _Sizes,
    ti: int,
    coords: np.ndarray | None,
    angles: np.ndarray | None,
) -> _Particles:
    """Positions, angles, origins and half sets of the particles of tomogram ``ti``."""
    n = cfg.particles_per_tomogram
    first = ti * n
    if coords is not None:
        true_pos = coords[first : first + n] / sizes.px + sizes.centre
    else:
        true_pos = _positions(
            _rng(cfg.seed, ti, 1),
            n,
            sizes.tomo_size,
            sizes.image_size,
            min_dist=0.65 * cfg.box * sizes.binning,
        )
    if angles is not None:
        ang = _q(angles[first : first + n])
    else:
        ang = _q(_random_angles(_rng(cfg.seed, ti, 2), n))
    sub = _q(_random_angles(_rng(cfg.seed, ti, 3), n)) if cfg.subtomo_angles else None
    orig = (
        _q(_rng(cfg.seed, ti, 4).uniform(-2.0, 2.0, (n, 3)) * sizes.vs)
        if cfg.origins
        else np.zeros((n, 3))
    )
    subsets = None
    if cfg.half_sets:
        subsets = _rng(cfg.seed, ti, 5).permutation(np.array([1, 2] * ((n + 1) // 2))[:n])
    return _Particles(true_pos=true_pos, ang=ang, sub=sub, orig=orig, subsets=subsets)


def _pose(
    cfg: SimulationConfig, sizes: _Sizes, particles: _Particles, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, coord, pos) of particle k: orientation A = A_sub·A_part, the coordinate as written
    and the position (tomogram pixels) that the written values give (spec §2.3, §2.6)."""
    a_sub = _euler(*particles.sub[k]) if particles.sub is not None else np.eye(3)
    A = a_sub @ _euler(*particles.ang[k])
    # Written coordinate p0 with pos = p0 − A_sub·origin/px; quantise p0 as written.
    p0 = particles.true_pos[k] + a_sub @ particles.orig[k] / sizes.px
    if cfg.relion4:
        coord = _q(p0)
        p0 = coord
    else:
        coord = _q((p0 - sizes.centre) * sizes.px)
        p0 = coord / sizes.px + sizes.centre
    pos = p0 - a_sub @ particles.orig[k] / sizes.px
    return A, coord, pos


# --- projection, CTF and dose per tilt --------------------------------------------------------


def _image_particles(
    cfg: SimulationConfig,
    sizes: _Sizes,
    blobs: _Blobs,
    ts: _TiltSeries,
    particles: _Particles,
    rows: _StarRows,
) -> list[float]:
    """Add every particle of the tomogram to its tilt images and its rows to ``rows``.

    Returns, per particle, the mean-square signal inside its disc in the least-exposed tilt.
    """
    nf = len(ts.pre)
    filt = _Filter(
        sizes.patch,
        sizes.px,
        ts.defu,
        ts.defv,
        ts.dang,
        ts.pre,
        cfg.voltage,
        cfg.cs,
        cfg.q0,
        ts.ctf_scale,
        cfg.ctf,
        cfg.dose_weighting,
    )
    rng_mot = _rng(cfg.seed, ts.index, 6)
    f0 = int(np.argmin(ts.pre))
    signal_ms = []
    for k in range(cfg.particles_per_tomogram):
        A, coord, pos = _pose(cfg, sizes, particles, k)
        shifts = (
            _q(_smooth_shifts(rng_mot, nf, cfg.motion_amplitude))
            if cfg.motion
            else np.zeros((nf, 3))
        )
        vis, patches = _image_particle(cfg, sizes, blobs, ts, filt, A, pos, shifts)
        signal_ms.append(float((patches[f0][sizes.disc] ** 2).mean()))
        pname = f"{ts.name}/{k + 1}"
        rows.add_particle(_particle_row(cfg, ts.name, pname, coord, particles, k, vis))
        if cfg.motion:
            rows.add_trajectory(pname, shifts)
    return signal_ms


def _image_particle(
    cfg: SimulationConfig,
    sizes: _Sizes,
    blobs: _Blobs,
    ts: _TiltSeries,
    filt: _Filter,
    A: np.ndarray,
    pos: np.ndarray,
    shifts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Add one particle (orientation A, position ``pos`` in tomogram pixels, per-frame
    ``shifts`` (nf, 3) Å) to the tilt images of ``ts``.

    Returns its visibility per frame (nf,) bool and its patches (nf, P, P).
    """
    P, px = sizes.patch, sizes.px
    M = ts.proj[:, :3, :3]
    traj = pos[None, :] + shifts / px
    c2 = np.einsum("fij,fj->fi", ts.proj[:, :2, :3], traj) + ts.proj[:, :2, 3]
    if cfg.deformation is not None:
        c2 = np.asarray(cfg.deformation(ts.index, c2), dtype=np.float64)
    depth = M[:, 2, :] @ (pos - sizes.centre)
    dz = cfg.hand * px * depth
    vis = _visible(c2, cfg.box, sizes.image_size)
    i0 = _c_round(c2)
    delta = c2 - i0
    R = np.einsum("fij,jk->fik", M, A)
    spec = _projection_spectra(blobs, R, delta, px, sizes.vs, P)
    spec *= filt(dz)
    patches = sfft.irfft2(spec, s=(P, P), axes=(1, 2), workers=2)
    patches = np.fft.fftshift(patches, axes=(1, 2))
    for f in range(len(patches)):
        _add_patch(ts.images[f], patches[f], int(i0[f, 0]) - P // 2, int(i0[f, 1]) - P // 2)
    return vis, patches


def _visible(c2: np.ndarray, box: int, image_size: tuple[int, int]) -> np.ndarray:
    """Visibility as RELION computes it (margin box/2 in unbinned pixels): (nf,) bool."""
    W, H = image_size
    return (
        (c2[:, 0] > box / 2.0)
        & (c2[:, 0] < W - box / 2.0)
        & (c2[:, 1] > box / 2.0)
        & (c2[:, 1] < H - box / 2.0)
    )


# --- rows of the particle and trajectory files ------------------------------------------------


@dataclass
class _StarRows:
    """The particle table (label -> one value per particle) and the trajectory blocks."""

    particles: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    motion: list[_Block] = dataclasses.field(default_factory=list)

    def add_particle(self, row: list[tuple[str, Any]]) -> None:
        for label, value in row:
            self.particles.setdefault(label, []).append(value)

    def add_trajectory(self, pname: str, shifts: np.ndarray) -> None:
        """The block of one particle: its shifts (nf, 3) in Å, per frame."""
        self.motion.append(
            (
                pname,
                {f"rlnOrigin{lab}Angst": list(shifts[:, ax]) for ax, lab in enumerate("XYZ")},
                True,
            )
        )


def _particle_row(
    cfg: SimulationConfig,
    tomo_name: str,
    pname: str,
    coord: np.ndarray,
    particles: _Particles,
    k: int,
    vis: np.ndarray,
) -> list[tuple[str, Any]]:
    """(label, value) of particle k's row of ``particles.star``, in column order."""
    row: list[tuple[str, Any]] = [("rlnTomoName", tomo_name), ("rlnTomoParticleName", pname)]
    if cfg.relion4:
        row += [(f"rlnCoordinate{lab}", float(coord[ax])) for ax, lab in enumerate("XYZ")]
    else:
        row += [
            (f"rlnCenteredCoordinate{lab}Angst", float(coord[ax])) for ax, lab in enumerate("XYZ")
        ]
    angle_labels = ("Rot", "Tilt", "Psi")
    row += [(f"rlnAngle{lab}", float(particles.ang[k, j])) for j, lab in enumerate(angle_labels)]
    if particles.sub is not None:
        row += [
            (f"rlnTomoSubtomogram{lab}", float(particles.sub[k, j]))
            for j, lab in enumerate(angle_labels)
        ]
    row += [(f"rlnOrigin{lab}Angst", float(particles.orig[k, ax])) for ax, lab in enumerate("XYZ")]
    row.append(("rlnOpticsGroup", 1))
    if particles.subsets is not None:
        row.append(("rlnRandomSubset", int(particles.subsets[k])))
    row.append(("rlnTomoVisibleFrames", "[" + ",".join(str(int(v)) for v in vis) + "]"))
    return row


# --- noise and the tilt images ----------------------------------------------------------------


def _noise_sigma(cfg: SimulationConfig, signal_ms: list[float]) -> float:
    """The noise standard deviation that gives ``snr`` for the mean particle signal."""
    if cfg.noise and signal_ms and cfg.snr > 0:
        return math.sqrt(np.mean(signal_ms) / cfg.snr)
    return 0.0


def _add_noise(
    images: np.ndarray, sigma_n: float, background: bool, rng: np.random.Generator
) -> None:
    """Gaussian white noise (and a smooth background) added to each (H, W) image in place."""
    if sigma_n > 0:
        nf, H, W = images.shape
        for f in range(nf):
            bg = 0.5 * sigma_n * _smooth_field(rng, (H, W)) if background else 0.0
            images[f] += (rng.normal(0.0, sigma_n, (H, W)) + bg).astype(np.float32)


def _write_tilt_images(root: Path, ts: _TiltSeries, stack_layout: str, px: float) -> list[str]:
    """Write the tilt images; returns the rlnMicrographName of each frame (row order)."""
    if stack_layout == "stack":
        ordered = np.empty_like(ts.images)
        for f, si in enumerate(ts.stack_idx):
            ordered[si] = ts.images[f]
        _write_mrc(root / "tilt_series" / f"{ts.name}.mrcs", ordered, px)
        return [f"{si + 1}@tilt_series/{ts.name}.mrcs" for si in ts.stack_idx]
    refs = []
    for f in range(ts.images.shape[0]):
        fn = f"tilt_series/{ts.name}/{ts.name}_{f + 1:03d}_{ts.nominal[f]:.1f}.mrc"
        _write_mrc(root / fn, ts.images[f], px)
        refs.append(fn)
    return refs


# --- star files -------------------------------------------------------------------------------


def _write_star_files(
    root: Path, cfg: SimulationConfig, sizes: _Sizes, series: list[_TiltSeries], rows: _StarRows
) -> Path | None:
    """Tomogram set, tilt-series files (R5), particles, trajectories and the optimisation
    set.  Returns the trajectory file (None without ``motion``)."""
    optics = _optics_table(cfg, sizes)
    if cfg.relion4:
        _write_star(root / "tomograms.star", _tomogram_blocks_r4(cfg, sizes, series))
        particle_blocks: list[_Block] = [
            ("optics", optics, True),
            ("particles", rows.particles, True),
        ]
    else:
        _write_star(root / "tomograms.star", [("global", _global_r5(cfg, sizes, series), True)])
        for ts in series:
            _write_star(
                root / "tilt_series" / f"{ts.name}.star",
                [(ts.name, _tilt_series_rows_r5(cfg, ts), True)],
            )
        particle_blocks = [
            ("general", {"rlnTomoSubTomosAre2DStacks": 1}, False),
            ("optics", optics, True),
            ("particles", rows.particles, True),
        ]
    _write_star(root / "particles.star", particle_blocks)

    trajectories = None
    opt = {"rlnTomoParticlesFile": "particles.star", "rlnTomoTomogramsFile": "tomograms.star"}
    if cfg.motion:
        trajectories = root / "motion.star"
        n_total = cfg.n_tomograms * cfg.particles_per_tomogram
        _write_star(
            trajectories, [("general", {"rlnParticleNumber": n_total}, False)] + rows.motion
        )
        opt["rlnTomoTrajectoriesFile"] = "motion.star"
    _write_star(root / "optimisation_set.star", [("", opt, False)])
    return trajectories


def _optics_table(cfg: SimulationConfig, sizes: _Sizes) -> dict[str, list[Any]]:
    return {
        "rlnOpticsGroup": [1],
        "rlnOpticsGroupName": ["optics1"],
        "rlnSphericalAberration": [float(cfg.cs)],
        "rlnVoltage": [float(cfg.voltage)],
        "rlnAmplitudeContrast": [float(cfg.q0)],
        "rlnTomoTiltSeriesPixelSize": [sizes.px],
        "rlnImagePixelSize": [sizes.vs],
        "rlnImageSize": [int(cfg.box)],
        "rlnImageDimensionality": [2],
        "rlnTomoSubtomogramBinning": [sizes.binning],
        "rlnCtfDataAreCtfPremultiplied": [1],
    }


def _tomogram_blocks_r4(
    cfg: SimulationConfig, sizes: _Sizes, series: list[_TiltSeries]
) -> list[_Block]:
    """RELION 4 ``tomograms.star``: data_global, then one block of matrices per tomogram."""
    n = cfg.n_tomograms
    g = {
        "rlnTomoName": [ts.name for ts in series],
        "rlnTomoTiltSeriesName": [f"tilt_series/{ts.name}.mrcs" for ts in series],
        "rlnTomoFrameCount": [len(ts.yt) for ts in series],
        "rlnTomoSizeX": [sizes.tomo_size[0]] * n,
        "rlnTomoSizeY": [sizes.tomo_size[1]] * n,
        "rlnTomoSizeZ": [sizes.tomo_size[2]] * n,
        "rlnTomoHand": [float(cfg.hand)] * n,
        "rlnOpticsGroupName": ["optics1"] * n,
        "rlnTomoTiltSeriesPixelSize": [sizes.px] * n,
        "rlnVoltage": [float(cfg.voltage)] * n,
        "rlnSphericalAberration": [float(cfg.cs)] * n,
        "rlnAmplitudeContrast": [float(cfg.q0)] * n,
        "rlnTomoImportFractionalDose": [float(cfg.dose_per_tilt)] * n,
    }
    blocks: list[_Block] = [("global", g, True)]
    for ts in series:
        rows = {
            "rlnTomoProjX": [_vec(p[0]) for p in ts.proj],
            "rlnTomoProjY": [_vec(p[1]) for p in ts.proj],
            "rlnTomoProjZ": [_vec(p[2]) for p in ts.proj],
            "rlnTomoProjW": [_vec(p[3]) for p in ts.proj],
            "rlnDefocusU": list(ts.defu),
            "rlnDefocusV": list(ts.defv),
            "rlnDefocusAngle": list(ts.dang),
            "rlnCtfScalefactor": list(ts.ctf_scale),
            "rlnMicrographPreExposure": list(ts.pre),
        }
        blocks.append((ts.name, rows, True))
    return blocks


def _global_r5(cfg: SimulationConfig, sizes: _Sizes, series: list[_TiltSeries]) -> dict[str, Any]:
    """data_global of the RELION 5 ``tomograms.star``: one row per tomogram."""
    n = cfg.n_tomograms
    return {
        "rlnTomoName": [ts.name for ts in series],
        "rlnVoltage": [float(cfg.voltage)] * n,
        "rlnSphericalAberration": [float(cfg.cs)] * n,
        "rlnAmplitudeContrast": [float(cfg.q0)] * n,
        "rlnMicrographOriginalPixelSize": [sizes.px / 2.0] * n,
        "rlnTomoHand": [float(cfg.hand)] * n,
        "rlnTomoTiltSeriesPixelSize": [sizes.px] * n,
        "rlnTomoTiltSeriesStarFile": [f"tilt_series/{ts.name}.star" for ts in series],
        "rlnTomoSizeX": [sizes.tomo_size[0]] * n,
        "rlnTomoSizeY": [sizes.tomo_size[1]] * n,
        "rlnTomoSizeZ": [sizes.tomo_size[2]] * n,
        "rlnOpticsGroupName": ["optics1"] * n,
        "rlnTomoImportFractionalDose": [float(cfg.dose_per_tilt)] * n,
    }


def _tilt_series_rows_r5(cfg: SimulationConfig, ts: _TiltSeries) -> dict[str, list[Any]]:
    """The RELION 5 tilt-series table: one row per frame, in acquisition order."""
    nf = len(ts.yt)
    return {
        "rlnMicrographName": ts.refs,
        "rlnTomoNominalStageTiltAngle": [float(v) for v in ts.nominal],
        "rlnTomoNominalTiltAxisAngle": [float(cfg.tilt_axis)] * nf,
        "rlnMicrographPreExposure": list(ts.pre),
        "rlnDefocusU": list(ts.defu),
        "rlnDefocusV": list(ts.defv),
        "rlnDefocusAngle": list(ts.dang),
        "rlnCtfAstigmatism": [float(u - v) for u, v in zip(ts.defu, ts.defv, strict=True)],
        "rlnCtfScalefactor": list(ts.ctf_scale),
        "rlnTomoXTilt": list(ts.xt),
        "rlnTomoYTilt": list(ts.yt),
        "rlnTomoZRot": list(ts.zr),
        "rlnTomoXShiftAngst": list(ts.xs),
        "rlnTomoYShiftAngst": list(ts.ys),
    }


# --- random draws -----------------------------------------------------------------------------


def _dose_symmetric_order(n: int) -> list[int]:
    """Tilt indices k (angle = k·step) in acquisition order: 0, +1, −1, −2, +2, +3, −3, …"""
    seq = [0]
    k = 1
    while len(seq) < n:
        seq += [k, -k] if k % 2 == 1 else [-k, k]
        k += 1
    return seq[:n]


def _random_angles(rng: np.random.Generator, n: int) -> np.ndarray:
    """(rot, tilt, psi) uniform on SO(3) (ZYZ Haar measure: cos(tilt) uniform)."""
    rot = rng.uniform(-180.0, 180.0, n)
    psi = rng.uniform(-180.0, 180.0, n)
    tilt = np.degrees(np.arccos(rng.uniform(-1.0, 1.0, n)))
    return np.stack([rot, tilt, psi], axis=1)


def _positions(
    rng: np.random.Generator, n: int, tomo_size, image_size, min_dist: float
) -> np.ndarray:
    """Particle centres (tomogram pixels), kept apart by ``min_dist`` where possible."""
    X, Y, Z = tomo_size
    W, H = image_size
    half = np.array([0.44 * min(X, W, H), 0.40 * min(Y, W, H), 0.30 * Z])
    centre = np.array(tomo_size, dtype=np.float64) / 2.0
    out: list[np.ndarray] = []
    d = min_dist
    tries = 0
    while len(out) < n:
        p = centre + rng.uniform(-1.0, 1.0, 3) * half
        if all(np.linalg.norm(p - q) >= d for q in out):
            out.append(p)
            tries = 0
        else:
            tries += 1
            if tries > 200:  # crowded: relax the spacing
                d *= 0.9
                tries = 0
    return np.array(out)


def _smooth_shifts(rng: np.random.Generator, nf: int, amplitude: float) -> np.ndarray:
    """(nf, 3) smooth shifts in Å over the acquisition (row) order."""
    t = np.linspace(0.0, 1.0, nf)
    out = np.zeros((nf, 3))
    for ax in range(3):
        for j in range(1, 4):
            out[:, ax] += rng.normal() / j * np.cos(math.pi * j * t + rng.uniform(0, 2 * math.pi))
    rms = np.sqrt((out**2).mean())
    return out * (amplitude / max(rms, 1e-12))
