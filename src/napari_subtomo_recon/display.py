"""How a map is shown in napari, without napari: threshold, contrast, placement, units.

Every map layer (merged, halves, ``*_full``, preview, ground truth, maps opened from disk)
is placed so that the particle centre — RELION's voxel ``N // 2`` along each axis — sits
at the world origin whatever the box, with its scale in Å: a cropped map, its full map
and the ground truth coincide.
"""

from __future__ import annotations

from typing import Any

import numpy as np

UNITS = "angstrom"


def iso_level(data: np.ndarray) -> float:
    """Automatic isosurface threshold of a reconstructed map.

    Statistics are taken inside the sphere inscribed in the box (RELION tapers the map
    to zero outside it).  With m the median and s = 1.4826 * MAD (a robust noise level
    that ignores the particle as long as it fills less than half of the sphere), the
    level is ``m + max(3 s, 0.1 (p - m))`` where p is the 99.9th percentile: three noise
    sigmas above the solvent, but at least a tenth of the way to the strongest density
    (noise-free maps such as the ground truth have s ~ 0).
    """
    d = np.asarray(data, dtype=np.float32)
    if d.ndim != 3 or d.size == 0:
        return float(np.nanmean(d)) if d.size else 0.0
    step = max(1, round((d.size / 2e6) ** (1 / 3)))  # statistics on <= ~2 M voxels
    sub = d[::step, ::step, ::step]
    n = np.array(sub.shape, dtype=np.float64)
    z, y, x = (np.arange(k) - k / 2 + 0.5 for k in sub.shape)
    r2 = (z[:, None, None] / (n[0] / 2)) ** 2 + (y[None, :, None] / (n[1] / 2)) ** 2
    r2 = r2 + (x[None, None, :] / (n[2] / 2)) ** 2
    v = sub[r2 < 1.0]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    m = float(np.median(v))
    s = 1.4826 * float(np.median(np.abs(v - m)))
    p = float(np.percentile(v, 99.9))
    return m + max(3.0 * s, 0.1 * (p - m))


def display_levels(data: np.ndarray) -> tuple[float, float, float]:
    """(iso threshold, contrast min, contrast max) of a map; cheap enough for a worker."""
    finite = np.asarray(data)[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    return iso_level(data), lo, (hi if hi > lo else lo + 1.0)


def centre_translate(shape: tuple[int, ...], voxel_size: float) -> tuple[float, ...]:
    """World offset (Å) that puts voxel ``n // 2`` of every axis at the origin."""
    return tuple(-(n // 2) * voxel_size for n in shape)


def map_layer_kwargs(
    data: np.ndarray,
    voxel_size: float,
    name: str,
    iso: bool = True,
    levels: tuple[float, float, float] | None = None,
) -> dict[str, Any]:
    """Image-layer keyword arguments: Å scale and units, centred, iso rendering.

    ``levels``: precomputed :func:`display_levels` (computed off the GUI thread).
    A stack of 2D images (``iso=False``) keeps its slices at integer positions.
    """
    vs = float(voxel_size) if voxel_size and voxel_size > 0 else 1.0
    kw: dict[str, Any] = {
        "name": name,
        "scale": (vs,) * data.ndim,
        "units": (UNITS,) * data.ndim,
        "metadata": {"voxel_size": vs},
    }
    if iso and data.ndim == 3:
        level, lo, hi = display_levels(data) if levels is None else levels
        kw.update(
            translate=centre_translate(data.shape, vs),
            rendering="iso",
            iso_threshold=level,
            contrast_limits=(lo, hi),
            colormap="gray",
        )
    return kw
