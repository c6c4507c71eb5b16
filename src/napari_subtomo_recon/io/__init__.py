"""Reading and writing: STAR and MRC files, and the dataclasses the rest of the code uses."""

from .mrc import FrameReader, read_map, write_map
from .optimisation_set import OptimisationSet, read_optimisation_set, resolve_inputs
from .particles import ParticleSet, read_particle_set, read_trajectories
from .tomograms import TiltSeries, TomogramSet, read_tomogram_set

__all__ = [
    "FrameReader",
    "OptimisationSet",
    "ParticleSet",
    "TiltSeries",
    "TomogramSet",
    "read_map",
    "read_optimisation_set",
    "read_particle_set",
    "read_tomogram_set",
    "read_trajectories",
    "resolve_inputs",
    "write_map",
]
