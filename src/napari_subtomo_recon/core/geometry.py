"""Tilt-series and particle geometry (RELION 5 conventions, spec §2).

All angles are in degrees.  Rotations are active and right-handed.  Tomogram
coordinates are unbinned tilt-series pixels with the first voxel at 0.
Vectorised over leading axes: pass arrays of angles, get stacks of matrices.
"""

from __future__ import annotations

import numpy as np


def _cs(angle_deg):
    a = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))
    return np.cos(a), np.sin(a)


def rot_x(angle_deg) -> np.ndarray:
    c, s = _cs(angle_deg)
    o, z = np.ones_like(c), np.zeros_like(c)
    return np.stack(
        [np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2
    )


def rot_y(angle_deg) -> np.ndarray:
    c, s = _cs(angle_deg)
    o, z = np.ones_like(c), np.zeros_like(c)
    return np.stack(
        [np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2
    )


def rot_z(angle_deg) -> np.ndarray:
    c, s = _cs(angle_deg)
    o, z = np.ones_like(c), np.zeros_like(c)
    return np.stack(
        [np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2
    )


def rotation_about_axis(axis, angle_deg) -> np.ndarray:
    """Active right-handed rotation about a unit axis (Rodrigues)."""
    n = np.asarray(axis, dtype=np.float64)
    n = n / np.linalg.norm(n)
    c, s = _cs(angle_deg)
    nnt = np.outer(n, n)
    cross = np.array([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]])
    return nnt + c * (np.eye(3) - nnt) + s * cross


def euler_matrix(rot, tilt, psi) -> np.ndarray:
    """RELION's ZYZ Euler matrix E(rot, tilt, psi) = Rz(-psi) Ry(-tilt) Rz(-rot).

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
    xtilt, ytilt, zrot, xshift_px, yshift_px, tomo_size, image_size
) -> np.ndarray:
    """RELION 5 projection matrices P_f (fc, 4, 4) from tilt angles and shifts (spec §2.1).

    P = T(shift + floor(image/2)) · Rz(zrot) · Ry(ytilt) · Rx(xtilt) · T(-floor(tomo/2)).
    """
    xtilt, ytilt, zrot, xshift_px, yshift_px = np.broadcast_arrays(
        *(
            np.atleast_1d(np.asarray(v, dtype=np.float64))
            for v in (xtilt, ytilt, zrot, xshift_px, yshift_px)
        )
    )
    n = xtilt.shape[0]
    M = rot_z(zrot) @ rot_y(ytilt) @ rot_x(xtilt)
    c_int = np.array(
        [int(tomo_size[0]) // 2, int(tomo_size[1]) // 2, int(tomo_size[2]) // 2], float
    )
    i_int = np.array([int(image_size[0]) // 2, int(image_size[1]) // 2, 0], float)
    shift = np.stack([xshift_px, yshift_px, np.zeros(n)], -1)
    P = np.zeros((n, 4, 4))
    P[:, :3, :3] = M
    P[:, :3, 3] = -(M @ c_int) + shift + i_int
    P[:, 3, 3] = 1.0
    return P


def project(P: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply 4x4 projection(s) to 3D point(s); returns the first three rows (x, y, depth).

    ``P`` is (..., 4, 4) and ``points`` (..., 3) with broadcasting.
    """
    return np.einsum("...ij,...j->...i", P[..., :3, :3], points) + P[..., :3, 3]


def particle_positions(coords_px, origins_ang, A_sub, pixel_size) -> np.ndarray:
    """pos = p0 - A_sub · origin / px (spec §2.3): origins are in the subtomogram frame."""
    offs = np.einsum("...ij,...j->...i", A_sub, np.asarray(origins_ang, float))
    return np.asarray(coords_px, float) - offs / np.asarray(pixel_size, float)[..., None]


def visible(c2: np.ndarray, image_size, radius: float) -> np.ndarray:
    """Strict inside test of the projected centres with a margin ``radius`` (spec §3.2)."""
    W, H = image_size
    return (
        (c2[..., 0] > radius)
        & (c2[..., 0] < W - radius)
        & (c2[..., 1] > radius)
        & (c2[..., 1] < H - radius)
    )


def depth_offsets(P: np.ndarray, pos: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Depth of each particle relative to the tomogram centre, per frame: (n, fc) px.

    ``P`` is (fc, 4, 4), ``pos`` (n, 3); only the third row of P matters.
    """
    return (np.asarray(pos, float) - np.asarray(centre, float)) @ P[:, 2, :3].T


def c_round(x):
    """C ``round``: halves away from zero (NumPy's ``round`` goes to even)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def tilt_projections(ts) -> np.ndarray:
    """P_f (fc, 4, 4) of a :class:`~napari_subtomo_recon.io.tomograms.TiltSeries`.

    RELION 4 matrices, when present, take precedence over the RELION 5 angles.
    """
    if ts.r4_projection is not None:
        return np.array(ts.r4_projection, dtype=np.float64)
    a, sh = ts.tilt_angles, ts.shifts_angst
    return projection_matrix_r5(
        a[:, 0],
        a[:, 1],
        a[:, 2],
        sh[:, 0] / ts.pixel_size,
        sh[:, 1] / ts.pixel_size,
        ts.size,
        ts.image_size,
    )
