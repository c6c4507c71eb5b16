"""Opt-in corrections of documented RELION 5.0.1 bugs (issue #16): the default keeps
RELION's maps; each correction is measured on a simulated case built to expose the bug,
against the known ground truth."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import starfile

from napari_subtomo_recon.cli import parse_args
from napari_subtomo_recon.core.fsc import fsc
from napari_subtomo_recon.errors import InputError
from napari_subtomo_recon.io import read_particle_set, read_tomogram_set
from napari_subtomo_recon.io.particles import visible_frames
from napari_subtomo_recon.job import run_to_completion
from napari_subtomo_recon.simulate import simulate

SMALL = dict(
    n_tomograms=2, particles_per_tomogram=16, n_tilts=21, tilt_max=60.0, pixel_size=2.0,
    image_size=(160, 160), tomo_size=(160, 160, 60), box=32, binning=2.0, snr=3.0,
)  # fmt: skip
FLAGS = ("--b", "32", "--bin", "2")


def reconstruct(root, monkeypatch, out, *flags, particles=None):
    monkeypatch.chdir(root)
    extra = ["--p", particles] if particles else []
    params, _ = parse_args(["--i", "optimisation_set.star", *extra, "--o", out, "--j", "2",
                            *FLAGS, *flags])  # fmt: skip
    return run_to_completion(params)


def merged(root, out):
    return mrcfile.read(root / out / "merged.mrc").astype(np.float64)


def signal_shells(curve):
    """Shells 1..(Nyquist*3/4): where the simulated particles carry signal."""
    return curve[1 : 3 * (len(curve) - 1) // 4 + 1]


# --- rlnTomoVisibleFrames (3dem/relion PR #1344) ---------------------------------------------


@pytest.fixture(scope="module")
def spoiled(tmp_path_factory):
    """Extract's --max_dose at work: the 6 highest-dose tilts of every tilt series are
    ruined (replaced by noise 10x the images' spread) and every particle's
    rlnTomoVisibleFrames leaves them out."""
    ds = simulate(tmp_path_factory.mktemp("visible"), seed=21, **SMALL)
    tomos = read_tomogram_set(str(ds.tomograms), root=str(ds.root))
    rng = np.random.default_rng(5)
    masks = {}
    for ts in tomos.tomograms:
        ruined = np.argsort(ts.pre_exposure)[-6:]
        for f in ruined:
            file, k = ts.frames[f]
            with mrcfile.open(ds.root / file, "r+") as m:
                img = m.data[k] if k is not None else m.data
                noise = rng.normal(0.0, 10.0 * float(np.std(img)), img.shape)
                if k is not None:
                    m.data[k] = noise.astype(m.data.dtype)
                else:
                    m.data[:] = noise.astype(m.data.dtype)
        mask = np.ones(ts.frame_count, dtype=int)
        mask[ruined] = 0
        masks[ts.name] = "[" + ",".join(map(str, mask)) + "]"
    blocks = starfile.read(ds.particles, always_dict=True)
    parts = blocks["particles"]
    parts["rlnTomoVisibleFrames"] = [masks[t] for t in parts["rlnTomoName"]]
    starfile.write(blocks, ds.root / "particles_visible.star")
    return ds


def test_visible_frames_are_ignored_by_default_and_honoured_on_request(spoiled, monkeypatch):
    root = spoiled.root
    # particles.star: rlnTomoVisibleFrames as the simulation wrote it (the geometry's)
    reconstruct(root, monkeypatch, "plain")
    reconstruct(root, monkeypatch, "default", particles="particles_visible.star")
    reconstruct(root, monkeypatch, "fixed", "--use_visible_frames",
                particles="particles_visible.star")  # fmt: skip
    # RELION 5.0.1 ignores the column: the same map whatever it says, bit for bit
    assert np.array_equal(merged(root, "plain"), merged(root, "default"))
    truth = mrcfile.read(spoiled.ground_truth).astype(np.float64)
    relion = signal_shells(fsc(merged(root, "default"), truth))
    fixed = signal_shells(fsc(merged(root, "fixed"), truth))
    print("FSC against truth, RELION's default:", np.round(relion, 3))
    print("FSC against truth, --use_visible_frames:", np.round(fixed, 3))
    assert np.all(fixed > relion), (relion, fixed)
    assert fixed.mean() > relion.mean() + 0.1, (relion.mean(), fixed.mean())


def test_visible_frames_that_do_not_fit_the_tilt_series_are_refused(spoiled, tmp_path):
    blocks = starfile.read(spoiled.root / "particles_visible.star", always_dict=True)
    blocks["particles"].loc[3, "rlnTomoVisibleFrames"] = "[1,1,0]"
    blocks["particles"].loc[5, "rlnTomoVisibleFrames"] = "[" + ",".join(["1"] * 20 + ["x"]) + "]"
    path = tmp_path / "p.star"
    starfile.write(blocks, path)
    tomos = read_tomogram_set(str(spoiled.tomograms), root=str(spoiled.root))
    ps = read_particle_set(str(path), tomos, str(spoiled.root))
    assert visible_frames(ps, 0, 21) is not None and visible_frames(ps, 0, 21).sum() == 15
    for row, text in ((3, "[1,1,0]"), (5, ",x]")):
        with pytest.raises(InputError) as e:
            visible_frames(ps, row, 21)
        msg = str(e.value)
        assert str(path) in msg and f"row {row + 1} (line " in msg, msg
        assert "rlnTomoVisibleFrames" in msg and text in msg and "21 flags 0 or 1" in msg, msg


def test_use_visible_frames_without_the_column_says_so(tmp_path, monkeypatch):
    ds = simulate(tmp_path, seed=22, **{**SMALL, "particles_per_tomogram": 4})
    blocks = starfile.read(ds.particles, always_dict=True)
    blocks["particles"] = blocks["particles"].drop(columns=["rlnTomoVisibleFrames"])
    starfile.write(blocks, ds.root / "particles_plain.star")
    res = reconstruct(ds.root, monkeypatch, "job", "--use_visible_frames",
                      particles="particles_plain.star")  # fmt: skip
    assert any("no rlnTomoVisibleFrames" in w for w in res.warnings), res.warnings


# --- visibility from the whole window (3dem/relion PR #1305) ---------------------------------


def test_whole_window_visibility_at_binning_above_one(tmp_path, monkeypatch):
    """Bin 2, box 32: RELION uses a tilt when the particle is 16 unbinned pixels inside the
    image, though it cuts a 64-pixel window, and fills the part outside the image with
    copies of the edge pixels.  The tilt images here are as motion correction leaves
    them: counts around a mean, with the outer 3 pixels zero (frames shifted in alignment),
    so each such window carries a strip of zeros spread over up to 16 pixels."""
    ds = simulate(tmp_path, seed=23, **{**SMALL, "particles_per_tomogram": 24})
    root = ds.root
    truth = mrcfile.read(ds.ground_truth).astype(np.float64)
    # clean images first: here the correction only drops tilts that still hold most of
    # their particle, and RELION's map is the better one (docs/conventions.md says so)
    reconstruct(root, monkeypatch, "clean_default")
    reconstruct(root, monkeypatch, "clean_fixed", "--unbinned_visibility")
    clean = [signal_shells(fsc(merged(root, f"clean_{k}"), truth)) for k in ("default", "fixed")]
    print("clean images, FSC against truth, RELION / corrected:", clean[0].mean(), clean[1].mean())
    assert clean[1].mean() < clean[0].mean(), clean
    tomos = read_tomogram_set(str(ds.tomograms), root=str(root))
    for file in sorted({f for ts in tomos.tomograms for f, _ in ts.frames}):
        with mrcfile.open(root / file, "r+") as m:
            d = m.data.astype(np.float64)
            d += 8.0 * d.std()
            d[..., :3, :] = d[..., -3:, :] = d[..., :, :3] = d[..., :, -3:] = 0.0
            m.data[:] = d.astype(m.data.dtype)
    reconstruct(root, monkeypatch, "default")
    reconstruct(root, monkeypatch, "fixed", "--unbinned_visibility")
    relion = signal_shells(fsc(merged(root, "default"), truth))
    fixed = signal_shells(fsc(merged(root, "fixed"), truth))
    print("FSC against truth, RELION's default:", np.round(relion, 3))
    print("FSC against truth, --unbinned_visibility:", np.round(fixed, 3))
    assert fixed.mean() > relion.mean() + 0.05, (relion.mean(), fixed.mean())
