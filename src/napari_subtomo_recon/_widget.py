"""napari widget contribution (npe2): the Reconstruct particle job.

Imported by napari only; the Qt code lives in ``_qt``.
"""

from ._qt.job_widget import ReconstructParticleWidget

__all__ = ["ReconstructParticleWidget"]
