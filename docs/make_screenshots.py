"""Regenerate the screenshots of docs/user-guide.md (real napari windows, under Xvfb).

    python docs/make_screenshots.py [--out docs/screenshots] [--keep DIR]

Without a display the script re-runs itself under ``xvfb-run``.  It writes a small
RELION-style project (the simulated C6 sample data set, with its optimisation set
also under Extract/job010/ as in the tutorial), fills the Reconstruct particle widget
with the tutorial's settings for the widget pictures, then reconstructs the sample
data (which needs smaller numbers than the tutorial's 1.35 A data) and captures the
running job, the isosurface, the FSC plot and the whole window.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

TUTORIAL = {  # RELION 5 tomography tutorial, Reconstruct particle
    "optimisation_set": "Extract/job010/optimisation_set.star",
    "binning": 6.0,
    "box_size": 192,
    "crop_size": 96,
    "snr": 0.0,
    "symmetry": "C6",
    "nr_mpi": 5,
    "threads": 12,
    "memory_gb": 50.0,
}
SAMPLE = {  # the simulated data set: 2 A pixels, a 48-voxel phantom at bin 2
    "optimisation_set": "Extract/job010/optimisation_set.star",
    "binning": 2.0,
    "box_size": 48,
    "crop_size": 40,
    "snr": 0.0,
    "symmetry": "C6",
    "nr_mpi": 1,
    "threads": 2,
    "memory_gb": -1.0,
}


def _ensure_display() -> None:
    if os.environ.get("DISPLAY") or os.environ.get("_SUBTOMO_UNDER_XVFB"):
        return
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        sys.exit("no display and no xvfb-run: apt-get install xvfb xauth")
    env = {**os.environ, "_SUBTOMO_UNDER_XVFB": "1"}
    env.pop("QT_QPA_PLATFORM", None)  # offscreen cannot draw the 3D canvas
    cmd = [xvfb, "-a", "-s", "-screen 0 1600x1100x24", sys.executable, *sys.argv]
    sys.exit(subprocess.call(cmd, env=env))


def _wait(app, predicate, timeout: float) -> None:
    end = time.time() + timeout
    while not predicate():
        if time.time() > end:
            raise TimeoutError("the job did not finish in time")
        app.processEvents()
        time.sleep(0.02)


def _settle(app, seconds: float = 0.5) -> None:
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.02)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "screenshots")
    ap.add_argument("--keep", type=Path, help="project folder to keep (default: temporary)")
    args = ap.parse_args(argv)
    _ensure_display()

    import napari
    from qtpy.QtWidgets import QApplication

    import napari_subtomo_recon._qt.job_widget as jw
    from napari_subtomo_recon import events as ev
    from napari_subtomo_recon.simulate import simulate

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    tmp = None if args.keep else Path(tempfile.mkdtemp(prefix="subtomo-recon-docs-"))
    project = (args.keep or tmp / "tomo_tutorial").resolve()  # a stable name in the pictures
    print(f"simulating the sample data set in {project} ...", flush=True)
    ds = simulate(project, symmetry="C6")
    extract = project / "Extract" / "job010"
    extract.mkdir(parents=True, exist_ok=True)
    # paths in the optimisation set are relative to the project, so a copy works here too
    shutil.copy(ds.optimisation_set, extract / "optimisation_set.star")

    viewer = napari.Viewer(title="napari-subtomo-recon", show=True)
    app = QApplication.instance()
    viewer.window.resize(1500, 1000)
    _, w = viewer.window.add_plugin_dock_widget("napari-subtomo-recon", "Reconstruct particle")
    _wait(app, lambda: not w.warmup.running, timeout=600)  # the kernels, once
    w.set_params(w.params().replace(project_dir=str(project), **TUTORIAL))
    _settle(app)
    for i, name in enumerate(("io", "average", "helix", "running")):
        w.form.tabs.setCurrentIndex(i)
        _settle(app, 0.3)
        w.grab().save(str(out / f"widget_{name}.png"))
        print(f"wrote {out / f'widget_{name}.png'}")

    # reconstruct the sample data, capturing the window while the map emerges
    w.form.tabs.setCurrentIndex(1)
    w.set_params(w.params().replace(**SAMPLE))
    w._set_output_auto()
    jw.PREVIEW_SECONDS = 0.25  # the sample job takes only seconds
    shots = {}
    children = []  # the job's child process, to hold it while the preview is captured
    submit = w._submit_job
    w._submit_job = lambda child: (children.append(child), submit(child))

    def on_progress(update):
        p = update.event
        if isinstance(p, ev.Preview) and "running" not in shots:  # the first preview
            children[0].pause(True)  # the sample job ends within a second otherwise
            _settle(app, 1.0)
            path = str(out / "running.png")
            shots["running"] = viewer.screenshot(path, canvas_only=False, flash=False)
            children[0].pause(False)

    w.jobs.progressed.connect(on_progress)
    if not w.run():
        print(f"cannot run: {w.last_error}", file=sys.stderr)
        return 1
    _wait(app, lambda: w.last_outcome is not None and not w.jobs.running, timeout=600)
    outcome = w.last_outcome
    if outcome.status != "ok":
        print(f"the job failed: {outcome.message}", file=sys.stderr)
        return 1
    _settle(app, 2.0)  # the maps arrive one per turn of the event loop
    print(w.status.text())
    if "running" not in shots:
        print("no live preview was captured (the job was too quick?)", file=sys.stderr)
        return 1
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene.camera
    camera.angles = (30.0, 20.0, 0.0)  # down the 6-fold axis, tilted to show depth
    camera.zoom *= 1.3
    _settle(app, 1.0)
    viewer.screenshot(str(out / "isosurface.png"), canvas_only=True, flash=False)
    viewer.screenshot(str(out / "window.png"), canvas_only=False, flash=False)
    w.fsc_plot.grab().save(str(out / "fsc.png"))
    for name in ("isosurface", "window", "fsc") + tuple(shots):
        print(f"wrote {out / (name + '.png')}")
    viewer.close()
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
