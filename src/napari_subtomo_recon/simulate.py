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

import math
import os
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import scipy.fft as sfft

__all__ = ["SimulatedDataset", "make_phantom", "simulate"]


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


def _q(x) -> float | np.ndarray:
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


def _star_text(blocks: list[tuple[str, dict, bool]]) -> str:
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


def _write_star(path: Path, blocks: list[tuple[str, dict, bool]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_star_text(blocks))


def _write_mrc(path: Path, data: np.ndarray, voxel_size: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(data, dtype=np.float32))
        if data.ndim == 3 and path.suffix == ".mrcs":
            m.set_image_stack()
        m.voxel_size = float(voxel_size)
        m.update_header_stats()
        m.header.label[0] = b"napari_subtomo_recon.simulate"
        m.header.nlabl = 1


def _vec(row: np.ndarray) -> str:
    return "[" + ",".join(repr(float(v)) for v in row) + "]"


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


def simulate(
    root,
    *,
    n_tomograms: int = 2,
    particles_per_tomogram: int = 40,
    n_tilts: int = 31,
    tilt_max: float = 60.0,
    dose_per_tilt: float = 3.0,
    pixel_size: float = 2.0,
    image_size: tuple[int, int] = (512, 512),
    tomo_size: tuple[int, int, int] = (512, 512, 200),
    box: int = 48,
    binning: float = 2.0,
    symmetry: str = "C1",
    snr: float = 3.0,
    defocus: tuple[float, float] = (30000.0, 40000.0),
    astigmatism: float = 300.0,
    voltage: float = 300.0,
    cs: float = 2.7,
    q0: float = 0.1,
    hand: float = 1.0,
    seed: int = 0,
    half_sets: bool = True,
    motion: bool = False,
    motion_amplitude: float = 3.0,
    origins: bool = False,
    subtomo_angles: bool = False,
    odd_sizes: bool = False,
    stack_layout: str = "stack",
    relion4: bool = False,
    tilt_axis: float = 85.0,
    tilt_offset: float = 0.5,
    x_tilt: float = 0.3,
    shift_sigma: float = 30.0,
    ctf: bool = True,
    dose_weighting: bool = True,
    noise: bool = True,
    background: bool = True,
    particle_coords: np.ndarray | None = None,
    particle_angles: np.ndarray | None = None,
) -> SimulatedDataset:
    """Write a simulated RELION-5 data set under ``root`` and return its description.

    Sizes: ``image_size = (W, H)`` tilt images, ``tomo_size = (X, Y, Z)``, both in
    unbinned pixels of ``pixel_size`` Å; the phantom has ``box`` voxels of
    ``pixel_size·binning`` Å.  ``defocus`` is the range of the mean defocus per
    tomogram (Å, underfocus positive), ``astigmatism`` = DefocusU − DefocusV.
    ``snr`` is the per-pixel signal-to-noise ratio (variance ratio) of a particle in
    the least-exposed tilt: the mean-square of the CTF-modulated particle signal
    inside its disc over the noise variance.

    Geometry: the stage tilt ``rlnTomoYTilt`` = nominal + ``tilt_offset`` (+ jitter),
    ``rlnTomoXTilt`` ≈ ``x_tilt``, ``rlnTomoZRot`` ≈ ``tilt_axis`` and shifts
    ~N(0, ``shift_sigma``) Å, each slightly different per tomogram and frame.  Rows of
    a tilt-series star file are in acquisition (dose-symmetric) order; the stack
    holds the frames sorted by tilt angle (``stack_layout='per_tilt_files'``: one
    ``.mrc`` per tilt instead).

    Options: ``motion`` writes ``motion.star`` and draws the particles at
    ``pos + shift_f/px``; ``origins`` writes small non-zero ``rlnOrigin*Angst``;
    ``subtomo_angles`` writes random ``rlnTomoSubtomogram*`` angles (orientation
    ``A_sub·A_part``, origins rotated by ``A_sub``); ``odd_sizes`` makes image and
    tomogram sizes odd; ``relion4`` writes the RELION 4 format (projection matrices,
    ``rlnCoordinate*`` in pixels, stack in row order).

    Test switches: ``ctf=False`` (image = −projection), ``dose_weighting=False``,
    ``noise=False`` (no noise and no background), ``background=False``;
    ``particle_coords`` (N, 3) true particle centres (Å from the tomogram centre, i.e.
    after the origin offsets) and ``particle_angles`` (N, 3) rot/tilt/psi in degrees
    override the random particles (N = n_tomograms·particles_per_tomogram, in file
    order).

    Randomness: ``numpy.random.default_rng((seed, tomogram, quantity))``, one stream per
    tomogram and quantity (tilt geometry, positions, angles, ...), so the same seed gives
    the same geometry and particles whatever the switches above (``ctf``, ``motion``,
    ``particle_angles``, ...).
    """
    if stack_layout not in ("stack", "per_tilt_files"):
        raise ValueError(f"stack_layout must be 'stack' or 'per_tilt_files', not {stack_layout!r}")
    if relion4 and stack_layout != "stack":
        raise ValueError("the RELION 4 format stores each tilt series as one stack")
    if box % 2:
        raise ValueError("box must be even (RELION's reconstruction assumes it)")
    if hand not in (1.0, -1.0):
        raise ValueError("hand must be +1 or -1")

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    def rng_for(*key: int) -> np.random.Generator:
        # One stream per tomogram and quantity: options that add random draws (motion,
        # origins, ...) or explicit particles do not change the rest of a seed's data set.
        return np.random.default_rng((seed,) + key)

    px = float(pixel_size)
    binning = float(binning)
    vs = px * binning
    W, H = (int(v) for v in image_size)
    tomo_size = tuple(int(v) for v in tomo_size)
    if odd_sizes:
        W, H = W - 1 + W % 2, H - 1 + H % 2
        tomo_size = tuple(t - 1 + t % 2 for t in tomo_size)
    image_size = (W, H)
    centre = np.array(tomo_size, dtype=np.float64) / 2.0
    sym = symmetry.strip()
    blobs = _phantom_blobs(box, vs, sym, seed)
    truth = _render(blobs, box, vs)
    _write_mrc(root / "ground_truth.mrc", truth, vs)

    n_total = n_tomograms * particles_per_tomogram
    if particle_coords is not None:
        particle_coords = np.asarray(particle_coords, dtype=np.float64).reshape(n_total, 3)
    if particle_angles is not None:
        particle_angles = np.asarray(particle_angles, dtype=np.float64).reshape(n_total, 3)

    P = _patch_size(box, binning)
    r_disc = 0.35 * box * binning  # particle radius in unbinned pixels
    yy, xx = np.mgrid[0:P, 0:P]
    disc = (xx - P // 2) ** 2 + (yy - P // 2) ** 2 <= r_disc**2

    tomo_rows: list[dict] = []
    particle_rows: dict[str, list] = {}
    motion_blocks: list[tuple[str, dict, bool]] = []
    stacks: list[tuple[str, np.ndarray, list[int]]] = []  # (name, images in row order, stack idx)
    signal_ms: list[float] = []

    def prow(label, value):
        particle_rows.setdefault(label, []).append(value)

    for ti in range(n_tomograms):
        name = f"TS_{ti + 1:02d}"
        # ----- tilt series geometry (rows in acquisition = dose-symmetric order)
        ks = _dose_symmetric_order(n_tilts)
        step = tilt_max / max(1, n_tilts // 2)
        nominal = np.array(ks, dtype=np.float64) * step
        nf = n_tilts
        rng = rng_for(ti, 0)
        off_t = tilt_offset + rng.normal(0.0, 0.1)
        yt = _q(nominal + off_t + rng.normal(0.0, 0.05, nf))
        xt = _q(np.full(nf, x_tilt + rng.normal(0.0, 0.05)))
        zr = _q(tilt_axis + rng.normal(0.0, 0.5) + rng.normal(0.0, 0.2, nf))
        xs = _q(rng.normal(0.0, shift_sigma, nf))
        ys = _q(rng.normal(0.0, shift_sigma, nf))
        mean_def = rng.uniform(min(defocus), max(defocus))
        dmean = mean_def + rng.normal(0.0, 150.0, nf)
        ast = astigmatism * (1.0 + rng.normal(0.0, 0.1))
        defu = _q(dmean + 0.5 * ast)
        defv = _q(dmean - 0.5 * ast)
        dang = _q(rng.uniform(-90.0, 90.0) + rng.normal(0.0, 2.0, nf))
        pre = _q(np.arange(nf) * dose_per_tilt)
        ctf_scale = np.ones(nf)
        Pm = np.array(
            [
                _projection_matrix(xt[f], yt[f], zr[f], xs[f], ys[f], px, tomo_size, image_size)
                for f in range(nf)
            ]
        )
        M = Pm[:, :3, :3]
        # Stack order: sorted by tilt angle (R5); row order (R4).
        if relion4:
            stack_idx = list(range(nf))
        else:
            by_angle = np.argsort(nominal, kind="stable")
            stack_idx = [0] * nf
            for pos_in_stack, f in enumerate(by_angle):
                stack_idx[int(f)] = pos_in_stack
        # ----- particles
        first = ti * particles_per_tomogram
        if particle_coords is not None:
            true_pos = particle_coords[first : first + particles_per_tomogram] / px + centre
        else:
            true_pos = _positions(
                rng_for(ti, 1),
                particles_per_tomogram,
                tomo_size,
                image_size,
                min_dist=0.65 * box * binning,
            )
        if particle_angles is not None:
            ang = _q(particle_angles[first : first + particles_per_tomogram])
        else:
            ang = _q(_random_angles(rng_for(ti, 2), particles_per_tomogram))
        sub = _q(_random_angles(rng_for(ti, 3), particles_per_tomogram)) if subtomo_angles else None
        orig = (
            _q(rng_for(ti, 4).uniform(-2.0, 2.0, (particles_per_tomogram, 3)) * vs)
            if origins
            else np.zeros((particles_per_tomogram, 3))
        )
        if half_sets:
            subsets = np.array([1, 2] * ((particles_per_tomogram + 1) // 2))[
                :particles_per_tomogram
            ]
            subsets = rng_for(ti, 5).permutation(subsets)
        images = np.zeros((nf, H, W), dtype=np.float32)
        filt = _Filter(
            P, px, defu, defv, dang, pre, voltage, cs, q0, ctf_scale, ctf, dose_weighting
        )
        rng_mot = rng_for(ti, 6)
        for k in range(particles_per_tomogram):
            a_sub = _euler(*sub[k]) if sub is not None else np.eye(3)
            A = a_sub @ _euler(*ang[k])
            # Written coordinate p0 with pos = p0 − A_sub·origin/px; quantise p0 as written.
            p0 = true_pos[k] + a_sub @ orig[k] / px
            if relion4:
                coord = _q(p0)
                p0 = coord
            else:
                coord = _q((p0 - centre) * px)
                p0 = coord / px + centre
            pos = p0 - a_sub @ orig[k] / px
            shifts = (
                _q(_smooth_shifts(rng_mot, nf, motion_amplitude)) if motion else np.zeros((nf, 3))
            )
            traj = pos[None, :] + shifts / px
            c2 = np.einsum("fij,fj->fi", Pm[:, :2, :3], traj) + Pm[:, :2, 3]
            depth = M[:, 2, :] @ (pos - centre)
            dz = hand * px * depth
            # Visibility as RELION computes it (margin box/2 in unbinned pixels).
            vis = (
                (c2[:, 0] > box / 2.0)
                & (c2[:, 0] < W - box / 2.0)
                & (c2[:, 1] > box / 2.0)
                & (c2[:, 1] < H - box / 2.0)
            )
            i0 = _c_round(c2)
            delta = c2 - i0
            R = np.einsum("fij,jk->fik", M, A)
            spec = _projection_spectra(blobs, R, delta, px, vs, P)
            spec *= filt(dz)
            patches = sfft.irfft2(spec, s=(P, P), axes=(1, 2), workers=2)
            patches = np.fft.fftshift(patches, axes=(1, 2))
            for f in range(nf):
                _add_patch(images[f], patches[f], int(i0[f, 0]) - P // 2, int(i0[f, 1]) - P // 2)
            f0 = int(np.argmin(pre))
            signal_ms.append(float((patches[f0][disc] ** 2).mean()))

            pname = f"{name}/{k + 1}"
            prow("rlnTomoName", name)
            prow("rlnTomoParticleName", pname)
            if relion4:
                for ax, lab in enumerate("XYZ"):
                    prow(f"rlnCoordinate{lab}", float(coord[ax]))
            else:
                for ax, lab in enumerate("XYZ"):
                    prow(f"rlnCenteredCoordinate{lab}Angst", float(coord[ax]))
            for j, lab in enumerate(("Rot", "Tilt", "Psi")):
                prow(f"rlnAngle{lab}", float(ang[k, j]))
            if sub is not None:
                for j, lab in enumerate(("Rot", "Tilt", "Psi")):
                    prow(f"rlnTomoSubtomogram{lab}", float(sub[k, j]))
            for ax, lab in enumerate("XYZ"):
                prow(f"rlnOrigin{lab}Angst", float(orig[k, ax]))
            prow("rlnOpticsGroup", 1)
            if half_sets:
                prow("rlnRandomSubset", int(subsets[k]))
            prow("rlnTomoVisibleFrames", "[" + ",".join(str(int(v)) for v in vis) + "]")
            if motion:
                motion_blocks.append(
                    (
                        pname,
                        {
                            f"rlnOrigin{lab}Angst": list(shifts[:, ax])
                            for ax, lab in enumerate("XYZ")
                        },
                        True,
                    )
                )

        stacks.append((name, images, stack_idx))
        tomo_rows.append(
            dict(
                name=name,
                yt=yt,
                xt=xt,
                zr=zr,
                xs=xs,
                ys=ys,
                defu=defu,
                defv=defv,
                dang=dang,
                pre=pre,
                scale=ctf_scale,
                nominal=nominal,
                Pm=Pm,
                stack_idx=stack_idx,
            )
        )

    # ----- noise and background, then write the images
    sigma_n = math.sqrt(np.mean(signal_ms) / snr) if (noise and signal_ms and snr > 0) else 0.0
    for ti, (name, images, stack_idx) in enumerate(stacks):
        rng = rng_for(ti, 7)
        if sigma_n > 0:
            for f in range(images.shape[0]):
                bg = 0.5 * sigma_n * _smooth_field(rng, (H, W)) if background else 0.0
                images[f] += (rng.normal(0.0, sigma_n, (H, W)) + bg).astype(np.float32)
        t = tomo_rows[ti]
        if stack_layout == "stack":
            ordered = np.empty_like(images)
            for f, si in enumerate(stack_idx):
                ordered[si] = images[f]
            _write_mrc(root / "tilt_series" / f"{name}.mrcs", ordered, px)
            t["refs"] = [f"{si + 1}@tilt_series/{name}.mrcs" for si in stack_idx]
        else:
            refs = []
            for f in range(images.shape[0]):
                fn = f"tilt_series/{name}/{name}_{f + 1:03d}_{t['nominal'][f]:.1f}.mrc"
                _write_mrc(root / fn, images[f], px)
                refs.append(fn)
            t["refs"] = refs

    # ----- star files
    optics = {
        "rlnOpticsGroup": [1],
        "rlnOpticsGroupName": ["optics1"],
        "rlnSphericalAberration": [float(cs)],
        "rlnVoltage": [float(voltage)],
        "rlnAmplitudeContrast": [float(q0)],
        "rlnTomoTiltSeriesPixelSize": [px],
        "rlnImagePixelSize": [vs],
        "rlnImageSize": [int(box)],
        "rlnImageDimensionality": [2],
        "rlnTomoSubtomogramBinning": [binning],
        "rlnCtfDataAreCtfPremultiplied": [1],
    }
    if relion4:
        g = {
            "rlnTomoName": [t["name"] for t in tomo_rows],
            "rlnTomoTiltSeriesName": [f"tilt_series/{t['name']}.mrcs" for t in tomo_rows],
            "rlnTomoFrameCount": [len(t["yt"]) for t in tomo_rows],
            "rlnTomoSizeX": [tomo_size[0]] * n_tomograms,
            "rlnTomoSizeY": [tomo_size[1]] * n_tomograms,
            "rlnTomoSizeZ": [tomo_size[2]] * n_tomograms,
            "rlnTomoHand": [float(hand)] * n_tomograms,
            "rlnOpticsGroupName": ["optics1"] * n_tomograms,
            "rlnTomoTiltSeriesPixelSize": [px] * n_tomograms,
            "rlnVoltage": [float(voltage)] * n_tomograms,
            "rlnSphericalAberration": [float(cs)] * n_tomograms,
            "rlnAmplitudeContrast": [float(q0)] * n_tomograms,
            "rlnTomoImportFractionalDose": [float(dose_per_tilt)] * n_tomograms,
        }
        blocks: list[tuple[str, dict, bool]] = [("global", g, True)]
        for t in tomo_rows:
            Pm = t["Pm"]
            blocks.append(
                (
                    t["name"],
                    {
                        "rlnTomoProjX": [_vec(p[0]) for p in Pm],
                        "rlnTomoProjY": [_vec(p[1]) for p in Pm],
                        "rlnTomoProjZ": [_vec(p[2]) for p in Pm],
                        "rlnTomoProjW": [_vec(p[3]) for p in Pm],
                        "rlnDefocusU": list(t["defu"]),
                        "rlnDefocusV": list(t["defv"]),
                        "rlnDefocusAngle": list(t["dang"]),
                        "rlnCtfScalefactor": list(t["scale"]),
                        "rlnMicrographPreExposure": list(t["pre"]),
                    },
                    True,
                )
            )
        _write_star(root / "tomograms.star", blocks)
        particle_blocks = [("optics", optics, True), ("particles", particle_rows, True)]
    else:
        g = {
            "rlnTomoName": [t["name"] for t in tomo_rows],
            "rlnVoltage": [float(voltage)] * n_tomograms,
            "rlnSphericalAberration": [float(cs)] * n_tomograms,
            "rlnAmplitudeContrast": [float(q0)] * n_tomograms,
            "rlnMicrographOriginalPixelSize": [px / 2.0] * n_tomograms,
            "rlnTomoHand": [float(hand)] * n_tomograms,
            "rlnTomoTiltSeriesPixelSize": [px] * n_tomograms,
            "rlnTomoTiltSeriesStarFile": [f"tilt_series/{t['name']}.star" for t in tomo_rows],
            "rlnTomoSizeX": [tomo_size[0]] * n_tomograms,
            "rlnTomoSizeY": [tomo_size[1]] * n_tomograms,
            "rlnTomoSizeZ": [tomo_size[2]] * n_tomograms,
            "rlnOpticsGroupName": ["optics1"] * n_tomograms,
            "rlnTomoImportFractionalDose": [float(dose_per_tilt)] * n_tomograms,
        }
        _write_star(root / "tomograms.star", [("global", g, True)])
        for t in tomo_rows:
            nf = len(t["yt"])
            rows = {
                "rlnMicrographName": t["refs"],
                "rlnTomoNominalStageTiltAngle": [float(v) for v in t["nominal"]],
                "rlnTomoNominalTiltAxisAngle": [float(tilt_axis)] * nf,
                "rlnMicrographPreExposure": list(t["pre"]),
                "rlnDefocusU": list(t["defu"]),
                "rlnDefocusV": list(t["defv"]),
                "rlnDefocusAngle": list(t["dang"]),
                "rlnCtfAstigmatism": [
                    float(u - v) for u, v in zip(t["defu"], t["defv"], strict=True)
                ],
                "rlnCtfScalefactor": list(t["scale"]),
                "rlnTomoXTilt": list(t["xt"]),
                "rlnTomoYTilt": list(t["yt"]),
                "rlnTomoZRot": list(t["zr"]),
                "rlnTomoXShiftAngst": list(t["xs"]),
                "rlnTomoYShiftAngst": list(t["ys"]),
            }
            _write_star(root / "tilt_series" / f"{t['name']}.star", [(t["name"], rows, True)])
        particle_blocks = [
            ("general", {"rlnTomoSubTomosAre2DStacks": 1}, False),
            ("optics", optics, True),
            ("particles", particle_rows, True),
        ]
    _write_star(root / "particles.star", particle_blocks)

    trajectories = None
    opt = {"rlnTomoParticlesFile": "particles.star", "rlnTomoTomogramsFile": "tomograms.star"}
    if motion:
        trajectories = root / "motion.star"
        _write_star(
            trajectories, [("general", {"rlnParticleNumber": n_total}, False)] + motion_blocks
        )
        opt["rlnTomoTrajectoriesFile"] = "motion.star"
    _write_star(root / "optimisation_set.star", [("", opt, False)])

    return SimulatedDataset(
        root=root,
        optimisation_set=root / "optimisation_set.star",
        tomograms=root / "tomograms.star",
        particles=root / "particles.star",
        trajectories=trajectories,
        ground_truth=root / "ground_truth.mrc",
        box=int(box),
        binning=binning,
        pixel_size=px,
        symmetry=sym,
    )
