"""The napari plugin's Qt-free parts: manifest, layering, readers, sample data, iso level."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_subtomo_recon
from napari_subtomo_recon import _reader
from napari_subtomo_recon.io import jobstar as js
from napari_subtomo_recon.io.mrc import write_map

PACKAGE = Path(napari_subtomo_recon.__file__).parent
REPO = PACKAGE.parent.parent


def test_importing_the_package_imports_no_qt_or_napari():
    code = (
        "import json, sys\n"
        "import napari_subtomo_recon, napari_subtomo_recon.job, napari_subtomo_recon.cli\n"
        "import napari_subtomo_recon.io.jobstar, napari_subtomo_recon._reader\n"
        "import napari_subtomo_recon._sample_data\n"
        "bad = ('PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', 'napari', 'magicgui',"
        " 'superqt', 'vispy')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in bad)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


def test_manifest_is_the_canonical_one():
    yaml = pytest.importorskip("yaml")  # comes with napari

    canonical = PACKAGE / "napari.yaml"
    link = REPO / "napari.yaml"
    if link.exists():
        assert link.is_symlink() and link.resolve() == canonical.resolve()
    m = yaml.safe_load(canonical.read_text())
    assert m["name"] == "napari-subtomo-recon"
    c = m["contributions"]
    commands = {x["id"]: x["python_name"] for x in c["commands"]}
    assert [w["display_name"] for w in c["widgets"]] == ["Reconstruct particle"]
    assert commands[c["widgets"][0]["command"]].endswith("_widget:ReconstructParticleWidget")
    patterns = {r["command"]: r["filename_patterns"] for r in c["readers"]}
    assert "*.mrc" in patterns["napari-subtomo-recon.get_map_reader"]
    assert len(c["sample_data"]) == 1


@pytest.mark.gui
def test_npe2_validate_with_imports():
    npe2 = Path(sys.executable).with_name("npe2")
    cmd = [str(npe2)] if npe2.exists() else [sys.executable, "-m", "npe2"]
    res = subprocess.run(
        [*cmd, "validate", "napari-subtomo-recon", "--imports"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in res.stdout


def test_map_reader_sets_the_voxel_size(tmp_path):
    vol = np.random.default_rng(0).normal(size=(8, 10, 12)).astype(np.float32)
    write_map(tmp_path / "m.mrc", vol, 3.5)
    (tmp_path / "notes.txt").write_text("x")
    assert _reader.get_map_reader(str(tmp_path / "notes.txt")) is None
    assert _reader.get_map_reader(str(tmp_path / "absent.mrc")) is None
    reader = _reader.get_map_reader(str(tmp_path / "m.mrc"))
    ((data, kw, kind),) = reader(str(tmp_path / "m.mrc"))
    assert kind == "image" and kw["name"] == "m" and kw["scale"] == (3.5, 3.5, 3.5)
    assert np.array_equal(data, vol) and "rendering" not in kw  # tomograms are not surfaces


def test_job_reader_recognises_relion_folders(tmp_path):
    job = tmp_path / "Reconstruct" / "job003"
    js.write_job_star(job, js.JobStar(options=js.job_star_values(js.default_values())))
    other = tmp_path / "Refine3D" / "job002"
    other.mkdir(parents=True)
    (other / "job.star").write_text("data_job\n_rlnJobTypeLabel relion.refine3d.tomo\n")
    extract = tmp_path / "Extract" / "job001"
    extract.mkdir(parents=True)
    (extract / "optimisation_set.star").write_text("data_\n_rlnTomoParticlesFile p.star\n")
    assert _reader.get_job_reader(str(job)) is not None
    assert _reader.get_job_reader(str(job / "job.star")) is not None
    assert _reader.get_job_reader(str(other)) is None
    assert _reader.get_job_reader(str(extract)) is not None
    assert _reader.get_job_reader(str(extract / "optimisation_set.star")) is not None
    assert _reader.get_job_reader(str(tmp_path)) is None
    assert _reader.project_for(extract / "optimisation_set.star") == tmp_path.resolve()
    assert _reader.project_for(job) == tmp_path.resolve()
    # without a napari window the reader only returns the maps (none yet)
    write_map(job / "merged.mrc", np.zeros((4, 4, 4), np.float32), 2.0)
    layers = _reader.read_job(str(job))
    assert [kw["name"] for _, kw, _ in layers] == ["job003 merged"]
    assert _reader.read_job(str(extract)) == [(None,)]


def test_iso_level_rule():
    rng = np.random.default_rng(1)
    n = 48
    z, y, x = np.mgrid[:n, :n, :n] - n / 2
    blob = np.exp(-(x**2 + y**2 + z**2) / (2 * 4.0**2)).astype(np.float32)
    noisy = 10 * blob + rng.normal(0, 0.5, blob.shape).astype(np.float32)
    level = _reader.iso_level(noisy)
    assert 3 * 0.5 * 0.9 < level < 10 * 0.5  # above the noise, well below the peak
    clean = _reader.iso_level(blob)  # no noise: a tenth of the way to the 99.9th percentile
    assert clean == pytest.approx(
        0.1 * np.percentile(blob[x**2 + y**2 + z**2 < 24**2], 99.9), rel=0.05
    )
    tapered = noisy * (x**2 + y**2 + z**2 < (n / 2) ** 2)  # zeros outside the sphere
    assert abs(_reader.iso_level(tapered) - level) < 0.2


def test_sample_data(tmp_path):
    from napari_subtomo_recon._sample_data import make_sample_data

    small = {"particles_per_tomogram": 4, "n_tilts": 11, "image_size": (128, 128)}
    ((data, kw, kind),) = make_sample_data(tmp_path, tomo_size=(128, 128, 60), **small)
    assert kind == "image" and kw["rendering"] == "iso" and data.shape == (48, 48, 48)
    ds = kw["metadata"]["subtomo_recon_dataset"]
    assert ds["sym_name"] == "C6" and ds["box_size"] == 48
    assert Path(ds["optimisation_set"]).is_file() and os.path.samefile(ds["root"], tmp_path)
