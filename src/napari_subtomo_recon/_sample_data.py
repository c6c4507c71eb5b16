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
from collections.abc import Callable
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
    from .cli import helper_main

    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else "subtomo-recon-sample")

    def work(report: Callable[[ev.Progress], None]) -> ev.Result:
        t0 = time.perf_counter()
        report(ev.Progress(ev.Stage.SIMULATING, message=f"writing the sample data set to {root}"))
        ds = write_sample_data(root)
        files = {"ground_truth": ds.ground_truth, "optimisation_set": ds.optimisation_set}
        return ev.Result(
            output_dir=Path(ds.root),
            files={k: Path(v) for k, v in files.items()},
            elapsed=time.perf_counter() - t0,
        )

    return helper_main("sample data", work, lambda r: f"sample data set written to {root}")


if __name__ == "__main__":
    raise SystemExit(main())
