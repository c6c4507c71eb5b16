"""The plugin in a real napari window under Xvfb: docking, readers, sample data, rendering,
maps placed in physical space."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from napari_subtomo_recon.job import relion

from .conftest import set_params, wait_done, wait_layers

pytestmark = pytest.mark.gui


def dock_widget(viewer):
    _, w = viewer.window.add_plugin_dock_widget("napari-subtomo-recon", "Reconstruct particle")
    return w


def not_blank(img: np.ndarray) -> float:
    """Fraction of pixels that differ from the background colour."""
    rgb = img[..., :3].astype(np.int16)
    background = np.median(rgb.reshape(-1, 3), axis=0)
    return float((np.abs(rgb - background).sum(axis=-1) > 30).mean())


def centre_of_density(layer) -> np.ndarray:
    """World position (Å) of the centre of mass of the density above the iso level."""
    d = np.asarray(layer.data, dtype=np.float64)
    w = np.where(d > layer.iso_threshold, d, 0.0)
    idx = np.indices(d.shape).reshape(3, -1)
    com = (idx * w.reshape(-1)).sum(axis=1) / w.sum()
    return np.asarray(layer.data_to_world(com))


def test_sample_run_and_maps_in_physical_space(make_napari_viewer, qtbot, tmp_path):
    """Open Sample returns at once; the data set is written in the background; a cropped
    run's merged map, its full map and the ground truth sit on the same particle centre."""
    viewer = make_napari_viewer(show=True)
    w = dock_widget(viewer)
    qtbot.waitUntil(w.napari_ready.is_set, timeout=30_000)  # as a user takes a moment
    t0 = time.perf_counter()
    (truth,) = viewer.open_sample("napari-subtomo-recon", "simulated")
    assert time.perf_counter() - t0 < 1.0, "Open Sample must return at once"
    assert truth.name == "ground truth"
    qtbot.waitUntil(lambda: "ready to run" in w.status.text(), timeout=300_000)
    qtbot.waitUntil(lambda: not w.warmup.running, timeout=300_000)
    root = Path(w.params().project_dir)
    assert (root / "optimisation_set.star").is_file()
    assert w.params().optimisation_set == "optimisation_set.star"
    assert (w.params().symmetry, w.params().box_size) == ("C6", 48)
    assert truth.data.max() > 0 and np.allclose(truth.scale, 4.0)
    set_params(w, crop_size=40, threads=2)
    w.more_maps.setChecked(True)
    assert w.run(), w.last_error
    out = wait_done(qtbot, w)
    assert out.status == "ok", out.message
    job = out.result.output_dir.name
    wait_layers(qtbot, viewer, [f"{job} merged", f"{job} merged_full"])
    merged, full = viewer.layers[f"{job} merged"], viewer.layers[f"{job} merged_full"]
    qtbot.waitUntil(lambda: merged.data.shape == (40,) * 3, timeout=10_000)  # the final map
    assert merged.data.shape == (40,) * 3 and full.data.shape == (48,) * 3
    for layer in (truth, merged, full):
        n = layer.data.shape[0]
        assert np.allclose(layer.data_to_world((n // 2,) * 3), 0.0)  # RELION's centre
        assert [str(u) for u in layer.units] == ["angstrom"] * 3
    full.iso_threshold = merged.iso_threshold
    c_truth, c_merged, c_full = map(centre_of_density, (truth, merged, full))
    half_voxel = 4.0 / 2
    assert np.abs(c_merged - c_full).max() < half_voxel, (c_merged, c_full)
    assert np.abs(c_merged - c_truth).max() < half_voxel, (c_merged, c_truth)
    # the isosurface is drawn, and hiding it blanks the canvas
    for layer in (truth, full):
        layer.visible = False
    viewer.reset_view()
    qtbot.wait(200)
    assert not_blank(viewer.screenshot(canvas_only=True, flash=False)) > 0.01
    merged.visible = False
    qtbot.wait(100)
    assert not_blank(viewer.screenshot(canvas_only=True, flash=False)) < 0.001
    # the FSC plot is drawn
    assert w.fsc_plot.isVisible() and w.fsc_plot.curve is not None
    img = w.fsc_plot.grab().toImage()
    arr = np.frombuffer(img.constBits().asstring(img.sizeInBytes()), np.uint8)
    arr = arr.reshape(img.height(), img.bytesPerLine())[:, : img.width() * 4]
    assert not_blank(arr.reshape(img.height(), img.width(), 4)) > 0.01
    # the scale bar speaks Å
    viewer.scale_bar.visible = True
    assert "angstrom" in str(viewer.layers.extent.units)


def test_open_job_star_and_optimisation_set(make_napari_viewer, qtbot, dataset):
    from napari_subtomo_recon.job import run_to_completion
    from napari_subtomo_recon.params import ReconstructParams

    viewer = make_napari_viewer()
    project = Path(dataset.root)
    job_dir = project / "Reconstruct" / "job050"
    p = ReconstructParams.for_gui().replace(
        optimisation_set="optimisation_set.star", box_size=32, binning=2.0,
        output_dir="Reconstruct/job050/",
    )  # fmt: skip
    relion.write_job(job_dir, p)
    run_to_completion(relion.run_params(p), root=str(project))
    assert viewer.open(job_dir / "job.star", plugin="napari-subtomo-recon") == []
    w = dock_widget(viewer)  # the reader filled the widget; the merged map follows
    wait_layers(qtbot, viewer, ["job050 merged"])
    merged = viewer.layers["job050 merged"]
    assert merged.rendering == "iso"
    assert np.allclose(merged.scale, 4.0) and np.allclose(merged.translate, -16 * 4.0)
    got = w.params()
    assert got.box_size == 32 and got.optimisation_set == "optimisation_set.star"
    assert Path(got.project_dir) == project.resolve()
    assert got.output_dir == "Reconstruct/job051/"
    # an optimisation set becomes the input
    extract = project / "Extract" / "job060"
    extract.mkdir(parents=True)
    (extract / "optimisation_set.star").write_text((project / "optimisation_set.star").read_text())
    assert viewer.open(extract / "optimisation_set.star", plugin="napari-subtomo-recon") == []
    assert w.params().optimisation_set == "Extract/job060/optimisation_set.star"
    # an MRC map opens at its voxel size, as an isosurface around its centre
    (lay,) = viewer.open(job_dir / "half1.mrc", plugin="napari-subtomo-recon")
    assert np.allclose(lay.scale, 4.0) and lay.data.shape == (32, 32, 32)
    assert lay.rendering == "iso" and np.allclose(lay.data_to_world((16, 16, 16)), 0.0)
