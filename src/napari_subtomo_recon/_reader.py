"""napari readers (npe2): MRC volumes, and RELION job folders / optimisation sets.

Qt-free: the readers return layer data; a job folder or optimisation set also fills the
"Reconstruct particle" widget of the current viewer (created if needed).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

MAP_EXTENSIONS = (".mrc", ".map")
MAP_TAGS = ("merged", "half1", "half2")


# --------------------------------------------------------------------------------------
# Layer styling shared by the readers and the widget


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
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    return iso_level(data), lo, (hi if hi > lo else lo + 1.0)


def map_layer_kwargs(
    data: np.ndarray, voxel_size: float, name: str, iso: bool, levels=None
) -> dict:
    """Image-layer keyword arguments: scale in Angstrom, iso rendering with our level.

    ``levels``: precomputed :func:`display_levels` (the widget computes them off the
    GUI thread).
    """
    vs = float(voxel_size) if voxel_size and voxel_size > 0 else 1.0
    kw: dict = {"name": name, "scale": (vs,) * data.ndim, "metadata": {"voxel_size": vs}}
    if iso and data.ndim == 3:
        level, lo, hi = display_levels(data) if levels is None else levels
        kw.update(rendering="iso", iso_threshold=level, contrast_limits=(lo, hi), colormap="gray")
    return kw


def job_map_layers(job_dir: str | os.PathLike, prefix: str | None = None) -> list[tuple]:
    """merged (iso surface) and half1/half2 (hidden) of a job folder, if present."""
    from .io.mrc import read_map

    job_dir = Path(job_dir)
    prefix = job_dir.name if prefix is None else prefix
    out = []
    for tag in MAP_TAGS:
        p = job_dir / f"{tag}.mrc"
        if not p.is_file():
            continue
        data, vs = read_map(p)
        kw = map_layer_kwargs(data, vs, f"{prefix} {tag}".strip(), iso=True)
        kw["visible"] = tag == "merged"
        kw["metadata"].update(subtomo_recon={"job": str(job_dir), "map": tag, "path": str(p)})
        out.append((data, kw, "image"))
    return out


# --------------------------------------------------------------------------------------
# MRC volumes


def get_map_reader(path):
    if isinstance(path, list):
        if not all(isinstance(p, str | os.PathLike) for p in path):
            return None
        paths = [str(p) for p in path]
    else:
        paths = [str(path)]
    if not all(p.lower().endswith(MAP_EXTENSIONS) and os.path.isfile(p) for p in paths):
        return None
    return read_maps


def read_maps(path) -> list[tuple]:
    """One image layer per file, scaled by the voxel size of its header."""
    from .io.mrc import read_map

    paths = path if isinstance(path, list) else [path]
    out = []
    for p in paths:
        data, vs = read_map(p)
        kw = map_layer_kwargs(data, vs, Path(p).stem, iso=False)
        kw["metadata"]["path"] = str(p)
        out.append((data, kw, "image"))
    return out


# --------------------------------------------------------------------------------------
# RELION job folders and optimisation sets


def project_for(path: str | os.PathLike) -> Path:
    """The RELION project folder a file or job folder belongs to.

    Files of a ``<Type>/jobNNN/`` folder belong to the folder two levels up; any other
    file to its own folder (e.g. the sample data set).
    """
    p = Path(path).resolve()
    d = p if p.is_dir() else p.parent
    if re.fullmatch(r"job\d+", d.name):
        return d.parent.parent
    return d


def _job_target(path) -> tuple[str, Path] | None:
    """What the job reader would do with ``path``: ("job", job.star) or ("optset", file)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(str(path))
    if p.is_dir():
        if (p / "job.star").is_file():
            return "job", p / "job.star"
        if (p / "optimisation_set.star").is_file():
            return "optset", p / "optimisation_set.star"
        return None
    if p.is_file() and p.name == "job.star":
        return "job", p
    if p.is_file() and p.name.endswith("optimisation_set.star"):
        return "optset", p
    return None


def get_job_reader(path):
    target = _job_target(path)
    if target is None:
        return None
    if target[0] == "job":
        from .io.jobstar import JOB_TYPE_LABEL, read_job_star

        try:
            if read_job_star(target[1]).type_label != JOB_TYPE_LABEL:
                return None
        except Exception:
            return None
    return read_job


def load_into_widget(path, viewer=None):
    """Fill the Reconstruct particle widget of ``viewer`` (default: the current viewer).

    Returns the widget, or None without a viewer window (headless use).
    """
    target = _job_target(path)
    if target is None:
        return None
    if viewer is None:
        try:
            import napari

            viewer = napari.current_viewer()
        except ImportError:
            return None
    window = getattr(viewer, "window", None)
    if window is None:
        return None
    _, widget = window.add_plugin_dock_widget("napari-subtomo-recon", "Reconstruct particle")
    kind, file = target
    if kind == "job":
        widget.load_job_star(file)
    else:
        widget.use_optimisation_set(file)
    return widget


def read_job(path) -> list[tuple]:
    """Fill the widget; a Reconstruct job folder's maps come back as layers."""
    target = _job_target(path)
    if target is None:
        return [(None,)]
    load_into_widget(path)
    kind, file = target
    layers = job_map_layers(file.parent) if kind == "job" else []
    return layers or [(None,)]
