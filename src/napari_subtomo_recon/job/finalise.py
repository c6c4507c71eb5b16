"""The job's fourth stage: from the accumulated Fourier volumes to the output maps.

Symmetry, gridding correction, Wiener/heuristic division, crop and taper, as
``ReconstructParticleProgram::finalise`` does (spec §5-§7).

Each map is handed on (``emit``) as soon as it exists, so that it can be written and
dropped: at box 512 one map is 1 GB in double precision, and holding the twelve maps of
a job cost 9 GB more than RELION's whole run.  The accumulators are the workspace: each
half set's volume is transformed in place once nothing else needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

import numpy as np

from ..params import ReconstructParams

if TYPE_CHECKING:
    from ..io.mrc import PlaneSource

    MapData = np.ndarray | PlaneSource

MAP_TAGS = ("half1", "half2", "merged")

# emit(tag, kind, volume): kind is "data" (gridding-corrected), "weight" (expanded: an
# ExpandedWeights, which makes its planes as they are written), "spectrum" (the half
# transform of "out", (s, s, s//2+1) complex), "out" (divided by the weights, the whole
# box) or "final" (cropped, tapered).  A volume is only valid during the call.
Emit = Callable[[str, str, "MapData"], None]


def _symmetrise(D: np.ndarray, W: np.ndarray, params: ReconstructParams, voxel_size: float,
                halves: int, threads: int) -> Generator[str, None, None]:  # fmt: skip
    from ..core.symmetrise import symmetrise_fourier
    from ..core.symmetry import symmetry_operators

    ops = symmetry_operators(
        params.symmetry, params.helical_units, params.helical_twist,
        params.helical_rise / voxel_size,
    )  # fmt: skip
    if len(ops):
        for h in range(halves):
            yield f"symmetry ({len(ops) + 1} operators), half set {h + 1}"
            D[h], W[h] = symmetrise_fourier(D[h], W[h], ops, threads, wrap=params.fix_symmetry_wrap)


def _one_map(D: np.ndarray, W: np.ndarray, params: ReconstructParams, threads: int,
             emit: Callable[[str, MapData], None]) -> None:  # fmt: skip
    """data, out and final of one map; ``D`` (complex128, C-contiguous) is overwritten."""
    from ..core.reconstruction import (
        crop_centre,
        divide_fourier,
        forward_half,
        gridding_correct,
        inverse_half,
        taper,
    )

    data = gridding_correct(D, threads, consume=True)
    emit("data", data)
    G = forward_half(data, threads)
    del data
    divide_fourier(G, W, params.snr)
    emit("spectrum", G)
    out = inverse_half(G, threads)
    del G
    emit("out", out)
    if params.crops:
        final = taper(crop_centre(out, params.crop_size), params.taper)
    else:
        final = taper(out, params.taper, inplace=True)
    emit("final", final)


def finalise_steps(
    D: np.ndarray, W: np.ndarray, params: ReconstructParams, voxel_size: float,
    half_sets: bool, threads: int, emit: Emit,
) -> Generator[str, None, None]:  # fmt: skip
    """Symmetrise, reconstruct and hand every output map to ``emit``.

    A generator: yields a short message before each heavy step (so a caller can report
    progress and cancel between them).  ``D``, ``W`` (2, s, s, sh) are used up.  Maps
    come as half1, half2, merged (or merged alone without half sets).
    """
    from ..core.reconstruction import ExpandedWeights

    yield from _symmetrise(D, W, params, voxel_size, 2 if half_sets else 1, threads)
    if not half_sets:
        yield "gridding correction and weighting: merged"
        emit("merged", "weight", ExpandedWeights(W[0]))
        _one_map(D[0], W[0], params, threads, lambda k, v: emit("merged", k, v))
        return
    yield "gridding correction and weighting: half1"
    wexp = ExpandedWeights(W[0])
    emit("half1", "weight", wexp)
    emit("merged", "weight", wexp)  # RELION quirk: weight_merged holds the half-1 weights
    # three maps from two volumes: half 1 works on a copy, then D[0] becomes the sum
    _one_map(np.array(D[0]), W[0], params, threads, lambda k, v: emit("half1", k, v))
    D[0] += D[1]
    yield "gridding correction and weighting: half2"
    emit("half2", "weight", ExpandedWeights(W[1]))
    _one_map(D[1], W[1], params, threads, lambda k, v: emit("half2", k, v))
    W[0] += W[1]
    yield "gridding correction and weighting: merged"
    _one_map(D[0], W[0], params, threads, lambda k, v: emit("merged", k, v))


def preview_map(
    D: np.ndarray, W: np.ndarray, params: ReconstructParams, voxel_size: float, threads: int
) -> np.ndarray:
    """The merged map of what is accumulated so far (``D``, ``W`` are not modified).

    The halves are summed first and the sum symmetrised: symmetrisation is linear, so
    this is the merged map up to rounding, at half the memory and work.
    """
    Dm = (D[0] + D[1])[None]
    Wm = (W[0] + W[1])[None]
    for _ in _symmetrise(Dm, Wm, params, voxel_size, 1, threads):
        pass
    maps: dict[str, np.ndarray] = {}

    def keep(kind: str, vol: MapData) -> None:
        if kind == "final":
            assert isinstance(vol, np.ndarray)
            maps["final"] = np.array(vol)

    _one_map(Dm[0], Wm[0], params, threads, keep)
    return maps["final"]
