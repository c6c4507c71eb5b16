"""Per-particle geometry within one tilt series (spec §2.3-2.8, §3.2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .arraytypes import BoolArray, Float64Array
from .deformation import ImageDeformation
from .geometry import depth_offsets, euler_matrix, particle_positions, project, visible


@dataclass
class ParticleGeometry:
    """Everything per particle and frame that extraction and insertion need.

    n particles, fc frames; positions in unbinned tomogram pixels.
    """

    pos: Float64Array  # (n, 3) position incl. origin offsets (CTF depth, matrix translation)
    centres2d: Float64Array  # (n, fc, 2) projected (and deformed) trajectory: extraction centres
    visible: BoolArray  # (n, fc) bool
    rotation: Float64Array  # (n, 3, 3) A = A_sub · A_part
    depth: Float64Array  # (n, fc) depth of pos relative to the tomogram centre, px

    @property
    def n(self) -> int:
        n: int = self.pos.shape[0]
        return n


def rotations(
    angles: Float64Array | None, sub_angles: Float64Array | None, n: int
) -> tuple[Float64Array, Float64Array]:
    """(A_part, A_sub), each (n, 3, 3), from Euler angles (n, 3) in degrees: identity where
    the angles are absent (None)."""
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))
    a_part = euler_matrix(angles[:, 0], angles[:, 1], angles[:, 2]) if angles is not None else eye
    a_sub = (
        euler_matrix(sub_angles[:, 0], sub_angles[:, 1], sub_angles[:, 2])
        if sub_angles is not None
        else eye
    )
    return a_part, a_sub


def particle_geometry(
    P: Float64Array,
    tomo_centre: Float64Array,
    tomo_pixel_size: float,
    image_size: tuple[int, int],
    coords: Float64Array,
    centred: bool,
    particle_pixel_size: Float64Array,
    origins_angst: Float64Array,
    angles: Float64Array | None,
    sub_angles: Float64Array | None,
    box: int,
    trajectories: Float64Array | None = None,
    deformation: ImageDeformation | None = None,
    margin: float | None = None,
) -> ParticleGeometry:
    """Geometry of n particles in one tilt series with projections ``P`` (fc, 4, 4).

    ``tomo_centre`` (3,) px; ``coords`` (n, 3) are centred Å (``centred``) or unbinned
    pixels; ``particle_pixel_size`` (n,) Å; ``origins_angst`` (n, 3) Å; ``angles`` and
    ``sub_angles`` (n, 3) Euler angles in degrees or None; ``trajectories``
    (n, fc, 3) are per-frame shifts in Å, added after conversion with the tilt
    series' pixel size.  ``deformation`` (Polish's 2D image deformations) moves the
    projected centres, for visibility and extraction alike.  Visibility uses the binned
    half box ``box/2`` as a margin in unbinned pixels, as RELION does, unless ``margin``
    (unbinned pixels) is given.
    """
    n = coords.shape[0]
    px_p = np.asarray(particle_pixel_size, dtype=np.float64)
    p0 = (
        coords / px_p[:, None] + tomo_centre[None, :]
        if centred
        else np.array(coords, dtype=np.float64)
    )
    a_part, a_sub = rotations(angles, sub_angles, n)
    pos = particle_positions(p0, origins_angst, a_sub, px_p)
    fc = P.shape[0]
    traj = np.broadcast_to(pos[:, None, :], (n, fc, 3))
    if trajectories is not None:
        traj = traj + trajectories / tomo_pixel_size
    c2 = project(P[None, :, :, :], traj)[..., :2]
    if deformation is not None:
        c2 = deformation.apply(c2)
    return ParticleGeometry(
        pos=pos,
        centres2d=c2,
        visible=visible(c2, image_size, box / 2.0 if margin is None else margin),
        rotation=np.ascontiguousarray(a_sub @ a_part),
        depth=depth_offsets(P, pos, tomo_centre),
    )


def subset(geo: ParticleGeometry, sel: NDArray[np.intp] | BoolArray) -> ParticleGeometry:
    """The geometry of particles ``sel`` (indices, or an (n,) mask) only."""
    return ParticleGeometry(
        pos=geo.pos[sel],
        centres2d=geo.centres2d[sel],
        visible=geo.visible[sel],
        rotation=geo.rotation[sel],
        depth=geo.depth[sel],
    )
