"""Maps as napari layers: placed in Å around the particle centre, the user's view kept.

A layer that is updated (the live preview, a re-run) keeps the user's iso threshold,
contrast and colormap: the automatic threshold is only applied while the user has not
changed it.  A new visible map switches the view to 3D (and fits it); updates leave the
camera alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

from ..display import map_layer_kwargs

STEP_MS = 150  # between steps: napari draws (0.1-0.3 s with software OpenGL) in between
_AUTO = "subtomo_recon_auto"  # metadata: the display levels last set automatically
MAP_KEYS = ("subtomo_recon", "subtomo_recon_sample")  # layer metadata of this plugin's maps


def show_map(
    viewer: Any,
    name: str,
    data: np.ndarray,
    voxel_size: float,
    levels: tuple[float, float, float] | None,
    *,
    visible: bool = True,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """Add the map as an isosurface layer, or update the layer of that name."""
    kw = map_layer_kwargs(data, voxel_size, name, iso=True, levels=levels)
    auto = (kw["iso_threshold"], *kw["contrast_limits"])
    layers = viewer.layers
    if name in layers:
        layer = layers[name]
        previous = layer.metadata.get(_AUTO)
        user_iso = previous is not None and layer.iso_threshold != previous[0]
        user_contrast = previous is not None and tuple(layer.contrast_limits) != tuple(previous[1:])
        layer.data = data  # (a 2D placeholder may become a 3D map)
        if tuple(layer.scale) != tuple(kw["scale"]):
            layer.scale = kw["scale"]
        if tuple(layer.translate) != tuple(kw["translate"]):
            layer.translate = kw["translate"]
        if layer.rendering != kw["rendering"]:
            layer.rendering = kw["rendering"]
        if [str(u) for u in layer.units] != list(kw["units"]):
            layer.units = kw["units"]
        if not user_contrast:
            layer.contrast_limits = kw["contrast_limits"]
        if not user_iso:
            layer.iso_threshold = kw["iso_threshold"]
        # what was last set automatically: the user's own values never count as such
        assert previous is not None or not (user_iso or user_contrast)
        iso = previous[0] if user_iso and previous is not None else auto[0]
        limits = tuple(previous[1:]) if user_contrast and previous is not None else auto[1:]
        layer.metadata[_AUTO] = (iso, *limits)
    else:
        # created hidden, shown a turn later: creating the layer (its visual, its
        # controls) and its first 3D draw each take napari a few tenths of a second
        kw["visible"] = False
        layer = viewer.add_image(data, **kw)
        layer.metadata[_AUTO] = auto
        if visible:
            QTimer.singleShot(STEP_MS, lambda: _reveal(viewer, layer))
    if metadata:
        layer.metadata.update(metadata)
    return layer


def prepare_map(viewer: Any, name: str, shape: tuple[int, ...], voxel_size: float) -> None:
    """Make a map's layer ahead of its data, spanning its box, and show it a turn later.

    Creating a 3D layer costs napari 0.2-0.3 s of its GUI thread and the redraw that
    follows a visible 3D map another 0.2-0.4 s with software OpenGL, in the same pause of
    the event loop.  So this plugin's other maps are hidden first (:func:`_reveal` would
    hide them a turn later anyway) and the new layer holds a 2x2x2 empty volume, whose
    redraw costs nothing; :func:`show_map` then fills it."""
    if name in viewer.layers:
        return
    _hide_other_maps(viewer, None)
    tiny = np.zeros((2,) * len(shape), np.float32)
    layer = show_map(viewer, name, tiny, 1.0, (0.5, 0.0, 1.0), visible=False)
    # two voxels of n/2 each, centred on the origin: the extent napari fits the view to
    # is the map's
    layer.scale = tuple(voxel_size * n / 2 for n in shape)
    layer.translate = tuple(-voxel_size * n / 4 for n in shape)
    QTimer.singleShot(STEP_MS, lambda: _reveal(viewer, layer))


def _hide_other_maps(viewer: Any, layer: Any) -> None:
    for other in viewer.layers:
        if other is not layer and other.visible and any(k in other.metadata for k in MAP_KEYS):
            other.visible = False


def _reveal(viewer: Any, layer: Any) -> None:
    """Show a new map; this plugin's other maps are hidden (ticked back in the layer list),
    since with software OpenGL every visible 3D map adds to each redraw."""
    if layer not in viewer.layers:
        return
    _hide_other_maps(viewer, layer)
    layer.visible = True
    if viewer.dims.ndisplay != 3:  # a new map is looked at in 3D
        viewer.dims.ndisplay = 3
        viewer.reset_view()


def remove_layers(viewer: Any, names: Sequence[str]) -> None:
    for name in names:
        if name in viewer.layers:
            viewer.layers.remove(name)


def one_per_turn(steps: Sequence[Callable[[], Any]], done: Callable[[], Any] | None = None) -> None:
    """Run ``steps`` a few event-loop turns apart: each layer's creation, texture upload and
    redraw of the canvas is its own turn, so napari keeps answering between them (with
    software OpenGL a redraw of a 3D map takes ~0.2-0.4 s)."""
    pending = list(steps)

    def next_step() -> None:
        if pending:
            pending.pop(0)()
            QTimer.singleShot(STEP_MS, next_step)
        elif done is not None:
            done()

    QTimer.singleShot(STEP_MS, next_step)
