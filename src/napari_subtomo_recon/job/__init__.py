"""The Reconstruct particle job: stages, their collaborators, RELION bookkeeping.

- :mod:`.runner`: :func:`run` / :class:`Job`, load → plan → backproject → finalise → write;
- :mod:`.inputs`, :mod:`.plan`, :mod:`.finalise`, :mod:`.outputs`: the stages' work;
- :mod:`.collaborators`: MPI agreement and reduction, checkpoints, live previews;
- :mod:`.relion`: job.star, the command RELION's GUI builds, note.txt, status files.

The parameters are :class:`~napari_subtomo_recon.params.ReconstructParams`; the events
:mod:`napari_subtomo_recon.events`.
"""

from ..events import Progress, Result
from ..params import ReconstructParams
from .finalise import MAP_TAGS, finalise, finalise_steps
from .inputs import Inputs, load_inputs
from .outputs import write_outputs
from .plan import TomoPlan, fit_memory, memory_estimate, plan_work, settings_of, split_plans
from .runner import Job, check_tilt_images, fingerprint, run, run_to_completion

__all__ = [
    "MAP_TAGS",
    "Inputs",
    "Job",
    "Progress",
    "ReconstructParams",
    "Result",
    "TomoPlan",
    "check_tilt_images",
    "finalise",
    "finalise_steps",
    "fingerprint",
    "fit_memory",
    "load_inputs",
    "memory_estimate",
    "plan_work",
    "run",
    "run_to_completion",
    "settings_of",
    "split_plans",
    "write_outputs",
]
