"""Parity with RELION 5: our maps against maps made by the real relion_tomo_reconstruct_particle.

The fixtures (inputs, RELION's output maps and the exact commands) are described in
tests/fixtures/relion/README.md.  Every case runs the same flags through our job
(RELION's exact extraction path) and compares the maps.
"""

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_subtomo_recon.cli import parse_args
from napari_subtomo_recon.core.fsc import fsc
from napari_subtomo_recon.job import run_to_completion

FIXTURES = Path(__file__).parent / "fixtures" / "relion"
CASES = json.loads((FIXTURES / "cases.json").read_text())


def compare(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """(relative RMS difference, lowest FSC over shells 1..Nyquist).

    Shell 0 is only the mean, which the taper sets to ~0 in both maps: its FSC is
    the sign of rounding noise, so the mean is covered by the RMS difference instead.
    """
    a, b = ours.astype(np.float64), theirs.astype(np.float64)
    rel = float(np.sqrt(np.sum((a - b) ** 2) / np.sum(b**2)))
    return rel, float(fsc(a, b)[1:].min())


@pytest.mark.parametrize("name", sorted(CASES))
def test_maps_match_relion(name, tmp_path, monkeypatch):
    case = CASES[name]
    monkeypatch.chdir(FIXTURES / "inputs" / case["inputs"])
    params, _ = parse_args([*case["args"], "--o", str(tmp_path / "job"), "--j", "2", "--exact"])
    run_to_completion(params)
    for fname in case["compare"]:
        ours, theirs = (
            mrcfile.read(tmp_path / "job" / fname),
            mrcfile.read(FIXTURES / "expected" / name / fname),
        )
        assert ours.shape == theirs.shape, fname
        rel, min_fsc = compare(ours, theirs)
        assert rel <= 1e-4, f"{name}/{fname}: relative RMS difference {rel:.2e}"
        assert min_fsc >= 0.9999, f"{name}/{fname}: FSC drops to {min_fsc:.6f}"
        with (
            mrcfile.open(tmp_path / "job" / fname) as m,
            mrcfile.open(FIXTURES / "expected" / name / fname) as r,
        ):
            assert m.voxel_size.x == pytest.approx(float(r.voxel_size.x))
            assert m.data.dtype == np.float32


@pytest.mark.parametrize("prebin", ["auto", "always"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_default_path_agrees_with_relion(name, prebin, tmp_path, monkeypatch):
    """The default (fast) path, not RELION's exact extraction: FSC >= 0.995 at every shell
    against RELION's maps (issues #4 and #16).  These tilts are small, so "auto" mostly
    cuts RELION's windows; "always" bins every tilt first, as large data sets do."""
    case = CASES[name]
    monkeypatch.chdir(FIXTURES / "inputs" / case["inputs"])
    params, _ = parse_args(
        [*case["args"], "--o", str(tmp_path / "job"), "--j", "2", "--prebin", prebin]
    )
    assert not params.exact
    run_to_completion(params)
    for fname in case["compare"]:
        ours = mrcfile.read(tmp_path / "job" / fname)
        theirs = mrcfile.read(FIXTURES / "expected" / name / fname)
        _, min_fsc = compare(ours, theirs)
        assert min_fsc >= 0.995, f"{name}/{fname}: FSC drops to {min_fsc:.4f}"


@pytest.mark.parametrize("name", ["deform_spline", "deform_fourier", "deform_linear"])
def test_deformation_cases_need_the_deformation(name, tmp_path, monkeypatch):
    """The deformation cases test the deformation: read without it (no grid sizes, which
    RELION also takes as "no deformation"), the maps are far outside the parity bounds."""
    import shutil

    import starfile

    case = CASES[name]
    shutil.copytree(FIXTURES / "inputs" / case["inputs"], tmp_path / "in")
    blocks = starfile.read(tmp_path / "in" / "tomograms.star", always_dict=True)
    blocks["global"] = blocks["global"].drop(
        columns=["rlnTomoDeformationGridSizeX", "rlnTomoDeformationGridSizeY"]
    )
    starfile.write(blocks, tmp_path / "in" / "tomograms.star")
    monkeypatch.chdir(tmp_path / "in")
    params, _ = parse_args([*case["args"], "--o", str(tmp_path / "job"), "--j", "2", "--exact"])
    run_to_completion(params)
    for fname in case["compare"]:
        rel, low = compare(
            mrcfile.read(tmp_path / "job" / fname),
            mrcfile.read(FIXTURES / "expected" / name / fname),
        )
        print(f"{name}/{fname} without the deformation: rel. RMS {rel:.2f}, lowest FSC {low:.2f}")
        assert rel > 0.1, (name, fname, rel)
