"""The plugin in a real napari window under Xvfb: manifest wiring, readers, dock, rendering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

SMALL = {
    "particles_per_tomogram": 10,
    "n_tilts": 21,
    "image_size": (256, 256),
    "tomo_size": (256, 256, 100),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from napari_subtomo_recon.simulate import simulate

    return simulate(tmp_path_factory.mktemp("sim"), symmetry="C6", **SMALL)


def dock_widget(viewer):
    _, w = viewer.window.add_plugin_dock_widget("napari-subtomo-recon", "Reconstruct particle")
    return w


def not_blank(img: np.ndarray) -> float:
    """Fraction of pixels that differ from the background colour."""
    rgb = img[..., :3].astype(np.int16)
    background = np.median(rgb.reshape(-1, 3), axis=0)
    return float((np.abs(rgb - background).sum(axis=-1) > 30).mean())


def test_run_in_window_renders_isosurface_and_fsc_dock(make_napari_viewer, qtbot, dataset):
    viewer = make_napari_viewer(show=True)
    w = dock_widget(viewer)
    assert type(w).__name__ == "ReconstructParticleWidget"
    w.set_values(
        {
            "project_dir": str(dataset.root),
            "in_optimisation": "optimisation_set.star",
            "box_size": 48,
            "binning": 2,
            "sym_name": "C6",
            "nr_threads": 2,
        }
    )
    assert w.run(), w.last_error
    qtbot.waitUntil(lambda: not w.runner.running, timeout=90_000)
    assert w.runner.wait(10)
    out = w.last_outcome
    assert out.status == "ok", out.message
    merged = viewer.layers[w.layer_name("merged", out.job_dir)]
    assert merged.rendering == "iso" and viewer.dims.ndisplay == 3
    viewer.reset_view()
    qtbot.wait(200)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.ndim == 3 and shot.shape[0] > 100
    assert not_blank(shot) > 0.01, "the isosurface screenshot is blank"
    # hiding the map must give a blank canvas: the check above measures the surface
    merged.visible = False
    qtbot.wait(100)
    assert not_blank(viewer.screenshot(canvas_only=True, flash=False)) < 0.001
    merged.visible = True
    # the FSC plot is docked and drawn
    assert w._fsc_dock is not None and w.fsc_plot.isVisible()
    plot = w.fsc_plot.grab().toImage()
    arr = np.frombuffer(plot.constBits().asstring(plot.sizeInBytes()), np.uint8)
    arr = arr.reshape(plot.height(), plot.bytesPerLine())[:, : plot.width() * 4]
    assert not_blank(arr.reshape(plot.height(), plot.width(), 4)) > 0.01


def test_open_job_folder_and_optimisation_set(make_napari_viewer, dataset, tmp_path):
    from napari_subtomo_recon.io import jobstar as js
    from napari_subtomo_recon.job import run_to_completion

    viewer = make_napari_viewer()
    # a finished RELION-style Reconstruct job folder
    project = Path(dataset.root)
    job_dir = project / "Reconstruct" / "job050"
    values = {
        **js.default_values(), "in_optimisation": "optimisation_set.star", "box_size": 32,
        "binning": 2, "output_dir": "Reconstruct/job050/",
    }  # fmt: skip
    js.write_job_star(job_dir, js.JobStar(options=js.job_star_values(values)))
    params, _ = js.params_from_values(values)
    run_to_completion(params, root=str(project))
    layers = viewer.open(job_dir, plugin="napari-subtomo-recon")
    assert [lay.name for lay in layers] == ["job050 merged", "job050 half1", "job050 half2"]
    assert layers[0].rendering == "iso" and not layers[1].visible
    assert np.allclose(layers[0].scale, 4.0)
    w = dock_widget(viewer)  # the reader filled the widget
    assert w.values()["box_size"] == 32 and w.values()["in_optimisation"] == (
        "optimisation_set.star"
    )
    assert Path(w.values()["project_dir"]) == project.resolve()
    assert w.values()["output_dir"] == "Reconstruct/job051/"
    # an optimisation set becomes the input
    extract = project / "Extract" / "job060"
    extract.mkdir(parents=True)
    (extract / "optimisation_set.star").write_text((project / "optimisation_set.star").read_text())
    assert viewer.open(extract, plugin="napari-subtomo-recon") == []
    assert w.values()["in_optimisation"] == "Extract/job060/optimisation_set.star"
    # an MRC map opens at its voxel size
    (lay,) = viewer.open(job_dir / "half1.mrc", plugin="napari-subtomo-recon")
    assert np.allclose(lay.scale, 4.0) and lay.data.shape == (32, 32, 32)


def test_sample_data_fills_the_widget(make_napari_viewer, monkeypatch, tmp_path):
    import napari_subtomo_recon._sample_data as sd

    real = sd.make_sample_data
    monkeypatch.setattr(sd, "make_sample_data", lambda: real(tmp_path / "s", **SMALL))
    viewer = make_napari_viewer()
    w = dock_widget(viewer)
    (layer,) = viewer.open_sample("napari-subtomo-recon", "simulated")
    assert layer.name == "ground truth" and layer.rendering == "iso"
    assert np.allclose(layer.scale, 4.0)
    assert Path(w.values()["project_dir"]) == (tmp_path / "s").resolve()
    assert w.values()["sym_name"] == "C6" and w.values()["box_size"] == 48
