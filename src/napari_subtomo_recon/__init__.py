"""Reconstruct a subtomogram average from tilt series, RELION 5 style.

Importing this package imports neither Qt nor napari: the GUI lives in ``_qt``
and ``_widget`` and is loaded by napari through the npe2 manifest.
"""

__version__ = "0.1.0"

from .errors import InputError

__all__ = ["InputError", "__version__"]
