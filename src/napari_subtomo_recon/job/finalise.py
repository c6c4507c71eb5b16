"""The job's fourth stage: from the accumulated Fourier volumes to the output maps.

Symmetry, gridding correction, Wiener/heuristic division, crop and taper, as
``ReconstructParticleProgram::finalise`` does (spec §5-§7).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from ..params import ReconstructParams

MAP_TAGS = ("half1", "half2", "merged")


def finalise_steps(
    D: np.ndarray, W: np.ndarray, params: ReconstructParams, voxel_size: float,
    half_sets: bool, threads: int, merged_only: bool = False,
) -> Generator[str, None, Any]:  # fmt: skip
    """Symmetrise, reconstruct and collect every output map (nothing written yet).

    A generator: yields a short message before each heavy step (so a caller can
    report progress and cancel between them) and returns the maps.  ``D``, ``W``
    (2, s, s, sh) are modified.  With ``merged_only`` it returns only the final merged
    map (a preview while the job runs).
    """
    from ..core.reconstruction import (
        crop_centre,
        divide_weights,
        expand_weights,
        gridding_correct,
        taper,
    )
    from ..core.symmetrise import symmetrise_fourier
    from ..core.symmetry import symmetry_operators

    ops = symmetry_operators(
        params.symmetry, params.helical_units, params.helical_twist,
        params.helical_rise / voxel_size,
    )  # fmt: skip
    if len(ops):
        for h in range(2 if (half_sets or merged_only) else 1):
            yield f"symmetry ({len(ops) + 1} operators), half set {h + 1}"
            D[h], W[h] = symmetrise_fourier(D[h], W[h], ops, threads, wrap=params.fix_symmetry_wrap)
    if merged_only:
        pairs = {"merged": (D[0] + D[1], W[0] + W[1])}
    elif half_sets:
        pairs = {"half1": (D[0], W[0]), "half2": (D[1], W[1]), "merged": (D[0] + D[1], W[0] + W[1])}
    else:
        pairs = {"merged": (D[0], W[0])}
    maps = {}
    for tag, (Dt, Wt) in pairs.items():
        yield f"gridding correction and weighting: {tag}"
        data = gridding_correct(Dt, threads)
        out = divide_weights(data, Wt, params.snr, threads)
        final = taper(crop_centre(out, params.crop_size) if params.crops else out, params.taper)
        if merged_only:
            return final
        # RELION quirk: weight_merged holds the half-1 weights
        wexp = expand_weights(W[0] if tag == "merged" else Wt)
        maps[tag] = {
            "data": data,
            "weight": wexp,
            "out": out,
            "final": final,
            "full": out if params.crops else None,
        }
    return maps


def finalise(*args: Any, **kwargs: Any) -> Any:
    """:func:`finalise_steps` run to the end."""
    steps = finalise_steps(*args, **kwargs)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
