"""Property-based and fuzz tests (hypothesis), issue 5 item 5.

1. Round trips: random valid RELION 5 / RELION 4 tomogram sets, particle sets,
   trajectories and optimisation sets are written (``io.star.write_star`` and tiny
   MRC stacks) and read back; the dataclasses hold exactly the written values, the
   frame references point at the right slices and absent labels take the defaults
   of the spec (§1).
2. Corruption fuzzing: the fixture inputs are corrupted at random (text and MRC
   bytes); the readers raise nothing but a one-line ``InputError`` naming a file,
   and ``subtomo-recon`` either succeeds or exits 1 with one such line, writing no
   maps.  Crashes found this way are pinned with ``@example``.
3. Geometry round trips: project a point with P_f (spec §2.1) and back-project the
   2D point at its known depth; Euler matrices; depth offsets.

Examples are derandomised so CI sees the same cases on every run.  For a wider
search set ``SUBTOMO_HYPOTHESIS_EXAMPLES=N`` (random examples, N per test).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from napari_subtomo_recon.cli import main
from napari_subtomo_recon.core.geometry import (
    depth_offsets,
    euler_matrix,
    particle_positions,
    project,
    projection_matrix_r5,
    tilt_projections,
)
from napari_subtomo_recon.errors import InputError
from napari_subtomo_recon.io import (
    FrameReader,
    read_optimisation_set,
    read_particle_set,
    read_tomogram_set,
    read_trajectories,
    resolve_inputs,
)
from napari_subtomo_recon.io.star import format_vector, write_star

INPUTS = Path(__file__).parent / "fixtures" / "relion" / "inputs"
_EXPLORE = int(os.environ.get("SUBTOMO_HYPOTHESIS_EXAMPLES", "0"))


def fuzz_settings(n: int) -> settings:
    """``n`` derandomised examples (or ``SUBTOMO_HYPOTHESIS_EXAMPLES`` random ones)."""
    return settings(
        max_examples=_EXPLORE or n,
        derandomize=not _EXPLORE,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@contextlib.contextmanager
def working_dir(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield Path(path)
    finally:
        os.chdir(old)


@contextlib.contextmanager
def scratch():
    """A fresh temporary folder as the working directory (paths in star files are cwd-relative)."""
    with tempfile.TemporaryDirectory(prefix="subtomo-prop-") as d, working_dir(d) as p:
        yield p


# ======================================================================================
# 1. Round trips of valid files
# ======================================================================================


def dec(lo: float, hi: float, places: int = 3):
    """Decimals with ``places`` digits: written with %.6f they read back bit for bit."""
    k = 10**places
    return st.integers(int(lo * k), int(hi * k)).map(lambda i: i / k)


_RESERVED = ("data_", "loop_", "global_", "save_", "stop_")


def _realistic(s: str) -> bool:
    # 'nan' / 'NaN' are read as NaN by starfile (then 'nan'): not a realistic name
    return s.lower() != "nan" and not s.lower().startswith(_RESERVED)


TOMO_NAMES = st.one_of(
    st.sampled_from(
        "TS_01 TS_1 01 1 007 10 1e5 0.50 -3 tomo-3 TS_01.mrc Position_12_2 None NA true inf".split()
    ),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,11}", fullmatch=True),
).filter(_realistic)

PARTICLE_NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_./\-]{0,11}", fullmatch=True).filter(
    lambda s: _realistic(s) and s != "0"
)

R5_REQUIRED = {
    "rlnTomoYTilt": dec(-70, 70),
    "rlnTomoZRot": dec(-180, 180),
    "rlnTomoXShiftAngst": dec(-100, 100),
    "rlnTomoYShiftAngst": dec(-100, 100),
    "rlnDefocusU": dec(1000, 50000, 2),
    "rlnDefocusV": dec(1000, 50000, 2),
    "rlnDefocusAngle": dec(-180, 180),
    "rlnMicrographPreExposure": dec(0, 200),
}
R5_OPTIONAL = {  # label: (values, default when absent)
    "rlnTomoXTilt": (dec(-5, 5), 0.0),
    "rlnCtfScalefactor": (dec(0.1, 1), 1.0),
    "rlnCtfBfactor": (dec(-100, 0), 0.0),
    "rlnPhaseShift": (dec(0, 180), 0.0),
}
PROJ = ("rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ", "rlnTomoProjW")
FINITE = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@st.composite
def tilt_series_specs(draw, name: str, r4: bool = False, stack_a: bool = False):
    fc = draw(st.integers(1, 5))
    # option A (a global stack per tomogram) holds for the whole set when its label is there
    mode = "stackA" if (r4 or stack_a) else draw(st.sampled_from(["refs", "files"]))
    extra_rows = draw(st.integers(0, 2)) if mode == "stackA" else 0
    rows = fc + extra_rows
    spec = {
        "name": name,
        "fc": fc,
        "mode": mode,
        "W": draw(st.integers(3, 9)),
        "H": draw(st.integers(3, 9)),
        "size": tuple(draw(st.integers(1, 500)) for _ in range(3)),
        "px": draw(dec(0.5, 10)),
        "hand": draw(st.sampled_from([1.0, -1.0])),
        "voltage": draw(st.sampled_from([100.0, 200.0, 300.0]) | dec(50, 400)),
        "cs": draw(dec(0, 5)),
        "q0": draw(dec(0, 1)),
        "bfac_dose": draw(st.none() | dec(-5, 5)),
        "slope": draw(st.none() | dec(0, 2)),
        "og_name": draw(st.none() | st.sampled_from(["optics1", "optics2", "1", "og-A"])),
        "stack_extra": draw(st.integers(0, 2)),  # stack slices beyond the frames
        "perm": draw(st.permutations(range(fc))),  # frame f -> slice perm[f] (refs mode)
        "suffix": draw(st.sampled_from(["", ":mrcs"])),
    }
    cols = {lb: [draw(s) for _ in range(rows)] for lb, s in R5_REQUIRED.items()}
    present = [lb for lb in R5_OPTIONAL if draw(st.booleans())]
    for lb in present:
        cols[lb] = [draw(R5_OPTIONAL[lb][0]) for _ in range(rows)]
    with_proj = r4 or draw(st.booleans())
    if r4:  # RELION 4 per-tomogram blocks: matrices, CTF and dose only
        cols = {lb: cols[lb] for lb in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
                                         "rlnMicrographPreExposure")}  # fmt: skip
        if "rlnCtfScalefactor" in present:
            cols["rlnCtfScalefactor"] = [draw(R5_OPTIONAL["rlnCtfScalefactor"][0])
                                         for _ in range(rows)]  # fmt: skip
    if with_proj:
        mats = draw(
            st.lists(st.lists(FINITE, min_size=16, max_size=16), min_size=rows, max_size=rows)
        )
        spec["proj"] = np.array(mats, dtype=np.float64).reshape(rows, 4, 4)
        for i, lb in enumerate(PROJ):
            cols[lb] = [format_vector(spec["proj"][r, i]) for r in range(rows)]
    else:
        spec["proj"] = None
    if draw(st.booleans()):  # labels RELION ignores here
        cols["rlnTomoNominalStageTiltAngle"] = [float(r) for r in range(rows)]
        cols["rlnCtfImage"] = [f"ctf/{name}_{r}.mrc" for r in range(rows)]
    order = draw(st.permutations(sorted(cols)))
    spec["cols"] = {lb: cols[lb] for lb in order}
    return spec


@st.composite
def tomogram_set_specs(draw, r4: bool = False):
    names = draw(st.lists(TOMO_NAMES, min_size=1, max_size=3, unique=True))
    stack_a = draw(st.booleans())
    tomos = [draw(tilt_series_specs(n, r4, stack_a)) for n in names]
    layout = draw(st.sampled_from(["per_tomogram", "shared"]))
    return {"tomos": tomos, "layout": layout, "r4": r4}


def _pixels(t: int, j: int, H: int, W: int) -> np.ndarray:
    """Distinct, exactly representable content of slice j of tomogram t."""
    return (1000.0 * (t + 1) + 100.0 * j + np.arange(H * W).reshape(H, W)).astype(np.float32)


def _write_mrc(path: str, data: np.ndarray, stack: bool) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        if stack:
            m.set_image_stack()


def write_tomogram_set(spec: dict) -> dict:
    """Write the set into the cwd; return what the reader should give per tomogram."""
    glob_rows, blocks_by_file, expected = [], {}, []
    for t, ts in enumerate(spec["tomos"]):
        name, fc, W, H = ts["name"], ts["fc"], ts["W"], ts["H"]
        safe = f"tomo{t}"  # file names need not follow the tomogram names
        cols = dict(ts["cols"])
        row = {"rlnTomoName": name}
        if ts["mode"] == "stackA":
            stack = f"tilt_series/{safe}.mrcs"
            n = fc + ts["stack_extra"]
            _write_mrc(stack, np.stack([_pixels(t, j, H, W) for j in range(n)]), True)
            row["rlnTomoTiltSeriesName"] = stack + ts["suffix"]
            row["rlnTomoFrameCount"] = fc
            frames = [(stack, f) for f in range(fc)]
            content = [_pixels(t, f, H, W) for f in range(fc)]
        elif ts["mode"] == "refs":
            stack = f"tilt_series/{safe}.mrcs"
            n = fc + ts["stack_extra"]
            _write_mrc(stack, np.stack([_pixels(t, j, H, W) for j in range(n)]), True)
            perm = ts["perm"]
            cols = {"rlnMicrographName": [f"{perm[f] + 1}@{stack}{ts['suffix']}"
                                          for f in range(fc)], **cols}  # fmt: skip
            frames = [(stack, perm[f]) for f in range(fc)]
            content = [_pixels(t, perm[f], H, W) for f in range(fc)]
        else:  # one 2D file per frame
            files = [f"tilt_series/{safe}_{f:03d}.mrc" for f in range(fc)]
            for f, fn in enumerate(files):
                _write_mrc(fn, _pixels(t, f, H, W), False)
            cols = {"rlnMicrographName": files, **cols}
            frames = [(fn, None) for fn in files]
            content = [_pixels(t, f, H, W) for f in range(fc)]
        row.update(
            {
                "rlnTomoSizeX": ts["size"][0],
                "rlnTomoSizeY": ts["size"][1],
                "rlnTomoSizeZ": ts["size"][2],
                "rlnTomoHand": ts["hand"],
                "rlnTomoTiltSeriesPixelSize": ts["px"],
                "rlnVoltage": ts["voltage"],
                "rlnSphericalAberration": ts["cs"],
                "rlnAmplitudeContrast": ts["q0"],
            }
        )
        if ts["bfac_dose"] is not None:
            row["rlnCtfBfactorPerElectronDose"] = ts["bfac_dose"]
        if ts["slope"] is not None:
            row["rlnTomoDefocusSlope"] = ts["slope"]
        if ts["og_name"] is not None:
            row["rlnOpticsGroupName"] = ts["og_name"]
        star = "tomograms.star"
        if not spec["r4"]:
            star = (
                f"tilt_series/{safe}.star" if spec["layout"] == "per_tomogram"
                else "tilt_series/all_tilt_series.star"
            )  # fmt: skip
            row["rlnTomoTiltSeriesStarFile"] = star
        glob_rows.append(row)
        blocks_by_file.setdefault(star, {})[name] = pd.DataFrame(cols)
        expected.append({"frames": frames, "content": content, "star": star})
    glob = pd.DataFrame(glob_rows)
    for lb in ("rlnCtfBfactorPerElectronDose", "rlnTomoDefocusSlope", "rlnOpticsGroupName"):
        if lb in glob and glob[lb].isna().any():
            glob = glob.drop(columns=[lb])  # only write labels every row has
    spec["written_global"] = set(glob.columns)
    Path("tilt_series").mkdir(exist_ok=True)
    if spec["r4"]:
        write_star({"global": glob, **blocks_by_file["tomograms.star"]}, "tomograms.star")
    else:
        write_star({"global": glob}, "tomograms.star")
        for fn, blocks in blocks_by_file.items():
            write_star(blocks, fn)
    return expected


def check_tomogram_set(spec: dict, expected: list, tomos) -> None:
    assert tomos.names() == [ts["name"] for ts in spec["tomos"]]
    written = spec["written_global"]
    for ts, exp, got in zip(spec["tomos"], expected, tomos.tomograms, strict=True):
        fc = ts["fc"]
        assert isinstance(got.name, str) and got.name == ts["name"]
        assert got.size == ts["size"] and got.frame_count == fc
        assert np.array_equal(got.centre, np.array(ts["size"]) / 2.0)
        assert got.image_size == (ts["W"], ts["H"])
        assert (got.pixel_size, got.hand, got.voltage) == (ts["px"], ts["hand"], ts["voltage"])
        assert (got.cs, got.q0) == (ts["cs"], ts["q0"])
        want_b = ts["bfac_dose"] if "rlnCtfBfactorPerElectronDose" in written else 0.0
        want_s = ts["slope"] if "rlnTomoDefocusSlope" in written else 1.0
        want_og = ts["og_name"] if "rlnOpticsGroupName" in written else None
        assert (got.bfactor_per_dose, got.defocus_slope) == (want_b, want_s)
        assert got.optics_group_name == want_og
        assert exp["star"] in got.source and ts["name"] in got.source
        cols = ts["cols"]

        def col(label, default=None, cols=cols, fc=fc):
            if label in cols:
                return np.array(cols[label][:fc], dtype=np.float64)
            return np.full(fc, default, dtype=np.float64)

        for attr, label, default in (
            ("defocus_u", "rlnDefocusU", None), ("defocus_v", "rlnDefocusV", None),
            ("defocus_angle", "rlnDefocusAngle", None),
            ("pre_exposure", "rlnMicrographPreExposure", None),
            ("ctf_scale", "rlnCtfScalefactor", 1.0), ("ctf_bfactor", "rlnCtfBfactor", 0.0),
            ("phase_shift", "rlnPhaseShift", 0.0),
        ):  # fmt: skip
            assert np.array_equal(getattr(got, attr), col(label, default)), label
        if spec["r4"]:
            assert got.tilt_angles is None and got.shifts_angst is None
        else:
            angles = np.stack([col("rlnTomoXTilt", 0.0), col("rlnTomoYTilt"),
                               col("rlnTomoZRot")], -1)  # fmt: skip
            shifts = np.stack([col("rlnTomoXShiftAngst"), col("rlnTomoYShiftAngst")], -1)
            assert np.array_equal(got.tilt_angles, angles)
            assert np.array_equal(got.shifts_angst, shifts)
        if ts["proj"] is not None:  # R4 matrices are exact ([repr,...]) and win
            assert np.array_equal(got.r4_projection, ts["proj"][:fc])
            assert np.array_equal(tilt_projections(got), ts["proj"][:fc])
        else:
            assert got.r4_projection is None
            P = projection_matrix_r5(
                angles[:, 0], angles[:, 1], angles[:, 2], shifts[:, 0] / ts["px"],
                shifts[:, 1] / ts["px"], ts["size"], (ts["W"], ts["H"]),
            )  # fmt: skip
            assert np.array_equal(tilt_projections(got), P)
        assert got.frames == exp["frames"]
        with FrameReader() as reader:
            for f in range(fc):
                img = reader.read(*got.frames[f])
                assert img.dtype == np.float32 and img.shape == (ts["H"], ts["W"])
                assert np.array_equal(img, exp["content"][f]), f


@given(spec=tomogram_set_specs())
@fuzz_settings(40)
def test_relion5_tomogram_sets_round_trip(spec):
    with scratch():
        expected = write_tomogram_set(spec)
        tomos = read_tomogram_set("tomograms.star")
        check_tomogram_set(spec, expected, tomos)


@given(spec=tomogram_set_specs(r4=True))
@fuzz_settings(25)
def test_relion4_tomogram_sets_round_trip(spec):
    with scratch():
        expected = write_tomogram_set(spec)
        with pytest.warns(UserWarning, match="RELION 4"):
            tomos = read_tomogram_set("tomograms.star")
        check_tomogram_set(spec, expected, tomos)


# -- particles and trajectories ---------------------------------------------------------

CENTRED = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
           "rlnCenteredCoordinateZAngst")  # fmt: skip
PIXEL = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
ORIGIN = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
SUB = ("rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi")


@st.composite
def particle_specs(draw):
    r4 = draw(st.booleans())
    tspec = draw(tomogram_set_specs(r4=r4))
    names = [t["name"] for t in tspec["tomos"]]
    n = draw(st.integers(1, 8))
    tomo_of = [draw(st.sampled_from(names)) for _ in range(n)]

    def triples(s):
        return [[draw(s) for _ in range(3)] for _ in range(n)]

    centred = not r4 and draw(st.booleans())
    cols = {"rlnTomoName": tomo_of}
    coords = triples(dec(-500, 500) if centred else dec(0, 500))
    for i, lb in enumerate(CENTRED if centred else PIXEL):
        cols[lb] = [c[i] for c in coords]
    opt = {}
    for key, labels, values in (
        ("origins", ORIGIN, dec(-20, 20)), ("angles", ANGLES, dec(-180, 180)),
        ("sub", SUB, dec(-180, 180)),
    ):  # fmt: skip
        opt[key] = triples(values) if draw(st.booleans()) else None
        if opt[key] is not None:
            for i, lb in enumerate(labels):
                cols[lb] = [v[i] for v in opt[key]]
    subset = draw(st.none() | st.lists(st.sampled_from([1, 2]), min_size=n, max_size=n))
    if subset is not None:
        cols["rlnRandomSubset"] = subset
    pnames = None
    if draw(st.booleans()):
        pnames = draw(st.lists(PARTICLE_NAMES, min_size=n, max_size=n, unique=True))
        cols["rlnTomoParticleName"] = pnames
    optics_mode = draw(st.sampled_from(["table", "table", "absent", "empty"]))
    optics = None
    groups = None
    if optics_mode == "table":
        G = draw(st.integers(1, 3))
        optics = {"rlnOpticsGroup": list(range(1, G + 1)),
                  "rlnOpticsGroupName": [f"opticsGroup{g}" for g in range(1, G + 1)],
                  "rlnTomoTiltSeriesPixelSize": [draw(dec(0.5, 10)) for _ in range(G)]}  # fmt: skip
        for lb, s in (
            ("rlnVoltage", dec(50, 400)),
            ("rlnSphericalAberration", dec(0, 5)),
            ("rlnAmplitudeContrast", dec(0, 1)),
            ("rlnImageSize", st.integers(2, 512)),
        ):
            if draw(st.booleans()):
                optics[lb] = [draw(s) for _ in range(G)]
        groups = [draw(st.integers(1, G)) for _ in range(n)]
        cols["rlnOpticsGroup"] = groups
    if draw(st.booleans()):  # labels ignored by this program
        cols["rlnTomoVisibleFrames"] = ["[1,0,1]"] * n
        cols["rlnClassNumber"] = [1] * n
    order = draw(st.permutations(sorted(cols)))
    general = draw(st.booleans()) and not r4
    # trajectories: (fc, 3) Å shifts per particle
    fcs = {t["name"]: t["fc"] for t in tspec["tomos"]}
    traj = [
        np.array([[draw(dec(-10, 10)) for _ in range(3)] for _ in range(fcs[tn])]) for tn in tomo_of
    ]
    traj_mode = draw(st.sampled_from(["named", "positional"]))
    return {
        "tomograms": tspec,
        "n": n,
        "tomo_of": tomo_of,
        "centred": centred,
        "coords": np.array(coords, dtype=np.float64),
        **opt,
        "subset": subset,
        "names": pnames,
        "optics_mode": optics_mode,
        "optics": optics,
        "groups": groups,
        "cols": {lb: cols[lb] for lb in order},
        "general": general,
        "traj": traj,
        "traj_mode": traj_mode,
        "traj_extra": draw(st.integers(0, 2)),
        "traj_order": draw(st.permutations(range(n))),
    }


def write_particle_set(spec: dict) -> None:
    blocks = {}
    if spec["general"]:
        blocks["general"] = {"rlnTomoSubTomosAre2DStacks": 1}
    if spec["optics_mode"] == "table":
        blocks["optics"] = pd.DataFrame(spec["optics"])
    elif spec["optics_mode"] == "empty":
        blocks["optics"] = pd.DataFrame({"rlnOpticsGroup": [], "rlnTomoTiltSeriesPixelSize": []})
    blocks["particles"] = pd.DataFrame(spec["cols"])
    write_star(blocks, "particles.star")


def expected_particle_names(spec: dict) -> list[str]:
    if spec["names"] is not None:
        return spec["names"]
    counts: dict[str, int] = {}
    out = []
    for tn in spec["tomo_of"]:
        counts[tn] = counts.get(tn, 0) + 1
        out.append(f"{tn}/{counts[tn]}")
    return out


def write_trajectories(spec: dict, names: list[str]) -> None:
    blocks = {"general": {"rlnParticleNumber": spec["n"] + spec["traj_extra"]}}

    def table(arr):
        return pd.DataFrame({lb: arr[:, i] for i, lb in enumerate(ORIGIN)})

    if spec["traj_mode"] == "positional":
        for i in range(spec["n"]):
            blocks[str(i)] = table(spec["traj"][i])
        for i in range(spec["n"], spec["n"] + spec["traj_extra"]):
            blocks[str(i)] = table(np.zeros((2, 3)))
    else:
        for i in spec["traj_order"]:
            blocks[names[i]] = table(spec["traj"][i])
    write_star(blocks, "motion.star")


@given(spec=particle_specs())
@fuzz_settings(40)
def test_particle_sets_and_trajectories_round_trip(spec):
    with scratch(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_tomogram_set(spec["tomograms"])
        write_particle_set(spec)
        tomos = read_tomogram_set("tomograms.star")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parts = read_particle_set("particles.star", tomos)
        n = spec["n"]
        assert len(parts) == n
        assert parts.tomo_names == spec["tomo_of"]
        assert all(isinstance(s, str) for s in parts.tomo_names + parts.names)
        names = expected_particle_names(spec)
        assert parts.names == names
        if spec["names"] is None:
            assert any("rlnTomoParticleName" in str(w.message) for w in caught)
        assert parts.centred == spec["centred"]
        assert np.array_equal(parts.coords, spec["coords"])
        zeros = np.zeros((n, 3))
        assert np.array_equal(
            parts.origins_angst, zeros if spec["origins"] is None else np.array(spec["origins"])
        )
        for attr, key in (("angles", "angles"), ("sub_angles", "sub")):
            want = spec[key]
            got = getattr(parts, attr)
            assert (got is None) if want is None else np.array_equal(got, np.array(want))
        if spec["subset"] is None:
            assert parts.subset is None and not parts.has_half_sets
        else:
            assert np.array_equal(parts.subset, spec["subset"]) and parts.has_half_sets
        assert (parts.general is not None) == spec["general"]
        if spec["optics_mode"] == "table":
            o = spec["optics"]
            assert np.array_equal(parts.optics_group, spec["groups"])
            assert np.array_equal(parts.optics.pixel_size, o["rlnTomoTiltSeriesPixelSize"])
            for attr, lb in (("voltage", "rlnVoltage"), ("cs", "rlnSphericalAberration"),
                             ("q0", "rlnAmplitudeContrast")):  # fmt: skip
                got = getattr(parts.optics, attr)
                assert (got is None) if lb not in o else np.array_equal(got, o[lb])
            want_px = np.array(o["rlnTomoTiltSeriesPixelSize"])[np.array(spec["groups"]) - 1]
            assert np.array_equal(parts.pixel_size(), want_px)
        else:  # RELION's fallback: one group per optics group name (or tomogram), by first use
            by_name = {t["name"]: t for t in spec["tomograms"]["tomos"]}
            written = spec["tomograms"]["written_global"]
            order, first = [], {}
            for tn in spec["tomo_of"]:
                t = by_name[tn]
                key = t["og_name"] if "rlnOpticsGroupName" in written else tn
                if key not in first:
                    first[key] = t
                    order.append(key)
            want_groups = [
                order.index(by_name[tn]["og_name"] if "rlnOpticsGroupName" in written else tn) + 1
                for tn in spec["tomo_of"]
            ]
            assert np.array_equal(parts.optics_group, want_groups)
            assert np.array_equal(parts.optics.pixel_size, [first[k]["px"] for k in order])
            assert np.array_equal(parts.optics.voltage, [first[k]["voltage"] for k in order])

        write_trajectories(spec, names)
        traj = read_trajectories("motion.star", parts)
        assert len(traj) == n
        for i in range(n):
            assert np.array_equal(traj[i], spec["traj"][i]), i


PATHS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_./\-]{0,15}", fullmatch=True).filter(_realistic)
OPT_LABELS = {
    "particles": "rlnTomoParticlesFile",
    "tomograms": "rlnTomoTomogramsFile",
    "trajectories": "rlnTomoTrajectoriesFile",
    "manifolds": "rlnTomoManifoldsFile",
    "reference1": "rlnTomoReferenceMap1File",
    "reference2": "rlnTomoReferenceMap2File",
    "mask": "rlnTomoReferenceMaskFile",
    "fsc": "rlnTomoReferenceFscFile",
}


@given(
    entries=st.dictionaries(st.sampled_from(sorted(OPT_LABELS)), PATHS, min_size=1),
    block=st.sampled_from(["", "optimisation_set", "1", "general"]),
    overrides=st.tuples(st.none() | PATHS, st.none() | PATHS, st.none() | PATHS),
)
@fuzz_settings(30)
def test_optimisation_sets_round_trip(entries, block, overrides):
    with scratch():
        write_star({block: {OPT_LABELS[k]: v for k, v in entries.items()}}, "opt.star")
        if not ({"particles", "tomograms"} & set(entries)):
            with pytest.raises(InputError, match="opt.star"):
                read_optimisation_set("opt.star")
            return
        got = read_optimisation_set("opt.star")
        for attr in OPT_LABELS:
            assert getattr(got, attr) == entries.get(attr, ""), attr
        p, t, mot = overrides
        want_p = p or entries.get("particles", "")
        want_t = t or entries.get("tomograms", "")
        if not (want_p and want_t):
            with pytest.raises(InputError):
                resolve_inputs("opt.star", p or "", t or "", mot or "")
            return
        r = resolve_inputs("opt.star", p or "", t or "", mot or "")
        assert (r.particles, r.tomograms) == (want_p, want_t)
        assert r.trajectories == (mot or entries.get("trajectories", ""))


# ======================================================================================
# 2. Corruption fuzzing: never a traceback
# ======================================================================================

DATASETS = ("r5", "r4", "extra", "r5-zernike", "deform-spline", "deform-fourier")
SOURCE = {
    "r5": "r5", "r4": "r4", "extra": "extra", "r5-zernike": "r5",
    "deform-spline": "deform/spline", "deform-fourier": "deform/fourier",
}  # fmt: skip
PARTICLES = {"r5-zernike": "particles_zernike.star"}  # optics with aberration vectors


def _files(dataset: str, kind: str) -> list[str]:
    root = INPUTS / SOURCE[dataset]
    out = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        is_star = p.suffix == ".star"
        if (kind == "star") == is_star:
            out.append(p.relative_to(root).as_posix())
    return out


FILES = {(d, k): _files(d, k) for d in DATASETS for k in ("star", "mrc")}
ALL_NAMES = {
    d: {name for k in ("star", "mrc") for f in FILES[(d, k)] for name in (f, Path(f).name)}
    for d in DATASETS
}

STAR_OPS = (
    "truncate", "delete_line", "duplicate_line", "swap_lines", "replace_token",
    "replace_column", "drop_column", "remove_label", "rename_block", "empty",
    "insert_bytes", "number_to_string", "shuffle_rows", "blank_value",
)  # fmt: skip
MRC_OPS = ("truncate", "header_field", "header_bytes", "data_bytes", "empty", "append")
GARBAGE = (
    "", "nan", "NaN", "inf", "-inf", "1e308", "-1e308", "1e400", "-1", "-1e9", "0", "0.0",
    "1.5", "2.5", "3", "999999999999", "abc", "[", "]", "[1,2", "[nan,1,2,3]", "[]", "@",
    "0@x.mrcs", "-3@tilt_series/TS_01.mrcs", "99999@tilt_series/TS_01.mrcs", "x@y", "1@",
    "@@", "'", '"', "#", "data_", "loop_", "_rlnFoo", "é", "\x00", "TS_99", "None", "True",
    "tilt_series", ".", "/",
)  # fmt: skip


@st.composite
def corruptions(draw):
    dataset = draw(st.sampled_from(DATASETS))
    kind = draw(st.sampled_from(["star", "star", "star", "mrc"]))
    path = draw(st.sampled_from(FILES[(dataset, kind)]))
    # whole-column replacements reach the readers' value checks most often: weight them
    star_ops = STAR_OPS + ("replace_column",) * 5 + ("replace_token", "drop_column")
    op = draw(st.sampled_from(star_ops if kind == "star" else MRC_OPS))
    a = draw(st.integers(0, 2**31 - 1))
    b = draw(st.integers(0, 2**31 - 1))
    token = draw(st.one_of(st.sampled_from(GARBAGE), st.sampled_from(GARBAGE), st.text(max_size=6)))
    return (dataset, path, op, a, b, token)


def _loops(lines: list[bytes]) -> list[tuple[list[int], list[int]]]:
    """(label line indices, row line indices) of each loop_ table."""
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == b"loop_":
            j, labels, rows = i + 1, [], []
            while j < len(lines) and lines[j].strip().startswith(b"_"):
                labels.append(j)
                j += 1
            while (
                j < len(lines)
                and lines[j].strip()
                and not lines[j].strip().startswith((b"data_", b"loop_", b"_", b"#"))
            ):
                rows.append(j)
                j += 1
            out.append((labels, rows))
            i = j
        else:
            i += 1
    return out


def _set_token(line: bytes, k: int, new: bytes | None) -> bytes:
    """Replace (or with None, delete) whitespace-separated token k of a line."""
    toks = line.split()
    if k < len(toks):
        if new is None:
            del toks[k]
        else:
            toks[k] = new
    return b"  ".join(toks) + b"\n"


def corrupt_star(data: bytes, op: str, a: int, b: int, token: str) -> bytes:
    tok = token.encode("utf-8", "surrogatepass")
    lines = data.splitlines(keepends=True)
    n = len(lines)
    if op == "empty" or not data:
        return b""
    if op == "truncate":
        return data[: a % len(data)]
    if op == "insert_bytes":
        k = a % (len(data) + 1)
        return data[:k] + tok + bytes([b % 256]) + data[k:]
    if op == "delete_line":
        del lines[a % n]
    elif op == "duplicate_line":
        k = a % n
        lines.insert(k, lines[k])
    elif op == "swap_lines":
        i, j = a % n, b % n
        lines[i], lines[j] = lines[j], lines[i]
    elif op in ("replace_token", "number_to_string"):
        spans = [m.span() for m in re.finditer(rb"\S+", data)]
        if op == "number_to_string":
            spans = [s for s in spans if re.fullmatch(rb"-?[0-9.]+(e-?[0-9]+)?", data[s[0] : s[1]])]
            tok = tok if tok and not re.fullmatch(rb"[-+0-9.eE]*", tok) else b"abc"
        if not spans:
            return data
        s, e = spans[a % len(spans)]
        return data[:s] + tok + data[e:]
    elif op == "blank_value":  # a list-style "_label value" loses its value
        idx = [i for i, ln in enumerate(lines) if ln.startswith(b"_") and len(ln.split()) >= 2
               and not ln.split()[1].startswith(b"#")]  # fmt: skip
        if idx:
            k = idx[a % len(idx)]
            lines[k] = lines[k].split()[0] + b"\n"
    elif op in ("replace_column", "drop_column", "shuffle_rows"):
        loops = [lp for lp in _loops(lines) if lp[0] and lp[1]]
        if not loops:
            return data
        labels, rows = loops[a % len(loops)]
        k = b % len(labels)
        if op == "shuffle_rows":
            order = np.random.default_rng(b).permutation(len(rows))
            new = [lines[rows[i]] for i in order]
            for r, ln in zip(rows, new, strict=True):
                lines[r] = ln
        else:
            for r in rows:
                lines[r] = _set_token(lines[r], k, None if op == "drop_column" else (tok or b"0"))
            if op == "drop_column":
                lines[labels[k]] = b""
    elif op == "remove_label":
        idx = [i for i, ln in enumerate(lines) if ln.startswith(b"_")]
        if idx:
            lines[idx[a % len(idx)]] = b""
    elif op == "rename_block":
        idx = [i for i, ln in enumerate(lines) if ln.startswith(b"data_")]
        if idx:
            name = re.sub(rb"\s", b"", tok)
            lines[idx[a % len(idx)]] = b"data_" + name + b"\n"
    return b"".join(lines)


HEADER_VALUES = (0, -1, 1, 2, 3, 4, 6, 12, 16, 101, 1024, 2**31 - 1, -(2**31), 7, 8, 21)


def corrupt_mrc(data: bytes, op: str, a: int, b: int, token: str) -> bytes:
    buf = bytearray(data)
    if op == "empty" or not buf:
        return b""
    if op == "truncate":
        return bytes(buf[: a % len(buf)])
    if op == "append":
        return bytes(buf) + np.random.default_rng(b).bytes(b % 5000 + 1)
    if op == "header_field":  # one of the 56 32-bit words of the header
        word = a % 56
        value = HEADER_VALUES[b % len(HEADER_VALUES)] if b % 3 else b - 2**30
        if word in (10, 11, 12, 13, 14, 15, 19, 20, 21):  # cell, angles, dmin/max/mean: floats
            buf[4 * word : 4 * word + 4] = np.float32(value).tobytes()
        else:
            buf[4 * word : 4 * word + 4] = np.int32(value).tobytes()
        return bytes(buf)
    if op == "header_bytes":
        pos = a % min(1024, len(buf))
        junk = token.encode("utf-8", "surrogatepass") or bytes([b % 256])
        buf[pos : pos + len(junk)] = junk
        return bytes(buf[: len(data)]) if len(buf) > len(data) else bytes(buf)
    if op == "data_bytes":
        if len(buf) <= 1024:
            return bytes(buf)
        pos = 1024 + a % (len(buf) - 1024)
        patterns = (b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\xff\xff\x7f\x7f",
                    np.random.default_rng(b).bytes(4))  # fmt: skip
        junk = patterns[b % len(patterns)]
        buf[pos : pos + 4] = junk[: len(buf) - pos]
        return bytes(buf)
    return bytes(buf)


@contextlib.contextmanager
def corrupted_copy(corruption):
    dataset, path, op, a, b, token = corruption
    with tempfile.TemporaryDirectory(prefix="subtomo-fuzz-") as d:
        root = Path(d) / dataset
        shutil.copytree(INPUTS / SOURCE[dataset], root)
        if dataset in PARTICLES:
            write_star(
                {"": {"rlnTomoParticlesFile": PARTICLES[dataset],
                      "rlnTomoTomogramsFile": "tomograms.star"}},
                root / "optimisation_set.star",
            )  # fmt: skip
        target = root / path
        raw = target.read_bytes()
        fn = corrupt_star if path.endswith(".star") else corrupt_mrc
        target.write_bytes(fn(raw, op, a, b, token))
        with working_dir(root):
            yield root


def assert_clear_message(msg: str, corruption, root: Path) -> None:
    """One line that names a file of the data set, or a path written in the corrupted file."""
    dataset, path, *_ = corruption
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg)  # one terminal line
    names = ALL_NAMES[dataset] | {"optimisation_set.star"}
    if any(name in msg for name in names):
        return
    # e.g. a truncated 'tomograms.star' entry: "tomograms: tomogram set not found"
    head = msg.split(": ", 1)[0]
    text = (root / path).read_bytes().decode("utf-8", "replace") if path.endswith(".star") else ""
    assert head and " " not in head and head in text, f"the message names no file: {msg!r}"


def read_everything() -> None:
    """Every reader on the optimisation set's files, and every referenced frame."""
    opt = read_optimisation_set("optimisation_set.star")
    tomos = read_tomogram_set(opt.tomograms) if opt.tomograms else None
    parts = read_particle_set(opt.particles, tomos) if opt.particles else None
    if opt.trajectories and parts is not None:
        read_trajectories(opt.trajectories, parts)
    if tomos is not None:
        with FrameReader() as reader:
            for ts in tomos.tomograms:
                tilt_projections(ts)
                for f in range(ts.frame_count):
                    reader.read(*ts.frames[f])


def run_cli(argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    return code, err.getvalue()


CLI = ["--i", "optimisation_set.star", "--o", "out", "--b", "16", "--bin", "2", "--j", "1"]


def _regressions(f):
    """Crashes the fuzzing found (all fixed in the readers); each stays a fixed example."""
    for ex in REGRESSIONS:
        f = example(ex)(f)
    return f


REGRESSIONS: list[tuple] = [
    # rlnTomoFrameCount 0 / negative / -1e308 in a RELION 4 set: numpy ValueErrors
    ("r4", "tomograms.star", "replace_column", 0, 2, "0"),
    ("r4", "tomograms.star", "replace_column", 0, 2, "-1"),
    ("r4", "tomograms.star", "replace_column", 0, 122852, "-1e308"),
    # an unbalanced quote swallowed the next lines into one value: a multi-line message
    ("extra", "tomograms.star", "replace_column", 0, 0, "'"),
    # a label line moved into another loop: the same label twice in one table (now its own
    # one-line error; the multi-line check above first crashed on the duplicate columns)
    ("extra", "particles.star", "swap_lines", 11, 28, ""),
    ("r4", "tomograms.star", "swap_lines", 153, 1315, ""),
    # header dims whose product overflows int64 passed the file-size check: OverflowError
    # in FrameReader.read, and a misleading memory error from the command line
    ("r5", "tilt_series/TS_01.mrcs", "header_bytes", 0, 0, "[nan,1,2,3]"),
    # a bad rlnTomoTiltSeriesName reference: the message named no file
    ("r4", "tomograms.star", "replace_column", 0, 1, "x@y"),
]


@_regressions
@given(corruption=corruptions())
@fuzz_settings(250)
def test_corrupted_inputs_never_crash_the_readers(corruption):
    with corrupted_copy(corruption) as root, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read_everything()
            event("read")
        except InputError as e:
            event("InputError")
            assert_clear_message(str(e), corruption, root)


@_regressions
@given(corruption=corruptions())
@fuzz_settings(120)
def test_corrupted_inputs_never_crash_the_command_line(corruption):
    with corrupted_copy(corruption) as root, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, err = run_cli(CLI)
        event(f"exit code {code}")
        out = root / "out"
        if code == 0:
            assert (out / "merged.mrc").is_file()
            return
        assert code == 1, f"exit code {code} (2: an internal error, i.e. a defect): {err}"
        lines = err.strip().split("\n")  # (splitlines would also split at \x1c-\x1e)
        assert len(lines) == 1 and lines[0].startswith("subtomo-recon: error: "), err
        assert_clear_message(lines[0][len("subtomo-recon: error: ") :], corruption, root)
        written = (
            [p for p in out.rglob("*") if p.suffix in (".mrc", ".star")] if out.exists() else []
        )
        assert not written, f"a failed run wrote {written}"


@pytest.mark.parametrize("dataset", DATASETS)
def test_fuzz_fixtures_are_valid(dataset):
    """Uncorrupted, the fixtures read and run (so a failure comes from the corruption)."""
    with corrupted_copy((dataset, "optimisation_set.star", "none", 0, 0, "")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_everything()
            code, err = run_cli(CLI)
            assert code == 0, err


def test_a_parse_error_does_not_stick_to_the_path():
    """Regression: starfile caches lines (linecache) and cleared them only after a
    successful parse, so once a file failed to parse, a corrected file at the same path
    still failed (the fuzz tests saw valid fixtures fail after a corrupted one)."""
    with scratch():
        Path("opt.star").write_text("data_\n\n_rlnTomoParticlesFile\n")
        with pytest.raises(InputError, match="opt.star"):
            read_optimisation_set("opt.star")
        write_star({"": {"rlnTomoParticlesFile": "p.star", "rlnTomoTomogramsFile": "t.star"}},
                   "opt.star")  # fmt: skip
        assert read_optimisation_set("opt.star").particles == "p.star"


def test_relion4_tomogram_without_tilt_images():
    """Regression: an empty per-tomogram block of a RELION 4 set (images per row) gave a
    numpy broadcasting ValueError instead of an InputError."""
    glob = {"rlnTomoName": ["A"], "rlnTomoSizeX": [10], "rlnTomoSizeY": [10],
            "rlnTomoSizeZ": [10], "rlnTomoHand": [1.0], "rlnTomoTiltSeriesPixelSize": [1.0],
            "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7],
            "rlnAmplitudeContrast": [0.1]}  # fmt: skip
    labels = ("rlnMicrographName", *PROJ, "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
              "rlnMicrographPreExposure")  # fmt: skip
    with scratch(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_star({"global": pd.DataFrame(glob),
                    "A": pd.DataFrame({lb: [] for lb in labels})}, "tomograms.star")  # fmt: skip
        with pytest.raises(InputError, match="tomograms.star: data_A has no rows"):
            read_tomogram_set("tomograms.star")


# ======================================================================================
# 3. Geometry round trips
# ======================================================================================

ANGLE = st.floats(-180, 180, allow_nan=False)
SIZE = st.integers(1, 5000)


@given(
    xtilt=ANGLE, ytilt=ANGLE, zrot=ANGLE,
    shift=st.tuples(st.floats(-500, 500), st.floats(-500, 500)),
    tomo=st.tuples(SIZE, SIZE, SIZE), image=st.tuples(SIZE, SIZE),
    point=st.tuples(*[st.floats(-5000, 5000)] * 3),
)  # fmt: skip
@fuzz_settings(200)
def test_project_then_back_project_at_known_depth(xtilt, ytilt, zrot, shift, tomo, image, point):
    P = projection_matrix_r5(xtilt, ytilt, zrot, shift[0], shift[1], tomo, image)[0]
    p = np.array(point)
    u = project(P, p)  # (x, y) in the tilt image and the depth
    # back-project the 2D point at its known depth: solve M q = u - t
    q = np.linalg.solve(P[:3, :3], u - P[:3, 3])
    assert np.allclose(q, p, rtol=0, atol=1e-9)
    # P_f is the spec's T(shift + floor(image/2)) · Rz · Ry · Rx · T(-floor(tomo/2))
    M = Rotation.from_euler("xyz", [xtilt, ytilt, zrot], degrees=True).as_matrix()
    c_int = np.array([tomo[0] // 2, tomo[1] // 2, tomo[2] // 2], float)
    i_int = np.array([image[0] // 2 + shift[0], image[1] // 2 + shift[1], 0.0])
    assert np.allclose(P[:3, :3], M, atol=1e-12)
    assert np.allclose(P[:3, 3], -M @ c_int + i_int, rtol=1e-12, atol=1e-9)
    assert np.array_equal(P[3], [0, 0, 0, 1])
    # the integer centre of the tomogram lands on the shifted image centre, at depth 0
    assert np.allclose(project(P, c_int), i_int, atol=1e-9)


@given(
    angles=st.lists(st.tuples(ANGLE, ANGLE, ANGLE, st.floats(-50, 50), st.floats(-50, 50)),
                    min_size=1, max_size=8),
    tomo=st.tuples(SIZE, SIZE, SIZE), image=st.tuples(SIZE, SIZE),
    points=st.lists(st.tuples(*[st.floats(-5000, 5000)] * 3), min_size=1, max_size=5),
)  # fmt: skip
@fuzz_settings(60)
def test_vectorised_projection_matches_per_frame(angles, tomo, image, points):
    a = np.array(angles)
    P = projection_matrix_r5(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], tomo, image)
    pts = np.array(points)
    u = project(P[None], pts[:, None, :])  # (n, fc, 3)
    for f in range(len(a)):
        Pf = projection_matrix_r5(*a[f], tomo, image)[0]
        assert np.array_equal(P[f], Pf)
        for i, p in enumerate(pts):
            assert np.allclose(u[i, f], project(Pf, p), rtol=1e-12, atol=1e-9)
            q = np.linalg.solve(Pf[:3, :3], u[i, f] - Pf[:3, 3])
            assert np.allclose(q, p, rtol=0, atol=1e-9)


@given(rot=ANGLE, tilt=ANGLE, psi=ANGLE)
@fuzz_settings(200)
def test_euler_matrix_is_relion_zyz(rot, tilt, psi):
    E = euler_matrix(rot, tilt, psi)
    assert np.allclose(E @ E.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(E), 1.0, atol=1e-12)
    # E = Rz(-psi) Ry(-tilt) Rz(-rot): the inverse of the intrinsic ZYZ rotation
    R = Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).as_matrix()
    assert np.allclose(E, R.T, atol=1e-12)
    R2 = Rotation.from_euler("zyz", [-rot, -tilt, -psi], degrees=True).as_matrix()
    assert np.allclose(E, R2, atol=1e-12)


@given(angles=st.lists(st.tuples(ANGLE, ANGLE, ANGLE), min_size=1, max_size=6))
@fuzz_settings(50)
def test_euler_matrix_vectorises(angles):
    a = np.array(angles)
    E = euler_matrix(a[:, 0], a[:, 1], a[:, 2])
    assert E.shape == (len(a), 3, 3)
    for k in range(len(a)):
        assert np.array_equal(E[k], euler_matrix(*a[k]))


@given(
    xtilt=st.lists(st.floats(-10, 10), min_size=1, max_size=6),
    ytilt=st.data(),
    zrot=st.data(),
    tomo=st.tuples(SIZE, SIZE, SIZE),
    images=st.tuples(st.tuples(SIZE, SIZE), st.tuples(SIZE, SIZE)),
    pos=st.lists(st.tuples(*[st.floats(-3000, 3000)] * 3), min_size=1, max_size=5),
)  # fmt: skip
@fuzz_settings(80)
def test_depth_offsets_ignore_in_plane_rotation_and_shifts(xtilt, ytilt, zrot, tomo, images, pos):
    fc = len(xtilt)
    yt = np.array(ytilt.draw(st.lists(st.floats(-80, 80), min_size=fc, max_size=fc)))
    zr = np.array(zrot.draw(st.lists(ANGLE, min_size=2 * fc, max_size=2 * fc))).reshape(2, fc)
    sh = np.array(zrot.draw(st.lists(st.floats(-500, 500), min_size=4 * fc, max_size=4 * fc)))
    sh = sh.reshape(2, 2, fc)
    xt = np.array(xtilt)
    P1 = projection_matrix_r5(xt, yt, zr[0], sh[0, 0], sh[0, 1], tomo, images[0])
    P2 = projection_matrix_r5(xt, yt, zr[1], sh[1, 0], sh[1, 1], tomo, images[1])
    p = np.array(pos)
    centre = np.array(tomo, float) / 2.0  # real halves (spec §2.2)
    d1, d2 = depth_offsets(P1, p, centre), depth_offsets(P2, p, centre)
    assert d1.shape == (len(p), fc)
    assert np.allclose(d1, d2, rtol=1e-12, atol=1e-8)
    # spec §2.8: M_f[2,:] = (-sin yt, cos yt sin xt, cos yt cos xt)
    r = np.deg2rad
    row = np.stack([-np.sin(r(yt)), np.cos(r(yt)) * np.sin(r(xt)), np.cos(r(yt)) * np.cos(r(xt))])
    assert np.allclose(d1, (p - centre) @ row, rtol=1e-12, atol=1e-8)
    # ... = the depth of pos minus the depth of the centre under the full P_f
    full = project(P1[None], p[:, None, :])[..., 2] - project(P1, centre)[:, 2][None]
    assert np.allclose(d1, full, rtol=1e-12, atol=1e-8)


@given(
    p0=st.tuples(*[st.floats(-3000, 3000)] * 3),
    origin=st.tuples(*[st.floats(-50, 50)] * 3),
    sub=st.tuples(ANGLE, ANGLE, ANGLE),
    px=st.floats(0.3, 20),
)
@fuzz_settings(80)
def test_origin_offsets_are_rotated_by_the_subtomogram_frame(p0, origin, sub, px):
    A_sub = euler_matrix(*sub)
    pos = particle_positions(np.array(p0), np.array(origin), A_sub, px)
    # pos = p0 - A_sub · origin / px  <=>  A_subᵀ (p0 - pos) px = origin
    back = A_sub.T @ (np.array(p0) - pos) * px
    assert np.allclose(back, origin, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------
# 4. Flag and job.star values (issue 14): nan, inf, huge, negative, fractional


def _numeric_fields():
    from napari_subtomo_recon.params import field_map, kind_of, spec_of

    return [
        f for f in field_map().values()
        if kind_of(f) in ("int", "float") and (spec_of(f).flag or spec_of(f).job_option)
    ]  # fmt: skip


NASTY = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e999", "-1e999", "1e308", "-1e308", "0",
                     "-0", "-1", "1e3", "2.5", "-2.5", "1e-300", "9" * 40, "0x10", "", " "]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**20), 10**20).map(str),
)  # fmt: skip


@fuzz_settings(150)
@given(field=st.sampled_from(_numeric_fields()), text=NASTY, via=st.sampled_from(["flag", "job"]))
def test_every_numeric_option_refuses_or_accepts_cleanly(field, text, via):
    """Through a flag or job.star: either a finite value inside the option's domain, or
    one InputError naming the flag (or job option) and quoting the text as typed."""
    import math

    from napari_subtomo_recon.cli import parse_args
    from napari_subtomo_recon.errors import InputError
    from napari_subtomo_recon.io.jobstar import JobStar
    from napari_subtomo_recon.job.relion import params_from_job_star
    from napari_subtomo_recon.params import spec_of

    spec = spec_of(field)
    if via == "flag" and not spec.flag or via == "job" and not spec.job_option:
        return
    try:
        if via == "flag":
            params, _ = parse_args([spec.flag, text])
        else:
            params, _ = params_from_job_star(JobStar(options={spec.job_option: text}))
    except InputError as e:
        msg = str(e)
        assert "\n" not in msg
        name = spec.flag if via == "flag" else spec.job_option
        assert name in msg, (name, msg)
        assert text.strip() in msg or not text.strip(), (text, msg)
        event("refused")
        return
    value = getattr(params, field.name)
    if via == "job" and not text.strip():
        return  # an empty job.star value means the GUI default
    assert math.isfinite(value), (field.name, text, value)
    assert spec.domain.problem(value) is None
    event("accepted")


@fuzz_settings(12)
@given(
    flag=st.sampled_from(["--bin", "--taper", "--cutoff_fract", "--SNR", "--crop", "--mem"]),
    text=st.sampled_from(["1e308", "1e6", "0.0001", "-1", "nan", "1e-300", "3"]),
)
def test_accepted_extreme_flags_end_cleanly(flag, text, tmp_path_factory):
    """An extreme value that passes the domain still ends as a map or one line: no hang,
    no traceback, no non-finite map (the job checks its results before writing them)."""
    out = tmp_path_factory.mktemp("extreme")
    with working_dir(INPUTS / "r5"):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["--i", "optimisation_set.star", "--o", str(out), "--b", "32",
                         "--bin", "2", "--j", "1", *([flag, text] if flag != "--bin" else []),
                         *(["--bin", text] if flag == "--bin" else [])])  # fmt: skip
    lines = err.getvalue().strip().splitlines()
    assert code in (0, 1), (flag, text, code, lines)
    if code == 1:  # (progress lines may come before the error)
        errors = [ln for ln in lines if "error" in ln.lower() or "Traceback" in ln]
        assert errors == lines[-1:] and lines[-1].startswith("subtomo-recon: error: "), lines
        assert "non-finite voxels" not in lines[-1], "to be refused before any work"
        assert not list(out.glob("*.mrc"))
    else:
        for p in out.glob("*.mrc"):
            assert np.isfinite(mrcfile.read(p)).all(), p


# the numeric labels the readers use (a value of an unused label is never read)
USED_LABELS = {
    "rlnAmplitudeContrast", "rlnAnglePsi", "rlnAngleRot", "rlnAngleTilt",
    "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst",
    "rlnCtfBfactor", "rlnCtfBfactorPerElectronDose", "rlnCtfScalefactor", "rlnDefocusAngle",
    "rlnDefocusU", "rlnDefocusV", "rlnMicrographPreExposure", "rlnOpticsGroup",
    "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst", "rlnPhaseShift", "rlnRandomSubset",
    "rlnSphericalAberration", "rlnTomoHand", "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ",
    "rlnTomoTiltSeriesPixelSize", "rlnTomoXShiftAngst", "rlnTomoXTilt", "rlnTomoYShiftAngst",
    "rlnTomoYTilt", "rlnTomoZRot", "rlnVoltage",
}  # fmt: skip


def _numeric_star_cells():
    """(file, block, label, column) of every used numeric label in the RELION 5 fixture's
    loops."""
    from napari_subtomo_recon.io.star import read_star

    cells = []
    for name in ("tilt_series/TS_01.star", "tomograms.star", "particles.star"):
        for block, df in read_star(INPUTS / "r5" / name).items():
            for k, label in enumerate(df.columns):
                if label in USED_LABELS and df[label].dtype.kind in "if" and len(df) > 1:
                    cells.append((name, block, label, k))
    return cells


def _rows_of(lines: list[str], block: str) -> list[int]:
    """Indices of the data rows of ``data_<block>`` (a loop)."""
    start = lines.index(f"data_{block}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("data_")),
               len(lines))  # fmt: skip
    heads = ("#", "_", "loop_")
    return [i for i in range(start + 1, end) if lines[i].strip() and not lines[i].startswith(heads)]


@fuzz_settings(120)
@given(cell=st.sampled_from(_numeric_star_cells()), text=NASTY, row=st.integers(1, 3))
def test_every_numeric_star_value_is_read_or_refused_with_its_line(cell, text, row):
    """A value written into a numeric STAR field the job uses: read as that number (finite,
    in its label's domain), or one InputError naming the file, the line, the label and the
    text as written."""
    from napari_subtomo_recon.errors import InputError
    from napari_subtomo_recon.io.labels import STAR_DOMAINS

    name, block, label, column = cell
    text = text.strip() or "0"  # (an empty value is another number of values: grammar)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "r5"
        shutil.copytree(INPUTS / "r5", root)
        path = root / name
        lines = path.read_text().splitlines()
        rows = _rows_of(lines, block)
        i = rows[min(row, len(rows)) - 1]
        words = lines[i].split()
        words[column] = text
        lines[i] = "  ".join(words)
        path.write_text("\n".join(lines) + "\n")
        with working_dir(root), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                read_everything()
            except InputError as e:
                msg = str(e)
                assert "\n" not in msg
                assert f"{name}: data_{block} row " in msg, msg
                assert f"(line {i + 1}) {label}: '{text}'" in msg, msg
                event("refused with its line")
                return
    value = float(text)
    domain = STAR_DOMAINS.get(label)
    assert np.isfinite(value) and (domain is None or domain.problem(value) is None), (label, text)
    event("accepted")
