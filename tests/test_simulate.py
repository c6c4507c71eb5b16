"""Tests of the simulated data sets (napari_subtomo_recon.simulate).

The checks re-derive the geometry from the *written* star files with a few
independent lines (active rotations, RELION's Euler matrix as a product of
rotations), so they test the files as RELION would read them.
"""

from __future__ import annotations

import filecmp
import math
import re
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile

from napari_subtomo_recon.simulate import SimulatedDataset, make_phantom, simulate

# A small configuration: fast, but with everything a full data set has.
SMALL = dict(
    n_tomograms=2,
    particles_per_tomogram=6,
    n_tilts=11,
    tilt_max=50.0,
    image_size=(256, 240),
    tomo_size=(256, 256, 120),
    box=32,
    binning=2.0,
)
ONE = dict(SMALL, n_tomograms=1, particles_per_tomogram=1, noise=False)


# ----------------------------------------------------------------------------------------------
# Independent helpers
# ----------------------------------------------------------------------------------------------


def rot(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def euler(r: float, t: float, p: float) -> np.ndarray:
    return rot("z", -p) @ rot("y", -t) @ rot("z", -r)


def angles_of(m: np.ndarray) -> tuple[float, float, float]:
    """(rot, tilt, psi) with euler(rot, tilt, psi) == m (m a rotation, tilt not 0 or 180)."""
    tilt = math.degrees(math.acos(np.clip(m[2, 2], -1, 1)))
    rot_ = math.degrees(math.atan2(m[2, 1], m[2, 0]))
    psi = math.degrees(math.atan2(m[1, 2], -m[0, 2]))
    return rot_, tilt, psi


def proj_from_row(row, px: float, tomo: tuple, image: tuple) -> np.ndarray:
    """P_f of spec §2.1 from a tilt-series star row."""
    m = rot("z", row.rlnTomoZRot) @ rot("y", row.rlnTomoYTilt) @ rot("x", row.rlnTomoXTilt)
    t = -m @ (np.array(tomo) // 2) + np.array(
        [
            row.rlnTomoXShiftAngst / px + image[0] // 2,
            row.rlnTomoYShiftAngst / px + image[1] // 2,
            0,
        ]
    )
    p = np.eye(4)
    p[:3, :3] = m
    p[:3, 3] = t
    return p


def parse_vec(s: str) -> np.ndarray:
    return np.array([float(v) for v in s.strip().strip("[]").split(",")])


def read_frame(root: Path, ref: str) -> np.ndarray:
    if "@" in ref:
        n, path = ref.split("@", 1)
        with mrcfile.open(root / path) as m:
            return np.array(m.data[int(n) - 1], dtype=np.float64)
    with mrcfile.open(root / ref) as m:
        return np.array(m.data, dtype=np.float64)


class Data:
    """What RELION 5 would read from a simulated data set (one tomogram at a time)."""

    def __init__(self, ds: SimulatedDataset):
        self.ds = ds
        root = ds.root
        opt = starfile.read(ds.optimisation_set, always_dict=True)
        self.opt = next(iter(opt.values()))
        self.tomos = starfile.read(root / self.opt["rlnTomoTomogramsFile"], always_dict=True)
        self.parts = starfile.read(root / self.opt["rlnTomoParticlesFile"], always_dict=True)
        self.glob = self.tomos["global"]
        self.relion4 = "rlnTomoTiltSeriesStarFile" not in self.glob.columns
        self.motion = None
        if "rlnTomoTrajectoriesFile" in self.opt:
            self.motion = starfile.read(
                root / self.opt["rlnTomoTrajectoriesFile"], always_dict=True
            )

    def tomogram(self, t: int):
        g = self.glob.iloc[t]
        name = str(g.rlnTomoName)
        tomo = (int(g.rlnTomoSizeX), int(g.rlnTomoSizeY), int(g.rlnTomoSizeZ))
        px = float(g.rlnTomoTiltSeriesPixelSize)
        if self.relion4:
            rows = self.tomos[name]
            stack = self.ds.root / g.rlnTomoTiltSeriesName
            with mrcfile.open(stack) as m:
                frames = np.array(m.data, dtype=np.float64)
            image = (frames.shape[2], frames.shape[1])
            P = [
                np.array([parse_vec(r[f"rlnTomoProj{a}"]) for a in "XYZW"])
                for _, r in rows.iterrows()
            ]
        else:
            rows = starfile.read(self.ds.root / g.rlnTomoTiltSeriesStarFile, always_dict=True)[name]
            frames = np.array([read_frame(self.ds.root, r) for r in rows.rlnMicrographName])
            image = (frames.shape[2], frames.shape[1])
            P = [proj_from_row(r, px, tomo, image) for r in rows.itertuples()]
        return dict(
            name=name,
            tomo=tomo,
            px=px,
            rows=rows,
            frames=frames,
            image=image,
            P=np.array(P),
            hand=float(g.rlnTomoHand),
        )

    def particles(self, name: str, tomo: tuple, px: float):
        """(pos (n,3) pixels, A (n,3,3), trajectories (n, F, 3) Å or None) per spec §2.3."""
        p = self.parts["particles"]
        p = p[p.rlnTomoName.astype(str) == name]
        centre = np.array(tomo) / 2.0
        out = []
        for r in p.itertuples():
            a_sub = np.eye(3)
            if "rlnTomoSubtomogramRot" in p.columns:
                a_sub = euler(
                    r.rlnTomoSubtomogramRot, r.rlnTomoSubtomogramTilt, r.rlnTomoSubtomogramPsi
                )
            if "rlnCenteredCoordinateXAngst" in p.columns:
                p0 = (
                    np.array(
                        [
                            r.rlnCenteredCoordinateXAngst,
                            r.rlnCenteredCoordinateYAngst,
                            r.rlnCenteredCoordinateZAngst,
                        ]
                    )
                    / px
                    + centre
                )
            else:
                p0 = np.array([r.rlnCoordinateX, r.rlnCoordinateY, r.rlnCoordinateZ])
            o = np.array([r.rlnOriginXAngst, r.rlnOriginYAngst, r.rlnOriginZAngst])
            pos = p0 - a_sub @ o / px
            A = a_sub @ euler(r.rlnAngleRot, r.rlnAngleTilt, r.rlnAnglePsi)
            traj = None
            if self.motion is not None:
                b = self.motion[str(r.rlnTomoParticleName)]
                traj = b[["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]].to_numpy()
            out.append((pos, A, traj))
        return out


def centre_of_mass(img: np.ndarray) -> np.ndarray:
    w = -img  # ctf=False: the particle is dark (image = −projection)
    y, x = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return np.array([(w * x).sum() / w.sum(), (w * y).sum() / w.sum()])


def crop_centred(img: np.ndarray, c2: np.ndarray, n2: int, box: int, binning: float) -> np.ndarray:
    """The n2² window around c2, shifted so that c2 is exactly its centre, Fourier-binned to box²
    (grey levels kept), centre at box//2."""
    ox, oy = (int(math.floor(v + 0.5)) - n2 // 2 for v in c2)
    win = img[oy : oy + n2, ox : ox + n2]
    d = c2 - np.array([ox + n2 // 2, oy + n2 // 2])
    F = np.fft.rfft2(np.fft.ifftshift(win))
    ky = np.fft.fftfreq(n2) * n2
    kx = np.arange(n2 // 2 + 1)
    F = F * np.exp(2j * np.pi * (kx[None, :] * d[0] + ky[:, None] * d[1]) / n2)
    rows = np.r_[0 : box // 2, n2 - box // 2 : n2]
    G = F[rows][:, : box // 2 + 1]
    out = np.fft.irfft2(G, s=(box, box)) / binning**2
    return np.fft.fftshift(out)


def corr(a, b) -> float:
    a = np.ravel(a) - np.mean(a)
    b = np.ravel(b) - np.mean(b)
    return float(a @ b / math.sqrt((a @ a) * (b @ b)))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> SimulatedDataset:
    return simulate(tmp_path_factory.mktemp("small"), **SMALL, seed=3)


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def test_files_parse_and_labels(small: SimulatedDataset):
    ds = small
    root = ds.root
    assert ds.optimisation_set == root / "optimisation_set.star"
    assert ds.trajectories is None
    d = Data(ds)
    assert d.opt["rlnTomoParticlesFile"] == "particles.star"
    assert d.opt["rlnTomoTomogramsFile"] == "tomograms.star"
    for lab in (
        "rlnTomoName",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnMicrographOriginalPixelSize",
        "rlnTomoHand",
        "rlnTomoTiltSeriesPixelSize",
        "rlnTomoTiltSeriesStarFile",
        "rlnTomoSizeX",
        "rlnTomoSizeY",
        "rlnTomoSizeZ",
        "rlnOpticsGroupName",
    ):
        assert lab in d.glob.columns, lab
    assert len(d.glob) == 2 and list(d.glob.rlnTomoName) == ["TS_01", "TS_02"]
    assert set(d.parts) == {"general", "optics", "particles"}
    assert int(d.parts["general"]["rlnTomoSubTomosAre2DStacks"]) == 1
    opt = d.parts["optics"]
    assert list(opt.rlnOpticsGroup) == [1]
    assert float(opt.rlnTomoTiltSeriesPixelSize[0]) == ds.pixel_size
    assert float(opt.rlnImagePixelSize[0]) == ds.pixel_size * ds.binning
    assert int(opt.rlnImageSize[0]) == ds.box
    p = d.parts["particles"]
    for lab in (
        "rlnTomoName",
        "rlnTomoParticleName",
        "rlnCenteredCoordinateXAngst",
        "rlnCenteredCoordinateYAngst",
        "rlnCenteredCoordinateZAngst",
        "rlnAngleRot",
        "rlnAngleTilt",
        "rlnAnglePsi",
        "rlnOpticsGroup",
        "rlnRandomSubset",
        "rlnOriginXAngst",
        "rlnOriginYAngst",
        "rlnOriginZAngst",
    ):
        assert lab in p.columns, lab
    assert "rlnTomoSubtomogramRot" not in p.columns
    assert len(p) == 12
    assert set(p.rlnRandomSubset) == {1, 2}
    assert (p.rlnOriginXAngst == 0).all()
    for name in ("TS_01", "TS_02"):
        names = list(p.rlnTomoParticleName[p.rlnTomoName == name])
        assert names == [f"{name}/{k}" for k in range(1, 7)]
    # Ground truth.
    with mrcfile.open(ds.ground_truth) as m:
        assert m.data.shape == (ds.box,) * 3 and m.data.dtype == np.float32
        assert m.voxel_size.x == pytest.approx(ds.pixel_size * ds.binning)
    # Command, relative to root.
    cmd = ds.command("Reconstruct/job001/")
    assert cmd[cmd.index("--i") + 1] == "optimisation_set.star"
    assert cmd[cmd.index("--o") + 1] == "Reconstruct/job001/"
    assert cmd[cmd.index("--b") + 1] == "32"
    assert float(cmd[cmd.index("--bin") + 1]) == 2.0
    assert cmd[cmd.index("--sym") + 1] == "C1"


def test_tilt_series_rows_and_frames(small: SimulatedDataset):
    d = Data(small)
    for t in range(2):
        g = d.glob.iloc[t]
        name = g.rlnTomoName
        rows = starfile.read(small.root / g.rlnTomoTiltSeriesStarFile, always_dict=True)[name]
        for lab in (
            "rlnMicrographName",
            "rlnTomoXTilt",
            "rlnTomoYTilt",
            "rlnTomoZRot",
            "rlnTomoXShiftAngst",
            "rlnTomoYShiftAngst",
            "rlnDefocusU",
            "rlnDefocusV",
            "rlnDefocusAngle",
            "rlnMicrographPreExposure",
            "rlnCtfScalefactor",
            "rlnTomoNominalStageTiltAngle",
        ):
            assert lab in rows.columns, lab
        assert len(rows) == 11
        # Frame references: N@stack, 1-based, a permutation of the stack, not in row order.
        refs = [re.fullmatch(r"(\d+)@(.+)", r) for r in rows.rlnMicrographName]
        assert all(refs)
        stack = {m.group(2) for m in refs}
        assert stack == {f"tilt_series/{name}.mrcs"}
        idx = [int(m.group(1)) for m in refs]
        with mrcfile.open(small.root / stack.pop()) as m:
            assert m.data.shape == (11, 240, 256)
        assert sorted(idx) == list(range(1, 12))
        assert idx != list(range(1, 12))
        # The stack is sorted by tilt angle.
        nominal = rows.rlnTomoNominalStageTiltAngle.to_numpy()
        assert np.all(np.diff(nominal[np.argsort(idx)]) > 0)
        # Dose-symmetric acquisition order and cumulative pre-exposure in row order.
        step = 50.0 / 5
        assert np.allclose(nominal / step, [0, 1, -1, -2, 2, 3, -3, -4, 4, 5, -5])
        assert np.allclose(rows.rlnMicrographPreExposure, np.arange(11) * 3.0)
        # Stage tilt = nominal + offset ~0.5°, X tilt ~0.3°, Z rotation ~85°.
        off = rows.rlnTomoYTilt - nominal
        assert 0.0 < off.mean() < 1.0 and off.std() < 0.2
        assert np.all(np.abs(rows.rlnTomoXTilt - 0.3) < 0.3)
        assert np.all(np.abs(rows.rlnTomoZRot - 85.0) < 3.0)
        assert rows.rlnTomoZRot.std() > 0
        assert 5 < np.abs(rows.rlnTomoXShiftAngst).mean() < 100
        assert np.all(rows.rlnDefocusU > rows.rlnDefocusV)
        assert np.all((rows.rlnDefocusU > 29000) & (rows.rlnDefocusU < 41000))


def test_default_dataset(tmp_path):
    ds = simulate(tmp_path)
    assert (ds.box, ds.binning, ds.pixel_size, ds.symmetry) == (48, 2.0, 2.0, "C1")
    d = Data(ds)
    p = d.parts["particles"]
    assert len(p) == 80
    t = d.tomogram(0)
    assert t["frames"].shape == (31, 512, 512)
    assert np.isfinite(t["frames"]).all() and t["frames"].std() > 0
    with mrcfile.open(ds.root / "tilt_series/TS_01.mrcs") as m:
        assert m.data.dtype == np.float32 and m.voxel_size.x == pytest.approx(2.0)
    # Some particle-tilts are invisible (RELION's box/2 margin), but only a few.
    vis = np.array([parse_vec(s) for s in p.rlnTomoVisibleFrames])
    assert vis.shape == (80, 31)
    assert 0 < (vis == 0).sum() < 0.05 * vis.size
    # Every particle is visible geometrically where the visible-frames flag says so.
    for tt in range(2):
        tomo = d.tomogram(tt)
        parts = d.particles(tomo["name"], tomo["tomo"], tomo["px"])
        sub = vis[np.asarray(p.rlnTomoName == tomo["name"])]
        for (pos, _, _), v in zip(parts, sub, strict=True):
            c2 = np.einsum("fij,j->fi", tomo["P"][:, :2, :3], pos) + tomo["P"][:, :2, 3]
            W, H = tomo["image"]
            ok = (c2[:, 0] > 24) & (c2[:, 0] < W - 24) & (c2[:, 1] > 24) & (c2[:, 1] < H - 24)
            assert np.array_equal(ok, v.astype(bool))


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"odd_sizes": True},
        {"origins": True, "subtomo_angles": True},
        {"motion": True, "motion_amplitude": 6.0},
        {"relion4": True, "origins": True},
        {"stack_layout": "per_tilt_files"},
    ],
    ids=["plain", "odd", "origins", "motion", "relion4", "per_tilt"],
)
def test_projected_centre(tmp_path, opts):
    """One noiseless CTF-free particle: its image's centre of mass is P_f·(traj_f, 1)."""
    ds = simulate(
        tmp_path,
        **ONE,
        ctf=False,
        dose_weighting=False,
        seed=5,
        particle_coords=[[60.0, -40.0, 30.0]],
        **opts,
    )
    d = Data(ds)
    t = d.tomogram(0)
    if opts.get("odd_sizes"):
        assert all(v % 2 == 1 for v in t["tomo"]) and all(v % 2 == 1 for v in t["image"])
    ((pos, _, traj),) = d.particles(t["name"], t["tomo"], t["px"])
    if opts.get("motion"):
        assert traj.shape == (11, 3) and np.abs(traj).max() > 1.0
    n_checked = 0
    for f in range(len(t["rows"])):
        p = pos + (traj[f] / t["px"] if traj is not None else 0.0)
        c2 = t["P"][f, :2, :3] @ p + t["P"][f, :2, 3]
        com = centre_of_mass(t["frames"][f])
        assert np.abs(com - c2).max() < 1e-3, (f, com, c2)
        n_checked += 1
    assert n_checked == 11


def test_projected_centre_depends_on_conventions(tmp_path):
    """Sanity check of the test itself: the half-pixel centre difference and the
    origin sign are visible at the tolerance used above."""
    ds = simulate(
        tmp_path,
        **ONE,
        ctf=False,
        dose_weighting=False,
        seed=5,
        odd_sizes=True,
        origins=True,
        particle_coords=[[60.0, -40.0, 30.0]],
    )
    d = Data(ds)
    t = d.tomogram(0)
    ((pos, _, _),) = d.particles(t["name"], t["tomo"], t["px"])
    r = d.parts["particles"].iloc[0]
    o = np.array([r.rlnOriginXAngst, r.rlnOriginYAngst, r.rlnOriginZAngst]) / t["px"]
    assert np.linalg.norm(o) > 0.5
    f = 0
    com = centre_of_mass(t["frames"][f])
    wrong_origin = pos + 2 * o
    for q in (wrong_origin, pos + 0.5):
        c2 = t["P"][f, :2, :3] @ q + t["P"][f, :2, 3]
        assert np.abs(com - c2).max() > 0.2


@pytest.mark.parametrize("target", ["identity", "rx90"])
def test_projection_matches_phantom(tmp_path, target):
    """At the first tilt, with the particle oriented so that M_f·A = T, the CTF-free image is
    −(phantom projected along the beam): for T = I the sum along z, for T = Rx(90°) the sum
    along y with the image y running along −z."""
    kw = dict(ONE, ctf=False, dose_weighting=False, seed=7, particle_coords=[[20.0, 10.0, -15.0]])
    first = simulate(tmp_path / "a", **kw, particle_angles=[[0.0, 0.0, 0.0]])
    t = Data(first).tomogram(0)
    M = t["P"][0, :3, :3]
    T = np.eye(3) if target == "identity" else rot("x", 90.0)
    ang = angles_of(M.T @ T)
    assert np.allclose(euler(*ang), M.T @ T, atol=1e-9)
    ds = simulate(tmp_path / "b", **kw, particle_angles=[ang])
    d = Data(ds)
    t = d.tomogram(0)
    assert np.allclose(t["P"], Data(first).tomogram(0)["P"])  # same geometry
    ((pos, A, _),) = d.particles(t["name"], t["tomo"], t["px"])
    assert np.allclose(M @ A, T, atol=1e-6)
    c2 = t["P"][0, :2, :3] @ pos + t["P"][0, :2, 3]
    box, b = ds.box, ds.binning
    img = crop_centred(t["frames"][0], c2, int(b * box), box, b)
    with mrcfile.open(ds.ground_truth) as m:
        truth = np.array(m.data, dtype=np.float64)
    if target == "identity":
        expected = truth.sum(axis=0)  # [y, x]
    else:
        s = truth.sum(axis=1)  # [z, x]
        expected = s[(2 * (box // 2) - np.arange(box)) % box]  # image row y <-> map z = -y
    # Equal up to the band limit (Gaussians of σ = 1 binned voxel): ~1e-3 of the maximum.
    assert corr(-img, expected) > 0.9999
    assert (-img * expected).sum() / (expected * expected).sum() == pytest.approx(1.0, abs=0.005)
    assert np.abs(-img - expected).max() < 0.01 * expected.max()
    # A wrong convention (mirrored or transposed projection) does not match.
    assert corr(-img, expected[::-1]) < 0.99
    assert corr(-img, expected.T) < 0.99


@pytest.mark.parametrize("hand", [1.0, -1.0])
def test_ctf_dose_and_depth_defocus(tmp_path, hand):
    """Image spectrum / CTF-free spectrum = CTF(U+Δz, V+Δz)·dose, Δz = hand·px·depth (spec §2.8)."""
    kw = dict(
        ONE,
        image_size=(512, 512),
        tomo_size=(512, 512, 400),
        seed=11,
        hand=hand,
        particle_coords=[[10.0, -6.0, 300.0]],
    )
    a = simulate(tmp_path / "ctf", **kw)
    b = simulate(tmp_path / "noctf", **kw, ctf=False, dose_weighting=False)
    da, db = Data(a), Data(b)
    ta, tb = da.tomogram(0), db.tomogram(0)
    assert float(da.glob.rlnTomoHand[0]) == hand
    ((pos, _, _),) = da.particles(ta["name"], ta["tomo"], ta["px"])
    centre = np.array(ta["tomo"]) / 2.0
    rows = ta["rows"]
    px = ta["px"]
    g = da.glob.iloc[0]
    kv, cs, q0 = g.rlnVoltage * 1e3, g.rlnSphericalAberration * 1e7, g.rlnAmplitudeContrast
    lam = 12.2643247 / math.sqrt(kv * (1 + 0.978466e-6 * kv))
    n = int(2 * round(a.binning * a.box))  # the simulator's patch: exact multiplication there
    for f in (0, 9, 10):  # nominal 0°, +50°, -50°
        r = rows.iloc[f]
        depth = ta["P"][f, 2, :3] @ (pos - centre)
        assert abs(depth) > 80
        c2 = ta["P"][f, :2, :3] @ pos + ta["P"][f, :2, 3]
        ox, oy = (int(math.floor(v + 0.5)) - n // 2 for v in c2)
        wa = ta["frames"][f][oy : oy + n, ox : ox + n]
        wb = tb["frames"][f][oy : oy + n, ox : ox + n]
        assert wa.shape == (n, n)
        Fa, Fb = np.fft.rfft2(wa), np.fft.rfft2(wb)
        ky = np.fft.fftfreq(n)[:, None] / px
        kx = np.fft.rfftfreq(n)[None, :] / px
        k2 = kx**2 + ky**2
        keep = (np.abs(Fb) > 1e-3 * np.abs(Fb).max()) & (k2 > 0)
        ratio = (Fa / np.where(keep, Fb, 1)).real

        def model(dz, r=r, k2=k2, kx=kx, ky=ky):
            al = math.radians(r.rlnDefocusAngle)
            u, v = r.rlnDefocusU + dz, r.rlnDefocusV + dz
            df = (
                u * (math.cos(al) * kx + math.sin(al) * ky) ** 2
                + v * (-math.sin(al) * kx + math.cos(al) * ky) ** 2
            )
            gamma = (
                -math.pi * lam * df
                + 0.5 * math.pi * cs * lam**3 * k2**2
                - math.atan(q0 / math.sqrt(1 - q0 * q0))
            )
            with np.errstate(divide="ignore"):
                ne = 0.245 * np.sqrt(k2) ** -1.665 + 2.81
            dose = np.exp(-r.rlnMicrographPreExposure / (2 * ne))
            return -np.sin(gamma) * r.rlnCtfScalefactor * dose

        dz = hand * px * depth
        err = np.abs(ratio - model(dz))[keep].max()
        assert err < 1e-3, (f, err)
        assert np.abs(ratio - model(-dz))[keep].max() > 0.05  # the other hand is far off
        # DC: +Q0 (image = −CTF ⊛ projection with CTF(0) = +Q0: dark particle).
        assert (Fa[0, 0] / Fb[0, 0]).real == pytest.approx(q0, rel=1e-3)
    assert wb.sum() < 0  # CTF-free image = −projection: dark


# ----------------------------------------------------------------------------------------------
# Variants, determinism, phantom
# ----------------------------------------------------------------------------------------------


def test_determinism(tmp_path):
    kw = dict(SMALL, particles_per_tomogram=3, motion=True, origins=True)
    a = simulate(tmp_path / "a", **kw, seed=1)
    b = simulate(tmp_path / "b", **kw, seed=1)
    c = simulate(tmp_path / "c", **kw, seed=2)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert len(files) >= 7
    assert sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file()) == files
    for f in files:
        assert filecmp.cmp(a.root / f, b.root / f, shallow=False), f
    assert not filecmp.cmp(a.particles, c.particles, shallow=False)
    assert not filecmp.cmp(
        a.root / "tilt_series/TS_01.mrcs", c.root / "tilt_series/TS_01.mrcs", shallow=False
    )


def test_relion4_variant(tmp_path):
    kw = dict(SMALL, particles_per_tomogram=3, seed=4)
    r4 = simulate(tmp_path / "r4", **kw, relion4=True)
    r5 = simulate(tmp_path / "r5", **kw)
    text = r4.tomograms.read_text()
    blocks = re.findall(r"^data_(\S+)", text, flags=re.M)
    assert blocks == ["global", "TS_01", "TS_02"]
    d4 = Data(r4)
    assert d4.relion4
    for lab in (
        "rlnTomoName",
        "rlnTomoTiltSeriesName",
        "rlnTomoFrameCount",
        "rlnTomoSizeX",
        "rlnTomoSizeY",
        "rlnTomoSizeZ",
        "rlnTomoHand",
        "rlnOpticsGroupName",
        "rlnTomoTiltSeriesPixelSize",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnTomoImportFractionalDose",
    ):
        assert lab in d4.glob.columns, lab
    assert "rlnTomoTiltSeriesStarFile" not in d4.glob.columns
    assert set(d4.parts) == {"optics", "particles"}
    p4, p5 = d4.parts["particles"], Data(r5).parts["particles"]
    assert "rlnCoordinateX" in p4.columns and "rlnCenteredCoordinateXAngst" not in p4.columns
    d5 = Data(r5)
    for t in range(2):
        t4, t5 = d4.tomogram(t), d5.tomogram(t)
        rows = t4["rows"]
        for lab in (
            "rlnTomoProjX",
            "rlnDefocusU",
            "rlnDefocusV",
            "rlnDefocusAngle",
            "rlnCtfScalefactor",
            "rlnMicrographPreExposure",
        ):
            assert lab in rows.columns
        assert int(d4.glob.rlnTomoFrameCount[t]) == len(rows) == t4["frames"].shape[0]
        assert np.allclose(t4["P"][:, 3], [0, 0, 0, 1])
        # Same seed: the R4 matrices are the R5 angles' matrices (full precision),
        assert np.abs(t4["P"] - t5["P"]).max() < 1e-9
        # the R4 stack (row order) holds the same frames as the R5 references,
        assert np.allclose(t4["frames"], t5["frames"], rtol=0, atol=1e-4)
        # and the R4 pixel coordinates are the R5 centred coordinates (no +1).
        n4 = d4.particles(t4["name"], t4["tomo"], t4["px"])
        n5 = d5.particles(t5["name"], t5["tomo"], t5["px"])
        for (q4, A4, _), (q5, A5, _) in zip(n4, n5, strict=True):
            assert np.abs(q4 - q5).max() < 1e-5 and np.allclose(A4, A5)
    assert len(p4) == len(p5) == 6


def test_motion_star(tmp_path):
    ds = simulate(tmp_path, **SMALL, motion=True, seed=2)
    assert ds.trajectories == tmp_path / "motion.star"
    d = Data(ds)
    assert d.opt["rlnTomoTrajectoriesFile"] == "motion.star"
    m = d.motion
    assert int(m["general"]["rlnParticleNumber"]) == 12
    names = list(d.parts["particles"].rlnTomoParticleName)
    assert list(m)[1:] == names
    for nme in names:
        b = m[nme]
        assert list(b.columns) == ["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]
        assert len(b) == 11
        s = b.to_numpy()
        assert 0.5 < np.sqrt((s**2).mean()) < 10.0
        assert np.abs(np.diff(s, axis=0)).max() < 5.0  # smooth over the acquisition


def test_subtomo_angles_and_origins(tmp_path):
    ds = simulate(tmp_path, **SMALL, subtomo_angles=True, origins=True, half_sets=False, seed=2)
    p = Data(ds).parts["particles"]
    for lab in ("rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi"):
        assert lab in p.columns
    assert "rlnRandomSubset" not in p.columns
    o = p[["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]].to_numpy()
    assert np.abs(o).max() > 0.5 and np.abs(o).max() <= 2 * ds.pixel_size * ds.binning


def test_euler_helper_matches_spec_example():
    a = euler(10, 20, 30) @ euler(-45, 90, 60)
    ref = [
        [0.452217, 0.871105, 0.191511],
        [0.018171, -0.223674, 0.974495],
        [0.891723, -0.437203, -0.116978],
    ]
    assert np.allclose(a, ref, atol=1e-6)


def test_phantom_c1():
    box, v = 48, 4.0
    ph = make_phantom(box, v, "C1", seed=0)
    assert ph.shape == (box,) * 3 and ph.dtype == np.float32
    assert ph.min() >= 0 and ph.max() > 0
    assert np.array_equal(ph, make_phantom(box, v, "C1", seed=0))
    assert not np.array_equal(ph, make_phantom(box, v, "C1", seed=1))
    # Centred at voxel box//2 and inside a sphere of radius ~0.35·box.
    z, y, x = np.mgrid[0:box, 0:box, 0:box] - box // 2
    com = [(ph * c).sum() / ph.sum() for c in (x, y, z)]
    assert np.abs(com).max() < 0.05
    r = np.sqrt(x**2 + y**2 + z**2)
    assert ph[r > 0.37 * box].max() < 0.02 * ph.max()
    # Asymmetric: no two-fold about z, and not equal to its mirror image.
    c2 = ph[:, (-np.arange(box)) % box][:, :, (-np.arange(box)) % box]
    assert corr(ph, c2) < 0.5
    assert corr(ph, ph[::-1]) < 0.5
    # Band-limited at the voxel size: little power near Nyquist.
    F = np.abs(np.fft.rfftn(ph)) ** 2
    k = np.sqrt(
        np.fft.fftfreq(box)[:, None, None] ** 2
        + np.fft.fftfreq(box)[None, :, None] ** 2
        + np.fft.rfftfreq(box)[None, None, :] ** 2
    )
    assert F[k > 0.45].sum() < 1e-3 * F.sum()


@pytest.mark.parametrize("sym,n", [("C4", 4), ("C6", 6)])
def test_phantom_cn(sym, n):
    box = 48
    ph = make_phantom(box, 4.0, sym, seed=0).astype(np.float64)
    m = (-np.arange(box)) % box
    # Two-fold about z (in C4 and C6), exact on the grid: (x, y) -> (-x, -y).
    assert np.abs(ph[:, m][:, :, m] - ph).max() < 1e-5 * ph.max()
    if n == 4:  # four-fold: (x, y) -> (-y, x), i.e. new[z, y, x] = old[z, x, -y]
        r90 = ph.transpose(0, 2, 1)[:, :, m]
        assert np.abs(r90 - ph).max() < 1e-5 * ph.max()
    else:  # six-fold: not a grid operation, compare by interpolation
        from scipy.ndimage import affine_transform

        R = rot("z", 60.0)
        # out[i] = ph[R^T (i - c) + c] in (x, y, z); arrays are [z, y, x].
        Rzyx = R.T[::-1, ::-1]
        c = np.full(3, box // 2)
        out = affine_transform(ph, Rzyx, offset=c - Rzyx @ c, order=3)
        assert corr(out, ph) > 0.99
    z, y, x = np.mgrid[0:box, 0:box, 0:box] - box // 2
    assert abs((ph * z).sum() / ph.sum()) < 0.05


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        simulate(tmp_path, **SMALL, stack_layout="zip")
    with pytest.raises(ValueError):
        simulate(tmp_path, **SMALL, relion4=True, stack_layout="per_tilt_files")
    with pytest.raises(ValueError):
        make_phantom(32, 4.0, "T")
