"""napari readers (npe2) that claim only the files they read.

- MRC maps (``*.mrc``, ``*.map``) open as isosurfaces at their voxel size, centred on the
  particle centre (see :mod:`.display`); MRC stacks (``*.mrcs``) as 2D image stacks.
- ``job.star`` of a Reconstruct particle job and ``*optimisation_set.star`` fill the
  Reconstruct particle widget (a finished job's maps follow, read in the background).

The manifest's patterns decide which files napari offers to this plugin; the reader
functions then look at the content and decline anything else (another job type's
job.star, a file that is not MRC).  Folders are not claimed: every folder would be offered
to this plugin too.  Open a job folder through its job.star (or the widget's Load button).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

LayerData = list[tuple[Any, ...]]
MAP_SUFFIXES = (".mrc", ".map")
STACK_SUFFIXES = (".mrcs",)


def _one_path(path: Any) -> Path | None:
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, str | os.PathLike):
        return None
    return Path(path)


# --------------------------------------------------------------------------------------
# MRC maps and stacks


def _is_mrc(path: Path) -> bool:
    """MRC files carry "MAP " at byte 208."""
    try:
        with open(path, "rb") as fh:
            fh.seek(208)
            return fh.read(4) == b"MAP "
    except OSError:
        return False


def get_map_reader(path: Any) -> Callable[[Any], LayerData] | None:
    paths = path if isinstance(path, list) else [path]
    if not paths or not all(isinstance(p, str | os.PathLike) for p in paths):
        return None
    for p in map(Path, paths):
        if p.suffix.lower() not in MAP_SUFFIXES + STACK_SUFFIXES or not _is_mrc(p):
            return None
    return read_maps


def read_maps(path: Any) -> LayerData:
    """One image layer per file, in Å from the header's voxel size."""
    from .display import map_layer_kwargs
    from .io.mrc import read_map

    out: LayerData = []
    for p in map(Path, path if isinstance(path, list) else [path]):
        data, vs = read_map(p)
        stack = p.suffix.lower() in STACK_SUFFIXES
        kw = map_layer_kwargs(data, vs, p.stem, iso=not stack)
        if stack:  # a stack of 2D images: the first axis counts images
            kw["scale"] = (1.0, vs, vs)
            kw["units"] = ("pixel", "angstrom", "angstrom")
        kw["metadata"]["path"] = str(p)
        out.append((data, kw, "image"))
    return out


# --------------------------------------------------------------------------------------
# RELION jobs and optimisation sets


def _job_target(path: Any) -> tuple[str, Path] | None:
    """("job", job.star of a Reconstruct particle job) or ("optset", optimisation set)."""
    p = _one_path(path)
    if p is None or not p.is_file():
        return None
    if p.name == "job.star":
        from .io.jobstar import JOB_TYPE_LABEL, read_job_star

        try:
            return ("job", p) if read_job_star(p).type_label == JOB_TYPE_LABEL else None
        except Exception:
            return None
    if p.name.endswith("optimisation_set.star"):
        return "optset", p
    return None


def get_job_reader(path: Any) -> Callable[[Any], LayerData] | None:
    return read_job if _job_target(path) is not None else None


def load_into_widget(path: Any, viewer: Any = None) -> Any:
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
        widget.open_job_maps(file.parent)
    else:
        widget.use_optimisation_set(file)
    return widget


def read_job(path: Any) -> LayerData:
    """Fill the widget; a finished job's maps arrive as layers in the background."""
    load_into_widget(path)
    return [(None,)]
