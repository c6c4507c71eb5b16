"""Readers: RELION 5 and 4 tomogram sets, particles, trajectories, optimisation sets."""

import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from napari_subtomo_recon.core.geometry import project, tilt_projections
from napari_subtomo_recon.core.particles import particle_geometry
from napari_subtomo_recon.errors import InputError
from napari_subtomo_recon.io import (
    FrameReader,
    read_particle_set,
    read_tomogram_set,
    read_trajectories,
    resolve_inputs,
)
from napari_subtomo_recon.io.mrc import parse_image_ref

INPUTS = Path(__file__).parents[1] / "fixtures" / "relion" / "inputs"


def test_image_references():
    assert parse_image_ref("3@tilt_series/TS_01.mrcs") == ("tilt_series/TS_01.mrcs", 2)
    assert parse_image_ref("a/b.mrc") == ("a/b.mrc", None)
    assert parse_image_ref("TS.mrc:mrc") == ("TS.mrc", None)
    with pytest.raises(InputError, match="start at 1"):
        parse_image_ref("0@x.mrcs")


def test_relion5_frames_follow_their_references(monkeypatch):
    monkeypatch.chdir(INPUTS / "r5")
    tomos = read_tomogram_set("tomograms.star")
    assert tomos.names() == ["TS_01", "TS_02"]
    ts = tomos.tomograms[0]
    table = starfile.read("tilt_series/TS_01.star", parse_as_string=["rlnMicrographName"])
    refs = table["rlnMicrographName"].tolist()
    assert ts.frame_count == len(refs) == 21
    assert [f"{i + 1}@{p}" for p, i in ts.frames] == refs
    assert sorted(i for _, i in ts.frames) != [i for _, i in ts.frames]  # rows not in stack order
    stack = mrcfile.read("tilt_series/TS_01.mrcs")
    with FrameReader() as r:
        for f in (0, 5, 20):
            path, i = ts.frames[f]
            assert np.array_equal(r.read(path, i), stack[i].astype(np.float32))
    assert ts.image_size == (stack.shape[2], stack.shape[1])
    assert np.allclose(ts.pre_exposure, table["rlnMicrographPreExposure"])


def test_relion4_metadata_gives_the_same_geometry(monkeypatch):
    """The R4 and R5 sets of the fixtures describe the same simulated particles."""
    geos = {}
    for fmt in ("r4", "r5"):
        monkeypatch.chdir(INPUTS / fmt)
        tomos = read_tomogram_set("tomograms.star")
        parts = read_particle_set("particles.star", tomos)
        ts = tomos.tomograms[0]
        idx = [i for i, n in enumerate(parts.tomo_names) if n == ts.name]
        assert parts.centred == (fmt == "r5")
        P = tilt_projections(ts)
        geos[fmt] = particle_geometry(
            P, ts.centre, ts.pixel_size, ts.image_size, parts.coords[idx], parts.centred,
            parts.pixel_size()[idx], parts.origins_angst[idx], parts.angles[idx], None, 32,
        )  # fmt: skip
        if fmt == "r4":
            assert ts.r4_projection is not None and ts.tilt_angles is None
    # R4 rows are in acquisition order too; compare per frame after matching by dose
    assert np.allclose(
        np.sort(geos["r4"].centres2d, axis=1), np.sort(geos["r5"].centres2d, axis=1), atol=1e-3
    )


def test_r4_matrices_win_over_r5_angles(tmp_path, monkeypatch):
    shutil.copytree(INPUTS / "r5", tmp_path / "d")
    monkeypatch.chdir(tmp_path / "d")
    t = starfile.read(
        "tilt_series/TS_01.star", always_dict=True, parse_as_string=["rlnMicrographName"]
    )
    df = t["TS_01"]
    shifted = [f"[1,0,0,{x}]" for x in range(len(df))]
    for lab, val in (
        ("rlnTomoProjX", shifted),
        ("rlnTomoProjY", "[0,1,0,0]"),
        ("rlnTomoProjZ", "[0,0,1,0]"),
        ("rlnTomoProjW", "[0,0,0,1]"),
    ):
        df[lab] = val
    starfile.write(t, "tilt_series/TS_01.star")
    ts = read_tomogram_set("tomograms.star").tomograms[0]
    P = tilt_projections(ts)
    assert np.allclose(P[3, :3, :3], np.eye(3)) and P[3, 0, 3] == 3.0


def test_missing_tomogram_sizes_are_relions_minus_999(monkeypatch):
    """RELION 5 (loadTomogram): no rlnTomoSize* -> w0 = h0 = d0 = -999, centre -499.5, and
    setProjectionMatrix's C++ int(-999/2) = -499 (truncation, not Python's floor -500)."""
    from napari_subtomo_recon.core.geometry import projection_matrix_r5

    monkeypatch.chdir(INPUTS / "corners")
    with pytest.warns(UserWarning, match="no rlnTomoSizeX, rlnTomoSizeY, rlnTomoSizeZ"):
        ts = read_tomogram_set("tomograms_nosize.star").tomograms[0]
    assert ts.size == (-999, -999, -999)
    np.testing.assert_array_equal(ts.centre, [-499.5, -499.5, -499.5])
    P = projection_matrix_r5(0, 0, 0, 0, 0, ts.size, (128, 128))
    np.testing.assert_array_equal(P[0, :3, 3], [499 + 64, 499 + 64, 499])


def test_projection_of_a_known_particle(monkeypatch):
    """R5 angles -> P (spec §2.1): the tomogram centre lands on the image centre plus the shift."""
    monkeypatch.chdir(INPUTS / "r5")
    ts = read_tomogram_set("tomograms.star").tomograms[0]
    P = tilt_projections(ts)
    centre = np.array(ts.size) / 2.0
    # the tomogram centre projects to the image centre plus the shift, for every tilt
    c_int = np.array(ts.size) // 2
    u = project(P, c_int.astype(float))
    expect = np.array(ts.image_size) // 2 + ts.shifts_angst / ts.pixel_size
    assert np.allclose(u[:, :2], expect)
    assert np.allclose(ts.centre, centre)


def test_particle_optics_rows_names_and_half_sets(tmp_path, monkeypatch):
    monkeypatch.chdir(INPUTS / "r5")
    tomos = read_tomogram_set("tomograms.star")
    parts = read_particle_set("particles.star", tomos)
    assert parts.has_half_sets and set(parts.subset) == {1, 2}
    assert parts.names[0] == "TS_01/1"
    blocks = starfile.read("particles.star", always_dict=True)
    # optics group g is row g-1: two rows, particles of TS_02 in group 2 with another pixel size
    opt = pd.concat([blocks["optics"], blocks["optics"]], ignore_index=True)
    opt.loc[1, "rlnOpticsGroup"] = 2
    opt.loc[1, "rlnTomoTiltSeriesPixelSize"] = 2.5
    p = blocks["particles"].drop(columns=["rlnTomoParticleName"])
    p.loc[p.rlnTomoName == "TS_02", "rlnOpticsGroup"] = 2
    starfile.write(
        {"general": blocks["general"], "optics": opt, "particles": p}, tmp_path / "p.star"
    )
    with pytest.warns(UserWarning, match="rlnTomoParticleName"):
        parts2 = read_particle_set(str(tmp_path / "p.star"), tomos)
    ps = parts2.pixel_size()
    assert np.all(ps[np.array(parts2.tomo_names) == "TS_02"] == 2.5)
    assert parts2.names[-1] == f"TS_02/{sum(n == 'TS_02' for n in parts2.tomo_names)}"
    # without an optics table, groups are built from the tomogram set
    starfile.write({"particles": blocks["particles"]}, tmp_path / "noopt.star")
    parts3 = read_particle_set(str(tmp_path / "noopt.star"), tomos)
    assert np.allclose(parts3.pixel_size(), 2.0) and parts3.optics_group.max() >= 1


def test_trajectories_by_name_and_position(tmp_path, monkeypatch):
    monkeypatch.chdir(INPUTS / "extra")
    tomos = read_tomogram_set("tomograms.star")
    parts = read_particle_set("particles.star", tomos)
    traj = read_trajectories("motion.star", parts)
    assert len(traj) == len(parts) and traj[0].shape == (tomos.tomograms[0].frame_count, 3)
    blocks = starfile.read("motion.star", always_dict=True)
    assert np.allclose(
        traj[3], blocks[parts.names[3]][["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]]
    )
    # unnamed blocks 0, 1, ... are matched by position
    renamed = {"general": blocks["general"]}
    for k, name in enumerate(parts.names):
        renamed[str(k)] = blocks[name]
    starfile.write(renamed, tmp_path / "m.star")
    with pytest.warns(UserWarning, match="position"):
        traj2 = read_trajectories(str(tmp_path / "m.star"), parts)
    assert np.allclose(traj2[5], traj[5])


def test_direct_entries_override_the_optimisation_set(monkeypatch):
    monkeypatch.chdir(INPUTS / "r5")
    s = resolve_inputs("optimisation_set.star")
    assert (s.particles, s.tomograms) == ("particles.star", "tomograms.star")
    s = resolve_inputs("optimisation_set.star", p="particles_nohalf.star")
    assert s.particles == "particles_nohalf.star" and s.tomograms == "tomograms.star"
    with pytest.raises(InputError, match="no tomogram set"):
        resolve_inputs(p="particles.star")


def test_paths_are_relative_to_the_working_directory(monkeypatch):
    monkeypatch.chdir(INPUTS)
    with pytest.raises(InputError, match="tilt_series/TS_01.star"):
        read_tomogram_set("r5/tomograms.star")  # its tilt-series paths are relative to r5/


def test_first_non_finite_finds_nan_and_inf_but_not_overflowing_sums(tmp_path):
    rng = np.random.default_rng(4)
    stack = rng.normal(size=(4, 9, 11)).astype(np.float32)
    stack[1, 3, 7] = np.nan
    stack[2, 8, 0] = -np.inf
    stack[2, 5, 5] = np.nan  # row 5 comes before row 8: this one is reported
    stack[3] = np.finfo(np.float32).max  # finite pixels whose float32 sum overflows
    path = str(tmp_path / "s.mrcs")
    with mrcfile.new(path) as m:
        m.set_data(stack)
    ints = str(tmp_path / "i.mrc")
    with mrcfile.new(ints) as m:
        m.set_data(np.full((5, 6), 7, np.int16))
    with FrameReader() as r:
        got = [r.first_non_finite(path, i) for i in range(4)]
        assert r.first_non_finite(ints, None) is None
        with pytest.raises(InputError, match="image 5 requested"):
            r.first_non_finite(path, 4)
    # the same answer as a direct scan of each image: (x, y) of the first bad pixel
    expect = []
    for img in stack:
        bad = np.argwhere(~np.isfinite(img))
        expect.append(None if bad.size == 0 else (int(bad[0][1]), int(bad[0][0])))
    assert got == expect == [None, (7, 3), (5, 5), None]


def _deform_copy(tmp_path, folder="spline"):
    shutil.copytree(INPUTS / "deform" / folder, tmp_path / "d")
    return tmp_path / "d"


def test_deformations_are_read_per_frame(monkeypatch):
    monkeypatch.chdir(INPUTS / "deform" / "spline")
    ts = read_tomogram_set("tomograms.star").tomograms[0]
    assert ts.deformation_type == "spline" and ts.deformation_grid == (4, 3)
    assert ts.deformation_coefficients is not None
    assert ts.deformation_coefficients.shape == (ts.frame_count, 8 * 4 * 3)
    text = starfile.read("tilt_series/TS_01.star")["rlnTomoDeformationCoefficients"][2]
    want = [float(v) for v in text.strip("[]").split(",")]
    np.testing.assert_array_equal(ts.deformation_coefficients[2], want)


@pytest.mark.parametrize(
    "where, label, value, match",
    [
        ("global", "rlnTomoDeformationType", "Spline", r"data_global row 1 \(line \d+\) "
         r"rlnTomoDeformationType: 'Spline' is not a deformation type RELION knows"),
        ("global", "rlnTomoDeformationGridSizeX", "1", r"rlnTomoDeformationGridSizeX: '1' must "
         r"be ≥ 2 for a spline"),
        ("global", "rlnTomoDeformationGridSizeY", "2.5", r"'2.5' is not an integer"),
        ("tilt", "rlnTomoDeformationCoefficients", "[1,2,3]", r"data_TS_01 row 4 \(line \d+\) "
         r"rlnTomoDeformationCoefficients: '\[1,2,3\]' has 3 numbers; a spline deformation on "
         r"a 4x3 grid has 96"),
        ("tilt", "rlnTomoDeformationCoefficients", "[1,x,3]", r"row 4 \(line \d+\) "
         r"rlnTomoDeformationCoefficients: '\[1,x,3\]' is not a vector of finite numbers"),
        ("tilt", "rlnTomoDeformationCoefficients", "[1,nan]", r"'\[1,nan\]' is not a vector"),
    ],
)  # fmt: skip
def test_bad_deformations_are_one_line_naming_the_row_and_text(
    tmp_path, monkeypatch, where, label, value, match
):
    d = _deform_copy(tmp_path)
    monkeypatch.chdir(d)
    if where == "global":
        path, block, row = d / "tomograms.star", "global", 0
    else:
        path, block, row = d / "tilt_series" / "TS_01.star", "TS_01", 3
    blocks = starfile.read(path, always_dict=True)
    df = blocks[block].astype({label: object})
    df.loc[row, label] = value
    blocks[block] = df
    starfile.write(blocks, path)
    with pytest.raises(InputError, match=match) as e:
        read_tomogram_set("tomograms.star")
    assert "\n" not in str(e.value)


def test_deformations_need_a_type_and_coefficients(tmp_path, monkeypatch):
    d = _deform_copy(tmp_path, "linear")
    monkeypatch.chdir(d)
    ts_path = d / "tilt_series" / "TS_01.star"
    blocks = starfile.read(ts_path, always_dict=True)
    blocks["TS_01"] = blocks["TS_01"].drop(columns=["rlnTomoDeformationCoefficients"])
    starfile.write(blocks, ts_path)
    with pytest.raises(InputError, match="no rlnTomoDeformationCoefficients column, but .* "
                       "declares linear deformations"):  # fmt: skip
        read_tomogram_set("tomograms.star")
    tomos = starfile.read("tomograms.star", always_dict=True)
    tomos["global"] = tomos["global"].drop(columns=["rlnTomoDeformationType"])
    starfile.write(tomos, "tomograms.star")
    with pytest.raises(InputError, match="has no rlnTomoDeformationType column"):
        read_tomogram_set("tomograms.star")
    # without both grid sizes RELION ignores the other deformation labels
    tomos["global"] = tomos["global"].drop(columns=["rlnTomoDeformationGridSizeY"])
    starfile.write(tomos, "tomograms.star")
    assert read_tomogram_set("tomograms.star").tomograms[0].deformation_type is None


def test_written_maps_carry_their_size_voxel_and_statistics(tmp_path):
    """write_map's header: the voxel size and the data's min, max, mean and rms (the
    standard deviation, as RELION writes it) computed here in double precision."""
    from napari_subtomo_recon.io.mrc import read_map, write_map

    vol = np.random.default_rng(3).normal(2.0, 3.0, (6, 5, 4)).astype(np.float32)
    write_map(tmp_path / "m.mrc", vol, 2.25)
    back, voxel = read_map(tmp_path / "m.mrc")
    assert np.array_equal(back, vol) and voxel == 2.25
    with mrcfile.open(tmp_path / "m.mrc") as m:
        h = m.header
        assert (int(h.nx), int(h.ny), int(h.nz)) == (4, 5, 6)
        v = vol.astype(np.float64)
        assert (float(h.dmin), float(h.dmax)) == (v.min(), v.max())
        assert float(h.dmean) == pytest.approx(v.mean(), rel=1e-6)
        assert float(h.rms) == pytest.approx(v.std(), rel=1e-6)


@pytest.mark.parametrize("shape", [(7, 5, 6), (5, 6), (1, 1, 1)])
def test_written_maps_are_mrcfiles_own(tmp_path, monkeypatch, shape):
    """Slab by slab (here 3 planes per slab and a remainder) write_map writes the file
    mrcfile's set_data writes: the same data and header, its statistics included."""
    import napari_subtomo_recon.io.mrc as mrc

    monkeypatch.setattr(mrc, "_SLAB_BYTES", 3 * 4 * shape[-1] * shape[-2])
    vol = np.random.default_rng(5).normal(40.0, 0.5, shape)  # float64, far from 0
    mrc.write_map(tmp_path / "ours.mrc", vol, 1.75)
    with mrcfile.new(tmp_path / "theirs.mrc") as m:
        m.set_data(vol.astype(np.float32))
        m.voxel_size = 1.75
    with mrcfile.open(tmp_path / "ours.mrc") as a, mrcfile.open(tmp_path / "theirs.mrc") as b:
        assert np.array_equal(a.data, b.data)
        for name in a.header.dtype.names:
            if name in ("dmean", "rms"):  # float32 sums there, double here
                assert a.header[name] == pytest.approx(b.header[name], rel=1e-5), name
            elif name == "label":  # the time of writing
                assert a.header.label[0][:40] == b.header.label[0][:40]
            else:
                assert np.array_equal(a.header[name], b.header[name]), name
    assert (tmp_path / "ours.mrc").stat().st_size == (tmp_path / "theirs.mrc").stat().st_size
