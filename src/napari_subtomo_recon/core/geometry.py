"""Tilt-series and particle geometry (RELION 5 conventions, spec §2).

All angles are in degrees.  Rotations are active and right-handed.  Tomogram
coordinates are unbinned tilt-series pixels with the first voxel at 0.
Vectorised over leading axes: pass arrays of angles, get stacks of matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from .arraytypes import BoolArray, Float64Array, TiltSeriesLike


def _cs(angle_deg: ArrayLike) -> tuple[Float64Array, Float64Array]:
    a = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))
    return np.cos(a), np.sin(a)


def rot_x(angle_deg: ArrayLike) -> Float64Array:
    """Rotation about x by ``angle_deg`` of shape (...): (..., 3, 3)."""
    c, s = _cs(angle_deg)
    o, z = np.ones_like(c), np.zeros_like(c)
    return np.stack(
        [np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2
    )


def rot_y(angle_deg: ArrayLike) -> Float64Array:
    """Rotation about y by ``angle_deg`` of shape (...): (..., 3, 3)."""
    c, s = _cs(angle_deg)
    o, z = np.ones_like(c), np.zeros_like(c)
    return np.stack(
        [np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2
    )


def rot_z(angle_deg: ArrayLike) -> Float64Array:
    """Rotation about z by ``angle_deg`` of shape (...): (..., 3, 3)."""
    c, s = _cs(angle_deg)
    o, z = np.ones_like(c), np.zeros_like(c)
    return np.stack(
        [np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2
    )


def rotation_about_axis(axis: ArrayLike, angle_deg: float) -> Float64Array:
    """Active right-handed rotation (3, 3) about the axis (3,) (Rodrigues)."""
    n = np.asarray(axis, dtype=np.float64)
    n = n / np.linalg.norm(n)
    c, s = _cs(angle_deg)
    nnt = np.outer(n, n)
    cross = np.array([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]])
    r: Float64Array = nnt + c * (np.eye(3) - nnt) + s * cross
    return r


def euler_matrix(rot: ArrayLike, tilt: ArrayLike, psi: ArrayLike) -> Float64Array:
    """RELION's ZYZ Euler matrix E(rot, tilt, psi) = Rz(-psi) Ry(-tilt) Rz(-rot).

    Angles of a common shape (...) give (..., 3, 3).

    It maps reference (map) coordinates into the rotated frame (``src/euler.cpp``).
    """
    ca, sa = _cs(rot)
    cb, sb = _cs(tilt)
    cg, sg = _cs(psi)
    cc, cs = cb * ca, cb * sa
    sc, ss = sb * ca, sb * sa
    return np.stack(
        [
            np.stack([cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb], -1),
            np.stack([-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb], -1),
            np.stack([sc, ss, cb], -1),
        ],
        -2,
    )


def projection_matrix_r5(
    xtilt: ArrayLike,
    ytilt: ArrayLike,
    zrot: ArrayLike,
    xshift_px: ArrayLike,
    yshift_px: ArrayLike,
    tomo_size: Sequence[float],
    image_size: Sequence[float],
) -> Float64Array:
    """RELION 5 projection matrices P_f (fc, 4, 4) from tilt angles and shifts (spec §2.1).

    Angles (deg) and shifts (px) are (fc,) or scalars; ``tomo_size`` (w0, h0, d0) and
    ``image_size`` (W, H) in unbinned pixels.

    P = T(shift + floor(image/2)) · Rz(zrot) · Ry(ytilt) · Rx(xtilt) · T(-int(tomo/2))
    (int(): C truncation, as RELION's ``(double)int(w0/2)``).
    """
    xtilt, ytilt, zrot, xshift_px, yshift_px = np.broadcast_arrays(
        *(
            np.atleast_1d(np.asarray(v, dtype=np.float64))
            for v in (xtilt, ytilt, zrot, xshift_px, yshift_px)
        )
    )
    n = xtilt.shape[0]
    M = rot_z(zrot) @ rot_y(ytilt) @ rot_x(xtilt)
    # C++ int(w0/2) truncates towards zero: -499 for RELION's missing size -999
    c_int = np.array([_c_half(int(v)) for v in tomo_size[:3]], float)
    i_int = np.array([int(image_size[0]) // 2, int(image_size[1]) // 2, 0], float)
    shift = np.stack([xshift_px, yshift_px, np.zeros(n)], -1)
    P = np.zeros((n, 4, 4))
    P[:, :3, :3] = M
    P[:, :3, 3] = -(M @ c_int) + shift + i_int
    P[:, 3, 3] = 1.0
    return P


def _c_half(n: int) -> int:
    """C/C++ integer n/2 (truncated towards zero, unlike Python's n // 2 for n < 0)."""
    return n // 2 if n >= 0 else -((-n) // 2)


def project(P: Float64Array, points: Float64Array) -> Float64Array:
    """Apply 4x4 projection(s) to 3D point(s); returns the first three rows (x, y, depth).

    ``P`` is (..., 4, 4) and ``points`` (..., 3) with broadcasting.
    """
    xyz: Float64Array = np.einsum("...ij,...j->...i", P[..., :3, :3], points) + P[..., :3, 3]
    return xyz


def particle_positions(
    coords_px: ArrayLike, origins_ang: ArrayLike, A_sub: Float64Array, pixel_size: ArrayLike
) -> Float64Array:
    """pos = p0 - A_sub · origin / px (spec §2.3): origins are in the subtomogram frame.

    ``coords_px`` (n, 3) px, ``origins_ang`` (n, 3) Å, ``A_sub`` (n, 3, 3), ``pixel_size``
    (n,) Å; returns (n, 3) px.
    """
    offs = np.einsum("...ij,...j->...i", A_sub, np.asarray(origins_ang, float))
    pos: Float64Array = (
        np.asarray(coords_px, float) - offs / np.asarray(pixel_size, float)[..., None]
    )
    return pos


def visible(c2: Float64Array, image_size: Sequence[float], radius: float) -> BoolArray:
    """Strict inside test of the projected centres with a margin ``radius`` (spec §3.2).

    ``c2`` (..., 2) px, ``image_size`` (W, H); returns (...) bool.
    """
    W, H = image_size
    return (
        (c2[..., 0] > radius)
        & (c2[..., 0] < W - radius)
        & (c2[..., 1] > radius)
        & (c2[..., 1] < H - radius)
    )


def depth_offsets(P: Float64Array, pos: ArrayLike, centre: ArrayLike) -> Float64Array:
    """Depth of each particle relative to the tomogram centre, per frame: (n, fc) px.

    ``P`` is (fc, 4, 4), ``pos`` (n, 3); only the third row of P matters.
    """
    depth: Float64Array = (np.asarray(pos, float) - np.asarray(centre, float)) @ P[:, 2, :3].T
    return depth


def c_round(x: ArrayLike) -> Float64Array:
    """C ``round``: halves away from zero (NumPy's ``round`` goes to even); float64."""
    a = np.asarray(x, dtype=np.float64)
    r: Float64Array = np.sign(a) * np.floor(np.abs(a) + 0.5)
    return r


def tilt_projections(ts: TiltSeriesLike) -> Float64Array:
    """P_f (fc, 4, 4) of a :class:`~napari_subtomo_recon.io.tomograms.TiltSeries`.

    RELION 4 matrices, when present, take precedence over the RELION 5 angles.
    """
    if ts.r4_projection is not None:
        return np.array(ts.r4_projection, dtype=np.float64)
    a, sh = ts.tilt_angles, ts.shifts_angst
    if a is None or sh is None:
        raise ValueError("a tilt series needs RELION 4 matrices or RELION 5 angles and shifts")
    return projection_matrix_r5(
        a[:, 0],
        a[:, 1],
        a[:, 2],
        sh[:, 0] / ts.pixel_size,
        sh[:, 1] / ts.pixel_size,
        ts.size,
        ts.image_size,
    )
