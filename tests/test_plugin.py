"""The napari plugin's Qt-free parts: manifest, readers that claim only their files, the
sample data, display levels and placement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_subtomo_recon
from napari_subtomo_recon import _reader
from napari_subtomo_recon.display import centre_translate, iso_level, map_layer_kwargs
from napari_subtomo_recon.io.mrc import write_map
from napari_subtomo_recon.job import relion
from napari_subtomo_recon.params import ReconstructParams

PACKAGE = Path(napari_subtomo_recon.__file__).parent
REPO = PACKAGE.parent.parent
BAD = ("PyQt5", "PyQt6", "PySide2", "PySide6", "qtpy", "napari", "magicgui", "superqt", "vispy")


def _modules_after(imports: str) -> list[str]:
    code = f"import json, sys\n{imports}\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_importing_the_package_imports_no_qt_or_napari():
    mods = _modules_after(
        "import napari_subtomo_recon, napari_subtomo_recon.job, napari_subtomo_recon.cli\n"
        "import napari_subtomo_recon.job.runner, napari_subtomo_recon.job.relion\n"
        "import napari_subtomo_recon.io.jobstar, napari_subtomo_recon._reader\n"
        "import napari_subtomo_recon._sample_data, napari_subtomo_recon.warmup"
    )
    assert [m for m in mods if m.split(".")[0] in BAD] == []


def test_the_widgets_own_modules_import_no_numerics():
    """What the widget imports while napari waits: no Numba, SciPy, pandas or starfile."""
    mods = _modules_after(
        "import napari_subtomo_recon.params, napari_subtomo_recon.events\n"
        "import napari_subtomo_recon.job.relion, napari_subtomo_recon.job.launch\n"
        "import napari_subtomo_recon.display, napari_subtomo_recon.core.symmetry\n"
        "from napari_subtomo_recon.params import ReconstructParams\n"
        "ReconstructParams.for_gui().replace(symmetry='D7').check()"
    )
    heavy = [m for m in mods if m.split(".")[0] in ("numba", "scipy", "pandas", "starfile")]
    assert heavy == []


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
    assert not any(r["accepts_directories"] for r in c["readers"])
    patterns = [p for r in c["readers"] for p in r["filename_patterns"]]
    assert "*" not in patterns and "*.star" not in patterns
    assert len(c["sample_data"]) == 1


def test_npe2_validate_with_imports():
    npe2 = Path(sys.executable).with_name("npe2")
    cmd = [str(npe2)] if npe2.exists() else [sys.executable, "-m", "npe2"]
    res = subprocess.run(
        [*cmd, "validate", "napari-subtomo-recon", "--imports"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in res.stdout


def test_napari_offers_this_plugin_only_for_its_files(tmp_path):
    """npe2's compatible readers: never for a PNG, a TIFF, a text file or a folder."""
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()

    def claims(path: Path) -> bool:
        return any(r.plugin_name == "napari-subtomo-recon" for r in pm.iter_compatible_readers(
            [str(path)]))  # fmt: skip

    for name in ("image.png", "stack.tif", "stack.tiff", "notes.txt", "particles.star",
                 "tomograms.star", "data.zarr"):  # fmt: skip
        (tmp_path / name).write_bytes(b"x")
        assert not claims(tmp_path / name), name
    (tmp_path / "folder").mkdir()
    assert not claims(tmp_path / "folder")
    for name in ("map.mrc", "map.MRC", "map.map", "stack.mrcs", "job.star",
                 "optimisation_set.star", "run_optimisation_set.star"):  # fmt: skip
        assert claims(tmp_path / name), name


def test_map_reader_reads_only_mrc_files(tmp_path):
    vol = np.random.default_rng(0).normal(size=(8, 10, 12)).astype(np.float32)
    write_map(tmp_path / "m.mrc", vol, 3.5)
    (tmp_path / "fake.mrc").write_text("not an MRC file")
    assert _reader.get_map_reader(str(tmp_path / "fake.mrc")) is None
    assert _reader.get_map_reader(str(tmp_path / "absent.mrc")) is None
    reader = _reader.get_map_reader(str(tmp_path / "m.mrc"))
    ((data, kw, kind),) = reader(str(tmp_path / "m.mrc"))
    assert kind == "image" and kw["name"] == "m" and kw["scale"] == (3.5, 3.5, 3.5)
    assert np.array_equal(data, vol) and kw["rendering"] == "iso"
    assert kw["translate"] == (-4 * 3.5, -5 * 3.5, -6 * 3.5)  # voxel n//2 at the origin
    assert kw["units"] == ("angstrom",) * 3
    write_map(tmp_path / "s.mrcs", vol, 3.5)
    ((_, kw, _),) = _reader.get_map_reader(str(tmp_path / "s.mrcs"))(str(tmp_path / "s.mrcs"))
    assert "rendering" not in kw and kw["scale"] == (1.0, 3.5, 3.5)  # a stack of images


def test_job_reader_recognises_relion_files(tmp_path):
    job = tmp_path / "Reconstruct" / "job003"
    relion.write_job(job, ReconstructParams.for_gui())
    other = tmp_path / "Refine3D" / "job002"
    other.mkdir(parents=True)
    (other / "job.star").write_text("data_job\n_rlnJobTypeLabel relion.refine3d.tomo\n")
    extract = tmp_path / "Extract" / "job001"
    extract.mkdir(parents=True)
    (extract / "optimisation_set.star").write_text("data_\n_rlnTomoParticlesFile p.star\n")
    assert _reader.get_job_reader(str(job / "job.star")) is not None
    assert _reader.get_job_reader(str(job)) is None  # folders are not claimed
    assert _reader.get_job_reader(str(other / "job.star")) is None
    assert _reader.get_job_reader(str(extract / "optimisation_set.star")) is not None
    assert relion.project_for(extract / "optimisation_set.star") == tmp_path.resolve()
    assert relion.project_for(job) == tmp_path.resolve()
    # without a napari window the reader fills nothing and adds no layer
    assert _reader.read_job(str(job / "job.star")) == [(None,)]


def test_iso_level_rule():
    rng = np.random.default_rng(1)
    n = 48
    z, y, x = np.mgrid[:n, :n, :n] - n / 2
    blob = np.exp(-(x**2 + y**2 + z**2) / (2 * 4.0**2)).astype(np.float32)
    noisy = 10 * blob + rng.normal(0, 0.5, blob.shape).astype(np.float32)
    level = iso_level(noisy)
    assert 3 * 0.5 * 0.9 < level < 10 * 0.5  # above the noise, well below the peak
    clean = iso_level(blob)  # no noise: a tenth of the way to the 99.9th percentile
    assert clean == pytest.approx(
        0.1 * np.percentile(blob[x**2 + y**2 + z**2 < 24**2], 99.9), rel=0.05
    )
    tapered = noisy * (x**2 + y**2 + z**2 < (n / 2) ** 2)  # zeros outside the sphere
    assert abs(iso_level(tapered) - level) < 0.2


@pytest.mark.parametrize("n", [40, 41, 48])
def test_the_particle_centre_is_at_the_origin_whatever_the_box(n):
    """RELION's centre is voxel n//2 (spec §2.3): maps of any box share it."""
    t = centre_translate((n, n, n), 2.5)
    assert t == (-(n // 2) * 2.5,) * 3
    kw = map_layer_kwargs(np.zeros((n, n, n), np.float32), 2.5, "m", levels=(0.5, 0.0, 1.0))
    assert np.allclose(np.array(kw["translate"]) + np.array(kw["scale"]) * (n // 2), 0.0)


def test_sample_data_returns_at_once_and_writes_in_the_background(tmp_path, monkeypatch):
    from napari_subtomo_recon import _sample_data as sd

    monkeypatch.setattr(sd.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "s"))
    ((data, kw, kind),) = sd.make_sample_data()
    assert kind == "image" and data.shape == (48, 48) and not data.any()  # placeholder
    assert kw["metadata"]["subtomo_recon_sample"] == {"root": str(tmp_path / "s")}
    # what the widget starts: the writer, reporting through events
    from napari_subtomo_recon import events as ev

    env = dict(__import__("os").environ, SUBTOMO_EVENTS="stderr")
    r = subprocess.run(
        [sys.executable, "-m", "napari_subtomo_recon._sample_data", str(tmp_path / "s")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    *_, result = [e for e in map(ev.decode, r.stderr.splitlines()) if e is not None]
    assert isinstance(result, ev.Result)
    assert result.files["optimisation_set"] == tmp_path / "s" / "optimisation_set.star"
    assert result.files["ground_truth"].is_file()
