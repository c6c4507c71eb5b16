"""Sample data (npe2): the built-in simulated RELION 5 data set, written in the background.

napari's File › Open Sample calls :func:`make_sample_data` on its GUI thread, which
returns at once: an empty ground-truth layer whose metadata names a new temporary folder,
and the Reconstruct particle widget docked.  The widget writes the data set there in a
child process (``python -m napari_subtomo_recon._sample_data DIR``, reporting through
events), then shows the ground truth in that layer and points its inputs at the data set.
:func:`write_sample_data` does the same synchronously (tests, scripts).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_SYMMETRY = "C6"  # as the tutorial's HIV capsid hexamer
SAMPLE_BOX = 48  # the simulator's defaults: box 48, 2 Å pixels, binning 2
SAMPLE_VOXEL = 4.0
# what the widget sets for the sample data set
SAMPLE_PARAMS = {"box_size": SAMPLE_BOX, "binning": 2.0, "symmetry": SAMPLE_SYMMETRY}


def write_sample_data(root: str | os.PathLike[str]) -> Any:
    """Simulate the sample data set into ``root``; its :class:`SimulatedDataset`."""
    from .simulate import simulate

    return simulate(Path(root), symmetry=SAMPLE_SYMMETRY)


def make_sample_data() -> list[tuple[Any, ...]]:
    """napari's sample-data contribution: returns within a fraction of a second."""
    from .display import map_layer_kwargs

    root = tempfile.mkdtemp(prefix="subtomo-recon-sample-")
    _dock_widget()
    # a 2D placeholder: napari adds it at once (a 3D one would also build its dims
    # sliders now); the widget puts the 3D ground truth in it when it is written
    placeholder = np.zeros((SAMPLE_BOX,) * 2, np.float32)
    kw = map_layer_kwargs(placeholder, SAMPLE_VOXEL, "ground truth", levels=(0.5, 0.0, 1.0))
    kw["metadata"]["subtomo_recon_sample"] = {"root": root}
    return [(placeholder, kw, "image")]


def _dock_widget() -> None:
    """The widget writes the data set: make sure it is there (not in headless use)."""
    try:
        import napari

        viewer = napari.current_viewer()
    except ImportError:
        return
    window = getattr(viewer, "window", None) if viewer is not None else None
    if window is not None:
        window.add_plugin_dock_widget("napari-subtomo-recon", "Reconstruct particle")


def main(argv: list[str] | None = None) -> int:
    """``python -m napari_subtomo_recon._sample_data DIR``, reporting through events."""
    from . import events as ev
    from .cli import EventReporter, failure_of

    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else "subtomo-recon-sample")
    try:
        os.nice(10)  # background work for napari: the user's clicks come first
    except OSError:
        pass
    reporter = EventReporter(sys.stderr) if os.environ.get(ev.ENV) == "stderr" else None
    t0 = time.perf_counter()
    if reporter is not None:
        reporter.progress(
            ev.Progress(ev.Stage.SIMULATING, message=f"writing the sample data set to {root}")
        )
    try:
        ds = write_sample_data(root)
    except Exception as e:
        failure = failure_of(e, debug=True)
        if reporter is not None:
            reporter.failure(failure, True)
        print(f"sample data: error: {failure.message}", file=sys.stderr)
        return failure.exit_code
    result = ev.Result(
        output_dir=Path(ds.root),
        files={
            "ground_truth": Path(ds.ground_truth),
            "optimisation_set": Path(ds.optimisation_set),
        },
        voxel_size=SAMPLE_VOXEL,
        elapsed=time.perf_counter() - t0,
    )
    if reporter is not None:
        reporter.result(result)
    else:
        print(f"sample data set written to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
