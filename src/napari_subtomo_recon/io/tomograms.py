"""Tomogram sets: RELION 5 ``tomograms.star`` (+ one star file per tilt series) and RELION 4.

Conventions follow RELION 5 ``TomogramSet::read`` / ``loadTomogram``:

* RELION 5: ``data_global`` has ``rlnTomoTiltSeriesStarFile``; the per-tilt table is
  block ``data_<rlnTomoName>`` of that file; its row order is the frame index.
* RELION 4: no ``rlnTomoTiltSeriesStarFile``; the per-tomogram blocks follow
  ``data_global`` in the same file, in the same order as the global rows.
* ``rlnTomoProjX..W`` (RELION 4 matrices), when all four are present, take
  precedence over the RELION 5 angles (``has_old_matrix`` is tested first in
  ``loadTomogram``), even when the two disagree.
* Without all three ``rlnTomoSizeX/Y/Z`` the size is RELION's -999 (see ``_tomogram_size``).
* Images: ``rlnTomoTiltSeriesName`` (global) names one stack whose slice f is frame f
  ("option A"); otherwise each row's ``rlnMicrographName`` is ``N@stack`` or a file.

Paths are used as written: relative to the working directory, as in RELION.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from ..errors import InputError
from ._typing import FloatArray
from .mrc import image_shape, parse_image_ref
from .star import Table, at, parse_vector, read_star

if TYPE_CHECKING:
    import pandas as pd

#: A tilt image: (file, 0-based image number in it, or None for a file that is one image).
Frame: TypeAlias = tuple[str, int | None]

R5_ANGLE_LABELS = ("rlnTomoYTilt", "rlnTomoZRot", "rlnTomoXShiftAngst", "rlnTomoYShiftAngst")
R4_MATRIX_LABELS = ("rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ", "rlnTomoProjW")
#: RELION's tomogram size when data_global lacks any of rlnTomoSizeX/Y/Z.
MISSING_SIZE = -999


@dataclass
class TiltSeries:
    """One tilt series with everything the reconstruction needs, per frame f.

    Per-frame arrays have shape (fc,) (fc = the frame count), in the row order of the
    tilt-series table, which is the frame index.
    """

    name: str
    source: str  # the star file (and block) it was read from, for messages
    size: tuple[int, int, int]  # tomogram (w0, h0, d0), unbinned tilt-series px (or -999s)
    image_size: tuple[int, int]  # tilt image (W, H)
    pixel_size: float  # rlnTomoTiltSeriesPixelSize, Å
    hand: float
    voltage: float  # kV
    cs: float  # mm
    q0: float
    bfactor_per_dose: float
    defocus_slope: float
    # Geometry as written: RELION 4 matrices (fc, 4, 4), or RELION 5 angles (deg) and
    # shifts (Å).  core.geometry.tilt_projections turns either into P_f.
    r4_projection: FloatArray | None  # (fc, 4, 4)
    tilt_angles: FloatArray | None  # (fc, 3): rlnTomoXTilt, rlnTomoYTilt, rlnTomoZRot
    shifts_angst: FloatArray | None  # (fc, 2): rlnTomoXShiftAngst, rlnTomoYShiftAngst
    defocus_u: FloatArray  # (fc,) Å
    defocus_v: FloatArray  # (fc,) Å
    defocus_angle: FloatArray  # (fc,) deg
    pre_exposure: FloatArray  # (fc,) e/Å², cumulative dose before the tilt
    ctf_scale: FloatArray  # (fc,)
    ctf_bfactor: FloatArray  # (fc,) Å²
    phase_shift: FloatArray  # (fc,) deg
    frames: list[Frame]  # (file, 0-based index or None) per frame
    optics_group_name: str | None = None
    global_row: int = 0
    star_file: str = ""  # the star file of its per-tilt table, as a path to open
    # 2D image deformations from Polish (core.deformation): RELION's type name, the grid
    # (gx, gy) and the coefficients (fc, n) of each frame; None without deformations
    deformation_type: str | None = None
    deformation_grid: tuple[int, int] = (0, 0)
    deformation_coefficients: FloatArray | None = None

    @property
    def frame_count(self) -> int:
        return len(self.frames)

    @property
    def centre(self) -> FloatArray:
        """The tomogram centre for de-centring coordinates and depth: N/2 (real division)."""
        return np.array(self.size, dtype=np.float64) / 2.0


@dataclass
class TomogramSet:
    """The tilt series of a tomogram set, in the order of the rows of ``data_global``."""

    path: str
    tomograms: list[TiltSeries] = field(default_factory=list)
    global_table: Table | None = None

    def names(self) -> list[str]:
        return [t.name for t in self.tomograms]

    def index_of(self, name: str) -> int:
        for i, t in enumerate(self.tomograms):
            if t.name == name:
                return i
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.tomograms)


def read_tomogram_set(path: str, check_images: bool = True, root: str | None = None) -> TomogramSet:
    """Read a RELION 5 or RELION 4 tomogram set.

    ``check_images`` reads the header of every referenced image (sizes, frame
    counts); the pixels themselves are read later, lazily.
    """
    path = at(root, path)
    blocks = read_star(path, "tomogram set")
    glob, names = _global_table(blocks, path)
    if "rlnTomoTiltSeriesStarFile" in glob:
        tables = _r5_tilt_tables(glob, names, path, root)
    else:
        warnings.warn(
            f"{path} has no rlnTomoTiltSeriesStarFile: reading it as a RELION 4 tomogram set",
            stacklevel=2,
        )
        tables = _r4_tilt_tables(blocks, names, path)

    out = TomogramSet(path=str(path), global_table=glob)
    for r, (name, table) in enumerate(zip(names, tables, strict=True)):
        out.tomograms.append(_load_tilt_series(glob, r, name, table, check_images, root))
    return out


# ---------------------------------------------------------------------------------------------
# The global table and the per-tilt tables
# ---------------------------------------------------------------------------------------------


def _global_table(blocks: dict[str, pd.DataFrame], path: str) -> tuple[Table, list[str]]:
    """``data_global`` and its tomogram names (one per row, unique)."""
    if "global" not in blocks:
        raise InputError(f"{path}: tomogram set has no data_global block")
    glob = Table(blocks["global"], path, "global")
    if len(glob) == 0:
        raise InputError(f"{path}: data_global of the tomogram set is empty")
    if "rlnTomoName" not in glob:
        raise glob.missing("rlnTomoName")
    names = glob.strings("rlnTomoName")
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise InputError(f"{path}: data_global lists tomogram '{sorted(dup)[0]}' more than once")
    return glob, names


def _r5_tilt_tables(glob: Table, names: list[str], path: str, root: str | None) -> list[Table]:
    """RELION 5: block ``data_<name>`` of each row's ``rlnTomoTiltSeriesStarFile``."""
    star_files = glob.strings("rlnTomoTiltSeriesStarFile")
    cache: dict[str, dict[str, pd.DataFrame]] = {}
    tables: list[Table] = []
    for r, (name, fn) in enumerate(zip(names, star_files, strict=True)):
        if fn not in cache:
            try:
                cache[fn] = read_star(at(root, fn), f"tilt-series star file of tomogram '{name}'")
            except InputError as e:
                raise InputError(
                    f"{e} (from {glob.where('rlnTomoTiltSeriesStarFile', r)})"
                ) from None
        tb = cache[fn]
        if name not in tb or len(tb[name]) == 0:
            raise InputError(
                f"{fn}: no rows in block data_{name} (the tilt series named in {path} row {r + 1})"
            )
        t = Table(tb[name], at(root, fn), name)
        if "rlnMicrographPreExposure" not in t:
            raise t.missing("rlnMicrographPreExposure")
        tables.append(t)
    return tables


def _r4_tilt_tables(blocks: dict[str, pd.DataFrame], names: list[str], path: str) -> list[Table]:
    """RELION 4: the blocks after ``data_global`` of the same file, in the order of its rows."""
    others = [(k, v) for k, v in blocks.items() if k != "global"]
    tables: list[Table] = []
    for r, name in enumerate(names):
        if r >= len(others) or others[r][0] != name:
            found = others[r][0] if r < len(others) else "nothing"
            raise InputError(
                f"{path}: RELION 4 tomogram set: block {r + 2} should be data_{name} "
                f"(global row {r + 1}) but is {'data_' + found if r < len(others) else found}"
            )
        tables.append(Table(others[r][1], path, name))
    return tables


# ---------------------------------------------------------------------------------------------
# One tilt series: global row r of the tomogram set and its per-tilt table m
# ---------------------------------------------------------------------------------------------


def _load_tilt_series(
    glob: Table, r: int, name: str, m: Table, check_images: bool, root: str | None = None
) -> TiltSeries:
    """The tilt series of global row ``r``; ``m`` is its per-tilt table (one row per frame)."""
    size = _tomogram_size(glob, r)
    optics = _global_optics(glob, r)
    if "rlnTomoTiltSeriesName" in glob:
        frames, image_size = _stack_frames(glob, r, name, m, check_images, root)
    else:
        frames, image_size = _micrograph_frames(glob, name, m, check_images, root)
    fc = len(frames)
    r4, angles, shifts = _frame_geometry(m, name, fc)
    du, dv = _frame_column(m, "rlnDefocusU", fc), _frame_column(m, "rlnDefocusV", fc)
    _reject_zero_ctf(m, du, dv, optics)
    kind, grid, coefficients = _deformations(glob, r, name, m, fc)
    return TiltSeries(
        name=name,
        source=f"{m.path} data_{name}",
        size=size,
        image_size=image_size,
        pixel_size=optics.pixel_size,
        hand=optics.hand,
        voltage=optics.voltage,
        cs=optics.cs,
        q0=optics.q0,
        bfactor_per_dose=optics.bfactor_per_dose,
        defocus_slope=optics.defocus_slope,
        r4_projection=r4,
        tilt_angles=angles,
        shifts_angst=shifts,
        defocus_u=du,
        defocus_v=dv,
        defocus_angle=_frame_column(m, "rlnDefocusAngle", fc),
        pre_exposure=_frame_column(m, "rlnMicrographPreExposure", fc),
        ctf_scale=_frame_column(m, "rlnCtfScalefactor", fc, 1.0),
        ctf_bfactor=_frame_column(m, "rlnCtfBfactor", fc, 0.0),
        phase_shift=_frame_column(m, "rlnPhaseShift", fc, 0.0),
        frames=frames,
        optics_group_name=optics.group_name,
        global_row=r,
        star_file=m.path,
        deformation_type=kind,
        deformation_grid=grid,
        deformation_coefficients=coefficients,
    )


def _tomogram_size(glob: Table, r: int) -> tuple[int, int, int]:
    """(w0, h0, d0) of global row ``r``, in unbinned tilt-series pixels (each >= 1: the
    labels' domains).

    Without all three ``rlnTomoSize*`` labels RELION 5 sets all three to -999
    (``tomogram_set.cpp: loadTomogram``) and carries on: the centre is then -499.5 and
    the projection's specimen centre int(-999/2) = -499, so the particles land 0.5 px
    from where even sizes would put them.  We do the same (with a warning).
    """
    labels = ("rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ")
    if not glob.has_all(*labels):
        if r == 0:
            absent = ", ".join(lb for lb in labels if lb not in glob)
            warnings.warn(
                f"{glob.path}: data_global has no {absent}: using RELION's default size "
                f"{MISSING_SIZE} for all three (the tomogram centre is then {MISSING_SIZE / 2})",
                stacklevel=4,
            )
        return (MISSING_SIZE, MISSING_SIZE, MISSING_SIZE)
    x, y, z = (round(glob.float_at(lb, r)) for lb in labels)
    return (x, y, z)


@dataclass(frozen=True)
class _GlobalOptics:
    """The per-tomogram scalars of global row r (checked)."""

    hand: float
    pixel_size: float  # Å
    voltage: float  # kV
    cs: float  # mm
    q0: float
    bfactor_per_dose: float
    defocus_slope: float
    group_name: str | None


def _global_optics(glob: Table, r: int) -> _GlobalOptics:
    # (each value checked against its label's domain by float_at: io/labels.py)
    return _GlobalOptics(
        hand=glob.float_at("rlnTomoHand", r),
        pixel_size=glob.float_at("rlnTomoTiltSeriesPixelSize", r),
        voltage=glob.float_at("rlnVoltage", r),
        cs=glob.float_at("rlnSphericalAberration", r),
        q0=glob.float_at("rlnAmplitudeContrast", r),
        bfactor_per_dose=glob.float_at("rlnCtfBfactorPerElectronDose", r, 0.0),
        defocus_slope=glob.float_at("rlnTomoDefocusSlope", r, 1.0),
        group_name=glob.string_at("rlnOpticsGroupName", r, "") or None,
    )


DEFORMATION_TYPES = ("spline", "Fourier", "linear")


def deformation_coefficient_count(kind: str, gx: int, gy: int) -> int:
    """Numbers per frame of a deformation, as Polish writes them (RELION's
    ``getParameterCount`` of the model; the layouts are in ``core/deformation.py``)."""
    if kind == "spline":
        return 8 * gx * gy
    if kind == "Fourier":  # the frequencies of Fourier2DDeformationModel, two directions
        n = sum(gx // 2 + (0 if y == 0 else 1) if y < gy // 2 else gx // 2 for y in range(gy))
        return 4 * n
    return 3


def _deformations(
    glob: Table, r: int, name: str, m: Table, fc: int
) -> tuple[str | None, tuple[int, int], FloatArray | None]:
    """(type, (gx, gy), coefficients (fc, n)) of global row ``r``, or (None, (0, 0), None).

    As ``TomogramSet::loadTomogram``: deformations exist iff both grid-size labels do (the
    type and coefficients are then required: RELION stops on an unknown type and crashes
    on frames without coefficients); other deformation labels alone are ignored.
    """
    gx_label, gy_label = "rlnTomoDeformationGridSizeX", "rlnTomoDeformationGridSizeY"
    if gx_label not in glob or gy_label not in glob:
        return None, (0, 0), None
    grid = (int(glob.ints(gx_label)[r]), int(glob.ints(gy_label)[r]))
    type_label = "rlnTomoDeformationType"
    if type_label not in glob:
        raise InputError(
            f"{glob.where(gx_label, r)}: a deformation grid is given but data_global has no "
            f"{type_label} column (spline, Fourier or linear)"
        )
    kind = glob.string_at(type_label, r)
    if kind not in DEFORMATION_TYPES:
        raise glob.bad(
            type_label, r, "is not a deformation type RELION knows (spline, Fourier or linear)"
        )
    if kind == "spline":
        for label, g in ((gx_label, grid[0]), (gy_label, grid[1])):
            if g < 2:
                raise glob.bad(label, r, "must be ≥ 2 for a spline deformation (grid nodes)")
    coef_label = "rlnTomoDeformationCoefficients"
    if coef_label not in m:
        raise InputError(
            f"{m.path}: data_{name} has no {coef_label} column, but "
            f"{glob.where(type_label, r)} declares {kind} deformations"
        )
    n = deformation_coefficient_count(kind, *grid)
    texts = m.strings(coef_label)[:fc]
    coefficients = np.zeros((fc, n))
    for f, text in enumerate(texts):
        values = parse_vector(text, m.where(coef_label, f))
        if values.size != n:
            raise m.bad(
                coef_label, f,
                f"has {values.size} numbers; a {kind} deformation on a {grid[0]}x{grid[1]} "
                f"grid has {n}",
            )  # fmt: skip
        coefficients[f] = values
    return kind, grid, coefficients


# --- images ----------------------------------------------------------------------------------


def _stack_frames(
    glob: Table, r: int, name: str, m: Table, check_images: bool, root: str | None
) -> tuple[list[Frame], tuple[int, int]]:
    """Option A: frame f is slice f of the stack ``rlnTomoTiltSeriesName``.

    Returns the frames and the image size (W, H) ((0, 0) without ``check_images``).
    """
    try:
        stack, _ = parse_image_ref(glob.string_at("rlnTomoTiltSeriesName", r))
        stack = at(root, stack)
    except InputError as e:
        raise InputError(f"{glob.where('rlnTomoTiltSeriesName', r)}: {e}") from None
    fc = round(glob.float_at("rlnTomoFrameCount", r))  # >= 1: the label's domain
    if fc > len(m):
        raise InputError(
            f"{glob.where('rlnTomoFrameCount', r)}: {fc} frames, but {m.path} data_{name} "
            f"has only {len(m)} rows"
        )
    frames: list[Frame] = [(stack, f) for f in range(fc)]
    if not check_images:
        return frames, (0, 0)
    n, h_, w_ = image_shape(stack, f"tilt-series stack of tomogram '{name}'")
    if n < fc:
        raise InputError(f"{stack}: stack holds {n} images but tomogram '{name}' has {fc} frames")
    return frames, (w_, h_)


def _micrograph_frames(
    glob: Table, name: str, m: Table, check_images: bool, root: str | None
) -> tuple[list[Frame], tuple[int, int]]:
    """Each row's ``rlnMicrographName`` (``N@stack`` or a file) is a frame.

    Returns the frames and the image size (W, H) ((0, 0) without ``check_images``).
    """
    if "rlnMicrographName" not in m:
        raise InputError(
            f"{m.path}: data_{name} has no rlnMicrographName column and {glob.path} data_global "
            "has no rlnTomoTiltSeriesName"
        )
    if len(m) == 0:
        raise InputError(f"{m.path}: data_{name} has no rows (no tilt images)")
    frames: list[Frame] = []
    for f, ref in enumerate(m.strings("rlnMicrographName")):
        try:
            fn, idx = parse_image_ref(ref)
            frames.append((at(root, fn), idx))
        except InputError as e:
            raise InputError(f"{m.where('rlnMicrographName', f)}: {e}") from None
    if not check_images:
        return frames, (0, 0)
    return frames, _micrograph_image_size(name, m, frames)


def _micrograph_image_size(name: str, m: Table, frames: list[Frame]) -> tuple[int, int]:
    """(W, H) of the tilt images, which must exist and all have the same size."""
    image_size = (0, 0)
    shapes: dict[str, tuple[int, int, int]] = {}
    for f, (fn, idx) in enumerate(frames):
        if fn not in shapes:
            try:
                shapes[fn] = image_shape(fn, f"tilt image of tomogram '{name}'")
            except InputError as e:
                raise InputError(f"{e} (from {m.where('rlnMicrographName', f)})") from None
        n, h_, w_ = shapes[fn]
        if idx is None and n > 1:  # would silently read its first image for every tilt
            raise m.bad(
                "rlnMicrographName", f,
                f"names a stack of {n} images without an image number: write N@{fn} "
                "(N from 1) for its N-th image",
            )  # fmt: skip
        if idx is not None and idx >= n:
            raise InputError(
                f"{m.where('rlnMicrographName', f)}: image {idx + 1} of {fn} requested, "
                f"but the stack holds {n} images"
            )
        if f == 0:
            image_size = (w_, h_)
        elif (w_, h_) != image_size:
            raise InputError(
                f"{m.where('rlnMicrographName', f)}: image size {w_}x{h_} differs from "
                f"frame 1 ({image_size[0]}x{image_size[1]})"
            )
    return image_size


# --- per-frame metadata (the first fc rows) ----------------------------------------------------


def _frame_column(m: Table, label: str, fc: int, default: float | None = None) -> FloatArray:
    """Column ``label`` of the first ``fc`` rows, (fc,) float64."""
    return m.floats(label, default)[:fc]


def _frame_geometry(
    m: Table, name: str, fc: int
) -> tuple[FloatArray | None, FloatArray | None, FloatArray | None]:
    """(RELION 4 matrices (fc, 4, 4), RELION 5 angles (fc, 3), RELION 5 shifts (fc, 2)),
    each None when its labels are not all present (at least one of the two kinds is)."""
    r4 = _r4_matrices(m, fc) if m.has_all(*R4_MATRIX_LABELS) else None
    angles = shifts = None
    if m.has_all(*R5_ANGLE_LABELS):
        angles = np.stack(
            [
                _frame_column(m, "rlnTomoXTilt", fc, 0.0),
                _frame_column(m, "rlnTomoYTilt", fc),
                _frame_column(m, "rlnTomoZRot", fc),
            ],
            -1,
        )
        shifts = np.stack(
            [
                _frame_column(m, "rlnTomoXShiftAngst", fc),
                _frame_column(m, "rlnTomoYShiftAngst", fc),
            ],
            -1,
        )
    if r4 is None and angles is None:
        raise InputError(
            f"{m.path}: data_{name} has neither tilt angles ({', '.join(R5_ANGLE_LABELS)}) "
            f"nor projection matrices ({', '.join(R4_MATRIX_LABELS)})"
        )
    return r4, angles, shifts


def _r4_matrices(m: Table, fc: int) -> FloatArray:
    """The RELION 4 projection matrices (fc, 4, 4): rows rlnTomoProjX..W of each frame."""
    r4 = np.zeros((fc, 4, 4))
    for i, label in enumerate(R4_MATRIX_LABELS):
        rows = [parse_vector(v, m.where(label, f), 4) for f, v in enumerate(m.strings(label)[:fc])]
        r4[:, i, :] = np.array(rows)
    return r4


def _reject_zero_ctf(m: Table, du: FloatArray, dv: FloatArray, optics: _GlobalOptics) -> None:
    if optics.q0 < 1e-6 and abs(optics.cs) < 1e-6:
        zero = np.flatnonzero((np.abs(du) < 1e-6) & (np.abs(dv) < 1e-6))
        if zero.size:
            raise InputError(
                f"{m.where('rlnDefocusU', int(zero[0]))}: defocus, Cs and amplitude contrast "
                "are all "
                "zero (an all-zero CTF)"
            )
