"""Tomogram sets: RELION 5 ``tomograms.star`` (+ one star file per tilt series) and RELION 4.

Conventions follow RELION 5 ``TomogramSet::read`` / ``loadTomogram``:

* RELION 5: ``data_global`` has ``rlnTomoTiltSeriesStarFile``; the per-tilt table is
  block ``data_<rlnTomoName>`` of that file; its row order is the frame index.
* RELION 4: no ``rlnTomoTiltSeriesStarFile``; the per-tomogram blocks follow
  ``data_global`` in the same file, in the same order as the global rows.
* ``rlnTomoProjX..W`` (RELION 4 matrices), when all four are present, take
  precedence over the RELION 5 angles.
* Images: ``rlnTomoTiltSeriesName`` (global) names one stack whose slice f is frame f
  ("option A"); otherwise each row's ``rlnMicrographName`` is ``N@stack`` or a file.

Paths are used as written: relative to the working directory, as in RELION.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .mrc import image_shape, parse_image_ref
from .star import Table, at, parse_vector, read_star

R5_ANGLE_LABELS = ("rlnTomoYTilt", "rlnTomoZRot", "rlnTomoXShiftAngst", "rlnTomoYShiftAngst")
R4_MATRIX_LABELS = ("rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ", "rlnTomoProjW")


@dataclass
class TiltSeries:
    """One tilt series with everything the reconstruction needs, per frame f."""

    name: str
    source: str  # the star file (and block) it was read from, for messages
    size: tuple[int, int, int]  # tomogram (w0, h0, d0) in unbinned tilt-series pixels
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
    r4_projection: np.ndarray | None
    tilt_angles: np.ndarray | None  # (fc, 3): rlnTomoXTilt, rlnTomoYTilt, rlnTomoZRot
    shifts_angst: np.ndarray | None  # (fc, 2): rlnTomoXShiftAngst, rlnTomoYShiftAngst
    defocus_u: np.ndarray  # (fc,) Å
    defocus_v: np.ndarray
    defocus_angle: np.ndarray  # deg
    pre_exposure: np.ndarray  # e/Å², cumulative dose before the tilt
    ctf_scale: np.ndarray
    ctf_bfactor: np.ndarray
    phase_shift: np.ndarray  # deg
    frames: list[tuple[str, int | None]]  # (file, 0-based index or None) per frame
    optics_group_name: str | None = None
    global_row: int = 0

    @property
    def frame_count(self) -> int:
        return len(self.frames)

    @property
    def centre(self) -> np.ndarray:
        """The tomogram centre for de-centring coordinates and depth: N/2 (real division)."""
        return np.array(self.size, dtype=np.float64) / 2.0


@dataclass
class TomogramSet:
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

    tables: list[Table] = []
    if "rlnTomoTiltSeriesStarFile" in glob:
        star_files = glob.strings("rlnTomoTiltSeriesStarFile")
        cache: dict[str, dict] = {}
        for r, (name, fn) in enumerate(zip(names, star_files, strict=True)):
            if fn not in cache:
                try:
                    cache[fn] = read_star(
                        at(root, fn), f"tilt-series star file of tomogram '{name}'"
                    )
                except InputError as e:
                    raise InputError(
                        f"{e} (from {glob.where('rlnTomoTiltSeriesStarFile', r)})"
                    ) from None
            tb = cache[fn]
            if name not in tb or len(tb[name]) == 0:
                raise InputError(
                    f"{fn}: no rows in block data_{name} "
                    f"(the tilt series named in {path} row {r + 1})"
                )
            t = Table(tb[name], fn, name)
            if "rlnMicrographPreExposure" not in t:
                raise t.missing("rlnMicrographPreExposure")
            tables.append(t)
    else:
        warnings.warn(
            f"{path} has no rlnTomoTiltSeriesStarFile: reading it as a RELION 4 tomogram set",
            stacklevel=2,
        )
        others = [(k, v) for k, v in blocks.items() if k != "global"]
        for r, name in enumerate(names):
            if r >= len(others) or others[r][0] != name:
                found = others[r][0] if r < len(others) else "nothing"
                raise InputError(
                    f"{path}: RELION 4 tomogram set: block {r + 2} should be data_{name} "
                    f"(global row {r + 1}) but is {'data_' + found if r < len(others) else found}"
                )
            tables.append(Table(others[r][1], path, name))

    out = TomogramSet(path=str(path), global_table=glob)
    for r, (name, table) in enumerate(zip(names, tables, strict=True)):
        out.tomograms.append(_load_tilt_series(glob, r, name, table, check_images, root))
    return out


def _load_tilt_series(
    glob: Table, r: int, name: str, m: Table, check_images: bool, root: str | None = None
) -> TiltSeries:
    gpath = glob.path
    for label in ("rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ"):
        if label not in glob:
            raise glob.missing(label)
    size = tuple(
        int(round(glob.float_at(lb, r))) for lb in ("rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ")
    )
    if min(size) <= 0:
        raise InputError(f"{glob.where('rlnTomoSizeX', r)}: tomogram size {size} must be positive")
    hand = glob.float_at("rlnTomoHand", r)
    if "rlnTomoTiltSeriesPixelSize" not in glob:
        raise glob.missing("rlnTomoTiltSeriesPixelSize")
    px = glob.float_at("rlnTomoTiltSeriesPixelSize", r)
    if px < 0.001:
        raise InputError(
            f"{glob.where('rlnTomoTiltSeriesPixelSize', r)}: pixel size {px} must be positive"
        )
    voltage = glob.float_at("rlnVoltage", r)
    cs = glob.float_at("rlnSphericalAberration", r)
    q0 = glob.float_at("rlnAmplitudeContrast", r)
    if not 0.0 <= q0 <= 1.0:
        raise InputError(f"{glob.where('rlnAmplitudeContrast', r)}: {q0} is not in [0, 1]")
    if voltage <= 0:
        raise InputError(f"{glob.where('rlnVoltage', r)}: {voltage} kV must be positive")
    bfac_dose = glob.float_at("rlnCtfBfactorPerElectronDose", r, 0.0)
    slope = glob.float_at("rlnTomoDefocusSlope", r, 1.0)
    og_name = glob.string_at("rlnOpticsGroupName", r, "") or None

    if "rlnTomoDeformationGridSizeX" in glob and "rlnTomoDeformationGridSizeY" in glob:
        if "rlnTomoDeformationCoefficients" in m:
            raise InputError(
                f"{glob.where('rlnTomoDeformationType', r)}: 2D image deformations (from Polish) "
                "are not supported; use tilt series without rlnTomoDeformation* labels"
            )

    # --- images -----------------------------------------------------------------
    if "rlnTomoTiltSeriesName" in glob:
        try:
            stack, _ = parse_image_ref(glob.string_at("rlnTomoTiltSeriesName", r))
            stack = at(root, stack)
        except InputError as e:
            raise InputError(f"{glob.where('rlnTomoTiltSeriesName', r)}: {e}") from None
        fc = int(round(glob.float_at("rlnTomoFrameCount", r)))
        if fc < 1:
            raise InputError(f"{glob.where('rlnTomoFrameCount', r)}: {fc} frames (at least 1)")
        if fc > len(m):
            raise InputError(
                f"{glob.where('rlnTomoFrameCount', r)}: {fc} frames, but {m.path} data_{name} "
                f"has only {len(m)} rows"
            )
        frames: list[tuple[str, int | None]] = [(stack, f) for f in range(fc)]
        if check_images:
            n, h_, w_ = image_shape(stack, f"tilt-series stack of tomogram '{name}'")
            if n < fc:
                raise InputError(
                    f"{stack}: stack holds {n} images but tomogram '{name}' has {fc} frames"
                )
            image_size = (w_, h_)
        else:
            image_size = (0, 0)
    else:
        if "rlnMicrographName" not in m:
            raise InputError(
                f"{m.path}: data_{name} has no rlnMicrographName column and {gpath} data_global "
                "has no rlnTomoTiltSeriesName"
            )
        fc = len(m)
        if fc == 0:
            raise InputError(f"{m.path}: data_{name} has no rows (no tilt images)")
        refs = m.strings("rlnMicrographName")
        frames = []
        for f, ref in enumerate(refs):
            try:
                fn, idx = parse_image_ref(ref)
                frames.append((at(root, fn), idx))
            except InputError as e:
                raise InputError(f"{m.where('rlnMicrographName', f)}: {e}") from None
        image_size = (0, 0)
        if check_images:
            shapes: dict[str, tuple[int, int, int]] = {}
            for f, (fn, idx) in enumerate(frames):
                if fn not in shapes:
                    try:
                        shapes[fn] = image_shape(fn, f"tilt image of tomogram '{name}'")
                    except InputError as e:
                        raise InputError(f"{e} (from {m.where('rlnMicrographName', f)})") from None
                n, h_, w_ = shapes[fn]
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

    # --- per-frame metadata (first fc rows) --------------------------------------
    def col(label, default=None):
        return m.floats(label, default)[:fc]

    r4 = angles = shifts = None
    if m.has_all(*R4_MATRIX_LABELS):
        r4 = np.zeros((fc, 4, 4))
        for i, label in enumerate(R4_MATRIX_LABELS):
            rows = [
                parse_vector(v, m.where(label, f), 4) for f, v in enumerate(m.strings(label)[:fc])
            ]
            r4[:, i, :] = np.array(rows)
    if m.has_all(*R5_ANGLE_LABELS):
        angles = np.stack([col("rlnTomoXTilt", 0.0), col("rlnTomoYTilt"), col("rlnTomoZRot")], -1)
        shifts = np.stack([col("rlnTomoXShiftAngst"), col("rlnTomoYShiftAngst")], -1)
    if r4 is None and angles is None:
        raise InputError(
            f"{m.path}: data_{name} has neither tilt angles ({', '.join(R5_ANGLE_LABELS)}) "
            f"nor projection matrices ({', '.join(R4_MATRIX_LABELS)})"
        )

    du, dv = col("rlnDefocusU"), col("rlnDefocusV")
    if q0 < 1e-6 and abs(cs) < 1e-6:
        zero = np.flatnonzero((np.abs(du) < 1e-6) & (np.abs(dv) < 1e-6))
        if zero.size:
            raise InputError(
                f"{m.where('rlnDefocusU', int(zero[0]))}: defocus, Cs and amplitude contrast "
                "are all "
                "zero (an all-zero CTF)"
            )

    return TiltSeries(
        name=name,
        source=f"{m.path} data_{name}",
        size=size,  # type: ignore[arg-type]
        image_size=image_size,
        pixel_size=px,
        hand=hand,
        voltage=voltage,
        cs=cs,
        q0=q0,
        bfactor_per_dose=bfac_dose,
        defocus_slope=slope,
        r4_projection=r4,
        tilt_angles=angles,
        shifts_angst=shifts,
        defocus_u=du,
        defocus_v=dv,
        defocus_angle=col("rlnDefocusAngle"),
        pre_exposure=col("rlnMicrographPreExposure"),
        ctf_scale=col("rlnCtfScalefactor", 1.0),
        ctf_bfactor=col("rlnCtfBfactor", 0.0),
        phase_shift=col("rlnPhaseShift", 0.0),
        frames=frames,
        optics_group_name=og_name,
        global_row=r,
    )
