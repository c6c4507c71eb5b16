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
from ._typing import BoolArray, FloatArray, IntArray
from .star import Table, at, parse_vector, read_star
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
    """Per optics group (row g-1 for group g): arrays of shape (groups,)."""

    pixel_size: FloatArray  # rlnTomoTiltSeriesPixelSize, Å
    voltage: FloatArray | None = None  # kV
    cs: FloatArray | None = None  # mm
    q0: FloatArray | None = None
    even_zernike: list[FloatArray] | None = None  # one coefficient vector per group
    odd_zernike: list[FloatArray] | None = None
    table: pd.DataFrame | None = None  # data_optics as read (None: built from the tomograms)

    def __len__(self) -> int:
        return len(self.pixel_size)


@dataclass
class ParticleSet:
    """The n particles of a particle set, in file order."""

    path: str
    tomo_names: list[str]  # (n) rlnTomoName
    names: list[str]  # (n) rlnTomoParticleName (or generated <tomo>/<k>)
    coords: FloatArray  # (n, 3): centred Å if ``centred`` else unbinned pixels
    centred: bool
    origins_angst: FloatArray  # (n, 3)
    angles: FloatArray | None  # (n, 3) rot, tilt, psi (deg), or None (identity)
    sub_angles: FloatArray | None  # (n, 3) or None
    subset: IntArray | None  # (n,) 1 or 2, or None (no half sets)
    optics_group: IntArray  # (n,) 1-based
    optics: Optics
    rows: Table  # the particle table as read (messages quote its rows as written)
    general: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.tomo_names)

    @property
    def table(self) -> pd.DataFrame:
        """The particle table as read (for writing derived files)."""
        return self.rows.df

    @property
    def has_half_sets(self) -> bool:
        return self.subset is not None

    def pixel_size(self) -> FloatArray:
        """rlnTomoTiltSeriesPixelSize of each particle's optics group, (n,)."""
        return self.optics.pixel_size[self.optics_group - 1]


def read_particle_set(
    path: str, tomograms: TomogramSet | None = None, root: str | None = None
) -> ParticleSet:
    """Read a RELION 5 (or RELION 4) particle set.

    ``tomograms`` supplies the optics when the file has no (or an empty) ``data_optics``.
    """
    path = at(root, path)
    blocks = read_star(path, "particle set")
    general = _general_block(blocks, path)
    t = _particle_table(blocks, path)
    tomo_names = t.strings("rlnTomoName")
    coords, centred = _coordinates(t, path)
    origins = np.stack([t.floats(lb, 0.0) for lb in ORIGIN], -1)
    angles = _angles(t, ANGLES) if "rlnAngleRot" in t else None
    sub = _angles(t, SUB_ANGLES) if "rlnTomoSubtomogramRot" in t else None
    subset = _half_sets(t) if "rlnRandomSubset" in t else None
    optics, groups = _optics_and_groups(blocks, t, tomo_names, tomograms, path)
    if "rlnTomoParticleName" in t:
        names = t.strings("rlnTomoParticleName")
    else:
        warnings.warn(
            f"The particles in {path} have no rlnTomoParticleName; naming them <tomogram>/<k>",
            stacklevel=2,
        )
        names = _default_particle_names(tomo_names)

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
        rows=t,
        general=general,
    )


VISIBLE_FRAMES = "rlnTomoVisibleFrames"


def visible_frames(ps: ParticleSet, i: int, frame_count: int) -> BoolArray | None:
    """Particle ``i``'s ``rlnTomoVisibleFrames`` (Extract's frame selection, e.g. by
    ``--max_dose``) as a (frame_count,) bool mask indexed by frame; None without the column.
    RELION 5's reconstruction ignores it (3dem/relion PR #1344): used only on request."""
    t = ps.rows
    if VISIBLE_FRAMES not in t:
        return None
    try:
        flags: FloatArray | None = parse_vector(t.string_at(VISIBLE_FRAMES, i), "")
    except InputError:
        flags = None
    if flags is None or flags.size != frame_count or not np.isin(flags, (0.0, 1.0)).all():
        raise t.bad(
            VISIBLE_FRAMES, i,
            f"is not a list of {frame_count} flags 0 or 1, one per frame of tomogram "
            f"'{ps.tomo_names[i]}'",
        )  # fmt: skip
    mask: BoolArray = flags == 1.0
    return mask


def _general_block(blocks: dict[str, pd.DataFrame], path: str) -> pd.DataFrame | None:
    """``data_general`` (optional; if present it must have rlnTomoSubTomosAre2DStacks)."""
    if "general" not in blocks:
        return None
    general = blocks["general"]
    if "rlnTomoSubTomosAre2DStacks" not in general.columns:
        raise InputError(f"{path}: data_general has no rlnTomoSubTomosAre2DStacks")
    return general


def _particle_table(blocks: dict[str, pd.DataFrame], path: str) -> Table:
    """``data_particles`` (at least one row)."""
    if "particles" not in blocks:
        raise InputError(f"{path}: particle set has no data_particles block")
    t = Table(blocks["particles"], path, "particles")
    if len(t) == 0:
        raise InputError(f"{path}: data_particles is empty: there are no particles")
    return t


def _coordinates(t: Table, path: str) -> tuple[FloatArray, bool]:
    """(n, 3) coordinates and whether they are centred Å (else unbinned pixels)."""
    if t.has_all(*CENTRED):
        return np.stack([t.floats(lb) for lb in CENTRED], -1), True
    if t.has_all(*PIXEL):
        return np.stack([t.floats(lb) for lb in PIXEL], -1), False
    raise InputError(
        f"{path}: data_particles has no particle coordinates "
        "(rlnCenteredCoordinateX/Y/ZAngst or rlnCoordinateX/Y/Z)"
    )


def _angles(t: Table, labels: tuple[str, str, str]) -> FloatArray:
    """(n, 3) Euler angles (rot, tilt, psi) in degrees."""
    return np.stack([t.floats(lb) for lb in labels], -1)


def _half_sets(t: Table) -> IntArray:
    """(n,) rlnRandomSubset, each 1 or 2 (the label's domain)."""
    return t.ints("rlnRandomSubset")


def _optics_and_groups(
    blocks: dict[str, pd.DataFrame],
    t: Table,
    tomo_names: list[str],
    tomograms: TomogramSet | None,
    path: str,
) -> tuple[Optics, IntArray]:
    """The optics table and each particle's (1-based) group, shape (n,)."""
    opt_df = blocks.get("optics")
    if opt_df is None or len(opt_df) == 0:
        if tomograms is None:
            raise InputError(f"{path}: particle set has no data_optics block")
        return _optics_from_tomograms(tomo_names, tomograms, path)
    ot = Table(opt_df, path, "optics")
    optics = _optics_from_table(ot, opt_df)
    return optics, _optics_groups(t, optics)


def _optics_from_table(ot: Table, opt_df: pd.DataFrame) -> Optics:
    """``data_optics`` as read (row g-1 for group g); values checked by their domains."""
    optics = Optics(
        pixel_size=ot.floats("rlnTomoTiltSeriesPixelSize"),
        voltage=ot.floats("rlnVoltage") if "rlnVoltage" in ot else None,
        cs=ot.floats("rlnSphericalAberration") if "rlnSphericalAberration" in ot else None,
        q0=ot.floats("rlnAmplitudeContrast") if "rlnAmplitudeContrast" in ot else None,
        even_zernike=ot.vectors("rlnEvenZernike") if "rlnEvenZernike" in ot else None,
        odd_zernike=ot.vectors("rlnOddZernike") if "rlnOddZernike" in ot else None,
        table=opt_df,
    )
    return optics


def _optics_groups(t: Table, optics: Optics) -> IntArray:
    """(n,) rlnOpticsGroup, each naming a row of ``optics``."""
    groups = t.ints("rlnOpticsGroup")
    bad = np.flatnonzero(groups > len(optics))  # (>= 1: the label's domain)
    if bad.size:
        r = int(bad[0])
        raise t.bad(
            "rlnOpticsGroup", r,
            f"names group {groups[r]}, which does not exist (data_optics has "
            f"{len(optics)} rows; group g is row g)",
        )  # fmt: skip
    return groups


def _default_particle_names(tomo_names: list[str]) -> list[str]:
    """``<tomogram>/<k>``, k counting from 1 within each tomogram (in file order)."""
    counts: dict[str, int] = {}
    names = []
    for tn in tomo_names:
        counts[tn] = counts.get(tn, 0) + 1
        names.append(f"{tn}/{counts[tn]}")
    return names


def _optics_from_tomograms(
    tomo_names: list[str], tomograms: TomogramSet, path: str
) -> tuple[Optics, IntArray]:
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
    rows: list[tuple[float, float, float, float]] = []
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
) -> list[FloatArray]:
    """Per particle, the 3D shifts (Å, tomogram axes) of each frame, from ``motion.star``.

    One (frames, 3) array per particle of ``particles``, in its order ((0, 3) for an empty
    trajectory).
    """
    path = at(root, path)
    blocks = read_star(path, "trajectory set")
    _check_particle_number(blocks, path, particles)
    n = len(particles)
    others = [(k, v) for k, v in blocks.items() if k != "general"]
    if others and others[0][0] == "0":
        warnings.warn(
            f"The trajectories in {path} have no particle names: matching them by position",
            stacklevel=2,
        )
        if len(others) < n:
            raise InputError(f"{path}: {len(others)} trajectories for {n} particles")
        return [_trajectory(path, k, v) for k, v in others[:n]]
    by_name = dict(others)
    out = []
    for name in particles.names:
        if name not in by_name:
            raise InputError(f"{path}: no trajectory for particle '{name}' (no block data_{name})")
        out.append(_trajectory(path, name, by_name[name]))
    return out


def _check_particle_number(
    blocks: dict[str, pd.DataFrame], path: str, particles: ParticleSet
) -> None:
    """``data_general`` must give rlnParticleNumber, at least the number of particles."""
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


def _trajectory(path: str, name: str, df: pd.DataFrame) -> FloatArray:
    """The (frames, 3) shifts of block ``data_<name>``."""
    tb = Table(df, path, name)
    return np.stack([tb.floats(lb) for lb in ORIGIN], -1) if len(tb) else np.zeros((0, 3))
