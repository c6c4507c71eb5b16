"""RELION optimisation sets: the file that names particles, tomograms and trajectories."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .star import at, read_star

LABELS = {
    "particles": "rlnTomoParticlesFile",
    "tomograms": "rlnTomoTomogramsFile",
    "trajectories": "rlnTomoTrajectoriesFile",
    "manifolds": "rlnTomoManifoldsFile",
    "reference1": "rlnTomoReferenceMap1File",
    "reference2": "rlnTomoReferenceMap2File",
    "mask": "rlnTomoReferenceMaskFile",
    "fsc": "rlnTomoReferenceFscFile",
}


@dataclass
class OptimisationSet:
    """The entries of an optimisation set, as written (paths relative to the project folder);
    an empty string is an entry that is not given."""

    particles: str = ""
    tomograms: str = ""
    trajectories: str = ""
    manifolds: str = ""
    reference1: str = ""
    reference2: str = ""
    mask: str = ""
    fsc: str = ""


def read_optimisation_set(path: str) -> OptimisationSet:
    """Read the first data block (RELION reads the first block, whatever its name)."""
    blocks = read_star(path, "optimisation set")
    df = next(iter(blocks.values()))
    out = OptimisationSet()
    if len(df) == 0:
        return out
    for attr, label in LABELS.items():
        if label in df.columns:
            setattr(out, attr, str(df[label].iloc[0]).strip())
    if not (out.particles or out.tomograms):
        raise InputError(
            f"{path}: optimisation set names neither rlnTomoParticlesFile nor rlnTomoTomogramsFile"
        )
    return out


def resolve_inputs(
    i: str = "", p: str = "", t: str = "", mot: str = "", root: str | None = None
) -> OptimisationSet:
    """Combine ``--i`` with the direct entries ``--p --t --mot``, which override it.

    Entries stay as written (relative to the project folder ``root``).
    """
    out = read_optimisation_set(at(root, i)) if i else OptimisationSet()
    if p:
        out.particles = p
    if t:
        out.tomograms = t
    if mot:
        out.trajectories = mot
    if not out.particles:
        raise InputError("no particle set: give --p particles.star or --i optimisation_set.star")
    if not out.tomograms:
        raise InputError("no tomogram set: give --t tomograms.star or --i optimisation_set.star")
    return out


def optimisation_set_blocks(s: OptimisationSet) -> dict[str, dict[str, str]]:
    """The list-style block RELION writes, with empty entries left out."""
    return {"": {label: getattr(s, attr) for attr, label in LABELS.items() if getattr(s, attr)}}
