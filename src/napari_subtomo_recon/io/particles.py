"""Particle sets (RELION 5 ``particles.star`` and the RELION 4 variant) and trajectories.

Follows RELION 5 ``ParticleSet::read`` and its accessors (spec §1.4, §1.5):

* positions: ``rlnCenteredCoordinate{X,Y,Z}Angst`` (Å from the tomogram centre) win over
  ``rlnCoordinate{X,Y,Z}`` (unbinned pixels, RELION 4, used as is);
* optics: group g (1-based ``rlnOpticsGroup``) is **row g-1** of ``data_optics``; a
  missing or empty optics table is built from the tomogram set;
* ``rlnTomoParticleName`` is generated as ``<tomo>/<k>`` when absent.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import InputError
from .star import Table, at, read_star
from .tomograms import TomogramSet

CENTRED = (
    "rlnCenteredCoordinateXAngst",
    "rlnCenteredCoordinateYAngst",
    "rlnCenteredCoordinateZAngst",
)
PIXEL = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
ORIGIN = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
SUB_ANGLES = ("rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi")


@dataclass
class Optics:
    """Per optics group (row g-1 for group g)."""

    pixel_size: np.ndarray
    voltage: np.ndarray | None = None
    cs: np.ndarray | None = None
    q0: np.ndarray | None = None
    even_zernike: list[np.ndarray] | None = None
    odd_zernike: list[np.ndarray] | None = None
    table: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.pixel_size)


@dataclass
class ParticleSet:
    path: str
    tomo_names: list[str]
    names: list[str]
    coords: np.ndarray  # (n, 3): centred Å if ``centred`` else unbinned pixels
    centred: bool
    origins_angst: np.ndarray  # (n, 3)
    angles: np.ndarray | None  # (n, 3) rot, tilt, psi (deg), or None (identity)
    sub_angles: np.ndarray | None  # (n, 3) or None
    subset: np.ndarray | None  # (n,) 1 or 2, or None (no half sets)
    optics_group: np.ndarray  # (n,) 1-based
    optics: Optics
    table: pd.DataFrame  # the particle table as read (for writing derived files)
    general: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.tomo_names)

    @property
    def has_half_sets(self) -> bool:
        return self.subset is not None

    def pixel_size(self) -> np.ndarray:
        """rlnTomoTiltSeriesPixelSize of each particle's optics group."""
        return self.optics.pixel_size[self.optics_group - 1]


def read_particle_set(
    path: str, tomograms: TomogramSet | None = None, root: str | None = None
) -> ParticleSet:
    path = at(root, path)
    blocks = read_star(path, "particle set")
    general = None
    if "general" in blocks:
        general = blocks["general"]
        if "rlnTomoSubTomosAre2DStacks" not in general.columns:
            raise InputError(f"{path}: data_general has no rlnTomoSubTomosAre2DStacks")
    if "particles" not in blocks:
        raise InputError(f"{path}: particle set has no data_particles block")
    t = Table(blocks["particles"], path, "particles")
    if len(t) == 0:
        raise InputError(f"{path}: data_particles is empty: there are no particles")
    tomo_names = t.strings("rlnTomoName")

    if t.has_all(*CENTRED):
        coords = np.stack([t.floats(lb) for lb in CENTRED], -1)
        centred = True
    elif t.has_all(*PIXEL):
        coords = np.stack([t.floats(lb) for lb in PIXEL], -1)
        centred = False
    else:
        raise InputError(
            f"{path}: data_particles has no particle coordinates "
            "(rlnCenteredCoordinateX/Y/ZAngst or rlnCoordinateX/Y/Z)"
        )
    origins = np.stack([t.floats(lb, 0.0) for lb in ORIGIN], -1)
    angles = np.stack([t.floats(lb) for lb in ANGLES], -1) if "rlnAngleRot" in t else None
    sub = (
        np.stack([t.floats(lb) for lb in SUB_ANGLES], -1) if "rlnTomoSubtomogramRot" in t else None
    )

    subset = None
    if "rlnRandomSubset" in t:
        raw = t.floats("rlnRandomSubset")
        bad = np.flatnonzero((raw != 1) & (raw != 2))
        if bad.size:
            r = int(bad[0])
            raise InputError(
                f"{t.where('rlnRandomSubset', r)}: '{t.df['rlnRandomSubset'].iloc[r]}' "
                "is not a half set (must be 1 or 2)"
            )
        subset = raw.astype(np.int64)

    opt_df = blocks.get("optics")
    if opt_df is None or len(opt_df) == 0:
        if tomograms is None:
            raise InputError(f"{path}: particle set has no data_optics block")
        optics, groups = _optics_from_tomograms(tomo_names, tomograms, path)
    else:
        ot = Table(opt_df, path, "optics")
        optics = Optics(
            pixel_size=ot.floats("rlnTomoTiltSeriesPixelSize"),
            voltage=ot.floats("rlnVoltage") if "rlnVoltage" in ot else None,
            cs=ot.floats("rlnSphericalAberration") if "rlnSphericalAberration" in ot else None,
            q0=ot.floats("rlnAmplitudeContrast") if "rlnAmplitudeContrast" in ot else None,
            even_zernike=ot.vectors("rlnEvenZernike") if "rlnEvenZernike" in ot else None,
            odd_zernike=ot.vectors("rlnOddZernike") if "rlnOddZernike" in ot else None,
            table=opt_df,
        )
        bad_px = np.flatnonzero(optics.pixel_size <= 0)
        if bad_px.size:
            raise InputError(
                f"{ot.where('rlnTomoTiltSeriesPixelSize', int(bad_px[0]))}: must be positive"
            )
        groups = t.ints("rlnOpticsGroup")
        bad = np.flatnonzero((groups < 1) | (groups > len(optics)))
        if bad.size:
            r = int(bad[0])
            raise InputError(
                f"{t.where('rlnOpticsGroup', r)}: group {groups[r]} does not exist "
                f"(data_optics has {len(optics)} rows; group g is row g)"
            )

    if "rlnTomoParticleName" in t:
        names = t.strings("rlnTomoParticleName")
    else:
        warnings.warn(
            f"The particles in {path} have no rlnTomoParticleName; naming them <tomogram>/<k>",
            stacklevel=2,
        )
        counts: dict[str, int] = {}
        names = []
        for tn in tomo_names:
            counts[tn] = counts.get(tn, 0) + 1
            names.append(f"{tn}/{counts[tn]}")

    return ParticleSet(
        path=str(path),
        tomo_names=tomo_names,
        names=names,
        coords=coords,
        centred=centred,
        origins_angst=origins,
        angles=angles,
        sub_angles=sub,
        subset=subset,
        optics_group=groups,
        optics=optics,
        table=t.df,
        general=general,
    )


def _optics_from_tomograms(tomo_names, tomograms: TomogramSet, path) -> tuple[Optics, np.ndarray]:
    """RELION's fallback: one group per rlnOpticsGroupName (or tomogram), numbered by first use."""
    by_tomo = {ts.name: ts for ts in tomograms.tomograms}
    order: list[str] = []
    first_tomo: dict[str, str] = {}
    groups = np.zeros(len(tomo_names), dtype=np.int64)
    for i, tn in enumerate(tomo_names):
        ts = by_tomo.get(tn)
        gname = (ts.optics_group_name or ts.name) if ts is not None else tn
        if gname not in first_tomo:
            order.append(gname)
            first_tomo[gname] = tn
        groups[i] = order.index(gname) + 1
    rows = []
    for g in order:
        ts = by_tomo.get(first_tomo[g])
        if ts is None:  # particles of unknown tomograms are dropped later; keep a placeholder
            rows.append((np.nan, np.nan, np.nan, np.nan))
        else:
            rows.append((ts.pixel_size, ts.voltage, ts.cs, ts.q0))
    arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return Optics(pixel_size=arr[:, 0], voltage=arr[:, 1], cs=arr[:, 2], q0=arr[:, 3]), groups


def read_trajectories(
    path: str, particles: ParticleSet, root: str | None = None
) -> list[np.ndarray]:
    """Per particle, the 3D shifts (Å, tomogram axes) of each frame, from ``motion.star``."""
    path = at(root, path)
    blocks = read_star(path, "trajectory set")
    if "general" not in blocks:
        raise InputError(f"{path}: trajectory set has no data_general block")
    gen = Table(blocks["general"], path, "general")
    if "rlnParticleNumber" not in gen or len(gen) == 0:
        raise InputError(f"{path}: data_general has no rlnParticleNumber")
    count = int(gen.float_at("rlnParticleNumber", 0))
    n = len(particles)
    if count < n:
        raise InputError(
            f"{path}: rlnParticleNumber is {count} but the particle set {particles.path} "
            f"has {n} particles"
        )
    others = [(k, v) for k, v in blocks.items() if k != "general"]

    def shifts(name, df):
        tb = Table(df, path, name)
        return np.stack([tb.floats(lb) for lb in ORIGIN], -1) if len(tb) else np.zeros((0, 3))

    if others and others[0][0] == "0":
        warnings.warn(
            f"The trajectories in {path} have no particle names: matching them by position",
            stacklevel=2,
        )
        if len(others) < n:
            raise InputError(f"{path}: {len(others)} trajectories for {n} particles")
        return [shifts(k, v) for k, v in others[:n]]
    by_name = dict(others)
    out = []
    for name in particles.names:
        if name not in by_name:
            raise InputError(f"{path}: no trajectory for particle '{name}' (no block data_{name})")
        out.append(shifts(name, by_name[name]))
    return out
