"""Sample data (npe2): the built-in simulated RELION 5 data set, written to a temporary folder.

Returns the ground-truth map as an isosurface; its metadata tells the Reconstruct
particle widget where the data set is, so the widget fills its inputs from it.
"""

from __future__ import annotations

import tempfile

SAMPLE_SYMMETRY = "C6"  # as the tutorial's HIV capsid hexamer


def make_sample_data(root=None, **simulate_kwargs) -> list[tuple]:
    from ._reader import map_layer_kwargs
    from .io.mrc import read_map
    from .simulate import simulate

    if root is None:
        root = tempfile.mkdtemp(prefix="subtomo-recon-sample-")
    simulate_kwargs.setdefault("symmetry", SAMPLE_SYMMETRY)
    ds = simulate(root, **simulate_kwargs)
    data, vs = read_map(ds.ground_truth)
    kw = map_layer_kwargs(data, vs, "ground truth", iso=True)
    kw["metadata"]["subtomo_recon_dataset"] = {
        "root": str(ds.root),
        "optimisation_set": str(ds.optimisation_set),
        "box_size": int(ds.box),
        "binning": float(ds.binning),
        "sym_name": ds.symmetry,
    }
    return [(data, kw, "image")]
