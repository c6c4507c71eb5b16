"""CI: the wheel, installed without extras into an environment that already has napari
(as napari's plugin manager installs plugins), gives a working widget."""

import sys

import napari
from qtpy.QtWidgets import QApplication

viewer = napari.Viewer(show=True)
_, widget = viewer.window.add_plugin_dock_widget("napari-subtomo-recon", "Reconstruct particle")
assert type(widget).__name__ == "ReconstructParticleWidget", type(widget)
params = widget.params()
assert params.box_size == 128 and params.output_dir.startswith("Reconstruct/job"), params
app = QApplication.instance()
for _ in range(20):
    app.processEvents()
for runner in (widget.jobs, widget.warmup, widget.samples):
    runner.cancel()
    runner.wait(30)
print(f"docked {type(widget).__name__} from {sys.modules[type(widget).__module__].__file__}")
viewer.close()
