"""The values each numeric STAR label may take: one table, checked by :class:`.star.Table`
wherever a label is read, before any heavy work.

Every number must be finite (``nan``, ``inf`` and words are refused by the reader); the
bounds here are the physical ones, with the reason quoted in the message, e.g.
``tilt_series/TS_01.star: data_TS_01 row 3 (line 25) rlnMicrographPreExposure: '-3'
must be ≥ 0 (the dose in e/Å² before this tilt; a negative dose amplifies instead of
weighting)``.  Labels without an entry only need to be finite (angles, shifts,
coordinates, defocus angle).
"""

from __future__ import annotations

from ..domain import Domain


def _hand(v: float) -> str | None:
    return None if v in (-1.0, 1.0) else "must be 1 or -1 (the handedness of the tilt axis)"


POSITIVE_SIZE = Domain(min=1, why="a size in pixels")

STAR_DOMAINS: dict[str, Domain] = {
    # per tilt
    "rlnMicrographPreExposure": Domain(
        min=0,
        why="the dose in e/Å² before this tilt; a negative dose amplifies instead of weighting",
    ),  # fmt: skip
    "rlnCtfScalefactor": Domain(
        min=0,
        min_open=True,
        max=100,
        why="it scales the CTF, usually cos(tilt); 0 would erase the tilt and divide the map "
        "by almost nothing",
    ),  # fmt: skip
    "rlnDefocusU": Domain(min=-1e6, max=1e6, why="in Å; 100 µm is beyond any microscope"),
    "rlnDefocusV": Domain(min=-1e6, max=1e6, why="in Å; 100 µm is beyond any microscope"),
    "rlnCtfBfactor": Domain(
        min=-1e5, max=1e3, why="in Å²; a large positive B-factor amplifies high frequencies"
    ),
    "rlnPhaseShift": Domain(min=-360, max=360, why="in degrees"),
    # per tilt series, and per optics group
    "rlnTomoHand": Domain(check=_hand),
    "rlnTomoTiltSeriesPixelSize": Domain(min=0.001, max=1e4, why="in Å"),
    "rlnVoltage": Domain(min=0, min_open=True, max=5000, why="in kV"),
    "rlnSphericalAberration": Domain(min=-1e3, max=1e3, why="in mm"),
    "rlnAmplitudeContrast": Domain(min=0, max=1, why="a fraction"),
    "rlnCtfBfactorPerElectronDose": Domain(min=-1e3, max=1e3, why="in Å² per e/Å²"),
    "rlnTomoSizeX": POSITIVE_SIZE,
    "rlnTomoSizeY": POSITIVE_SIZE,
    "rlnTomoSizeZ": POSITIVE_SIZE,
    "rlnTomoFrameCount": Domain(min=1, why="the number of tilt images"),
    "rlnTomoDeformationGridSizeX": Domain(min=1, max=1000, why="nodes of the deformation grid"),
    "rlnTomoDeformationGridSizeY": Domain(min=1, max=1000, why="nodes of the deformation grid"),
    # per particle
    "rlnRandomSubset": Domain(min=1, max=2, why="the half set, 1 or 2"),  # (ints() refuses 1.5)
    "rlnOpticsGroup": Domain(min=1, why="optics groups are numbered from 1"),
    # trajectories
    "rlnParticleNumber": Domain(min=0, why="a number of particles"),
}
